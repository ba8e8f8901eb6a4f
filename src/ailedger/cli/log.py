"""``ailedger log`` (the workspace's audit log) and ``ailedger verify`` (as an auditor)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from ailedger._input import iter_json_lines, parse_json
from ailedger.cli._common import JsonOpt, RpcOpt, Ticker, WorkspaceOpt, emit, progress
from ailedger.config import passphrase_source, workspace_path
from ailedger.errors import InputError

if TYPE_CHECKING:
    from ailedger.auditlog.anchoring import Anchorer, AnchorRecord

__all__ = ["log_app", "verify"]

log_app = typer.Typer(help="The workspace's tamper-evident audit log.", no_args_is_help=True)
IndexArg = Annotated[int, typer.Argument(help="Entry index (from 0).", min=0)]


def _open(workspace: Path | None, *, writable: bool = True) -> tuple[Any, Any]:
    from ailedger.auditlog.log import AuditLog
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    return ws, AuditLog.for_workspace(ws, writable=writable)


def _read_records(stream: IO[bytes], what: str, line: list[int]) -> Iterator[dict[str, Any]]:
    """The records of ``stream``, one JSON object per line, read as they are consumed.

    ``line[0]`` follows the number of the line last read, for error messages.
    """
    for number, value in iter_json_lines(stream, what=what):
        line[0] = number
        if not isinstance(value, dict):
            raise InputError(f"{what} line {number}: the record is not a JSON object")
        yield value


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
    """Append JSON lines (one JSON object per line): all of them, or none if any is bad."""
    names = sensitive or []
    for at, name in enumerate(names):
        if name in names[:at]:
            raise InputError(f"--sensitive {name!r} is given twice")
    what = "stdin" if source == "-" else source
    try:
        stream: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from exc
    line = [0]
    with contextlib.closing(stream) if source != "-" else contextlib.nullcontext():
        _, log = _open(workspace)
        with log:
            try:
                indexes = log.append_many(_read_records(stream, what, line), sensitive=names)
            except InputError as exc:
                message = str(exc)
                if not message.startswith(f"{what} line "):
                    message = f"{what} line {line[0]}: {message}"
                raise InputError(f"{message} (nothing was appended)") from exc
            except OSError as exc:
                raise InputError(
                    f"cannot read {what} after line {line[0]}: {exc.strerror} "
                    "(nothing was appended)"
                ) from exc
            size = log.size
    if not indexes:
        raise InputError(f"no record given in {what}: one JSON object per line")
    doc = {"first": indexes.start, "count": len(indexes), "size": size}
    emit(as_json, doc, f"appended {len(indexes)} record(s) at {indexes.start}; log size {size}")


@log_app.command()
def show(
    index: IndexArg,
    no_private: Annotated[
        bool,
        typer.Option(
            "--no-private",
            help="Show the entry without its private values (no passphrase asked).",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show entry INDEX (JSON on stdout, also without --json).

    Its private values (fields committed instead of logged) are shown once the workspace's
    passphrase is given ($AILEDGER_PASSPHRASE, or asked on the terminal); erased ones are null.
    """
    ws, log = _open(workspace, writable=False)
    with log:
        entry = log.show(index)
    private: dict[str, Any] | None = entry.private
    if no_private:
        private = None
    elif any(value is not None for value in entry.private.values()):
        try:
            ws.signing_key(passphrase_source())  # a wrong passphrase: WrongPassphrase, exit 1
        except InputError as exc:
            raise InputError(
                f"entry {index} has private values: {exc} (or give --no-private)"
            ) from exc
    doc = {
        "index": entry.index,
        "leaf_hash": entry.leaf_hash.hex(),
        "record": entry.record,
        "private": private,
    }
    emit(as_json, doc, json.dumps(doc, indent=2, sort_keys=True))


@log_app.command()
def search(
    actor: Annotated[
        str | None, typer.Option(help="Entries whose actor is this (decisions).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Entries about this model: its digest (sha256:<hex> or 0x<hex>), or a prefix."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Entries at or after this time (RFC 3339, or a date: 2026-12-01)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Entries before this time (RFC 3339, or a date).")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            help="FIELD=VALUE: the record's FIELD (dots for nested fields: fields.task) equals "
            "VALUE (JSON, else text); repeat to require all.",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many matches.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find entries by actor, model, time range or field, oldest first.

    Matches go to stdout, one per line: with --json, JSON lines ({"index", "leaf_hash",
    "record"}); else index, time, type and the record. Private values are committed, so they
    cannot be searched. A search that finds nothing exits 0 with no output.
    """
    query = _Query.parse(actor=actor, model=model, since=since, until=until, where=where or [])
    ws = _workspace(workspace)
    found = 0
    with _open_any(ws) as log:
        size = log.size
        tick = Ticker()
        for index, data in log.entries(0, size):
            tick(f"searched {index} of {size} entries")
            record = query.match(data)
            if record is None:
                continue
            found += 1
            if as_json:
                line = {"index": index, "leaf_hash": _leaf_hash(data), "record": record}
                sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
            else:
                sys.stdout.write(_summary_line(index, record) + "\n")
            if limit is not None and found >= limit:
                break
    sys.stdout.flush()
    progress(f"{found} match(es) in {size} entries")


@log_app.command()
def info(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The log at a glance: size, origin, latest checkpoint, anchors, where it is stored."""
    from ailedger.auditlog.backend import log_settings
    from ailedger.auditlog.checkpoint import Checkpoint

    ws = _workspace(workspace)
    settings = log_settings(ws.config)
    with _open_any(ws) as log:
        size = log.size
        origin = log.origin
        note = log.latest_checkpoint()
        rows = log.anchor_rows()
    latest = None
    if note is not None:
        body, _, signatures = note.decode().partition("\n\n")
        parsed = Checkpoint.parse(body + "\n")
        latest = {
            "size": parsed.size,
            "root": parsed.root_hash.hex(),
            "signatures": sum(1 for line in signatures.splitlines() if line.startswith("— ")),
        }
    anchors = [
        {
            "size": int(size_),
            "root": bytes(root).hex(),
            "chain_id": int(chain_id),
            "registry": registry,
            "tx_hash": tx_hash,
            "block": block,
            "status": status,
        }
        for _id, size_, root, chain_id, registry, tx_hash, block, _block_hash, status in rows
    ]
    chain = ws.config.get("chain", {})
    store: dict[str, str] = {"backend": settings.backend}
    if settings.backend == "sqlite":
        store["path"] = str(ws.log_path)
    else:
        from ailedger.auditlog.pglog import describe_dsn

        assert settings.dsn is not None
        store["dsn"] = describe_dsn(settings.dsn)
    doc = {
        "workspace": str(ws.path),
        "origin": origin,
        "size": size,
        "latest_checkpoint": latest,
        "anchors": anchors,
        "store": store,
        "chain": {
            "backend": chain.get("backend"),
            "chain_id": chain.get("chain_id"),
            "rpc": chain.get("rpc"),
        },
    }
    lines = [
        f"origin      {origin}",
        f"size        {size}",
        "checkpoint  "
        + (
            "none yet (ailedger log checkpoint)"
            if latest is None
            else f"size {latest['size']}, root {latest['root']}, {latest['signatures']} "
            "signature(s)"
        ),
    ]
    if anchors:
        top = anchors[-1]
        lines.append(
            f"anchors     {len(anchors)}; latest: size {top['size']}, {top['status']}, "
            f"block {top['block']}, chain {top['chain_id']}"
        )
    else:
        lines.append("anchors     none yet (ailedger log anchor)")
    where = store.get("path") or store.get("dsn")
    lines.append(f"store       {settings.backend} ({where})")
    node = f", {chain.get('rpc')}" if chain.get("rpc") else ""
    lines.append(f"chain       {chain.get('chain_id')} ({chain.get('backend')}{node})")
    emit(as_json, doc, "\n".join(lines))


def _workspace(workspace: Path | None) -> Any:
    from ailedger.workspace import Workspace

    return Workspace.open(workspace_path(workspace))


def _open_any(ws: Any) -> Any:
    """The workspace's log, read-only, in whichever store its config names."""
    from ailedger.auditlog.backend import open_log

    return open_log(ws, writable=False)


def _leaf_hash(data: bytes) -> str:
    from ailedger.auditlog import _merkle

    return _merkle.leaf_hash(data).hex()


def _summary_line(index: int, record: dict[str, Any]) -> str:
    """One line for people: index, time, type (or event kind), then the record's JSON."""
    kind = record.get("kind") if record.get("type") == "event" else record.get("type")
    return f"{index:>7}  {record.get('time', '-')}  {kind or '-'}  " + json.dumps(
        record, sort_keys=True, separators=(",", ":")
    )


class _Query:
    """What ``log search`` looks for; every criterion given must hold (AND)."""

    def __init__(
        self,
        *,
        actor: str | None,
        model: str | None,
        since: datetime | None,
        until: datetime | None,
        where: list[tuple[list[str], Any]],
    ) -> None:
        self.actor = actor
        self.model = model
        self.since = since
        self.until = until
        self.where = where

    @classmethod
    def parse(
        cls,
        *,
        actor: str | None,
        model: str | None,
        since: str | None,
        until: str | None,
        where: list[str],
    ) -> _Query:
        """Check the options (InputError, exit 2, for a bad time or FIELD=VALUE)."""
        pairs = []
        for item in where:
            field, sep, text = item.partition("=")
            path = field.split(".")
            if not sep or not all(path):
                raise InputError(f"--where takes FIELD=VALUE (FIELD may be a.b), got {item!r}")
            value: Any
            if text.lstrip()[:1] in ("[", "{"):
                # an array or object must parse, within the same bounds as any outside JSON
                value = parse_json(text, what=f"--where {field}")
            else:
                try:
                    value = json.loads(text)  # a number, true/false/null or a "quoted" string
                except ValueError:
                    value = text
            pairs.append((path, value))
        return cls(
            actor=actor,
            model=_model_key(model) if model is not None else None,
            since=_time(since, "--since") if since is not None else None,
            until=_time(until, "--until") if until is not None else None,
            where=pairs,
        )

    def match(self, data: bytes) -> dict[str, Any] | None:
        """The entry's record if it matches, else None (an entry that is not a JSON object
        never matches)."""
        try:
            record = json.loads(data)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        if self.actor is not None and record.get("actor") != self.actor:
            return None
        if self.model is not None:
            found = record.get("model")
            if not isinstance(found, str) or not _model_key(found).startswith(self.model):
                return None
        if self.since is not None or self.until is not None:
            when = record.get("time")
            try:
                at = _time(when, "time") if isinstance(when, str) else None
            except InputError:
                at = None
            if at is None:
                return None
            if self.since is not None and at < self.since:
                return None
            if self.until is not None and at >= self.until:
                return None
        for path, value in self.where:
            found = record
            for part in path:
                found = found.get(part, _MISSING) if isinstance(found, dict) else _MISSING
            if found is _MISSING or not _same(found, value):
                return None
        return record


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _model_key(text: str) -> str:
    """A model digest in one form (lower-case hex, no ``sha256:`` or ``0x``) for comparing."""
    lowered = text.strip().lower()
    for prefix in ("sha256:", "0x"):
        if lowered.startswith(prefix):
            return lowered[len(prefix) :]
    return lowered


def _time(text: str, what: str) -> datetime:
    """An RFC 3339 time or an ISO date, as an aware datetime (no zone given: UTC)."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(
            f"{what}: {text[:40]!r} is not a time (RFC 3339, e.g. 2026-12-01T09:30:00Z, or a date)"
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@log_app.command()
def checkpoint(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Sign a checkpoint of the log's current size (C2SP signed note), have the witnesses in
    config.toml cosign it, and print it."""
    from ailedger.cli.witness import collect_cosignatures
    from ailedger.errors import WorkspaceError

    ws, log = _open(workspace)
    with log:
        signing_key = ws.signing_key(passphrase_source())
        with ws.ledger() as ledger:
            try:
                registry = ws.anchor_registry(ledger)
            except WorkspaceError:  # no registry on this chain yet: nothing was anchored there
                registry = None
            # the library compares the log with the operator's anchors before signing
            note = log.checkpoint(signing_key, registry=registry, operator=ws.keystore().address)
        note = collect_cosignatures(ws, log, note)
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
    """Print a C2SP tlog-proof of entry INDEX (signing a checkpoint if needed).

    The proof is verified, as its reader will, before it is printed: a damaged log gives exit
    code 1, never a proof that does not verify.
    """
    from ailedger.auditlog.proof import verify_receipt

    ws, log = _open(workspace)
    with log:
        if log.size <= index:
            raise InputError(f"the log has no entry {index} (size {log.size})")
        note = log.latest_checkpoint()
        if note is None or _size_of(note) <= index:
            _check_published(ws, log)
            note = log.checkpoint(ws.signing_key(passphrase_source()))
        made = log.receipt(index, checkpoint=note)
        verify_receipt(
            made,
            [log.verifier(ws.public_key())],
            entry=log.entry_data(index),
            origin=log.origin,
        )
        receipt = made.to_bytes()
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
    """Sign a checkpoint and write the log as C2SP tlog-tiles into DIRECTORY.

    Refuses (exit 1) when the log conflicts with an anchor already published on the
    workspace's chain: a signed checkpoint of a forked history is never written.
    """
    from ailedger._fs import write_atomic
    from ailedger.auditlog.binding import BINDING_PATH, sign_binding

    ws, log = _open(workspace)
    with log:
        signing_key = ws.signing_key(passphrase_source())
        _check_published(ws, log)
        log.checkpoint(signing_key)
        size = log.export(directory)
        binding = _binding(ws, log.origin)
    # Who anchors the log, signed with the log's key: an auditor reads that account's anchors.
    write_atomic(directory / BINDING_PATH, sign_binding(binding, signing_key))
    doc = {
        "directory": str(directory),
        "size": size,
        "anchoring": [c.to_json() for c in binding.chains],
    }
    emit(as_json, doc, f"exported {size} entries")


def _check_published(ws: Any, log: Any) -> None:
    """Refuse a log that conflicts with its operator's anchors on the workspace's chain."""
    from ailedger.auditlog.anchoring import chain_anchors, check_published
    from ailedger.errors import WorkspaceError

    with ws.ledger() as ledger:
        try:
            registry = ws.anchor_registry(ledger)
        except WorkspaceError:  # no registry on this chain yet: nothing was anchored there
            return
        operator = ws.keystore().address
        check_published(log, chain_anchors(registry, log.origin_hash, operator=operator))


def _binding(ws: Any, origin: str) -> Any:
    """The workspace's anchor binding: its AnchorRegistry and account on every chain it uses."""
    from ailedger.auditlog.binding import AnchorBinding, ChainAnchoring

    operator = ws.keystore().address
    chains = [
        ChainAnchoring(
            chain_id=int(chain_id), registry=str(names["AnchorRegistry"]), operator=operator
        )
        for chain_id, names in sorted(ws.config.get("contracts", {}).items())
        if isinstance(names, dict) and names.get("AnchorRegistry")
    ]
    return AnchorBinding(origin=origin, chains=tuple(chains))


@log_app.command()
def anchor(
    confirmations: Annotated[int, typer.Option(min=1, help="Blocks before final.")] = 1,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a checkpoint and anchor it on chain; show every anchor's status."""
    from ailedger.auditlog.anchoring import Anchorer
    from ailedger.sentinel.fee_advice import DEFAULT_WAIT_BLOCKS, configured_fee_advisor

    ws, log = _open(workspace)
    passphrase = passphrase_source()
    with log, ws.ledger(rpc=rpc, passphrase=passphrase) as ledger:
        anchorer = Anchorer(
            log=log,
            registry=ws.anchor_registry(ledger),
            key=ws.signing_key(passphrase),
            confirmations=confirmations,
            fee_advisor=configured_fee_advisor(ws.config.get("chain", {}), ledger),
        )
        made = anchorer.anchor()
        if anchorer.waiting:
            wait = ws.config.get("chain", {}).get("fee_wait_blocks", DEFAULT_WAIT_BLOCKS)
            made = _anchor_when_advised(anchorer, int(wait))
        records = anchorer.refresh()
    doc = {"anchored": made.to_json() if made else None, "anchors": [r.to_json() for r in records]}
    lines = ["nothing new to anchor"] if made is None else [f"anchored size {made.size}"]
    lines += [f"  size {r.size:<8} {r.status:<10} block {r.block_number}" for r in records]
    emit(as_json, doc, "\n".join(lines))


_STALL_SECONDS = 30.0
"""Seconds without a new block after which a waiting anchor is sent with the advised fees."""


def _anchor_when_advised(anchorer: Anchorer, within: int) -> AnchorRecord | None:
    """Ask the fee advisor again at each new block until it says send (it does by the
    ``within`` bound); a chain that makes no block for ``_STALL_SECONDS`` (an idle node that
    mines on demand, the embedded chain at once) gets the anchor with the advised fees."""
    import time

    ledger = anchorer.ledger
    stall = 0.0 if ledger.backend == "embedded" else _STALL_SECONDS
    last, since = ledger.block_number(), time.monotonic()
    made: AnchorRecord | None = None
    while anchorer.waiting:
        advice = anchorer.last_advice
        waited = last - (anchorer.pending_since or last)
        progress(
            f"anchor waits for a cheaper base fee: block {last}, {waited} of {within} blocks "
            f"({advice.reason if advice else 'waiting'})"
        )
        while (head := ledger.block_number()) == last:
            if time.monotonic() - since >= stall:
                progress("no new block: anchoring now with the advised fees")
                return anchorer.anchor(force=True)
            time.sleep(max(ledger.settings.poll_interval, 0.05))
        last, since = head, time.monotonic()
        made = anchorer.anchor()
    return made


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
    operator: Annotated[
        str | None,
        typer.Option(
            help="The account that anchors the log (checked against the export's signed "
            "binding; default: the binding's, or the workspace's own account).",
            show_default=False,
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(help="AnchorRegistry address (default: the export's signed binding)."),
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
    witness: Annotated[
        list[str] | None,
        typer.Option(help="A witness's verifier key: require its cosignature (repeat)."),
    ] = None,
    witness_quorum: Annotated[
        int | None, typer.Option(min=1, help="How many --witness must cosign (default: all).")
    ] = None,
    deep: Annotated[bool, typer.Option(help="Recompute every leaf of the stored log.")] = False,
    allow_older: Annotated[
        bool,
        typer.Option(
            help="Accept an export older than the operator's newest anchor as a verified "
            "prefix (the newer anchors are listed as unchecked)."
        ),
    ] = False,
    deadline: Annotated[
        float,
        typer.Option(
            min=1.0,
            max=86400.0,
            help="Seconds to read a whole export over http(s) in (a slow or endless export "
            "gives exit 3).",
        ),
    ] = 600.0,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a log as an outsider: signatures, every entry, consistency, on-chain anchors.

    The outside evidence is a chain (--rpc, or a workspace's), witnesses' cosignatures
    (--witness, no chain needed), or both; with neither, the result says that anchors went
    unchecked and only the log's own key vouches for the history.

    Only the anchors of the log's operator count: the account named by the export's binding
    (signed with the log's key), or --operator, or for the workspace's own log its account.

    An export older than one of those anchors is checked in full and then refused (exit 1,
    saying it is older, not that the log was truncated: without the newer entries the two
    look alike); --allow-older accepts it as a verified prefix (exit 0, with a warning).
    """
    from ailedger.auditlog.anchoring import chain_anchors
    from ailedger.auditlog.log import origin_hash
    from ailedger.auditlog.note import parse_verifier_key
    from ailedger.auditlog.verify import (
        DirectorySource,
        HttpSource,
        fetch_capped,
        read_binding,
        verify_export,
        verify_stored,
    )
    from ailedger.ledger import AnchorRegistry, parse_address
    from ailedger.workspace import Workspace

    ws = None
    if workspace is not None or export is None or rpc is None:
        path = workspace_path(workspace)
        if (path / "config.toml").exists() or export is None:
            ws = Workspace.open(path)
    vkey = _verifier_key(key, key_file, ws)
    verifier = parse_verifier_key(vkey)
    pinned = parse_address(operator, "--operator") if operator is not None else None
    if registry is not None:
        registry = parse_address(registry, "--registry")
    source: Any = None
    binding = None
    if export is not None:
        source = (
            HttpSource(export, total=deadline)
            if export.startswith(("http://", "https://"))
            else DirectorySource(Path(export))
        )
        binding = read_binding(source, verifier)
    # The chain is read when one is given (--rpc, --workspace), for the workspace's own stored
    # log, or from a workspace found by default, unless witnesses are the outside evidence.
    use_chain = (
        rpc is not None
        or workspace is not None
        or export is None
        or (ws is not None and (not witness or pinned is not None or registry is not None))
    )
    anchors: list[Any] = []
    where: dict[str, Any] | None = None
    embedded = False
    if use_chain:
        ledger = ws.ledger(rpc=rpc) if ws is not None else None
        if ledger is None:
            from ailedger.ledger import Ledger

            assert rpc is not None
            ledger = Ledger.connect(rpc)
        with ledger:
            _reach(ledger, binding)
            where = _anchoring(ledger, ws, verifier.name, binding, pinned, registry)
            anchors = chain_anchors(
                AnchorRegistry(ledger=ledger, address=where["registry"]),
                origin_hash(verifier.name),
                operator=where["operator"],
            )
            embedded = ledger.backend == "embedded"
    elif pinned is not None or registry is not None:
        raise InputError("--operator and --registry need a chain: give --rpc URL or --workspace")
    if export is None:
        from ailedger.auditlog.log import AuditLog

        assert ws is not None
        with AuditLog.for_workspace(ws, writable=False) as log:
            report = verify_stored(log, verifier, anchors=anchors, deep=deep)
            latest = log.latest_checkpoint()
    else:
        report = verify_export(
            source,
            verifier,
            anchors=anchors,
            trusted_checkpoints=[_read_bytes(p) for p in checkpoint or []],
            entries=[_entry_pair(item) for item in entry or []],
            receipts=[_receipt_pair(item) for item in receipt or []],
            allow_older=allow_older,
        )
        latest = fetch_capped(source, "checkpoint")
    from ailedger.cli.witness import require_cosignatures

    cosigners = require_cosignatures(
        latest, witness or [], witness_quorum, size=report.size, root=report.root
    )
    if where is None:
        trust = "unchecked"
    else:
        trust = "none" if not anchors else "operator-controlled" if embedded else "chain"
    doc = {
        "ok": True,
        "origin": report.origin,
        "size": report.size,
        "root": report.root.hex(),
        "checkpoints": report.checkpoints,
        "anchors": report.anchors,
        "anchors_checked": where is not None,
        "anchors_trust": trust,
        "anchoring": where,
        "newer_anchors_unchecked": [
            {"index": a.index, "size": a.size, "block": a.block_number}
            for a in report.newer_anchors
        ],
        "entries_checked": report.entries_checked,
        "receipts_checked": report.receipts_checked,
        # one entry per distinct witness key (its first name); other names of a key listed apart
        "witnesses": [names[0] for names in cosigners],
        "witness_aliases": {names[0]: names[1:] for names in cosigners if len(names) > 1},
        "witnesses_checked": bool(cosigners),
    }
    text = f"verified {report.origin}: {report.size} entries, {report.checkpoints} checkpoint(s)"
    if where is not None:
        text += f", {report.anchors} on-chain anchor(s) by {where['operator']} consistent"
    else:
        text += "; anchors unchecked (no chain given: --rpc URL or --workspace DIR)"
    notes: list[str] = []  # warnings and notes: diagnostics, on stderr (also with --json)
    if report.newer_anchors:
        top = max(report.newer_anchors, key=lambda a: a.size)
        notes.append(
            f"warning: this export is older than {len(report.newer_anchors)} anchor(s) of its "
            f"operator (newest: size {top.size}, block {top.block_number}), which were not "
            "checked: it is verified as an older version only"
        )
    if trust == "operator-controlled":
        notes.append(
            "note: these anchors are on the embedded chain, which the log's operator "
            "controls: they are not outside evidence (a rewritten log can be re-anchored "
            "there); witnesses are the outside check"
        )
    if cosigners:
        shown = [
            names[0] + (f" (the same key also named {', '.join(names[1:])})" if names[1:] else "")
            for names in cosigners
        ]
        text += f"\ncosigned by {len(cosigners)} witness(es): {', '.join(shown)}"
    elif where is None:
        notes.append(
            "warning: neither a chain nor witnesses were checked: only the log's own key "
            "vouches for this history, and its holder could have rewritten and re-signed it "
            "(give --witness KEY or --rpc URL)"
        )
    for note in notes:
        progress(note)
    emit(as_json, doc, text)


def _reach(ledger: Any, binding: Any) -> None:
    """Ask the node for its chain id; if it cannot be reached, say which chain the export's
    anchors are on (one line, NodeUnavailable: exit 3)."""
    from ailedger.errors import NodeUnavailable

    try:
        ledger.chain_id  # noqa: B018 - the first request to the node
    except NodeUnavailable as exc:
        if binding is None or not binding.chains:
            raise
        chains = ", ".join(f"chain {c.chain_id} (registry {c.registry})" for c in binding.chains)
        raise NodeUnavailable(
            f"the export's anchors are on {chains}, which cannot be checked: {exc}"
        ) from exc


def _anchoring(
    ledger: Any,
    ws: Any,
    origin: str,
    binding: Any,
    pinned: str | None,
    registry: str | None,
) -> dict[str, Any]:
    """Where the log's operator anchors it on ``ledger``'s chain: registry and operator.

    The operator comes from --operator, checked against the export's signed binding, else the
    binding, else (for the workspace's own log) the workspace's account; never from whoever
    anchored the origin first.
    """
    from ailedger.errors import VerificationError
    from ailedger.ledger import EMBEDDED_CHAIN_ID

    chain_id = ledger.chain_id
    where = "the embedded chain" if ledger.backend == "embedded" else f"the node at {ledger.url}"
    own = ws is not None and ws.config.get("log", {}).get("origin") == origin
    own_account = ws.keystore().address if ws is not None else None
    bound = binding.for_chain(chain_id) if binding is not None else None
    if binding is not None and pinned is not None:
        named = [bound] if bound is not None else list(binding.chains)
        if named and all(c.operator.lower() != pinned.lower() for c in named):
            raise VerificationError(
                f"the export's binding, signed by the log's key, names {named[0].operator} as "
                f"the account anchoring {origin} on chain {named[0].chain_id}, not the "
                f"--operator {pinned}"
            )
    if (
        bound is not None
        and chain_id == EMBEDDED_CHAIN_ID
        and ledger.backend == "embedded"
        and (own_account is None or bound.operator.lower() != own_account.lower())
    ):
        raise InputError(
            f"the log {origin} is anchored on its operator's own embedded chain, which only "
            "its operator can read (and which is not outside evidence): check it with "
            "witnesses, or from the operator's workspace"
        )
    if binding is not None and bound is None and registry is None and binding.chains:
        chains = ", ".join(
            f"chain {c.chain_id} (registry {c.registry}, operator {c.operator})"
            for c in binding.chains
        )
        raise InputError(
            f"the export says {origin} is anchored on {chains}, but {where} serves chain "
            f"{chain_id}: give --rpc a node of that chain"
        )
    operator = pinned or (bound.operator if bound is not None else None)
    if operator is None and own:
        operator = own_account
    if operator is None:
        raise InputError(
            "the export does not say which account anchors the log (no signed "
            "ailedger/binding): give --operator ADDRESS"
        )
    address = registry or (bound.registry if bound is not None else None)
    if address is None:
        if ws is None:
            raise InputError("give the AnchorRegistry's address with --registry")
        address = ws.anchor_registry(ledger).address
    return {"chain_id": chain_id, "registry": address, "operator": operator}


_MAX_KEY_FILE = 64 * 1024


def _verifier_key(key: str | None, key_file: Path | None, ws: Any) -> str:
    from ailedger._input import decode_utf8

    if key is not None:
        return key.strip()
    if key_file is not None:
        raw = _read_bytes(key_file, limit=_MAX_KEY_FILE)
        return decode_utf8(raw, what=f"--key-file {key_file}").strip()
    if ws is not None:
        from ailedger.auditlog.log import AuditLog

        with AuditLog.for_workspace(ws, writable=False) as log:
            return log.verifier_key(ws.public_key())
    raise InputError("give the log's verifier key with --key or --key-file")


def _read_bytes(path: Path, *, limit: int = 64 * 1024 * 1024) -> bytes:
    from ailedger._input import read_bounded

    try:
        with path.open("rb") as file:
            return read_bounded(file, limit=limit, what=str(path))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def _entry_pair(item: str) -> tuple[int, bytes]:
    index, _, file = item.partition("=")
    if not (index.isascii() and index.isdigit()) or len(index) > 20 or not file:
        raise InputError(f"--entry takes INDEX=FILE (INDEX in ASCII digits), got {item!r}")
    return int(index), _read_bytes(Path(file))


def _receipt_pair(item: str) -> tuple[bytes, bytes]:
    proof_file, _, entry_file = item.partition("=")
    if not proof_file or not entry_file:
        raise InputError(f"--receipt takes PROOF_FILE=ENTRY_FILE, got {item!r}")
    return _read_bytes(Path(proof_file)), _read_bytes(Path(entry_file))


def _size_of(note: bytes) -> int:
    from ailedger.auditlog.checkpoint import Checkpoint

    return Checkpoint.parse(note.decode().split("\n\n", 1)[0] + "\n").size
