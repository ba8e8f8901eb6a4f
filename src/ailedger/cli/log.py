"""``ailedger log`` (the workspace's audit log) and ``ailedger verify`` (as an auditor)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ailedger.cli._common import JsonOpt, RpcOpt, WorkspaceOpt, emit
from ailedger.config import passphrase_source, workspace_path
from ailedger.errors import InputError

__all__ = ["log_app", "verify"]

log_app = typer.Typer(help="The workspace's tamper-evident audit log.", no_args_is_help=True)
IndexArg = Annotated[int, typer.Argument(help="Entry index (from 0).", min=0)]


def _open(workspace: Path | None, *, writable: bool = True) -> tuple[Any, Any]:
    from ailedger.auditlog.log import AuditLog
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    return ws, AuditLog.for_workspace(ws, writable=writable)


def _read_records(source: str) -> list[Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from exc
    stripped = text.strip()
    if not stripped:
        raise InputError("no record given: one JSON object, or JSON lines")
    try:
        if stripped.startswith("{") and "\n" not in stripped:
            return [json.loads(stripped)]
        return [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise InputError(f"line {exc.lineno}: not JSON ({exc.msg})") from exc


@log_app.command()
def append(
    source: Annotated[str, typer.Argument(help="File of JSON lines, or - for stdin.")] = "-",
    sensitive: Annotated[
        list[str] | None,
        typer.Option("--sensitive", "-s", help="Field to commit instead of logging (repeat)."),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Append one JSON record, or JSON lines; each must be an object."""
    records = _read_records(source)
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise InputError(f"record {number} is not a JSON object")
    _, log = _open(workspace)
    with log:
        indexes = log.append_many(records, sensitive=tuple(sensitive or ()))
        size = log.size
    doc = {"first": indexes.start, "count": len(indexes), "size": size}
    emit(as_json, doc, f"appended {len(indexes)} record(s) at {indexes.start}; log size {size}")


@log_app.command()
def show(index: IndexArg, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Show entry INDEX with its private fields (unless erased)."""
    _, log = _open(workspace, writable=False)
    with log:
        entry = log.show(index)
    doc = {
        "index": entry.index,
        "leaf_hash": entry.leaf_hash.hex(),
        "record": entry.record,
        "private": entry.private,
    }
    emit(as_json, doc, json.dumps(doc, indent=2))


@log_app.command()
def checkpoint(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Sign a checkpoint of the log's current size (C2SP signed note) and print it."""
    ws, log = _open(workspace)
    with log:
        note = log.checkpoint(ws.signing_key(passphrase_source()))
    if as_json:
        emit(True, {"checkpoint": note.decode()})
    else:
        sys.stdout.write(note.decode())


@log_app.command()
def proof(
    index: IndexArg,
    out: Annotated[Path | None, typer.Option(help="Write the tlog-proof to this file.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a C2SP tlog-proof of entry INDEX (signing a checkpoint if needed)."""
    ws, log = _open(workspace)
    with log:
        if log.size <= index:
            raise InputError(f"the log has no entry {index} (size {log.size})")
        note = log.latest_checkpoint()
        if note is None or _size_of(note) <= index:
            note = log.checkpoint(ws.signing_key(passphrase_source()))
        receipt = log.receipt(index, checkpoint=note).to_bytes()
    if out is not None:
        from ailedger._fs import write_atomic

        write_atomic(out, receipt)
    if as_json:
        emit(True, {"index": index, "proof": receipt.decode()})
    elif out is None:
        sys.stdout.write(receipt.decode())


@log_app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="Folder to write the tiles into.")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a checkpoint and write the log as C2SP tlog-tiles into DIRECTORY."""
    ws, log = _open(workspace)
    with log:
        log.checkpoint(ws.signing_key(passphrase_source()))
        size = log.export(directory)
    emit(as_json, {"directory": str(directory), "size": size}, f"exported {size} entries")


@log_app.command()
def anchor(
    confirmations: Annotated[int, typer.Option(min=1, help="Blocks before final.")] = 1,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a checkpoint and anchor it on chain; show every anchor's status."""
    from ailedger.auditlog.anchoring import Anchorer

    ws, log = _open(workspace)
    passphrase = passphrase_source()
    with log, ws.ledger(rpc=rpc, passphrase=passphrase) as ledger:
        anchorer = Anchorer(
            log=log,
            registry=ws.anchor_registry(ledger),
            key=ws.signing_key(passphrase),
            confirmations=confirmations,
        )
        made = anchorer.anchor()
        records = anchorer.refresh()
    doc = {"anchored": made.to_json() if made else None, "anchors": [r.to_json() for r in records]}
    lines = ["nothing new to anchor"] if made is None else [f"anchored size {made.size}"]
    lines += [f"  size {r.size:<8} {r.status:<10} block {r.block_number}" for r in records]
    emit(as_json, doc, "\n".join(lines))


@log_app.command()
def erase(index: IndexArg, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Erase entry INDEX's private values for good (its proofs still verify)."""
    _, log = _open(workspace)
    with log:
        erased = log.erase(index)
    emit(
        as_json,
        {"index": index, "erased": erased},
        f"entry {index}: " + ("private values erased" if erased else "nothing left to erase"),
    )


@log_app.command()
def key(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Print the log's verifier key (give it to auditors)."""
    ws, log = _open(workspace, writable=False)
    with log:
        vkey = log.verifier_key(ws.public_key())
        origin = log.origin
    if as_json:
        emit(True, {"origin": origin, "verifier_key": vkey})
    else:
        sys.stdout.write(vkey + "\n")


def verify(
    export: Annotated[
        str | None, typer.Argument(help="Log export: a folder or an http(s) URL.")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="The log's verifier key (or --key-file).")
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help="File holding the verifier key.")] = None,
    registry: Annotated[
        str | None, typer.Option(help="AnchorRegistry address (with --rpc).")
    ] = None,
    entry: Annotated[
        list[str] | None, typer.Option(help="INDEX=FILE: check this entry's bytes (repeat).")
    ] = None,
    receipt: Annotated[
        list[str] | None, typer.Option(help="PROOF=ENTRY: check a tlog-proof (repeat).")
    ] = None,
    checkpoint: Annotated[
        list[Path] | None, typer.Option(help="A signed checkpoint you kept earlier (repeat).")
    ] = None,
    deep: Annotated[bool, typer.Option(help="Recompute every leaf of the stored log.")] = False,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a log as an outsider: signatures, every entry, consistency, on-chain anchors."""
    from ailedger.auditlog.anchoring import chain_anchors
    from ailedger.auditlog.log import origin_hash
    from ailedger.auditlog.note import parse_verifier_key
    from ailedger.auditlog.verify import (
        DirectorySource,
        HttpSource,
        verify_export,
        verify_stored,
    )
    from ailedger.ledger import AnchorRegistry
    from ailedger.workspace import Workspace

    ws = None
    if workspace is not None or export is None or rpc is None:
        path = workspace_path(workspace)
        if (path / "config.toml").exists() or export is None:
            ws = Workspace.open(path)
    vkey = _verifier_key(key, key_file, ws)
    verifier = parse_verifier_key(vkey)
    if ws is None and rpc is None:
        raise InputError("give a chain: --rpc URL --registry ADDRESS, or --workspace DIR")
    ledger = ws.ledger(rpc=rpc) if ws is not None else None
    if ledger is None:
        from ailedger.ledger import Ledger

        assert rpc is not None
        ledger = Ledger.connect(rpc)
    with ledger:
        if registry is not None:
            anchor_registry = AnchorRegistry(ledger=ledger, address=registry)
        elif ws is not None:
            anchor_registry = ws.anchor_registry(ledger)
        else:
            raise InputError("give the AnchorRegistry's address with --registry")
        anchors = chain_anchors(anchor_registry, origin_hash(verifier.name))
    if export is None:
        from ailedger.auditlog.log import AuditLog

        assert ws is not None
        with AuditLog.for_workspace(ws, writable=False) as log:
            report = verify_stored(log, verifier, anchors=anchors, deep=deep)
    else:
        source: Any = (
            HttpSource(export)
            if export.startswith(("http://", "https://"))
            else DirectorySource(Path(export))
        )
        report = verify_export(
            source,
            verifier,
            anchors=anchors,
            trusted_checkpoints=[_read_bytes(p) for p in checkpoint or []],
            entries=[_entry_pair(item) for item in entry or []],
            receipts=[_receipt_pair(item) for item in receipt or []],
        )
    doc = {
        "ok": True,
        "origin": report.origin,
        "size": report.size,
        "root": report.root.hex(),
        "checkpoints": report.checkpoints,
        "anchors": report.anchors,
        "entries_checked": report.entries_checked,
        "receipts_checked": report.receipts_checked,
    }
    emit(
        as_json,
        doc,
        f"verified {report.origin}: {report.size} entries, {report.checkpoints} checkpoint(s), "
        f"{report.anchors} on-chain anchor(s) consistent",
    )


def _verifier_key(key: str | None, key_file: Path | None, ws: Any) -> str:
    if key is not None:
        return key.strip()
    if key_file is not None:
        return _read_bytes(key_file).decode().strip()
    if ws is not None:
        from ailedger.auditlog.log import AuditLog

        with AuditLog.for_workspace(ws, writable=False) as log:
            return log.verifier_key(ws.public_key())
    raise InputError("give the log's verifier key with --key or --key-file")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def _entry_pair(item: str) -> tuple[int, bytes]:
    index, _, file = item.partition("=")
    if not index.isdigit() or not file:
        raise InputError(f"--entry takes INDEX=FILE, got {item!r}")
    return int(index), _read_bytes(Path(file))


def _receipt_pair(item: str) -> tuple[bytes, bytes]:
    proof_file, _, entry_file = item.partition("=")
    if not proof_file or not entry_file:
        raise InputError(f"--receipt takes PROOF_FILE=ENTRY_FILE, got {item!r}")
    return _read_bytes(Path(proof_file)), _read_bytes(Path(entry_file))


def _size_of(note: bytes) -> int:
    from ailedger.auditlog.checkpoint import Checkpoint

    return Checkpoint.parse(note.decode().split("\n\n", 1)[0] + "\n").size
