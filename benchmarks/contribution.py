"""Do contribution scores rank attackers and free riders lowest? (issue 13's target: in at
least 9 of 10 seeds).

Setting: the cross-silo federation of the issue on scikit-learn's digits, 12 parties with
Dirichlet(0.5) label skew, 2 malicious (``--attacks``: sign flipping, ALIE, label flipping,
the sleeper) and 1 free rider (zero update), 15 rounds, the rule ``train simulate`` picks for
it (``reputation``, with its public set of 100 examples), and per-round GTG-Shapley values
(Liu et al., "GTG-Shapley: efficient and accurate participant contribution evaluation in
federated learning", ACM TIST 2022) summed over rounds. The utility is accuracy on a
validation set held out of the training data (never the test set). Four scorings are
compared:

- ``fedavg``: a coalition's model is ``w + sum(u_i for i in S) / n``, FedAvg's aggregate with
  the others left out, whatever the rule aggregated (the scoring before issue 13), ranked
  by the Shapley value;
- ``rule``: each member counts with the weight the rule gave its update this round,
  ``w + sum(weight_i u_i for i in S)``, so a party the rule excluded is worth exactly 0 that
  round and the parties are credited for the model that was actually built; ranked by the
  Shapley value;
- ``rule+standing`` (``contribution_ranking="standing"``, the default before issue 13's
  ALIE finding): the ``rule`` values, with parties the reputation rule does not trust at
  the end (standing ``suspect`` or ``free_rider``) given no positive credit and ranked
  below the trusted ones (:func:`ailedger.federated.contribution.rank_contributions`);
- ``evidence`` (what ``train simulate`` reports now, ``contribution_ranking="evidence"``):
  parties the rule does not trust, and parties whose updates have ALIE's shape (mean
  :func:`ailedger.federated.contribution.alie_shape` over the rounds at least 0.5: the
  deviation from the others' mean is parallel to their standard deviation, as in Baruch et
  al., NeurIPS 2019) lowest; then every group by the rule's reputation (cumulative cosine
  with the public reference update), then by credited ``rule`` value
  (:func:`ailedger.federated.contribution.rank_evidence`).

No scoring uses who is malicious; that is only used here to check the ranking. Per seed:
the ranking (lowest first), whether the three bad parties hold the three lowest places (a
bad party tied with an honest one counts as above it), and the count over the seeds, written
to ``benchmarks/results/contribution.json``.

    python benchmarks/contribution.py [--seeds 0-9] [--attacks sign_flip,alie,...] [--rounds 15]
        [--out benchmarks/results/contribution.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ailedger.federated.data import load_digits
from ailedger.federated.simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parent.parent
SCORINGS = ("evidence", "rule+standing", "rule", "fedavg")


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def run_seed(args: argparse.Namespace, attack: str, seed: int, dataset: Any) -> dict[str, Any]:
    """Both scorings on one seed (same training, so the same model)."""
    config = SimulationConfig(
        data="digits",
        clients=args.clients,
        malicious=args.malicious,
        free_riders=args.free_riders,
        attack=attack,
        partition=f"dirichlet:{args.alpha}",
        rounds=args.rounds,
        seed=seed,
        contribution="gtg",
        contribution_max_clients=args.clients,
    )
    bad = set(range(args.malicious + args.free_riders))
    out: dict[str, Any] = {"seed": seed}
    digests = set()
    for scoring in ("rule", "fedavg"):
        started = time.perf_counter()
        result = simulate(replace(config, contribution_scoring=scoring), dataset=dataset)
        standing = replace(result, config=replace(result.config, contribution_ranking="standing"))
        assert result.contributions is not None
        values = np.asarray(result.contributions)
        # lowest first; a tie is broken against the bad parties (honest parties first), so a
        # bad party tied with an honest one never counts as ranked below it
        ranking = sorted(range(len(values)), key=lambda c: (values[c], c not in bad, c))
        rankings = {scoring: ranking}
        if scoring == "rule":
            assert result.contribution_ranking is not None
            assert standing.contribution_ranking is not None
            rankings["evidence"] = list(result.contribution_ranking)
            rankings["rule+standing"] = list(standing.contribution_ranking)
            out["alie_shapes"] = [round(v, 3) for v in result.alie_shapes or ()]
            out["standings"] = {
                s["party"]: s["verdict"]
                for s in result.standings or ()
                if s["verdict"] != "trusted"
            }
        for name, order in rankings.items():
            out[name] = {
                "ranking_lowest_first": order,
                "bad_lowest": set(order[: len(bad)]) == bad,
            }
        out[scoring] |= {
            "scores": [round(float(v), 5) for v in values],
            "honest_below_zero": [c for c in range(len(values)) if c not in bad and values[c] < 0],
            "seconds": round(time.perf_counter() - started, 1),
        }
        digests.add(result.model_digest)
        out["final_accuracy"] = round(result.final_accuracy, 4)
        out["rule_used"] = result.rule_used
    out["same_model"] = len(digests) == 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,1,2")
    parser.add_argument(
        "--attacks",
        default="sign_flip,alie,label_flip,sleeper",
        help="the malicious parties' attacks, one run of all seeds each (first: the headline)",
    )
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--malicious", type=int, default=2)
    parser.add_argument("--free-riders", type=int, default=1)
    parser.add_argument("--alpha", default="0.5")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "contribution.json"
    )
    args = parser.parse_args()
    dataset = load_digits(seed=0)
    seeds = _seeds(args.seeds)
    attacks = args.attacks.split(",")
    started = time.perf_counter()
    per_attack: dict[str, list[dict[str, Any]]] = {}
    for attack in attacks:
        per_seed = per_attack.setdefault(attack, [])
        for seed in seeds:
            row = run_seed(args, attack, seed, dataset)
            per_seed.append(row)
            print(
                f"{attack} seed {seed}: "
                + "; ".join(
                    f"{s}: lowest {row[s]['ranking_lowest_first'][:4]} "
                    f"bad lowest {row[s]['bad_lowest']}"
                    for s in SCORINGS
                ),
                file=sys.stderr,
                flush=True,
            )
    every = {
        a: {s: sum(r[s]["bad_lowest"] for r in rows) for s in SCORINGS}
        for a, rows in per_attack.items()
    }
    per_seed = per_attack[attacks[0]]
    bad = list(range(args.malicious + args.free_riders))
    doc = {
        "benchmark": "contribution",
        "command": " ".join(["python", "benchmarks/contribution.py", *sys.argv[1:]]),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "setting": {
            "data": "digits",
            "clients": args.clients,
            "malicious": list(range(args.malicious)),
            "attacks": attacks,
            "free_riders": list(range(args.malicious, args.malicious + args.free_riders)),
            "partition": f"dirichlet:{args.alpha}",
            "rounds": args.rounds,
            "rule": per_seed[0]["rule_used"],
            "method": "gtg",
            "utility": "accuracy on the 200-example validation set held out of training",
            "scorings": {
                "evidence": "untrusted standing or mean ALIE shape >= 0.5 lowest, then "
                "reputation, then credited rule values (default since issue 13)",
                "rule+standing": "rule values; untrusted standing ranks below trusted",
                "rule": "coalition model w + sum(weight_i u_i): the rule's weights",
                "fedavg": "coalition model w + sum(u_i) / n: FedAvg shares (before issue 13)",
            },
        },
        "seconds": round(time.perf_counter() - started, 1),
        "target": {
            "bad parties rank lowest in >= 9 of 10 seeds": {
                "scoring": "evidence",
                "attack": "worst of " + ",".join(attacks),
                "value": f"{min(every[a]['evidence'] for a in attacks)} of {len(seeds)}",
                "met": min(every[a]["evidence"] for a in attacks) >= 0.9 * len(seeds),
            }
        },
        "bad_lowest_count": every,
        "bad_parties": bad,
        "seeds": per_attack,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for a in attacks:
        for s in SCORINGS:
            print(f"{a:<11} {s:<14} bad parties lowest in {every[a][s]} of {len(seeds)} seeds")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
