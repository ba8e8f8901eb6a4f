"""The workspace: one folder holding a party's keys, settings, chain state and data.

Layout (DESIGN.md)::

    .ailedger/
      config.toml        chain settings and contract addresses, per chain id
      keys/ethereum.json encrypted V3 keystore (0600)
      keys/ed25519.pem   encrypted Ed25519 signing key (0600), ed25519.pub beside it
      chain/             the embedded chain's state (SQLite) and its lock
      log.sqlite         the audit log
      blobs/             content-addressed files, by SHA-256

Nothing is global: every operation names its workspace.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ailedger._fs import write_atomic
from ailedger.crypto.keys import generate_signing_key, load_public_key, load_signing_key
from ailedger.errors import InputError, LedgerError, WorkspaceError
from ailedger.ledger._settings import LedgerSettings

if TYPE_CHECKING:
    from ailedger.ledger import AnchorRegistry, Keystore, Ledger, Signer

__all__ = ["DEFAULT_DIRNAME", "Workspace"]

DEFAULT_DIRNAME = ".ailedger"
FORMAT = 1
#: wei given to the workspace's account when its embedded chain is created (1e9 ether)
EMBEDDED_FUNDS = 10**27
_SETTING_TYPES: dict[str, type] = {
    "confirmations": int,
    "retries": int,
    "backoff": float,
    "backoff_max": float,
    "request_timeout": float,
    "receipt_timeout": float,
    "poll_interval": float,
}

Passphrase = Callable[[], str]


class Workspace:
    """A workspace folder; build it with :meth:`init` or :meth:`open`."""

    def __init__(self, *, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config

    # -- paths ----------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def keystore_path(self) -> Path:
        return self.path / "keys" / "ethereum.json"

    @property
    def signing_key_path(self) -> Path:
        return self.path / "keys" / "ed25519.pem"

    @property
    def chain_dir(self) -> Path:
        return self.path / "chain"

    @property
    def log_path(self) -> Path:
        return self.path / "log.sqlite"

    @property
    def blobs_dir(self) -> Path:
        return self.path / "blobs"

    # -- life cycle -----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: Path,
        *,
        passphrase: Passphrase,
        rpc: str | None = None,
        anchor_registry: str | None = None,
        unsafe_fast_kdf: bool = False,
    ) -> Workspace:
        """Create (or complete) the workspace at ``path`` and set up its contracts on chain.

        Existing keys and settings are kept, so running it again is safe: it finishes what an
        earlier run could not (e.g. deploying once the account is funded), or sets the workspace
        up on another chain (``rpc``). The contracts are deployed, unless the config (or
        ``anchor_registry``) names an address on that chain, whose code is then checked.
        """
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = _read_config(path / "config.toml") if (path / "config.toml").exists() else {}
        config.setdefault("workspace", {})["format"] = FORMAT
        chain = config.setdefault("chain", {})
        if rpc is not None:
            chain["backend"] = "rpc"
            chain["rpc"] = rpc
            chain.pop("chain_id", None)
        chain.setdefault("backend", "embedded")
        workspace = cls(path=path, config=config)
        workspace._validate()
        from ailedger.ledger import AnchorRegistry, Keystore

        if not workspace.keystore_path.exists():
            Keystore.create(workspace.keystore_path, passphrase(), unsafe_fast_kdf=unsafe_fast_kdf)
        if not workspace.signing_key_path.exists():
            generate_signing_key(workspace.signing_key_path, passphrase())
        workspace.blobs_dir.mkdir(exist_ok=True)
        # Saved before touching the chain, so a run that cannot deploy yet (no funds, node
        # down) keeps the chosen chain for the next `init`.
        workspace.save()
        with workspace.ledger(passphrase=passphrase) as ledger:
            chain["chain_id"] = ledger.chain_id
            given = {AnchorRegistry.NAME: anchor_registry} if anchor_registry else {}
            workspace._setup_contracts(ledger, given)
        workspace._create_log()
        workspace.save()
        return workspace

    def _create_log(self) -> None:
        from ailedger.auditlog.log import AuditLog, default_origin

        log_config = self.config.setdefault("log", {})
        log_config.setdefault("origin", default_origin(self.public_key()))
        AuditLog.open(self.log_path, origin=str(log_config["origin"])).close()

    @classmethod
    def open(cls, path: Path) -> Workspace:
        """Open an existing workspace; a missing or malformed one raises WorkspaceError."""
        config_path = path / "config.toml"
        if not config_path.is_file():
            raise WorkspaceError(f"no ailedger workspace at {path}: run `ailedger init` first")
        workspace = cls(path=path, config=_read_config(config_path))
        workspace._validate()
        return workspace

    def save(self) -> None:
        write_atomic(self.config_path, tomli_w.dumps(self.config).encode(), mode=0o600)

    # -- keys -----------------------------------------------------------------------------

    def keystore(self) -> Keystore:
        from ailedger.ledger import Keystore

        return Keystore.load(self.keystore_path)

    def signer(self, passphrase: Passphrase) -> Signer:
        from ailedger.ledger import Signer

        return Signer.from_keystore(self.keystore(), passphrase)

    def signing_key(self, passphrase: Passphrase) -> Ed25519PrivateKey:
        return load_signing_key(self.signing_key_path, passphrase())

    def public_key(self) -> Ed25519PublicKey:
        return load_public_key(self.signing_key_path.with_suffix(".pub"))

    # -- chain ----------------------------------------------------------------------------

    def settings(self) -> LedgerSettings:
        chain = self.config.get("chain", {})
        values = {k: kind(chain[k]) for k, kind in _SETTING_TYPES.items() if k in chain}
        return LedgerSettings(**values)

    def ledger(self, *, rpc: str | None = None, passphrase: Passphrase | None = None) -> Ledger:
        """Open the workspace's chain: ``rpc`` if given, else the configured node or embedded.

        Without ``passphrase`` the ledger can read but not sign.
        """
        from ailedger.ledger import Ledger

        chain = self.config.get("chain", {})
        signer = self.signer(passphrase) if passphrase is not None else None
        if rpc is None and chain.get("backend") == "rpc":
            rpc = str(chain["rpc"])
            expected = chain.get("chain_id")
        else:
            expected = None
        if rpc is not None:
            return Ledger.connect(
                rpc,
                signer=signer,
                settings=self.settings(),
                expected_chain_id=int(expected) if expected is not None else None,
            )
        address = signer.address if signer else self.keystore().address
        return Ledger.embedded(
            self.chain_dir,
            signer=signer,
            genesis_balances={address: EMBEDDED_FUNDS},
            lock_timeout=float(chain.get("lock_timeout", 10.0)),
            settings=self.settings(),
        )

    def contract_address(self, chain_id: int, name: str) -> str:
        """Address of the workspace's contract ``name`` on chain ``chain_id``."""
        entry = self.config.get("contracts", {}).get(str(chain_id), {})
        value = entry.get(name)
        if not value:
            raise WorkspaceError(
                f"this workspace has no {name} on chain {chain_id}: "
                "run `ailedger init` (with the same --rpc) first"
            )
        return str(value)

    def anchor_registry(self, ledger: Ledger) -> AnchorRegistry:
        """The workspace's AnchorRegistry on ``ledger``'s chain."""
        from ailedger.ledger import AnchorRegistry

        address = self.contract_address(ledger.chain_id, AnchorRegistry.NAME)
        return AnchorRegistry(ledger=ledger, address=address)

    def _setup_contracts(self, ledger: Ledger, given: dict[str, str]) -> None:
        """Check the contracts the config (or ``given``) names; deploy the missing ones."""
        from ailedger.ledger.contracts import CONTRACT_NAMES, load_artifact

        contracts = self.config.setdefault("contracts", {}).setdefault(str(ledger.chain_id), {})
        for name in CONTRACT_NAMES:
            artifact = load_artifact(name)
            address = given.get(name) or contracts.get(name)
            if address:
                ledger.contract(artifact, address)
            else:
                if ledger.balance() == 0:
                    raise LedgerError(
                        f"account {ledger.account} has no ether on chain {ledger.chain_id} to "
                        "deploy the contracts: fund it, then run `ailedger init` again"
                    )
                address, _ = ledger.deploy(artifact)
            contracts[name] = address
            # saved after each contract, so a later failure never forgets a deployed one
            self.save()

    def _validate(self) -> None:
        chain = self.config.get("chain", {})
        backend = chain.get("backend", "embedded")
        if backend not in ("embedded", "rpc"):
            raise WorkspaceError(f"{self.config_path}: chain.backend must be embedded or rpc")
        if backend == "rpc" and not isinstance(chain.get("rpc"), str):
            raise WorkspaceError(f"{self.config_path}: chain.rpc must be the node's URL")
        for key, kind in _SETTING_TYPES.items():
            if key in chain:
                try:
                    kind(chain[key])
                except (TypeError, ValueError) as exc:
                    raise WorkspaceError(
                        f"{self.config_path}: chain.{key} is not a number"
                    ) from exc
        try:
            self.settings()
        except InputError as exc:
            raise WorkspaceError(f"{self.config_path}: {exc}") from exc


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise WorkspaceError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc
