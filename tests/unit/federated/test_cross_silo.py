"""Cross-silo simulation (issue 13): the honest-only yardstick, the reputation default, B^2."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ailedger.cli import app
from ailedger.errors import InputError
from ailedger.federated.data import load_digits
from ailedger.federated.reputation import ReputationState
from ailedger.federated.simulate import SimulationConfig, simulate

DIGITS = load_digits(seed=0)
SMALL = SimulationConfig(clients=6, rounds=3, lr=0.5, seed=0, baselines=True)


def test_honest_only_run_without_attackers_equals_fedavg() -> None:
    result = simulate(replace(SMALL, rule="fedavg"), dataset=DIGITS)
    assert result.honest_only_accuracy == result.final_accuracy
    assert result.attack_free_accuracy == result.final_accuracy
    assert result.honest_only_curve == tuple(r.test_accuracy for r in result.rounds)
    doc = result.to_json()
    assert doc["honest_only_gap"] == 0.0
    assert doc["public_set_size"] == 100


def test_honest_only_leaves_the_attackers_out() -> None:
    config = replace(SMALL, rule="fedavg", malicious=2, attack="sign_flip", rounds=4)
    result = simulate(config, dataset=DIGITS)
    clean = simulate(replace(config, malicious=0, attack="none"), dataset=DIGITS)
    assert result.attack_free_accuracy == clean.final_accuracy
    assert result.honest_only_accuracy is not None
    # without the two parties' data the oracle differs from FedAvg over everyone
    assert result.honest_only_accuracy != result.attack_free_accuracy
    assert result.final_accuracy < result.honest_only_accuracy
    off = simulate(replace(config, baselines=False), dataset=DIGITS)
    assert SimulationConfig().baselines is False
    assert off.honest_only_accuracy is None and off.model_digest == result.model_digest


def test_auto_rule_is_reputation_for_cross_silo_only() -> None:
    assert SimulationConfig(clients=12).rule_used == "reputation"
    assert SimulationConfig(clients=20).rule_used == "reputation"
    assert SimulationConfig(clients=21).rule_used == "default"
    assert SimulationConfig(clients=12, rule="default").rule_used == "default"
    with pytest.raises(InputError, match="loss_evidence needs the reputation rule"):
        SimulationConfig(clients=30, loss_evidence=True)
    with pytest.raises(InputError, match="sized_for"):
        SimulationConfig(sized_for=1.0)


def test_reputation_default_excludes_a_persistent_sign_flipper() -> None:
    config = replace(SMALL, clients=8, malicious=2, attack="sign_flip", rounds=5)
    result = simulate(config, dataset=DIGITS)
    assert result.rule_used == "reputation"
    for r in result.rounds[2:]:
        assert not {0, 1} & set(r.selected)
        assert {0, 1} <= set(r.flagged)
    assert result.standings is not None
    assert {s["party"] for s in result.standings[:2]} == {"0", "1"}
    state = result.reputation_state
    assert state is not None and state.rounds == 5
    doc = result.to_json()
    assert (
        ReputationState.from_json(doc["reputation_state"]).digest().hex()
        == (doc["reputation_state_digest"])
    )
    last = result.rounds[-1].reputations
    assert last is not None and last[0] < 0 < last[5]


def test_free_riders_are_marked() -> None:
    # 12 parties, so identifiers sort as text ("10" before "2"); party 2 free-rides
    config = replace(SMALL, clients=12, malicious=2, attack="sign_flip", free_riders=1, rounds=3)
    result = simulate(config, dataset=DIGITS)
    assert result.standings is not None
    verdicts = {s["party"]: s["verdict"] for s in result.standings}
    assert verdicts["2"] == "free_rider"
    assert [p for p, v in verdicts.items() if v == "free_rider"] == ["2"]
    assert {s["party"] for s in result.standings[:3]} == {"0", "1", "2"}


def test_b2_is_recorded_and_warns_when_the_fraction_is_too_high() -> None:
    skewed = replace(SMALL, partition="dirichlet:0.1", sized_for=0.45)
    result = simulate(skewed, dataset=DIGITS)
    assert all(r.b2 is not None and r.b2 > 0 for r in result.rounds)
    assert all(r.b2_warning is not None for r in result.rounds)
    assert result.warnings and "B^2 warning in 3 of 3 rounds" in result.warnings[0]
    quiet = simulate(replace(SMALL, sized_for=0.01), dataset=DIGITS)
    assert quiet.warnings == ()
    assert [r.b2 for r in quiet.rounds] == [
        r.b2 for r in simulate(replace(SMALL, sized_for=0.01), dataset=DIGITS).rounds
    ]


def test_reference_aware_attack_and_loss_evidence_run() -> None:
    config = replace(SMALL, clients=8, malicious=2, attack="reference_aware", rounds=4)
    cosine_only = simulate(config, dataset=DIGITS)
    # the attackers keep a positive cosine, so cosine reputation never excludes them
    last = cosine_only.rounds[-1]
    assert last.reputations is not None and min(last.reputations[:2]) > 0
    assert {0, 1} <= set(last.selected)
    with_loss = simulate(replace(config, loss_evidence=True), dataset=DIGITS)
    assert with_loss.rounds[-1].reputations is not None
    assert with_loss.rounds[-1].reputations[0] < last.reputations[0]


def test_cli_json_text_and_plot(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["train", "simulate", "--clients", "6", "--rounds", "2", "--malicious", "1"]
    done = runner.invoke(app, [*args, "--attack", "sign_flip", "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["rule_used"] == "reputation"
    assert {"honest_only_accuracy", "attack_free_accuracy", "warnings"} <= set(doc)
    png = tmp_path / "acc.png"
    done = runner.invoke(app, [*args, "--partition", "dirichlet:0.1", "--plot", str(png)])
    assert done.exit_code == 0, done.output
    assert "honest-only FedAvg" in done.output and "gap" in done.output
    assert "public set: 100 examples" in done.output
    assert "warning: B^2 warning" in done.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(app, [*args, "--rule", "fedavg", "--loss-evidence"])
    assert isinstance(bad.exception, InputError)
    assert bad.exception.exit_code == 2
    assert "loss_evidence needs the reputation rule" in str(bad.exception)


def test_existing_rules_unchanged_by_the_new_fields() -> None:
    # fltrust's root update still takes the clients' local epochs, not reference_epochs
    config = replace(SMALL, rule="fltrust", malicious=1, attack="sign_flip")
    a = simulate(config, dataset=DIGITS)
    b = simulate(replace(config, reference_epochs=3), dataset=DIGITS)
    assert a.model_digest == b.model_digest
    assert np.isfinite(a.final_accuracy)
