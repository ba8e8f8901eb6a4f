"""A consortium as one object: the file one organisation writes and the others join with.

One organisation, in its workspace on a node every member can reach, runs ``ailedger
consortium create --out consortium.toml``. The file names the chain (id and node URL), every
contract its workspace deployed there (``WORKSPACE_CONTRACTS``: AnchorRegistry,
ProvenanceRegistry, TrainingTask) and its members' public keys. Another organisation runs
``ailedger init --join consortium.toml``: a fresh workspace on that node and those contracts,
nothing deployed, so grants, sealed files, registrations, anchors and training tasks of every
member are found in the same registries.

The file (TOML, UTF-8, at most 64 KiB)::

    format = 1                                  # this layout; any other value is refused
    name = "clinics"                            # 1-100 printable characters
    chain_id = 31337                            # the node must serve this chain
    rpc = "http://127.0.0.1:8545"               # http(s) URL of a node of that chain

    [contracts]                                 # exactly the three workspace contracts
    AnchorRegistry = "0x..."
    ProvenanceRegistry = "0x..."
    TrainingTask = "0x..."

    [[members]]                                 # 1 to 256; the creator first
    name = "org-a"                              # optional label
    account = "0x..."                           # the member's Ethereum account
    log_key = "<origin>+<key id>+<base64>"      # C2SP signed-note verifier key of its audit log
    sharing_key = "<64 hex digits>"             # X25519 public key for sealed files (optional)

Members: the creator is written by ``create``; every other member adds itself after joining
(``ailedger consortium add-member FILE``, which adds or updates this workspace's own entry) and
sends the file on. The file is a directory of public keys, not a signed document: members
check each other's entries out of band before trusting them. What the chain enforces (who
registered, who was granted, who anchored) never depends on the file; the file only says where
to look and whose keys to expect. Joining checks that the node serves ``chain_id`` and that each
address holds that contract's code.

Parsing treats the file as outside input (:mod:`ailedger._input`'s rules): bounded in size,
every key known, every value checked, each problem one :class:`~ailedger.errors.InputError`
naming the field (CLI exit code 2).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from ailedger._fs import write_atomic
from ailedger._input import decode_utf8
from ailedger.errors import InputError

if TYPE_CHECKING:
    from ailedger.ledger import Ledger
    from ailedger.workspace import Workspace

__all__ = [
    "FORMAT",
    "MAX_FILE_BYTES",
    "Consortium",
    "Member",
    "NotADevNode",
    "check_fits",
    "consortium_of",
    "fund",
    "member_of",
    "parse_consortium",
    "parse_ether",
    "read_consortium",
    "save_to_workspace",
    "workspace_consortium",
]

#: the consortium file's format version
FORMAT = 1
MAX_FILE_BYTES = 64 * 1024
MAX_MEMBERS = 256
_MAX_NAME = 100
_MAX_CHAIN_ID = 2**63 - 1
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
_HEX_KEY = re.compile(r"(?:0x)?[0-9a-fA-F]{64}")
_TOP_KEYS = frozenset({"format", "name", "chain_id", "rpc", "contracts", "members"})
_MEMBER_KEYS = frozenset({"name", "account", "log_key", "sharing_key"})
#: name of the copy of the consortium file kept in a workspace that created or joined one
WORKSPACE_FILE = "consortium.toml"


@dataclass(frozen=True, kw_only=True)
class Member:
    """One organisation of a consortium: its account and public keys (all text forms)."""

    account: str
    name: str = ""
    log_key: str = ""
    sharing_key: str = ""

    def to_toml(self) -> dict[str, str]:
        doc = {"name": self.name, "account": self.account}
        if self.log_key:
            doc["log_key"] = self.log_key
        if self.sharing_key:
            doc["sharing_key"] = self.sharing_key
        return {k: v for k, v in doc.items() if v}


@dataclass(frozen=True, kw_only=True)
class Consortium:
    """The contents of a consortium file (module docstring); build it with :func:`read_consortium`
    or :func:`consortium_of`."""

    name: str
    chain_id: int
    rpc: str
    contracts: dict[str, str]
    members: tuple[Member, ...] = field(default=())

    def to_toml(self) -> str:
        """The file's text (the layout of the module docstring)."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "name": self.name,
            "chain_id": self.chain_id,
            "rpc": self.rpc,
            "contracts": dict(self.contracts),
            "members": [m.to_toml() for m in self.members],
        }
        return tomli_w.dumps(doc)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "chain_id": self.chain_id,
            "rpc": self.rpc,
            "contracts": dict(self.contracts),
            "members": [m.to_toml() for m in self.members],
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the file atomically (readable by others: it holds only public data)."""
        write_atomic(Path(path), self.to_toml().encode(), mode=0o644)

    def with_member(self, member: Member) -> Consortium:
        """This consortium with ``member`` added, or replacing the entry of its account."""
        kept = list(self.members)
        for i, m in enumerate(kept):
            if m.account.lower() == member.account.lower():
                kept[i] = member
                return replace(self, members=tuple(kept))
        if len(kept) >= MAX_MEMBERS:
            raise InputError(f"a consortium has at most {MAX_MEMBERS} members")
        return replace(self, members=(*kept, member))

    def member(self, account: str) -> Member | None:
        """The entry of ``account``, if it is a member."""
        return next((m for m in self.members if m.account.lower() == account.lower()), None)


# -- reading -------------------------------------------------------------------------------


def read_consortium(path: str | os.PathLike[str]) -> Consortium:
    """Read and check a consortium file; :class:`InputError` naming the field otherwise."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read the consortium file {where}: {exc.strerror}") from exc
    return parse_consortium(data, what=where)


def parse_consortium(data: bytes, *, what: str = "consortium file") -> Consortium:
    """Parse the bytes of a consortium file (module docstring) or raise :class:`InputError`."""
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{what}: larger than {MAX_FILE_BYTES} bytes")
    text = decode_utf8(data, what=what)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{what}: not valid TOML ({exc})") from exc
    except ValueError as exc:  # an integer longer than sys.get_int_max_str_digits()
        raise InputError(f"{what}: not valid TOML ({exc})") from exc
    return _from_doc(doc, what)


def _from_doc(doc: dict[str, Any], what: str) -> Consortium:
    from ailedger.ledger._settings import check_rpc_url
    from ailedger.ledger.contracts import WORKSPACE_CONTRACTS

    version = doc.get("format")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"{what}: format must be the integer {FORMAT}, got {_kind(version)}")
    if version != FORMAT:
        raise InputError(
            f"{what}: unknown format {version} (this ailedger reads format {FORMAT}): "
            "upgrade ailedger, or ask for a format-1 file"
        )
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise InputError(f"{what}: unknown key {unknown[0]!r}")
    name = _name(doc.get("name"), f"{what}: name")
    chain_id = doc.get("chain_id")
    if isinstance(chain_id, bool) or not isinstance(chain_id, int):
        raise InputError(f"{what}: chain_id must be an integer, got {_kind(chain_id)}")
    if not 1 <= chain_id <= _MAX_CHAIN_ID:
        raise InputError(f"{what}: chain_id must be from 1 to 2**63-1, got {chain_id}")
    rpc = doc.get("rpc")
    if not isinstance(rpc, str):
        raise InputError(f"{what}: rpc must be the node's http(s) URL, got {_kind(rpc)}")
    try:
        check_rpc_url(rpc)
    except InputError as exc:
        raise InputError(f"{what}: rpc: {exc}") from exc
    contracts = doc.get("contracts")
    if not isinstance(contracts, dict):
        raise InputError(f"{what}: contracts must be a table, got {_kind(contracts)}")
    for contract in contracts:
        if contract not in WORKSPACE_CONTRACTS:
            raise InputError(f"{what}: unknown contract {contract!r} in contracts")
    checked: dict[str, str] = {}
    for contract in WORKSPACE_CONTRACTS:
        if contract not in contracts:
            raise InputError(f"{what}: contracts.{contract} is missing")
        checked[contract] = _address(contracts[contract], f"{what}: contracts.{contract}")
    members = doc.get("members", [])
    if not isinstance(members, list):
        raise InputError(f"{what}: members must be an array of tables, got {_kind(members)}")
    if not members:
        raise InputError(f"{what}: members is empty (the creator is the first member)")
    if len(members) > MAX_MEMBERS:
        raise InputError(f"{what}: more than {MAX_MEMBERS} members")
    parsed: list[Member] = []
    for i, entry in enumerate(members):
        member = _member(entry, f"{what}: members[{i}]")
        if any(m.account == member.account for m in parsed):
            raise InputError(f"{what}: members[{i}]: account {member.account} is listed twice")
        parsed.append(member)
    return Consortium(
        name=name, chain_id=chain_id, rpc=rpc, contracts=checked, members=tuple(parsed)
    )


def _member(entry: Any, where: str) -> Member:
    if not isinstance(entry, dict):
        raise InputError(f"{where} must be a table, got {_kind(entry)}")
    unknown = sorted(set(entry) - _MEMBER_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}")
    if "account" not in entry:
        raise InputError(f"{where}: account is missing")
    account = _address(entry["account"], f"{where}.account")
    name = _name(entry["name"], f"{where}.name") if "name" in entry else ""
    log_key = ""
    if "log_key" in entry:
        from ailedger.auditlog.note import parse_verifier_key

        value = entry["log_key"]
        if not isinstance(value, str) or len(value) > 400:
            raise InputError(f"{where}.log_key must be a verifier key, got {_kind(value)}")
        try:
            parse_verifier_key(value)
        except InputError as exc:
            raise InputError(f"{where}.log_key: {exc}") from exc
        log_key = value
    sharing = ""
    if "sharing_key" in entry:
        value = entry["sharing_key"]
        if not isinstance(value, str) or _HEX_KEY.fullmatch(value) is None:
            raise InputError(
                f"{where}.sharing_key must be an X25519 public key in 64 hex digits, "
                f"got {_kind(value)}"
            )
        sharing = value.lower().removeprefix("0x")
    return Member(account=account, name=name, log_key=log_key, sharing_key=sharing)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or _NAME.fullmatch(value) is None or not value.strip():
        raise InputError(
            f"{where} must be 1-{_MAX_NAME} characters with no control characters, "
            f"got {_kind(value)}"
        )
    return value


def _address(value: Any, where: str) -> str:
    from ailedger.ledger import parse_address

    if not isinstance(value, str):
        raise InputError(f"{where} must be a 0x address, got {_kind(value)}")
    try:
        return str(parse_address(value, where))
    except InputError as exc:
        raise InputError(f"{where} must be a 0x address (40 hex digits): {exc}") from exc


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}" if abs(value) < 10**30 else "a huge integer"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:60] + "..."
        return f"{shown!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


# -- building from a workspace -------------------------------------------------------------


def member_of(workspace: Workspace, *, name: str = "") -> Member:
    """This workspace's own member entry: its account, its log's verifier key, and its X25519
    sharing key if it has one (``keys/x25519.pub``; none is made here)."""
    from ailedger.auditlog.log import default_origin
    from ailedger.auditlog.note import verifier_key
    from ailedger.provenance.sharing import sharing_key_path

    public = workspace.public_key()
    origin = str(workspace.config.get("log", {}).get("origin") or default_origin(public))
    sharing = ""
    pub_path = sharing_key_path(workspace).with_suffix(".pub")
    if pub_path.is_file():
        from ailedger.crypto import envelope
        from ailedger.provenance.sharing import read_public_key

        key = read_public_key(pub_path.read_bytes())
        sharing = envelope.dump_public_key(key, encoding="raw").hex()
    return Member(
        account=workspace.keystore().address,
        name=_name(name, "--member-name") if name else "",
        log_key=verifier_key(origin, public),
        sharing_key=sharing,
    )


def consortium_of(workspace: Workspace, *, name: str, member_name: str = "") -> Consortium:
    """A new consortium of this workspace's chain and contracts, with it as the first member.

    The workspace must be on a node (``init --rpc URL``): the embedded chain lives inside this
    process's workspace, so other organisations cannot reach it (:class:`InputError`).
    """
    from ailedger.ledger.contracts import WORKSPACE_CONTRACTS

    chain = workspace.config.get("chain", {})
    if chain.get("backend") != "rpc":
        raise InputError(
            "this workspace uses the embedded chain, which runs inside its own process and "
            "that other organisations cannot reach: make the consortium from a workspace on a "
            "shared node (`ailedger init --rpc URL`)"
        )
    chain_id = int(chain["chain_id"])
    contracts = {n: workspace.contract_address(chain_id, n) for n in WORKSPACE_CONTRACTS}
    return Consortium(
        name=_name(name, "--name"),
        chain_id=chain_id,
        rpc=str(chain["rpc"]),
        contracts=contracts,
        members=(member_of(workspace, name=member_name),),
    )


def workspace_consortium(workspace: Workspace) -> Consortium:
    """The consortium this workspace created or joined (its copy of the file)."""
    path = workspace.path / WORKSPACE_FILE
    if not path.is_file():
        raise InputError(
            f"the workspace {workspace.path} has not created or joined a consortium: "
            "`ailedger consortium create --out FILE` or `ailedger init --join FILE`"
        )
    return read_consortium(path)


def save_to_workspace(workspace: Workspace, consortium: Consortium) -> None:
    """Keep a copy of ``consortium`` in the workspace (for ``consortium show``)."""
    write_atomic(workspace.path / WORKSPACE_FILE, consortium.to_toml().encode(), mode=0o600)


def check_fits(workspace: Workspace, consortium: Consortium, what: str) -> None:
    """Refuse a consortium file that is not this workspace's consortium (another chain, or
    other contracts), so ``add-member`` never adds a member to the wrong consortium."""
    chain_id = int(workspace.config.get("chain", {}).get("chain_id", 0))
    if consortium.chain_id != chain_id:
        raise InputError(
            f"{what} is a consortium on chain {consortium.chain_id}, this workspace is on "
            f"chain {chain_id}: join it first (`ailedger init --join {what}`)"
        )
    for contract, address in consortium.contracts.items():
        mine = workspace.config.get("contracts", {}).get(str(chain_id), {}).get(contract)
        if mine is None or mine.lower() != address.lower():
            raise InputError(
                f"{what} names {contract} {address}, this workspace uses {mine or 'none'}: "
                "it is another consortium"
            )


# -- dev-node funding ----------------------------------------------------------------------


class NotADevNode(InputError):
    """``chain fund`` on a node that is not a development node (CLI exit 2)."""


#: what a node's ``web3_clientVersion`` starts with when it lets anyone set balances
_DEV_CLIENTS = ("anvil/",)
_WEI = 10**18
_MAX_ETHER = 10**12


def parse_ether(text: str) -> int:
    """An amount of ether from the command line (ASCII digits, an optional ``.`` fraction of at
    most 18 digits, from 1 wei to 10**12 ether) in wei; :class:`InputError` otherwise."""
    match = re.fullmatch(r"([0-9]{1,13})(?:\.([0-9]{1,18}))?", text, re.ASCII)
    if match is None:
        raise InputError(f"--ether must be a positive number of ether like 10 or 0.5, got {text!r}")
    whole, fraction = match.group(1), match.group(2) or ""
    wei = int(whole) * _WEI + int(fraction.ljust(18, "0") or "0")
    if not 0 < wei <= _MAX_ETHER * _WEI:
        raise InputError(f"--ether must be above 0 and at most {_MAX_ETHER}, got {text}")
    return wei


def fund(ledger: Ledger, address: str, wei: int) -> int:
    """Give ``address`` ``wei`` more on a development chain; returns its new balance in wei.

    On the embedded chain the workspace's account (funded when the chain was made) sends it
    (``ledger`` must sign). On a node, only anvil is a development node: its
    ``anvil_setBalance`` sets the balance. Any other node is refused (:class:`NotADevNode`,
    CLI exit 2): ether there comes from a funded account, which ailedger does not invent.
    """
    from ailedger.ledger import TrafficNode, parse_address

    target = str(parse_address(address, "ADDRESS"))
    if wei <= 0:
        raise InputError("the amount to fund must be above 0 wei")
    if ledger.backend == "embedded":
        if ledger.signer is not None and ledger.signer.address.lower() == target.lower():
            raise InputError(
                f"{target} is this workspace's own account, which funds others on the "
                "embedded chain: give another account"
            )
        ledger.transfer(target, wei)
        return ledger.balance(target)
    assert ledger.url is not None
    with TrafficNode.connect(ledger.url) as node:
        client = node.rpc("web3_clientVersion")
        if not isinstance(client, str) or not client.lower().startswith(_DEV_CLIENTS):
            shown = repr(client)[:80]
            raise NotADevNode(
                f"the node at {ledger.url} ({shown}) is not a development node: send ether to "
                f"{target} from a funded account"
            )
        balance = ledger.balance(target)
        node.rpc("anvil_setBalance", target, hex(balance + wei))
    return ledger.balance(target)
