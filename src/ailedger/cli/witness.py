"""``ailedger witness``: run a witness for other logs, and name the witnesses of this one."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ailedger.cli._common import JsonOpt, WorkspaceOpt, emit, err_console
from ailedger.config import workspace_path
from ailedger.errors import InputError, VerificationError, WorkspaceError

__all__ = [
    "collect_cosignatures",
    "configured_witnesses",
    "require_cosignatures",
    "witness_app",
]

witness_app = typer.Typer(
    help="Witnesses (C2SP tlog-witness): cosign other logs' checkpoints, or name this log's.",
    no_args_is_help=True,
)
StateOpt = Annotated[
    Path, typer.Option("--state", help="The witness's state folder (its key and what it saw).")
]
NameOpt = Annotated[
    str | None,
    typer.Option("--name", help="The witness's key name, on first use (default: from the key)."),
]


@witness_app.command()
def serve(
    state: StateOpt,
    follow: Annotated[
        list[str],
        typer.Option(help="ORIGIN=VERIFIER_KEY of a log to witness (repeat)."),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 7380,
    name: NameOpt = None,
) -> None:
    """Serve add-checkpoint: cosign each followed log's checkpoints that extend the last one."""
    from ailedger.auditlog.note import parse_verifier_key
    from ailedger.auditlog.witness import Witness, WitnessServer

    logs: dict[str, list[Any]] = {}
    for item in follow:
        origin, sep, vkey = item.partition("=")
        if not sep or not origin or not vkey:
            raise InputError(f"--follow takes ORIGIN=VERIFIER_KEY, got {item!r}")
        logs.setdefault(origin, []).append(parse_verifier_key(vkey.strip()))
    with Witness.open(state, logs, name=name) as witness:
        try:
            server = WitnessServer(
                witness, host, port, log=lambda line: err_console.print(line, markup=False)
            )
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        stop = threading.Event()

        def _stop(signum: int, frame: Any) -> None:
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, _stop)
        err_console.print(
            f"witness {witness.name} on {server.url} following {len(logs)} log(s)\n"
            f"verifier key {witness.verifier.verifier_key()}",
            markup=False,
        )
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    err_console.print("witness stopped")


@witness_app.command()
def key(state: StateOpt, name: NameOpt = None, as_json: JsonOpt = False) -> None:
    """Print the witness's verifier key (made on first use), for logs and verifiers."""
    from ailedger.auditlog.witness import WitnessVerifier, load_witness_key

    key_name, private = load_witness_key(state, name=name)
    vkey = WitnessVerifier.from_public_key(key_name, private.public_key()).verifier_key()
    if as_json:
        emit(True, {"name": key_name, "verifier_key": vkey})
    else:
        sys.stdout.write(vkey + "\n")


@witness_app.command()
def add(
    url: Annotated[str, typer.Argument(help="The witness's URL (its submission prefix).")],
    witness_key: Annotated[str, typer.Argument(metavar="KEY", help="Its verifier key.")],
    quorum: Annotated[
        int | None, typer.Option(min=1, help="Cosignatures `log checkpoint` requires.")
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the witness at URL to cosign this log's checkpoints (kept in config.toml)."""
    from ailedger.auditlog.witness import WitnessEndpoint, parse_witness_key
    from ailedger.workspace import Workspace

    verifier = parse_witness_key(witness_key)
    WitnessEndpoint(url=url, verifier=verifier)
    ws = Workspace.open(workspace_path(workspace))
    section = ws.config.setdefault("witness", {})
    endpoints, _ = configured_witnesses(ws)
    servers = [
        {"url": e.url, "key": e.verifier.verifier_key()}
        for e in endpoints
        if e.verifier.name != verifier.name
    ]
    servers.append({"url": url, "key": verifier.verifier_key()})
    section["servers"] = servers
    if quorum is not None:
        section["quorum"] = quorum
    same_key = [e.verifier.name for e in endpoints if e.verifier.raw() == verifier.raw()]
    if any(name != verifier.name for name in same_key):
        raise InputError(
            f"the key of {verifier.name} is already configured as {same_key[0]}: one witness "
            "counts once, whatever its names"
        )
    if int(section.get("quorum", 0)) > len(servers):
        raise InputError(f"a quorum of {section['quorum']} needs as many witnesses")
    ws.save()
    emit(
        as_json,
        {"witnesses": servers, "quorum": section.get("quorum", len(servers))},
        f"{len(servers)} witness(es); `log checkpoint` requires "
        f"{section.get('quorum', len(servers))}",
    )


def configured_witnesses(ws: Any) -> tuple[list[Any], int]:
    """The witnesses in the workspace's config.toml and the quorum (default: all of them)."""
    from ailedger.auditlog.witness import WitnessEndpoint, parse_witness_key

    section = ws.config.get("witness", {})
    where = f"{ws.config_path} [witness]"
    if not isinstance(section, dict):
        raise WorkspaceError(f"{where} must be a table")
    servers = section.get("servers", [])
    if not isinstance(servers, list):
        raise WorkspaceError(f"{where}: servers must be a list of {{url, key}}")
    endpoints = []
    for number, item in enumerate(servers, 1):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise WorkspaceError(f"{where}: server {number} needs a url and a key")
        try:
            endpoints.append(
                WitnessEndpoint(url=item["url"], verifier=parse_witness_key(item.get("key", "")))
            )
        except InputError as exc:
            raise WorkspaceError(f"{where}: server {number}: {exc}") from exc
    quorum = section.get("quorum", len(endpoints))
    if isinstance(quorum, bool) or not isinstance(quorum, int) or not 0 <= quorum <= len(endpoints):
        raise WorkspaceError(f"{where}: quorum must be between 1 and {len(endpoints)}")
    return endpoints, quorum


def collect_cosignatures(ws: Any, log: Any, note: bytes) -> bytes:
    """Cosign ``note`` by the configured witnesses; one stderr line per witness that failed.

    Returns the cosigned note; raises :class:`VerificationError` (exit 1) below the quorum,
    after storing the cosignatures that did arrive.
    """
    from ailedger.auditlog.witness import cosign_checkpoint

    endpoints, quorum = configured_witnesses(ws)
    if not endpoints:
        return note
    note, cosigned = cosign_checkpoint(
        log, note, endpoints, report=lambda line: err_console.print(line, markup=False)
    )
    # one public key under two names (or two URLs) is one witness: count keys, not names
    keys = {e.verifier.raw() for e in cosigned}
    if len(keys) < quorum:
        raise VerificationError(
            f"witness quorum not met: {len(keys)} of {len({e.verifier.raw() for e in endpoints})}"
            f" witnesses cosigned, {quorum} required"
        )
    return note


def require_cosignatures(
    note: bytes | None, witness_keys: list[str], quorum: int | None, *, size: int, root: bytes
) -> list[list[str]]:
    """For ``verify --witness``: the witnesses that cosigned ``note``, one entry per public key.

    ``note`` is the latest checkpoint just verified (``size``, ``root``); fewer than ``quorum``
    (default: all) distinct keys' cosignatures of ``witness_keys`` raise
    :class:`VerificationError` (exit 1). Each entry lists the names under which that one key
    cosigned, in the order given: a key given under two names is one witness, reported once.
    """
    from ailedger.auditlog.witness import parse_witness_key, verify_cosigned

    if not witness_keys:
        if quorum is not None:
            raise InputError("--witness-quorum needs the witnesses' keys (--witness KEY)")
        return []
    if note is None:
        raise VerificationError("there is no checkpoint to check the witnesses' cosignatures on")
    verifiers = [parse_witness_key(k) for k in witness_keys]
    cosigned = verify_cosigned(note, verifiers, quorum)
    if (cosigned.checkpoint.size, cosigned.checkpoint.root_hash) != (size, root):
        raise VerificationError("the cosigned checkpoint is not the checkpoint that was verified")
    signed = {(c.name, c.key_id) for c in cosigned.cosignatures}
    names: dict[bytes, list[str]] = {}  # in the order the keys were given
    for v in verifiers:
        if (v.name, v.key_id) in signed and v.name not in names.get(v.raw(), []):
            names.setdefault(v.raw(), []).append(v.name)
    return list(names.values())
