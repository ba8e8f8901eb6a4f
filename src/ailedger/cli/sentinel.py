"""``ailedger sentinel``: learn normal traffic, score transactions, watch the chain and act.

Every command reads the workspace's chain unless ``--rpc`` names a node. The fitted model and
the ingestion checkpoint live in the workspace's ``sentinel/`` folder; the model file is keyed
with an HMAC under ``keys/sentinel.key`` (made on first use), so a model file someone else
wrote is refused before anything in it is unpickled.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ailedger.cli._common import JsonOpt, RpcOpt, WorkspaceOpt, emit, err_console, progress
from ailedger.config import workspace_path
from ailedger.errors import InputError

if TYPE_CHECKING:
    from ailedger.ledger.chaindata import BlockRecord
    from ailedger.ledger.reader import ChainReader
    from ailedger.sentinel.detectors import SavedModel
    from ailedger.sentinel.evaluate import EvaluationReport
    from ailedger.workspace import Workspace

__all__ = ["sentinel_app"]

sentinel_app = typer.Typer(
    help="Machine learning that watches the chain for attacks.", no_args_is_help=True
)

FromOpt = Annotated[int, typer.Option("--from", min=0, help="First block of the range.")]
ToOpt = Annotated[
    int | None,
    typer.Option(
        "--to", min=0, help="Last block of the range (default: the head).", show_default=False
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Model file (default: the workspace's sentinel/model.bin).",
        show_default=False,
    ),
]

_KEY_BYTES = 32


def _sentinel_dir(ws: Workspace) -> Path:
    from ailedger._fs import make_private_dir

    folder = ws.path / "sentinel"
    make_private_dir(folder)
    return folder


def _model_key(ws: Workspace) -> bytes:
    """The workspace's key for model files (32 random bytes, made once, 0600)."""
    from ailedger._fs import PRIVATE_FILE_MODE, write_atomic

    path = ws.path / "keys" / "sentinel.key"
    if not path.exists():
        write_atomic(path, secrets.token_bytes(_KEY_BYTES), mode=PRIVATE_FILE_MODE)
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise InputError(f"{path} is not a sentinel key ({len(key)} bytes, expected 32)")
    return key


@contextmanager
def _reader(ws: Workspace, rpc: str | None) -> Iterator[ChainReader]:
    from ailedger.ledger.reader import ChainReader

    if rpc is not None:
        with ChainReader.connect(rpc, settings=ws.settings()) as reader:
            yield reader
        return
    with ws.ledger() as ledger, ChainReader.from_ledger(ledger) as reader:
        yield reader


def _range(reader: ChainReader, start: int, end: int | None) -> tuple[int, int]:
    """``[start, stop)`` from the inclusive ``--from``/``--to``, checked against the head."""
    head = reader.head()
    last = head if end is None else end
    if last < start:
        raise InputError(f"empty or inverted block range: --from {start} --to {last}")
    if last > head:
        raise InputError(f"--to {last} is past the chain's head ({head})")
    return start, last + 1


class _Progress:
    """Plain periodic progress lines on stderr (every ``every`` seconds)."""

    def __init__(self, what: str, total: int, every: float = 2.0) -> None:
        self.what, self.total, self.every = what, total, every
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, transactions: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = transactions / max(now - self.started, 1e-9)
            err_console.print(
                f"{self.what}: block {done}/{self.total}, {transactions} transactions "
                f"({rate:,.0f} tx/s)"
            )


def _blocks(reader: ChainReader, start: int, stop: int, what: str) -> Iterator[BlockRecord]:
    progress = _Progress(what, stop - start)
    count = 0
    for done, block in enumerate(reader.blocks(start, stop), 1):
        count += len(block.transactions)
        progress(done, count)
        yield block


def _block_batches(
    reader: ChainReader, start: int, stop: int, what: str
) -> Iterator[list[BlockRecord]]:
    """The blocks in the lists the reader fetched together (scored with one model call each)."""
    progress = _Progress(what, stop - start)
    done = count = 0
    for batch in reader.block_batches(start, stop):
        done += len(batch)
        count += sum(len(block.transactions) for block in batch)
        progress(done, count)
        yield batch


def _load(ws: Workspace, model: Path | None) -> SavedModel:
    from ailedger.sentinel.detectors import load_model

    path = model or ws.path / "sentinel" / "model.bin"
    if not path.exists():
        raise InputError(f"no model at {path}: run `ailedger sentinel fit` first")
    return load_model(path, key=_model_key(ws))


@sentinel_app.command()
def fit(
    start: FromOpt = 0,
    end: ToOpt = None,
    alert_rate: Annotated[
        float,
        typer.Option(min=0.0, max=0.5, help="Share of the training transactions that would alert."),
    ] = 0.001,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the forest.")] = 0,
    model: ModelOpt = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Learn what normal traffic looks like from a block range (unlabelled)."""
    from ailedger.sentinel.detectors import AnomalyDetector, save_model
    from ailedger.sentinel.features import FEATURE_NAMES, FeatureExtractor, rows_to_matrix
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    extractor = FeatureExtractor()
    rows = []
    with _reader(ws, rpc) as reader:
        first, stop = _range(reader, start, end)
        for block in _blocks(reader, first, stop, "fit"):
            rows.extend(extractor.process(block))
        chain_id = reader.chain_id()
    if len(rows) < 10:
        raise InputError(
            f"blocks {first}-{stop - 1} hold {len(rows)} transactions: too few to learn from"
        )
    detector = AnomalyDetector(alert_rate=alert_rate, random_state=seed).fit(rows_to_matrix(rows))
    path = model or _sentinel_dir(ws) / "model.bin"
    meta = {"chain_id": chain_id, "from": first, "to": stop - 1, "transactions": len(rows)}
    save_model(detector, path, feature_names=FEATURE_NAMES, key=_model_key(ws), meta=meta)
    doc = {"model": str(path), **meta, "features": len(FEATURE_NAMES)}
    emit(
        as_json,
        doc,
        f"learned normal traffic from {len(rows)} transactions in blocks {first}-{stop - 1}; "
        f"model in {path}",
    )


@sentinel_app.command()
def scan(
    start: FromOpt = 0,
    end: ToOpt = None,
    model: ModelOpt = None,
    rules_only: Annotated[
        bool, typer.Option("--rules-only", help="Use the rule detectors only (no model).")
    ] = False,
    fail_on_alert: Annotated[
        bool, typer.Option("--fail-on-alert", help="Exit 1 when any transaction is flagged.")
    ] = False,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON line per transaction scored, on stdout."),
    ] = False,
) -> None:
    """Score every transaction of a block range; flagged ones come with their reasons."""
    from ailedger.sentinel.pipeline import Sentinel
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    sentinel = Sentinel(model=None if rules_only else _load(ws, model))
    flagged = 0
    with _reader(ws, rpc) as reader:
        first, stop = _range(reader, start, end)
        for batch in _block_batches(reader, first, stop, "scan"):
            scores = [score for found, _ in sentinel.add_many(batch) for score in found]
            for score in scores:
                flagged += score.flagged
                if as_json:
                    sys.stdout.write(json.dumps(score.to_json(), sort_keys=True) + "\n")
                elif score.flagged:
                    why = "; ".join(
                        f"{r['feature']}={r['value']} ({r['why']})" for r in score.reasons[:3]
                    )
                    sys.stdout.write(
                        f"{score.tx} block {score.block} {score.attack_class} "
                        f"score {score.score:.3f}: {why}\n"
                    )
    sys.stdout.flush()
    err_console.print(
        f"scanned {sentinel.transactions} transactions in blocks {first}-{stop - 1}: "
        f"{flagged} flagged"
    )
    if fail_on_alert and flagged:
        raise typer.Exit(1)


@sentinel_app.command()
def watch(
    start: Annotated[
        int | None,
        typer.Option(
            "--from",
            min=0,
            help="Start here (default: where the last watch stopped, else the head).",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        int | None,
        typer.Option(
            "--until",
            min=0,
            help="Stop after this block (default: run until Ctrl-C).",
            show_default=False,
        ),
    ] = None,
    webhook: Annotated[
        list[str] | None,
        typer.Option("--webhook", help="Post each alert to this URL (repeatable)."),
    ] = None,
    webhook_secret_env: Annotated[
        str | None,
        typer.Option(
            "--webhook-secret-env",
            help="Name of an environment variable holding the webhooks' HMAC secret.",
            show_default=False,
        ),
    ] = None,
    no_audit: Annotated[
        bool, typer.Option("--no-audit", help="Do not append alerts to the audit log.")
    ] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between head checks.")] = 1.0,
    reorg_depth: Annotated[int, typer.Option(min=1, max=64, help="Blocks kept for reorgs.")] = 12,
    model: ModelOpt = None,
    rules_only: Annotated[
        bool, typer.Option("--rules-only", help="Use the rule detectors only (no model).")
    ] = False,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON line per alert or retraction, on stdout.")
    ] = False,
) -> None:
    """Follow the chain's head: score each new block, audit and post alerts, run the hooks.

    Progress is kept in the workspace (sentinel/ingest.json), so a restart resumes where the
    last run stopped and no block is scored twice; blocks dropped by a reorg are retracted,
    and so are their alerts.
    """
    from ailedger.auditlog.log import AuditLog
    from ailedger.sentinel.actions import AuditAction, WebhookDispatcher, load_hooks, run_hooks
    from ailedger.sentinel.ingest import Ingestor
    from ailedger.sentinel.pipeline import Sentinel
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    secret = None
    if webhook_secret_env is not None:
        value = os.environ.get(webhook_secret_env)
        if not value:
            raise InputError(f"environment variable {webhook_secret_env} is not set")
        secret = value.encode()
    sentinel = Sentinel(model=None if rules_only else _load(ws, model), reorg_depth=reorg_depth)
    hooks = load_hooks()
    dispatcher = WebhookDispatcher(webhook or [], secret=secret).start() if webhook else None
    audit_log = None if no_audit else AuditLog.for_workspace(ws)
    audit = None if audit_log is None else AuditAction(audit_log)
    stop_event = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    alerts = retracted = 0

    def out(kind: str, doc: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps({"event": kind, **doc}, sort_keys=True) + "\n")
        else:
            sys.stdout.write(f"{kind} {doc['tx']} block {doc['block']} {doc['class']}\n")
        sys.stdout.flush()

    try:
        with _reader(ws, rpc) as reader:
            first = reader.head() + 1 if start is None else start
            if until is not None and until < first:
                raise InputError(f"--until {until} is before the first block to watch ({first})")
            ingestor = Ingestor(
                reader,
                _sentinel_dir(ws) / "ingest.json",
                start=first,
                stop=None if until is None else until + 1,
                reorg_depth=reorg_depth,
                poll_interval=poll,
            )
            resume = ingestor.state().next
            if until is not None and resume > until:
                err_console.print(
                    f"nothing left to watch: the checkpoint is already past block {until} "
                    f"(next block {resume})"
                )
            else:
                err_console.print(
                    f"watching from block {resume} "
                    f"({'until ' + str(until) if until is not None else 'Ctrl-C to stop'})"
                )
            for events in ingestor.event_batches(follow=True, stop_event=stop_event):
                # in event order: a block scored and then retracted within one list is audited
                # before its retraction
                for _, new, gone in sentinel.handle_many(events):
                    for alert in gone:
                        retracted += 1
                        if audit is not None:
                            audit.retract(alert, reason="its block left the canonical chain")
                        out("retracted", alert.to_json())
                    for alert in new:
                        alerts += 1
                        if audit is not None:
                            audit(alert)
                        if dispatcher is not None:
                            dispatcher.submit(alert)
                        for name, error in run_hooks(hooks, alert):
                            err_console.print(f"hook {name} failed: {error}")
                        out("alert", alert.to_json())
                ingestor.commit()
                state = ingestor.state()
                err_console.print(
                    f"block {state.next - 1}: {sentinel.transactions} transactions, "
                    f"{alerts} alerts, {retracted} retracted"
                )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if dispatcher is not None:
            dispatcher.close(timeout=10)
        if audit_log is not None:
            audit_log.close()
    # a status line, not a result: stdout carries the alerts (JSON lines with --json)
    progress(
        f"stopped: {sentinel.transactions} transactions scored, {alerts} alerts, "
        f"{retracted} retracted"
    )


@sentinel_app.command()
def simulate(
    labels: Annotated[
        Path, typer.Option("--labels", help="Write the labels (JSON lines) to this file.")
    ],
    transactions: Annotated[
        int, typer.Option(min=1, max=10_000_000, help="Transactions after setup.")
    ] = 2_000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of every parameter drawn.")] = 0,
    attack_rate: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.5,
            help="Share of attack transactions (default: drawn).",
            show_default=False,
        ),
    ] = None,
    artifacts: Annotated[
        Path | None,
        typer.Option(
            help="Folder of Uniswap V2's build/*.json (default: node_modules).", show_default=False
        ),
    ] = None,
    rpc: Annotated[
        str,
        typer.Option("--rpc", help="The anvil node to run the scenario on (needs mining control)."),
    ] = "http://127.0.0.1:8545",
    as_json: JsonOpt = False,
) -> None:
    """Run benign traffic and published attacks on a real EVM (anvil); labels go to a file."""
    from ailedger.ledger._settings import check_rpc_url
    from ailedger.ledger.traffic import TrafficNode
    from ailedger.sentinel.scenarios import ScenarioConfig, run_scenario

    config = ScenarioConfig(seed=seed, transactions=transactions, attack_rate=attack_rate)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal started
        if time.monotonic() - started >= 2.0:
            started = time.monotonic()
            err_console.print(f"simulate: {done}/{total}")

    with TrafficNode.connect(check_rpc_url(rpc)) as node:
        summary = run_scenario(config, node, labels, artifacts=artifacts, progress=progress)
    doc = summary.to_json()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    emit(
        as_json,
        doc,
        f"{summary.transactions} transactions in blocks {summary.blocks[0]}-{summary.blocks[1]} "
        f"({counts}); labels in {labels}",
    )


@sentinel_app.command()
def report(
    labels: Annotated[
        Path, typer.Option("--labels", help="Labels (JSON lines) written by `sentinel simulate`.")
    ],
    start: FromOpt = 0,
    end: ToOpt = None,
    train_fraction: Annotated[
        float, typer.Option(min=0.05, max=0.95, help="Earliest share of blocks to train on.")
    ] = 0.5,
    plots: Annotated[
        Path | None,
        typer.Option("--plots", help="Write PNG plots to this folder.", show_default=False),
    ] = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate every detector on labelled traffic, split by time (synthetic figures)."""
    from ailedger.sentinel.evaluate import evaluate, load_labels
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    known = load_labels(labels)
    with _reader(ws, rpc) as reader:
        first, stop = _range(reader, start, end)
        blocks = list(_blocks(reader, first, stop, "read"))
    result = evaluate(blocks, known, train_fraction=train_fraction, plot_dir=plots)
    emit(as_json, result.to_json(), _report_text(result))


def _report_text(result: EvaluationReport) -> str:
    """A table per detector: precision, recall, F1, PR-AUC per class (synthetic figures)."""
    lines = [
        f"{result.note}",
        f"train blocks {result.train_blocks[0]}-{result.train_blocks[1]} ({result.n_train} tx), "
        f"test blocks {result.test_blocks[0]}-{result.test_blocks[1]} ({result.n_test} tx)",
    ]
    for name, detector in result.detectors.items():
        lines.append(
            f"\n{name} (false alerts per 1,000 benign: {detector.false_alerts_per_1000_benign:.2f})"
        )
        lines.append(f"  {'class':<20} {'prec':>6} {'recall':>6} {'F1':>6} {'PR-AUC':>6} {'n':>6}")
        for cls, m in sorted(detector.per_class.items()):
            auc = "-" if m.pr_auc != m.pr_auc else f"{m.pr_auc:.2f}"
            lines.append(
                f"  {cls:<20} {m.precision:>6.2f} {m.recall:>6.2f} {m.f1:>6.2f} {auc:>6} "
                f"{m.support:>6}"
            )
    if result.held_out:
        lines.append("\nheld-out classes (trained without them):")
        for h in result.held_out:
            lines.append(f"  {h.held_out:<20} recall {h.recall:.2f} F1 {h.f1:.2f} (n {h.support})")
    for plot in result.plots:
        lines.append(f"plot: {plot}")
    return "\n".join(lines)
