"""Plots of simulated federations: test accuracy per round, per aggregation rule.

:func:`accuracy_series` says what is drawn (pure data, tested); :func:`plot_accuracy` draws it
with matplotlib (the ``graph`` extra) into a PNG. One curve per run given (its rule, as
``SimulationResult.rule_used`` names it), then, from the first run that computed baselines
(``SimulationConfig.baselines``), FedAvg over the honest parties only (per round) and FedAvg
over every party with nobody attacking: per round when the result carries that curve
(``attack_free_curve``), else its final accuracy as a level line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ailedger.errors import InputError
from ailedger.federated.simulate import SimulationResult

__all__ = ["Series", "accuracy_series", "plot_accuracy"]


@dataclass(frozen=True)
class Series:
    """One line of the plot: rounds (1-based), test accuracy in [0, 1] per round, a label, and
    its kind (``"rule"``, ``"honest_only"`` or ``"attack_free"``)."""

    label: str
    rounds: tuple[int, ...]
    accuracy: tuple[float, ...]
    kind: str


def accuracy_series(results: SimulationResult | Sequence[SimulationResult]) -> list[Series]:
    """The lines :func:`plot_accuracy` draws for ``results`` (one run, or several to compare
    rules on the same federation). Raises :class:`InputError` for no runs or a run with no
    rounds."""
    runs = [results] if isinstance(results, SimulationResult) else list(results)
    if not runs:
        raise InputError("nothing to plot: give at least one simulation result")
    out: list[Series] = []
    labels = [r.rule_used for r in runs]
    for run, label in zip(runs, labels, strict=True):
        if not run.rounds:
            raise InputError("nothing to plot: a simulation result has no rounds")
        if labels.count(label) > 1:
            label = f"{label} (seed {run.config.seed}, {run.config.attack})"
        out.append(
            Series(
                label=label,
                rounds=tuple(r.round + 1 for r in run.rounds),
                accuracy=tuple(float(r.test_accuracy) for r in run.rounds),
                kind="rule",
            )
        )
    baseline = next((r for r in runs if r.honest_only_curve is not None), None)
    if baseline is not None:
        assert baseline.honest_only_curve is not None
        rounds = tuple(r.round + 1 for r in baseline.rounds)
        out.append(
            Series(
                "FedAvg, honest parties only",
                rounds,
                tuple(float(a) for a in baseline.honest_only_curve),
                "honest_only",
            )
        )
        curve = getattr(baseline, "attack_free_curve", None)
        if curve is not None:
            out.append(
                Series(
                    "FedAvg, no attack",
                    rounds,
                    tuple(float(a) for a in curve),
                    "attack_free",
                )
            )
        elif baseline.attack_free_accuracy is not None:
            final = float(baseline.attack_free_accuracy)
            out.append(
                Series(
                    "FedAvg, no attack (final)",
                    (rounds[0], rounds[-1]),
                    (final, final),
                    "attack_free",
                )
            )
    return out


def plot_accuracy(
    results: SimulationResult | Sequence[SimulationResult],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draw :func:`accuracy_series` of ``results`` into a PNG at ``path``; returns the path.

    Raises :class:`InputError` when matplotlib is missing (``pip install 'ailedger[graph]'``)
    or the file cannot be written.
    """
    series = accuracy_series(results)
    first = results if isinstance(results, SimulationResult) else results[0]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError(
            "plotting needs matplotlib, which is not installed (pip install 'ailedger[graph]')"
        ) from exc
    styles = {"rule": "-", "honest_only": "--", "attack_free": ":"}
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        for s in series:
            ax.plot(
                s.rounds,
                s.accuracy,
                linestyle=styles[s.kind],
                marker="o" if s.kind == "rule" else None,
                label=s.label,
            )
        c = first.config
        default = f"{c.data}, {c.clients} clients ({c.malicious} malicious: {c.attack})"
        ax.set_title(title or f"{default}, {c.partition}")
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.legend()
        fig.tight_layout()
        target = Path(os.fspath(path))
        try:
            fig.savefig(target, dpi=110, format="png")
        except OSError as exc:
            raise InputError(f"cannot write the plot to {target}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return target
