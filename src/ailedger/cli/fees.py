"""``ailedger fees``: EIP-1559 fee history, base-fee forecasts and what the scheduler would send.

Without ``--rpc`` the commands read the workspace's chain (its node, or the embedded chain).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ailedger.cli._common import JsonOpt, RpcOpt, WorkspaceOpt, emit
from ailedger.errors import InputError

if TYPE_CHECKING:
    from ailedger.ledger.chaindata import FeeHistory
    from ailedger.ledger.reader import ChainReader

__all__ = ["fees_app"]

fees_app = typer.Typer(help="EIP-1559 fees: history, forecast, plan.", no_args_is_help=True)

MAX_BLOCKS = 1024
"""The most blocks one ``eth_feeHistory`` call returns on common nodes (geth, anvil)."""
MAX_AHEAD = 1000
PERCENTILES = (10.0, 50.0, 90.0)
LEVELS = (0.05, 0.5, 0.95)

BlocksOpt = Annotated[
    int, typer.Option("--blocks", help=f"How many recent blocks (1-{MAX_BLOCKS}).")
]
HistoryOpt = Annotated[
    int,
    typer.Option("--history", help=f"How many recent blocks to learn from (3-{MAX_BLOCKS})."),
]


def _check(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {value}")
    return value


@contextmanager
def _reader(workspace: Path | None, rpc: str | None) -> Iterator[ChainReader]:
    """A reader of ``rpc``, or of the workspace's chain without it."""
    from ailedger.ledger.reader import ChainReader

    if rpc is not None:
        with ChainReader.connect(rpc) as reader:
            yield reader
        return
    from ailedger.config import workspace_path
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    with ws.ledger() as ledger, ChainReader.from_ledger(ledger) as reader:
        yield reader


def _policy(workspace: Path | None, rpc: str | None) -> dict[str, Any] | None:
    """The workspace's ``[chain]`` fee policy (None with ``--rpc``: no workspace is read)."""
    if rpc is not None:
        return None
    from ailedger.config import workspace_path
    from ailedger.sentinel.fee_advice import DEFAULT_WAIT_BLOCKS
    from ailedger.workspace import Workspace

    chain = Workspace.open(workspace_path(workspace)).config.get("chain", {})
    return {
        "fee_policy": str(chain.get("fee_policy", "default")),
        "fee_wait_blocks": int(chain.get("fee_wait_blocks", DEFAULT_WAIT_BLOCKS)),
    }


def _history(reader: ChainReader, blocks: int) -> FeeHistory:
    head = reader.head()
    return reader.fee_history(min(blocks, head + 1), head, PERCENTILES)


def _block_time(reader: ChainReader, history: FeeHistory) -> float:
    """Seconds per block over the history (12 when the blocks share a timestamp)."""
    span = history.newest - history.oldest
    if span < 1:
        return 12.0
    seconds = reader.block(history.newest).timestamp - reader.block(history.oldest).timestamp
    return seconds / span if seconds > 0 else 12.0


@fees_app.command()
def history(
    blocks: BlocksOpt = 20,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Base fee, gas used ratio and tip percentiles (10, 50, 90) of recent blocks."""
    _check(blocks, "--blocks", 1, MAX_BLOCKS)
    with _reader(workspace, rpc) as reader:
        fh = _history(reader, blocks)
    rows = [
        {
            "block": fh.oldest + i,
            "base_fee_per_gas": str(fh.base_fee_per_gas[i]),
            "gas_used_ratio": fh.gas_used_ratio[i],
            "tips": {f"{p:g}": str(t) for p, t in zip(fh.percentiles, fh.reward[i], strict=True)}
            if fh.reward
            else {},
        }
        for i in range(len(fh.gas_used_ratio))
    ]
    lines = [
        f"{'block':>10} {'base fee (gwei)':>16} {'gas used':>9} {'tips p10/p50/p90 (gwei)':>26}"
    ]
    for i, ratio in enumerate(fh.gas_used_ratio):
        tips = fh.reward[i] if fh.reward else ()
        tip_text = "/".join(f"{t / 1e9:.3f}" for t in tips) if tips else "-"
        lines.append(
            f"{fh.oldest + i:>10} {fh.base_fee_per_gas[i] / 1e9:16.6f} {ratio:9.1%} {tip_text:>26}"
        )
    lines.append(f"next block's base fee: {fh.base_fee_per_gas[-1] / 1e9:.6f} gwei")
    emit(
        as_json,
        {"blocks": rows, "next_base_fee_per_gas": str(fh.base_fee_per_gas[-1])},
        "\n".join(lines),
    )


def _forecast(reader: ChainReader, history_blocks: int, ahead: int) -> tuple[FeeHistory, Any]:
    from ailedger.sentinel.fees import BaseFeeForecaster

    fh = _history(reader, history_blocks)
    if len(fh.gas_used_ratio) < 3:
        raise InputError(
            f"the chain has only {len(fh.gas_used_ratio)} blocks: a forecast needs at least 3"
        )
    forecaster = BaseFeeForecaster(block_time=_block_time(reader, fh)).fit(fh)
    return fh, forecaster


@fees_app.command()
def forecast(
    ahead: Annotated[
        int, typer.Option("--ahead", help=f"Blocks ahead to forecast (1-{MAX_AHEAD}).")
    ] = 10,
    history_blocks: HistoryOpt = 512,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Quantiles (5 %, median, 95 %) of the base fee of each of the next blocks."""
    _check(ahead, "--ahead", 1, MAX_AHEAD)
    _check(history_blocks, "--history", 3, MAX_BLOCKS)
    with _reader(workspace, rpc) as reader:
        fh, forecaster = _forecast(reader, history_blocks, ahead)
    fc = forecaster.forecast(ahead, levels=LEVELS)
    doc = {
        "learned_from": {"oldest": fh.oldest, "newest": fh.newest},
        "blocks": fc.to_json(),
    }
    lines = [f"{'block':>10} {'p5 (gwei)':>12} {'median':>12} {'p95':>12} {'bounds':>25}"]
    for h, row in enumerate(fc.quantiles):
        lines.append(
            f"{fc.first + h:>10} {row[0] / 1e9:12.6f} {row[1] / 1e9:12.6f} {row[2] / 1e9:12.6f} "
            f"{fc.lower[h] / 1e9:12.6f}-{fc.upper[h] / 1e9:.6f}"
        )
    emit(as_json, doc, "\n".join(lines))


@fees_app.command()
def plan(
    within: Annotated[
        int | None,
        typer.Option(
            "--within",
            help="Latency bound: blocks the transaction may wait (1-1000; default: the "
            "workspace's fee_wait_blocks, else 30).",
        ),
    ] = None,
    history_blocks: HistoryOpt = 512,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the fee scheduler would do now for a transaction that may wait WITHIN blocks."""
    from ailedger.sentinel.fee_advice import DEFAULT_WAIT_BLOCKS
    from ailedger.sentinel.fees import FeeScheduler

    policy = _policy(workspace, rpc)
    if within is None:
        within = DEFAULT_WAIT_BLOCKS if policy is None else policy["fee_wait_blocks"]
    _check(within, "--within", 1, MAX_AHEAD)
    _check(history_blocks, "--history", 3, MAX_BLOCKS)
    scheduler = FeeScheduler(within=within)
    with _reader(workspace, rpc) as reader:
        fh, forecaster = _forecast(reader, history_blocks, within)
    fc = forecaster.forecast(within, levels=scheduler.levels) if within > 1 else None
    tip = scheduler.tip(fh)
    decision = scheduler.decide(
        next_base_fee=fh.base_fee_per_gas[-1], waited=0, forecast=fc, tip=tip
    )
    doc = {
        "send_now": decision.send,
        "max_fee_per_gas": str(decision.max_fee_per_gas),
        "max_priority_fee_per_gas": str(decision.max_priority_fee_per_gas),
        "next_base_fee_per_gas": str(fh.base_fee_per_gas[-1]),
        "within_blocks": within,
        "reason": decision.reason,
    }
    text = (
        f"{'send now' if decision.send else 'wait'} ({decision.reason})\n"
        f"maxFeePerGas         {decision.max_fee_per_gas / 1e9:.6f} gwei\n"
        f"maxPriorityFeePerGas {decision.max_priority_fee_per_gas / 1e9:.6f} gwei"
    )
    if policy is not None:
        doc["workspace_policy"] = policy
        text += (
            f"\nworkspace policy: scheduled, ailedger's transactions wait up to "
            f"{policy['fee_wait_blocks']} blocks"
            if policy["fee_policy"] == "scheduled"
            else "\nworkspace policy: default, ailedger's transactions are sent at once"
        )
    emit(as_json, doc, text)
