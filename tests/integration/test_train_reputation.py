"""The reputation rule with each party in its own process, workspace and key, on anvil: a
public validation set registered with `provenance register` and checked by every party."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ailedger.federated.data import load_dataset
from ailedger.federated.reputation import WARMUP_ROUNDS
from tests.conftest import AnvilNode
from tests.integration.test_train_protocol import ailedger, make_workspace

ROUNDS = WARMUP_ROUNDS + 1


@pytest.mark.anvil
@pytest.mark.slow
def test_processes_check_the_public_set_and_exclude_a_sign_flipper(
    tmp_path: Path, anvil: AnvilNode, env: dict[str, str]
) -> None:
    spaces = [tmp_path / f"party{i}" for i in range(3)]
    accounts = [make_workspace(ws, anvil) for ws in spaces]
    digits = load_dataset("digits", None, seed=0)
    public = tmp_path / "public.npz"
    np.savez(public, x=digits.x_train[:120], y=digits.y_train[:120])
    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, x=digits.x_train[:120], y=(digits.y_train[:120] + 1) % 10)
    task_file = tmp_path / "task.json"
    common = [
        "train", "create", "-w", str(spaces[0]), "--participants", ",".join(accounts),
        "--rounds", str(ROUNDS), "--phase-blocks", "30", "--rule", "reputation",
        "--exclude-after", "100", "--contribution", "weights", "--out", str(task_file), "--json",
    ]  # fmt: skip
    register = ailedger(
        "provenance", "register", str(public), "--kind", "dataset", "-w", str(spaces[0]),
        "--json", env=env,
    )  # fmt: skip
    # a reputation task that names no public set is refused before anything is sent
    bare = ailedger(*common, env=env)
    _, bare_err = bare.communicate(timeout=120)
    assert bare.returncode == 2
    assert "rule reputation needs a public validation set" in bare_err
    assert "Traceback" not in bare_err and not task_file.exists()
    out, err = register.communicate(timeout=120)
    assert register.returncode == 0, err
    named = f"{accounts[0]}:{json.loads(out)['digest']}"

    create = ailedger(*common, "--public-set", named, env=env)
    out, err = create.communicate(timeout=120)
    assert create.returncode == 0, err
    assert json.loads(out)["spec"]["public_set"]["digest"] == named[-64:]

    # a copy that is not the registered set is refused with one line, before anything is sent
    wrong = ailedger("train", "join", str(task_file), "-w", str(spaces[1]), "--public-set",
                     str(tampered), env=env)  # fmt: skip
    _, wrong_err = wrong.communicate(timeout=120)
    assert wrong.returncode == 1
    assert "the task names" in wrong_err and "Traceback" not in wrong_err
    assert len(wrong_err.strip().splitlines()) == 1

    joins = [
        ailedger(
            "train", "join", str(task_file), "-w", str(ws), "--json",
            "--public-set", str(public),
            "--mine-idle-after", "0.5", "--poll-interval", "0.05", "--timeout", "240",
            *(["--attack", "sign_flip"] if i == 2 else []),
            env=env,
        )
        for i, ws in enumerate(spaces)
    ]  # fmt: skip
    results = []
    for proc in joins:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        results.append(json.loads(out))

    flipper = accounts[2].lower()
    honest = results[:2]
    for result in honest:
        rounds = result["rounds"]
        assert [r["status"] for r in rounds] == ["finalized"] * ROUNDS
        assert all(r["b2"] is not None for r in rounds)
        assert flipper not in [
            a.lower() for r in rounds[:WARMUP_ROUNDS] for a in r["rule_excluded"]
        ]
        assert flipper in [a.lower() for a in rounds[WARMUP_ROUNDS]["rule_excluded"]]
    # the rule's exclusion is voted on at once (the round finalizes with the first attestations,
    # so a late party's vote comes only with the next round)
    voters = [
        r for r in honest if flipper in [a.lower() for a in r["rounds"][WARMUP_ROUNDS]["votes"]]
    ]
    assert voters
    for k in range(ROUNDS):
        same = {
            (r["rounds"][k]["aggregate_digest"], r["rounds"][k]["state_digest"],
             r["rounds"][k]["reference_digest"], r["rounds"][k]["round_digest"])
            for r in honest
        }  # fmt: skip
        assert len(same) == 1
    assert len({r["model_digest"] for r in honest}) == 1
