"""``ailedger train``: federated training (``simulate`` here; the protocol commands register
themselves on :data:`train_app` from their own module)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import click
import typer

from ailedger.cli._common import (
    JsonOpt,
    LazyChoice,
    Ticker,
    emit,
    err_console,
    out_console,
    progress,
)
from ailedger.errors import InputError

if TYPE_CHECKING:
    from ailedger.federated.simulate import SimulationResult

__all__ = ["train_app"]

train_app = typer.Typer(help="Federated training.", no_args_is_help=True)

#: the data sets ``--data`` takes (ailedger.federated.data.load_dataset)
DATA_CHOICE = click.Choice(["digits", "mnist"])


def _attack_names() -> tuple[str, ...]:
    from ailedger.federated.simulate import ATTACK_NAMES

    return ATTACK_NAMES


def _rule_names() -> tuple[str, ...]:
    from ailedger.federated.aggregate import RULES

    return ("auto", *RULES)


def model_names() -> tuple[str, ...]:
    """The models ``--model`` takes (ailedger.federated.models.MODELS)."""
    from ailedger.federated.models import MODELS

    return tuple(MODELS)


@train_app.command("simulate")
def simulate_command(
    data: Annotated[str, typer.Option(help="Data set.", click_type=DATA_CHOICE)] = "digits",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder with the four MNIST IDX gzip files (for --data mnist)."),
    ] = None,
    clients: Annotated[int, typer.Option(help="Number of parties.")] = 10,
    malicious: Annotated[int, typer.Option(help="How many parties attack (the first M).")] = 0,
    free_riders: Annotated[int, typer.Option(help="How many parties free-ride.")] = 0,
    attack: Annotated[
        str,
        typer.Option(
            click_type=LazyChoice(_attack_names),
            help="What the malicious parties do (sleeper: behaves for a third of the rounds, "
            "then sign-flips).",
        ),
    ] = "none",
    rule: Annotated[
        str,
        typer.Option(
            click_type=LazyChoice(_rule_names),
            help="Aggregation rule (auto: reputation for at most 20 clients, else default).",
        ),
    ] = "auto",
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 10,
    partition: Annotated[str, typer.Option(help="iid or dirichlet:ALPHA.")] = "iid",
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    model: Annotated[
        str, typer.Option(help="Model.", click_type=LazyChoice(model_names))
    ] = "logreg",
    hidden: Annotated[int, typer.Option(help="Hidden units of the MLP.")] = 64,
    local_epochs: Annotated[int, typer.Option(help="Local SGD epochs per round.")] = 1,
    lr: Annotated[float, typer.Option(help="Clients' SGD learning rate.")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Local mini-batch size.")] = 32,
    server_lr: Annotated[float, typer.Option(help="Step applied to the aggregate.")] = 1.0,
    contribution: Annotated[
        str,
        typer.Option(
            help="Score contributions (gtg: GTG-Shapley; exact: every coalition).",
            click_type=click.Choice(["none", "gtg", "exact"]),
        ),
    ] = "none",
    contribution_max_clients: Annotated[
        int,
        typer.Option(
            help="Largest federation whose contributions are scored (cost grows fast with it)."
        ),
    ] = 10,
    exclude_after: Annotated[
        int | None,
        typer.Option(help="Exclude a party flagged in at least this many rounds."),
    ] = None,
    public_size: Annotated[
        int,
        typer.Option(help="Examples held out of the training data as the public reference set."),
    ] = 100,
    loss_evidence: Annotated[
        bool,
        typer.Option(help="Reputation rule: add each update's loss change on the public set."),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write a PNG of accuracy per round: the rule, honest-only and attack-free FedAvg."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train with every party in this process, with attackers, and report each round."""
    from ailedger.federated.data import load_dataset
    from ailedger.federated.simulate import SimulationConfig, simulate

    methods: dict[str, Literal["none", "gtg", "exact"]] = {
        "none": "none",
        "gtg": "gtg",
        "exact": "exact",
    }
    if contribution not in methods:
        raise InputError(f"unknown contribution method {contribution!r}; use none, gtg or exact")
    if data == "mnist" and data_dir is None:
        raise InputError("--data mnist needs --data-dir DIR holding the four MNIST IDX files")
    config = SimulationConfig(
        data=data,
        data_dir=data_dir,
        clients=clients,
        malicious=malicious,
        free_riders=free_riders,
        attack=attack,
        rule=rule,
        rounds=rounds,
        partition=partition,
        seed=seed,
        model=model,
        hidden=hidden,
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        server_lr=server_lr,
        contribution=methods[contribution],
        contribution_max_clients=contribution_max_clients,
        exclude_after=exclude_after,
        root_size=public_size,
        loss_evidence=loss_evidence,
        baselines=True,
    )
    dataset = load_dataset(config.data, config.data_dir, seed=config.seed)
    if not err_console.is_terminal:  # plain lines on stderr, with or without --json
        progress(f"training {config.clients} parties for {config.rounds} rounds")
        tick = Ticker()
        result = simulate(
            config,
            dataset=dataset,
            on_round=lambda r: tick(
                f"round {r.round + 1}/{config.rounds}: accuracy {r.test_accuracy:.4f}",
                force=r.round + 1 == config.rounds,
            ),
        )
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        columns = (
            TextColumn("round"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[acc]}"),
        )
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("train", total=config.rounds, acc="")
            result = simulate(
                config,
                dataset=dataset,
                on_round=lambda r: bar.update(
                    task, advance=1, acc=f"accuracy {r.test_accuracy:.4f}"
                ),
            )
    doc = result.to_json()
    if plot is not None:
        doc["plot"] = str(_plot(result, plot))
    for warning in result.warnings:
        err_console.print(f"warning: {warning}")
    if as_json:
        emit(True, doc)
    else:
        _print_table(result)
        emit(False, doc, _summary(result, doc))


def _summary(result: SimulationResult, doc: dict[str, Any]) -> str:
    c = result.config
    lines = [
        f"{c.data}, {c.clients} clients ({c.malicious} malicious: {c.attack}), rule {c.rule}, "
        f"{c.partition}, {c.model}",
        f"final accuracy {result.final_accuracy:.4f} (test error {1 - result.final_accuracy:.4f})",
    ]
    if result.honest_only_accuracy is not None:
        gap = result.honest_only_accuracy - result.final_accuracy
        lines.append(
            f"honest-only FedAvg {result.honest_only_accuracy:.4f} (gap {gap:+.4f}), "
            f"attack-free FedAvg {result.attack_free_accuracy:.4f}"
        )
    lines.append(
        f"rule used {result.rule_used}; public set: {result.public_set_size} examples held out "
        "of the training data"
    )
    lines.append(f"model digest {doc['model_digest']}")
    if result.excluded:
        lines.append(f"excluded parties: {', '.join(map(str, result.excluded))}")
    scores, ranking = result.contributions, result.contribution_ranking
    if scores is not None and ranking is not None:
        role = {c: " (malicious)" for c in result.malicious}
        role |= {c: " (free rider)" for c in result.free_riders}
        lines.append(
            "contribution ranking (best first; untrusted or ALIE-shaped parties last): "
            + ", ".join(f"{c} {scores[c]:+.3f}{role.get(c, '')}" for c in reversed(ranking))
        )
    if result.standings is not None:
        marks = {"free_rider": " (free rider)", "suspect": " (suspect)", "trusted": ""}
        lines.append(
            "reputation ranking (lowest first): "
            + ", ".join(
                f"{s['party']} {s['reputation']:+.2f}{marks[s['verdict']]}"
                for s in result.standings
            )
        )
    return "\n".join(lines)


def _plot(result: SimulationResult, path: Path) -> Path:
    """Accuracy per round of the run's rule, with the honest-only and attack-free FedAvg
    baselines, as a PNG (:func:`ailedger.federated.plots.plot_accuracy`)."""
    from ailedger.federated.plots import plot_accuracy

    return plot_accuracy(result, path)


def _print_table(result: SimulationResult) -> None:
    from rich.table import Table

    table = Table(title="rounds")
    for column in ("round", "accuracy", "loss", "flagged", "excluded", "seconds"):
        table.add_column(column, justify="right" if column != "flagged" else "left")
    for r in result.rounds:
        table.add_row(
            str(r.round),
            f"{r.test_accuracy:.4f}",
            f"{r.test_loss:.4f}",
            ", ".join(map(str, r.flagged)) or "-",
            ", ".join(map(str, r.excluded)) or "-",
            f"{r.seconds:.2f}",
        )
    out_console.print(table)
