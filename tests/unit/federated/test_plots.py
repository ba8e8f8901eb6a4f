"""Accuracy plots of simulated federations: what is drawn, and the PNG that `--plot` writes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ailedger.cli import app
from ailedger.errors import InputError
from ailedger.federated.data import load_digits
from ailedger.federated.plots import accuracy_series, plot_accuracy
from ailedger.federated.simulate import SimulationConfig, simulate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGITS = load_digits(seed=0)
ATTACKED = SimulationConfig(
    clients=6, rounds=3, lr=0.5, seed=0, malicious=2, attack="sign_flip", baselines=True
)


def test_series_hold_each_rule_and_both_baselines() -> None:
    robust = simulate(replace(ATTACKED, rule="median"), dataset=DIGITS)
    plain = simulate(replace(ATTACKED, rule="fedavg", baselines=False), dataset=DIGITS)
    series = accuracy_series([robust, plain])
    assert [s.kind for s in series] == ["rule", "rule", "honest_only", "attack_free"]
    assert [s.label for s in series[:2]] == ["median", "fedavg"]
    assert series[0].rounds == (1, 2, 3)
    assert series[0].accuracy == tuple(r.test_accuracy for r in robust.rounds)
    assert series[1].accuracy == tuple(r.test_accuracy for r in plain.rounds)
    assert series[2].accuracy == robust.honest_only_curve
    assert robust.attack_free_accuracy is not None
    assert series[3].accuracy[-1] == robust.attack_free_accuracy


def test_plot_writes_a_png(tmp_path: Path) -> None:
    result = simulate(replace(ATTACKED, rounds=2), dataset=DIGITS)
    out = plot_accuracy(result, tmp_path / "acc.png")
    assert out == tmp_path / "acc.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(InputError, match="cannot write the plot"):
        plot_accuracy(result, tmp_path / "missing" / "acc.png")
    with pytest.raises(InputError, match="nothing to plot"):
        accuracy_series([])


def test_train_simulate_plot_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "out.png"
    args = ["train", "simulate", "--clients", "5", "--rounds", "2", "--malicious", "1"]
    done = CliRunner().invoke(app, [*args, "--attack", "sign_flip", "--plot", str(png)])
    assert done.exit_code == 0, done.output
    assert png.read_bytes()[:8] == PNG_MAGIC
