"""The workspace: one folder holding a party's keys, settings, chain state and data.

Layout (DESIGN.md)::

    .ailedger/
      config.toml        chain settings and contract addresses, per chain id
      keys/ethereum.json encrypted V3 keystore (0600)
      keys/ed25519.pem   encrypted Ed25519 signing key (0600), ed25519.pub beside it
      keys/log.key       the audit log's data key, which encrypts its record keys (0600)
      chain/             the embedded chain's state (SQLite) and its lock
      log.sqlite         the audit log
      blobs/             content-addressed files, by SHA-256

Nothing is global: every operation names its workspace. Folders are 0700 and files 0600 from
the moment they are created (public keys 0644); opening a workspace whose modes were loosened
tightens them and warns (:class:`InsecurePermissionsWarning`). ``init`` builds a new workspace
in a hidden sibling folder and renames it into place once complete, so a failed ``init``
leaves nothing behind (the folder of a run that was killed is removed by the next ``init``).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import tomllib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ailedger._fs import make_private_dir, tighten, write_atomic
from ailedger.crypto.keys import generate_signing_key, load_public_key, load_signing_key
from ailedger.errors import InputError, LedgerError, WorkspaceError, WorkspaceMissing
from ailedger.ledger._settings import LedgerSettings

if TYPE_CHECKING:
    from ailedger.consortium import Consortium
    from ailedger.ledger import AnchorRegistry, Keystore, Ledger, Signer

__all__ = ["DEFAULT_DIRNAME", "InsecurePermissionsWarning", "Workspace"]

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
    "priority_fee_wei": int,
    "gas_margin": float,
}

Passphrase = Callable[[], str]


class InsecurePermissionsWarning(UserWarning):
    """A workspace's files or folders were open to other users; they have been tightened."""


class _Unfunded(LedgerError):
    """The account cannot pay to deploy the contracts (``init`` keeps it, to be funded)."""


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

    @property
    def log_key_path(self) -> Path:
        return self.path / "keys" / "log.key"

    # -- life cycle -----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: Path,
        *,
        passphrase: Passphrase,
        rpc: str | None = None,
        anchor_registry: str | None = None,
        consortium: Consortium | None = None,
        unsafe_fast_kdf: bool = False,
    ) -> Workspace:
        """Create (or complete) the workspace at ``path`` and set up its contracts on chain.

        Existing keys and settings are kept, so running it again is safe: it finishes what an
        earlier run could not (e.g. deploying once the account is funded), or sets the workspace
        up on another chain (``rpc``). The contracts are deployed, unless the config (or
        ``anchor_registry``) names an address on that chain, whose code is then checked.

        A new workspace is built in a hidden sibling folder and renamed to ``path`` when done;
        any failure removes it, except an account without ether to deploy with: that workspace
        is kept (its account is the one to fund) and the error says so. A chain given by
        ``rpc`` is remembered only once its node has answered.

        With ``consortium`` (joining one, :mod:`ailedger.consortium`), the node and every
        contract come from it: nothing is deployed; the node must serve its chain id (else
        :class:`InputError`) and each address hold its contract's code (else
        :class:`~ailedger.errors.ContractNotFound`), checked before config.toml is written.
        """
        path = Path(os.path.abspath(path))
        try:
            if (path / "config.toml").exists():
                workspace = cls(path=path, config=_read_config(path / "config.toml"))
                workspace._secure_modes()
                workspace._complete(passphrase, rpc, anchor_registry, unsafe_fast_kdf, consortium)
                return workspace
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise WorkspaceError(
                    f"{path} exists and is not an ailedger workspace (no config.toml): "
                    "give a new or empty folder"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_abandoned_staging(path)
            # mkdtemp: an unpredictable name, created 0700
            staging = Path(
                tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".init", dir=path.parent)
            )
        except OSError as exc:
            raise _cannot_create(path, exc) from exc
        workspace = cls(path=staging, config={})
        try:
            (staging / _STAGING_OWNER).write_text(str(os.getpid()))
            workspace._complete(passphrase, rpc, anchor_registry, unsafe_fast_kdf, consortium)
        except _Unfunded:
            workspace._move_to(path)
            raise
        except OSError as exc:  # a full disk, a folder made read-only meanwhile: no half workspace
            shutil.rmtree(staging, ignore_errors=True)
            raise _cannot_create(path, exc) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        workspace._move_to(path)
        return workspace

    def _complete(
        self,
        passphrase: Passphrase,
        rpc: str | None,
        anchor_registry: str | None,
        unsafe_fast_kdf: bool,
        consortium: Consortium | None = None,
    ) -> None:
        config = self.config
        if consortium is not None:
            rpc = consortium.rpc
        config.setdefault("workspace", {})["format"] = FORMAT
        chain = config.setdefault("chain", {})
        if rpc is not None:
            chain["backend"] = "rpc"
            chain["rpc"] = rpc
            chain.pop("chain_id", None)
        chain.setdefault("backend", "embedded")
        self._validate()
        from ailedger.ledger import AnchorRegistry, Keystore

        for folder in (self.path / "keys", self.chain_dir, self.blobs_dir):
            make_private_dir(folder)
        if not self.keystore_path.exists():
            Keystore.create(self.keystore_path, passphrase(), unsafe_fast_kdf=unsafe_fast_kdf)
        if not self.signing_key_path.exists():
            generate_signing_key(self.signing_key_path, passphrase())
        with self.ledger(passphrase=passphrase) as ledger:
            if consortium is not None and ledger.chain_id != consortium.chain_id:
                raise InputError(
                    f"the consortium {consortium.name!r} is on chain {consortium.chain_id}, "
                    f"but its node {consortium.rpc} serves chain {ledger.chain_id}"
                )
            chain["chain_id"] = ledger.chain_id
            if consortium is not None:  # each contract's code checked before anything is saved
                from ailedger.ledger.contracts import load_artifact

                for name, address in consortium.contracts.items():
                    ledger.contract(load_artifact(name), address)
                config["consortium"] = {"name": consortium.name}
            # Saved once the node answered, before deploying, so a run that cannot deploy yet
            # (no funds) keeps the chosen chain for the next `init`; a bad --rpc is not kept.
            self.save()
            given = {AnchorRegistry.NAME: anchor_registry} if anchor_registry else {}
            if consortium is not None:
                given = dict(consortium.contracts)
            self._setup_contracts(ledger, given)
        self._create_log()
        if consortium is not None:
            from ailedger.consortium import save_to_workspace

            save_to_workspace(self, consortium)
        self.save()

    def _move_to(self, path: Path) -> None:
        """Rename this (staging) workspace folder to ``path``, a new or empty folder."""
        (self.path / _STAGING_OWNER).unlink(missing_ok=True)
        try:
            os.rename(self.path, path)
        except OSError as exc:
            # e.g. another `init` of the same folder finished first: that one stands
            shutil.rmtree(self.path, ignore_errors=True)
            raise WorkspaceError(
                f"cannot move the new workspace into {path}: {exc.strerror}"
            ) from exc
        self.path = path
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _create_log(self) -> None:
        from ailedger.auditlog.backend import open_log
        from ailedger.auditlog.log import default_origin

        log_config = self.config.setdefault("log", {})
        log_config.setdefault("origin", default_origin(self.public_key()))
        # in the store [log] backend names: a PostgreSQL log gets no log.sqlite
        open_log(self).close()

    @classmethod
    def open(cls, path: Path) -> Workspace:
        """Open an existing workspace; a missing or malformed one raises WorkspaceError.

        Folders and files open to other users are made private, with a warning
        (:class:`InsecurePermissionsWarning`).
        """
        path = Path(os.path.abspath(path))
        config_path = path / "config.toml"
        if not config_path.is_file():
            raise WorkspaceMissing(f"no ailedger workspace at {path}: run `ailedger init` first")
        workspace = cls(path=path, config=_read_config(config_path))
        workspace._validate()
        workspace._secure_modes()
        return workspace

    def _secure_modes(self) -> None:
        """Tighten folders to 0700 and files to 0600 (public keys 0644); warn if any was open.

        The workspace folder itself, ``keys/``, ``chain/`` and ``blobs/`` and the files directly
        in the workspace, ``keys/`` and ``chain/`` (a blob folder of 0700 keeps its files
        private, so they are not each looked at on every open).
        """
        changed = [
            str(p.relative_to(self.path.parent))
            for p, mode in self._private_paths()
            if tighten(p, mode) is not None
        ]
        if changed:
            warnings.warn(
                f"{self.path} had {len(changed)} file(s) or folder(s) open to other users "
                f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}): "
                "made them private",
                InsecurePermissionsWarning,
                stacklevel=3,
            )

    def _private_paths(self) -> Iterator[tuple[Path, int]]:
        folders = [self.path, self.path / "keys", self.chain_dir, self.blobs_dir]
        for folder in folders:
            yield folder, 0o700
        for folder in folders[:3]:
            try:
                children = sorted(folder.iterdir())
            except (FileNotFoundError, NotADirectoryError):
                continue
            for child in children:
                if not child.is_symlink() and child.is_file():
                    yield child, 0o644 if child.suffix == ".pub" else 0o600

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

        Without ``passphrase`` the ledger can read but not sign. With ``[chain] fee_policy =
        "scheduled"`` a signing ledger's transactions are timed and priced by the fee scheduler
        (:mod:`ailedger.sentinel.fee_advice`).
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
            ledger = Ledger.connect(
                rpc,
                signer=signer,
                settings=self.settings(),
                expected_chain_id=int(expected) if expected is not None else None,
            )
        else:
            address = signer.address if signer else self.keystore().address
            ledger = Ledger.embedded(
                self.chain_dir,
                signer=signer,
                genesis_balances={address: EMBEDDED_FUNDS},
                lock_timeout=float(chain.get("lock_timeout", 10.0)),
                settings=self.settings(),
            )
        if signer is not None and chain.get("fee_policy", "default") != "default":
            # every transaction this ledger sends is timed and priced by the fee scheduler
            try:
                from ailedger.sentinel.fee_advice import use_configured_fees

                use_configured_fees(ledger, chain)
            except BaseException:
                ledger.close()  # releases the embedded chain's lock
                raise
        return ledger

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
        from ailedger.ledger.contracts import WORKSPACE_CONTRACTS, load_artifact

        contracts = self.config.setdefault("contracts", {}).setdefault(str(ledger.chain_id), {})
        for name in WORKSPACE_CONTRACTS:
            artifact = load_artifact(name)
            address = given.get(name) or contracts.get(name)
            if address:
                ledger.contract(artifact, address)
            else:
                if ledger.balance() == 0:
                    raise _Unfunded(
                        f"account {ledger.account} has no ether on chain {ledger.chain_id} to "
                        "deploy the contracts: fund it (on a development node such as anvil: "
                        f"`ailedger chain fund {ledger.account}`), then run `ailedger init` again"
                    )
                address, _ = ledger.deploy(artifact)
            contracts[name] = address
            # saved after each contract, so a later failure never forgets a deployed one
            self.save()

    def _validate(self) -> None:
        from ailedger._configfile import check_config

        check_config(self.config, str(self.config_path))
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


_STAGING_OWNER = ".init-pid"


def _cannot_create(path: Path, exc: OSError) -> WorkspaceError:
    """The one-line error (exit 2) for a file-system failure while creating ``path``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return WorkspaceError(f"cannot create the workspace {path}: {reason}{where}")


def _remove_abandoned_staging(path: Path) -> None:
    """Remove the staging folders of ``init`` runs for ``path`` that were killed midway (their
    process is gone); a run still going keeps its own."""
    for staging in path.parent.glob(f".{glob.escape(path.name)}.*.init"):
        try:
            pid = int((staging / _STAGING_OWNER).read_text()[:20])
        except (OSError, ValueError):
            continue  # not ours, or killed before it said whose it is: left alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(staging, ignore_errors=True)
        except PermissionError:
            continue  # another user's live process


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise WorkspaceError(f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise WorkspaceError(f"{path} is not UTF-8 (invalid byte at offset {exc.start})") from exc
    except ValueError as exc:  # an integer longer than sys.get_int_max_str_digits()
        raise WorkspaceError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from exc
