"""Federated training with every party in one process, for experiments and benchmarks.

One round (FedAvg's loop, McMahan et al. 2017, over update vectors):

1. Every active client trains the global model ``w`` on its shard
   (:meth:`.models.Model.train_local`) and proposes the update ``u_i = w_i - w``.
2. Malicious clients attack. ``label_flip`` trains on labels ``y -> C - 1 - y`` (Tolpegin
   et al. 2020). ``scaling`` boosts a poisoned update, the model-replacement attack of
   Bagdasaryan et al. 2020: the update is trained on flipped labels, then multiplied (factor
   10 by default). ``free_rider`` sends the zero update or, with ``free_rider_mode=
   "previous"``, a copy of the previous round's global update (zero in the first round), Lin
   et al. 2019. Every other name of :data:`.attacks.ATTACKS` replaces the
   malicious updates by ``attack(own, benign)`` with the honest updates the attackers would
   have sent (``own``) and every benign update of the round (``benign``): the full-knowledge
   setting of Fang et al. 2020 and Cao et al. 2021; ``sleeper`` is also told the round (it
   behaves for the first third of the rounds, or up to round ``attack_params["wake"]``, then
   attacks with ``attack_params["then"]``, sign flipping by default). ``none`` leaves them
   honest. Extra
   ``free_riders`` (after the malicious clients) always free-ride.
3. The rule ``RULES[rule]`` (:mod:`.aggregate`, deterministic fixed point) aggregates the
   updates. A small public set (``root_size``, 100 examples by default, as FLTrust's root
   data set in Cao et al. 2021 §5.1) is always held out of the TRAINING data (never the test
   set); the reference update, trained each round on it from the current global model with
   the clients' local training and a fixed seed, is FLTrust's root update (``local_epochs``
   epochs, as the clients) and the ``reputation`` rule's reference (``reference_epochs``
   epochs, 10 by default: with 100 examples one epoch is a handful of SGD steps, and a
   reference trained longer points more reliably along the population's descent direction;
   chosen on tuning seeds 100 and 101 of the cross-silo sweep, never the reported seeds:
   at alpha 0.5, 25 % malicious, the mean gap to the honest-only oracle over no attack,
   label_flip, scaling and sign_flip was 0.055, 0.031 and 0.024 for 1, 3 and 5 epochs, and
   over seven attacks 0.013 and 0.011 for 10 and 20). The ``reference_aware`` attack knows
   the rule's reference. The reputation rule's state is carried from round to round. Rule
   ``"auto"`` (the default) is ``reputation`` for cross-silo federations (at most
   :data:`CROSS_SILO_MAX_CLIENTS` = 20 clients) and ``default`` (:func:`.aggregate.robust`)
   above that, so the 100-client MNIST setting keeps its rule. With ``loss_evidence`` the
   reputation also adds each update's loss decrease on the public set relative to the
   reference's (:func:`.reputation.loss_evidence`).
4. ``w <- w + server_lr * aggregate``; test accuracy and loss are measured.
5. Optionally, each party's contribution is scored with GTG-Shapley (Liu et al. 2022) or
   exact Shapley values. As in GTG-Shapley, a coalition's model is reconstructed from its
   members' updates without retraining: ``w + server_lr * sum(u_i for i in S) / n``, the
   round's FedAvg aggregate with the other parties' shares left out (``S = {}`` gives ``w``,
   the full coalition FedAvg's model). Its utility is the accuracy on a validation set held
   out of the training data. Fixed shares ``1 / n``, rather than the mean over ``S``, make a
   zero update worth exactly nothing, where a mean would reward it for damping the step.
   With ``contribution_scoring="rule"`` (the default) each member counts with the weight
   the rule gave its update that round instead of ``1 / n`` (the same for FedAvg), so a
   party the rule excluded is worth 0 that round; ``"fedavg"`` keeps ``1 / n`` whatever the
   rule did. :attr:`SimulationResult.contribution_ranking` (``contribution_ranking=
   "evidence"``, the default) puts parties the reputation rule does not trust and parties
   whose updates have ALIE's shape (:func:`.contribution.alie_shape`) lowest, then orders by
   reputation (:func:`.contribution.rank_evidence`); ``"standing"`` keeps the ranking before
   (untrusted lowest, then the Shapley value: :func:`.contribution.rank_contributions`).
   Cost grows quickly with the number of parties, so scoring is limited to
   ``contribution_max_clients`` parties.
6. Every round the spread-to-signal ratio ``B**2`` of the updates is computed
   (:func:`.reputation.spread_to_signal`, exact) and a warning recorded when the malicious
   fraction the task is sized for (``sized_for``, default ``f / clients`` with ``f =``
   :func:`.reputation.default_f`) reaches ``1 / (2 + B**2)`` (Allouah et al. 2023).
7. Baselines (``baselines=True``; ``train simulate`` always asks): the same training with
   FedAvg over the honest parties only (malicious parties and free riders absent, same
   partition, seeds and local training: the "honest-only oracle", the fair yardstick under
   label skew, where attackers may hold most of some class) and over all parties with
   nobody attacking.
8. A party flagged by the rule in at least ``exclude_after`` rounds, and in at least
   ``exclude_fraction`` of the rounds it took part in, is excluded from later rounds (never
   leaving fewer than half the clients active). The fraction guard matters because robust
   rules also flag some honest parties: Multi-Krum always drops ``f`` of them (on digits, an
   honest party is flagged in up to about half the rounds; a sign flipper in all).

Clients ``0 .. malicious-1`` are malicious, the next ``free_riders`` free-ride, the rest are
honest. Everything random (initial model, partition, hold-outs, local shuffles, attack noise,
GTG permutations) comes from ``numpy.random.SeedSequence`` children of ``seed``, so one seed
gives bit-identical runs on one machine (the aggregate digests compare across machines;
local training uses floating-point BLAS, whose last bits may differ between machines).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ailedger.errors import InputError
from ailedger.federated.aggregate import RULES, aggregate_digest, dequantize, quantize
from ailedger.federated.attacks import ATTACKS, label_flip
from ailedger.federated.contribution import (
    MAX_EXACT_PARTIES,
    ShapleyEstimate,
    alie_shape,
    exact_shapley,
    gtg_shapley,
    rank_contributions,
    rank_evidence,
)
from ailedger.federated.data import Dataset, Partition, load_dataset, parse_partition, partition
from ailedger.federated.models import MODELS, Model, make_model
from ailedger.federated.reputation import (
    ReputationResult,
    ReputationState,
    breakdown_warning,
    default_f,
    loss_evidence,
    spread_to_signal,
    standings,
)

__all__ = [
    "ATTACK_NAMES",
    "CROSS_SILO_MAX_CLIENTS",
    "RoundResult",
    "SimulationConfig",
    "SimulationResult",
    "simulate",
]

FloatArray = npt.NDArray[np.float64]

#: every attack name :class:`SimulationConfig` accepts
ATTACK_NAMES: tuple[str, ...] = ("none", "label_flip", *ATTACKS)
_POISONED_DATA = frozenset({"label_flip", "scaling"})
#: rule ``"auto"`` is ``reputation`` up to this many clients, ``default`` above
CROSS_SILO_MAX_CLIENTS = 20
_NEEDS_REFERENCE = frozenset({"fltrust", "reputation"})
_SEED_ROOT, _SEED_VALIDATION, _SEED_PARTITION, _SEED_INIT = 1, 2, 3, 4
_SEED_CLIENT, _SEED_ATTACK, _SEED_SERVER, _SEED_SHAPLEY = 5, 6, 7, 8


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of one simulated federation (module docstring for their meaning).

    Invalid settings raise :class:`InputError` at construction. ``data`` is ``"digits"`` or
    ``"mnist"`` (from ``data_dir``); ``partition`` is ``"iid"`` or ``"dirichlet:ALPHA"``;
    ``lr`` is the clients' SGD step, ``server_lr`` the step applied to the aggregate;
    ``attack_params`` and ``rule_params`` go to the attack and the rule as keywords.
    ``contribution`` is ``"none"``, ``"gtg"`` or ``"exact"``. ``rule`` ``"auto"`` resolves
    to :attr:`rule_used`. ``root_size`` is the size of the public set held out of the
    training data. ``sized_for`` is the malicious fraction the task is sized for (for the
    ``B**2`` warning; default ``default_f(clients) / clients``). ``baselines`` runs the
    honest-only and attack-free FedAvg baselines too (two more trainings).
    """

    data: str = "digits"
    data_dir: Path | None = None
    clients: int = 10
    malicious: int = 0
    free_riders: int = 0
    attack: str = "none"
    attack_params: Mapping[str, Any] = field(default_factory=dict)
    rule: str = "auto"
    rule_params: Mapping[str, Any] = field(default_factory=dict)
    rounds: int = 10
    partition: str = "iid"
    seed: int = 0
    model: str = "logreg"
    hidden: int = 64
    local_epochs: int = 1
    lr: float = 0.1
    batch_size: int = 32
    server_lr: float = 1.0
    root_size: int = 100
    validation_size: int = 200
    contribution: Literal["none", "gtg", "exact"] = "none"
    contribution_max_clients: int = 10
    contribution_scoring: Literal["rule", "fedavg"] = "rule"
    contribution_ranking: Literal["evidence", "standing"] = "evidence"
    exclude_after: int | None = None
    exclude_fraction: float = 0.75
    free_rider_mode: Literal["zero", "previous"] = "zero"
    loss_evidence: bool = False
    reference_epochs: int = 10
    sized_for: float | None = None
    baselines: bool = False

    @property
    def rule_used(self) -> str:
        """The rule that aggregates: ``rule``, with ``"auto"`` resolved (module docstring)."""
        if self.rule != "auto":
            return self.rule
        return "reputation" if self.clients <= CROSS_SILO_MAX_CLIENTS else "default"

    @property
    def sized_fraction(self) -> float:
        """The malicious fraction the task is sized for (``sized_for`` or its default)."""
        if self.sized_for is not None:
            return self.sized_for
        return default_f(self.clients) / self.clients

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, low: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an int >= {low}, got {value!r}")

        if self.data not in ("digits", "mnist"):
            raise InputError(f"unknown data set {self.data!r}; use 'digits' or 'mnist'")
        positive("clients", self.clients)
        positive("malicious", self.malicious, 0)
        positive("free_riders", self.free_riders, 0)
        positive("rounds", self.rounds)
        positive("hidden", self.hidden)
        positive("local_epochs", self.local_epochs)
        positive("batch_size", self.batch_size)
        positive("root_size", self.root_size)
        positive("reference_epochs", self.reference_epochs)
        positive("validation_size", self.validation_size)
        positive("contribution_max_clients", self.contribution_max_clients)
        positive("seed", self.seed, 0)
        if self.malicious + self.free_riders >= self.clients:
            raise InputError(
                f"malicious ({self.malicious}) plus free riders ({self.free_riders}) must be "
                f"fewer than the clients ({self.clients})"
            )
        if self.attack not in ATTACK_NAMES:
            raise InputError(
                f"unknown attack {self.attack!r}; use one of {', '.join(ATTACK_NAMES)}"
            )
        if self.rule not in RULES and self.rule != "auto":
            raise InputError(f"unknown rule {self.rule!r}; use auto or one of {', '.join(RULES)}")
        if self.loss_evidence and self.rule_used != "reputation":
            raise InputError("loss_evidence needs the reputation rule")
        if self.sized_for is not None and (
            isinstance(self.sized_for, bool) or not 0 <= self.sized_for < 1
        ):
            raise InputError(f"sized_for must be a fraction in [0, 1), got {self.sized_for!r}")
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}; use one of {', '.join(MODELS)}")
        parse_partition(self.partition)
        for name, value in (("lr", self.lr), ("server_lr", self.server_lr)):
            if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a positive number, got {value!r}")
        if self.contribution not in ("none", "gtg", "exact"):
            raise InputError(
                f"unknown contribution method {self.contribution!r}; use none, gtg or exact"
            )
        if self.contribution_scoring not in ("rule", "fedavg"):
            raise InputError(
                "contribution_scoring must be 'rule' or 'fedavg', "
                f"got {self.contribution_scoring!r}"
            )
        if self.contribution_ranking not in ("evidence", "standing"):
            raise InputError(
                "contribution_ranking must be 'evidence' or 'standing', "
                f"got {self.contribution_ranking!r}"
            )
        limit = self.contribution_max_clients
        if self.contribution == "exact":
            limit = min(limit, MAX_EXACT_PARTIES)
        if self.contribution != "none" and self.clients > limit:
            raise InputError(
                f"contribution scores are limited to {limit} clients (got {self.clients}): "
                "each round evaluates up to 2**clients coalitions"
            )
        if self.exclude_after is not None:
            positive("exclude_after", self.exclude_after)
        if self.free_rider_mode not in ("zero", "previous"):
            raise InputError(
                f"free_rider_mode must be 'zero' or 'previous', got {self.free_rider_mode!r}"
            )
        if not 0 <= self.exclude_fraction <= 1:
            raise InputError(f"exclude_fraction must be in [0, 1], got {self.exclude_fraction}")

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-able dict."""
        doc = {name: getattr(self, name) for name in self.__dataclass_fields__}
        doc["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        doc["attack_params"] = dict(self.attack_params)
        doc["rule_params"] = dict(self.rule_params)
        return doc


@dataclass(frozen=True, eq=False)
class RoundResult:
    """Metrics of one round.

    Party indices are global (``0 .. clients-1``). ``participants`` took part; ``selected``
    and ``flagged`` are the rule's verdicts; ``excluded`` are the parties excluded from the
    next round on (cumulative). ``digest`` is the hex SHA-256 of the fixed-point aggregate
    (what parties vote on). ``contributions`` (one value per client, 0 for absent ones, in
    accuracy units) is set when scoring was asked for. ``seconds`` is wall time. ``b2`` is
    the round's spread-to-signal ratio (None: unbounded) and ``b2_warning`` the warning
    when the task's sized-for fraction reaches ``1 / (2 + b2)``. ``reputations`` (one value
    per client, cosine units) is set by the reputation rule.
    """

    round: int
    test_accuracy: float
    test_loss: float
    participants: tuple[int, ...]
    selected: tuple[int, ...]
    flagged: tuple[int, ...]
    excluded: tuple[int, ...]
    digest: str
    update_norm: float
    contributions: tuple[float, ...] | None
    seconds: float
    b2: float | None = None
    b2_warning: str | None = None
    reputations: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The metrics as a JSON-able dict."""
        return {
            "round": self.round,
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "participants": list(self.participants),
            "selected": list(self.selected),
            "flagged": list(self.flagged),
            "excluded": list(self.excluded),
            "digest": self.digest,
            "update_norm": self.update_norm,
            "contributions": None if self.contributions is None else list(self.contributions),
            "seconds": self.seconds,
            "b2": self.b2,
            "b2_warning": self.b2_warning,
            "reputations": None if self.reputations is None else list(self.reputations),
        }


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Outcome of :func:`simulate`.

    ``params`` is the final global parameter vector; ``model_digest`` the hex digest of its
    fixed-point form (:func:`.aggregate.aggregate_digest`), equal for equal runs.
    ``contributions`` sums the per-round scores (None without scoring). ``rule_used`` is
    the rule that aggregated; ``public_set_size`` the examples held out as the public set.
    ``honest_only_accuracy`` / ``honest_only_curve`` are FedAvg over the honest parties only
    (final, per round) and ``attack_free_accuracy`` FedAvg over all parties with nobody
    attacking (None without baselines). ``warnings`` are one-line messages (the ``B**2``
    warning); ``reputation_state`` and ``standings`` are set by the reputation rule.
    ``alie_shapes`` (with scoring) is each client's mean :func:`.contribution.alie_shape`
    over the rounds it took part in.
    """

    config: SimulationConfig
    model_spec: dict[str, Any]
    malicious: tuple[int, ...]
    free_riders: tuple[int, ...]
    rounds: tuple[RoundResult, ...]
    params: FloatArray
    model_digest: str
    excluded: tuple[int, ...]
    contributions: tuple[float, ...] | None
    rule_used: str = "default"
    public_set_size: int = 0
    honest_only_accuracy: float | None = None
    honest_only_curve: tuple[float, ...] | None = None
    attack_free_accuracy: float | None = None
    warnings: tuple[str, ...] = ()
    reputation_state: ReputationState | None = None
    standings: tuple[dict[str, Any], ...] | None = None
    alie_shapes: tuple[float, ...] | None = None

    @property
    def final_accuracy(self) -> float:
        """Test accuracy of the final model."""
        return self.rounds[-1].test_accuracy

    @property
    def final_loss(self) -> float:
        """Test cross-entropy of the final model."""
        return self.rounds[-1].test_loss

    @property
    def contribution_ranking(self) -> tuple[int, ...] | None:
        """Clients by contribution, lowest first (None without scoring): with the reputation
        rule, parties it does not trust (standing ``suspect`` or ``free_rider``) below the
        trusted ones (:func:`.contribution.rank_contributions`), else by value alone; with
        ``contribution_ranking="evidence"`` by :func:`.contribution.rank_evidence` over the
        mean ALIE shapes (``alie_shapes``) and the reputations."""
        if self.contributions is None:
            return None
        verdict = {int(s["party"]): s["verdict"] for s in self.standings or ()}
        trusted = [verdict.get(c, "trusted") == "trusted" for c in range(len(self.contributions))]
        if self.config.contribution_ranking == "standing" or self.alie_shapes is None:
            return rank_contributions(self.contributions, trusted)
        reputation = None
        if self.reputation_state is not None:
            state = self.reputation_state
            reputation = [state.reputation(str(c)) / 2**20 for c in range(len(trusted))]
        return rank_evidence(self.contributions, trusted, self.alie_shapes, reputation)

    def to_json(self) -> dict[str, Any]:
        """Everything but the parameters, as a JSON-able dict."""
        return {
            "config": self.config.to_json(),
            "model": self.model_spec,
            "malicious": list(self.malicious),
            "free_riders": list(self.free_riders),
            "rule_used": self.rule_used,
            "public_set_size": self.public_set_size,
            "final_accuracy": self.final_accuracy,
            "honest_only_accuracy": self.honest_only_accuracy,
            "honest_only_gap": (
                None
                if self.honest_only_accuracy is None
                else self.honest_only_accuracy - self.final_accuracy
            ),
            "attack_free_accuracy": self.attack_free_accuracy,
            "honest_only_curve": (
                None if self.honest_only_curve is None else list(self.honest_only_curve)
            ),
            "final_loss": self.final_loss,
            "warnings": list(self.warnings),
            "reputation_state": (
                None if self.reputation_state is None else self.reputation_state.to_json()
            ),
            "reputation_state_digest": (
                None if self.reputation_state is None else self.reputation_state.digest().hex()
            ),
            "standings": None if self.standings is None else list(self.standings),
            "model_digest": self.model_digest,
            "excluded": list(self.excluded),
            "contributions": None if self.contributions is None else list(self.contributions),
            "alie_shapes": None if self.alie_shapes is None else list(self.alie_shapes),
            "contribution_ranking": (
                None if self.contribution_ranking is None else list(self.contribution_ranking)
            ),
            "rounds": [r.to_json() for r in self.rounds],
        }


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def _int_seed(seed: int, *path: int) -> int:
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


@dataclass(frozen=True, eq=False)
class _Setup:
    dataset: Dataset
    model: Model
    shards: Partition
    x_clients: FloatArray
    y_clients: npt.NDArray[np.int64]
    x_root: FloatArray
    y_root: npt.NDArray[np.int64]
    x_val: FloatArray
    y_val: npt.NDArray[np.int64]


def _setup(config: SimulationConfig, dataset: Dataset | None) -> _Setup:
    data = dataset if dataset is not None else load_dataset(config.data, config.data_dir)
    n_train = data.x_train.shape[0]
    held = config.root_size + config.validation_size
    if n_train - held < 2 * config.clients:
        raise InputError(
            f"{data.name} has {n_train} training examples: too few for {config.clients} clients "
            f"after holding out {held} for the root and validation sets"
        )
    order = _rng(config.seed, _SEED_ROOT).permutation(n_train)
    root, val, rest = (
        order[: config.root_size],
        order[config.root_size : held],
        np.sort(order[held:]),
    )
    x_clients, y_clients = data.x_train[rest], data.y_train[rest]
    shards = partition(
        y_clients, config.clients, config.partition, seed=_int_seed(config.seed, _SEED_PARTITION)
    )
    options = {"hidden": config.hidden} if config.model == "mlp" else {}
    model = make_model(
        config.model, num_features=data.num_features, num_classes=data.num_classes, **options
    )
    return _Setup(
        dataset=data,
        model=model,
        shards=shards,
        x_clients=x_clients,
        y_clients=y_clients,
        x_root=data.x_train[root],
        y_root=data.y_train[root],
        x_val=data.x_train[val],
        y_val=data.y_train[val],
    )


def _round_updates(
    config: SimulationConfig,
    setup: _Setup,
    params: FloatArray,
    active: list[int],
    round_no: int,
    previous: FloatArray | None,
    reference: FloatArray | None = None,
) -> FloatArray:
    """The updates the active clients send this round, shape ``(len(active), num_params)``."""
    model = setup.model
    malicious = set(range(config.malicious))
    riders = set(range(config.malicious, config.malicious + config.free_riders))
    updates = np.zeros((len(active), model.num_params), dtype=np.float64)
    for row, client in enumerate(active):
        if client in riders or (client in malicious and config.attack == "free_rider"):
            continue
        ix = setup.shards[client]
        y = setup.y_clients[ix]
        if client in malicious and config.attack in _POISONED_DATA:
            y = label_flip(y, setup.dataset.num_classes)
        trained = model.train_local(
            params,
            setup.x_clients[ix],
            y,
            epochs=config.local_epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            rng=_rng(config.seed, _SEED_CLIENT, round_no, client),
        )
        updates[row] = trained - params
    rider_rows = [r for r, c in enumerate(active) if c in riders]
    attack_rows = [r for r, c in enumerate(active) if c in malicious]
    if previous is not None and config.free_rider_mode == "previous":
        updates[rider_rows] = previous
        if config.attack == "free_rider":
            updates[attack_rows] = previous
    if attack_rows and config.attack not in ("none", "label_flip", "free_rider"):
        benign_rows = [r for r, c in enumerate(active) if c not in malicious and c not in riders]
        attack = ATTACKS[config.attack]
        params_for_attack = dict(config.attack_params)
        if config.attack == "scaling":
            params_for_attack.setdefault("factor", 10.0)
        if config.attack == "sleeper":
            params_for_attack.update(round_no=round_no)
            params_for_attack.setdefault("rounds", config.rounds)
        if config.attack == "reference_aware" or (
            config.attack == "sleeper" and params_for_attack.get("then") == "reference_aware"
        ):
            params_for_attack["reference"] = reference
        updates[attack_rows] = attack(
            updates[attack_rows],
            updates[benign_rows],
            rng=_rng(config.seed, _SEED_ATTACK, round_no),
            **params_for_attack,
        )
    return updates


def _contributions(
    config: SimulationConfig,
    setup: _Setup,
    params: FloatArray,
    updates: FloatArray,
    round_no: int,
    weights: FloatArray,
) -> ShapleyEstimate:
    model = setup.model

    n = updates.shape[0]
    fixed = quantize(updates, where="update")
    # scoring "rule": each member counts with the weight the rule gave it (0 if excluded)
    w = np.full(n, 1.0 / n) if config.contribution_scoring == "fedavg" else weights

    def utility(coalition: frozenset[int]) -> float:
        if not coalition:
            return model.evaluate(params, setup.x_val, setup.y_val)
        idx = sorted(coalition)
        share = w[idx] @ dequantize(fixed[idx])
        return model.evaluate(params + config.server_lr * share, setup.x_val, setup.y_val)

    if config.contribution == "exact":
        return exact_shapley(n, utility)
    return gtg_shapley(n, utility, seed=_int_seed(config.seed, _SEED_SHAPLEY, round_no))


def simulate(
    config: SimulationConfig,
    *,
    dataset: Dataset | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> SimulationResult:
    """Run the federation of ``config`` (module docstring) and return every round's metrics.

    ``dataset`` replaces loading ``config.data`` (to reuse one loaded copy across runs);
    ``on_round`` is called after each round with its :class:`RoundResult` (for a progress bar,
    or to record the round on a ledger). Raises :class:`InputError` for unusable data and
    :class:`~ailedger.errors.AggregationError` if the rule cannot aggregate a round.
    """
    setup = _setup(config, dataset)
    model = setup.model
    data = setup.dataset
    params = model.init_params(_int_seed(config.seed, _SEED_INIT))
    rule_name = config.rule_used
    rule = RULES[rule_name]
    flags = [0] * config.clients
    seen = [0] * config.clients
    excluded: list[int] = []
    previous: FloatArray | None = None
    results: list[RoundResult] = []
    cumulative = np.zeros(config.clients) if config.contribution != "none" else None
    shape_sum = np.zeros(config.clients)
    state: ReputationState | None = None
    magnitudes = [0] * config.clients
    if rule_name == "reputation":
        state = ReputationState.initial([str(c) for c in range(config.clients)])
    need_reference = (
        rule_name in _NEEDS_REFERENCE
        or config.attack == "reference_aware"
        or config.attack_params.get("then") == "reference_aware"
    )
    warned = 0
    first_warning: str | None = None
    for round_no in range(config.rounds):
        started = time.perf_counter()
        active = [c for c in range(config.clients) if c not in excluded]
        reference = None
        if need_reference:
            epochs = config.local_epochs if rule_name == "fltrust" else config.reference_epochs
            reference = _reference(config, setup, params, round_no, epochs)
        updates = _round_updates(config, setup, params, active, round_no, previous, reference)
        options = dict(config.rule_params)
        if rule_name == "fltrust":
            options["root"] = reference
        elif rule_name == "reputation":
            options.update(reference=reference, state=state, parties=[str(c) for c in active])
            if config.loss_evidence:
                assert reference is not None
                options["evidence"] = _loss_evidence(config, setup, params, updates, reference)
        outcome = rule(updates, **options)
        reputations: tuple[float, ...] | None = None
        if isinstance(outcome, ReputationResult):
            state = outcome.state
            for row, client in enumerate(active):
                extra = 0.0 if "evidence" not in options else abs(options["evidence"][row])
                magnitudes[client] += round((abs(outcome.cosines[row]) + extra) * 2**20)
            reputations = tuple(state.reputation(str(c)) / 2**20 for c in range(config.clients))
        b2 = spread_to_signal(updates)
        warning = breakdown_warning(b2, config.sized_fraction)
        if warning is not None:
            warned += 1
            first_warning = first_warning or f"round {round_no}: {warning}"
        scores: tuple[float, ...] | None = None
        if cumulative is not None:
            estimate = _contributions(
                config, setup, params, updates, round_no, np.asarray(outcome.weights)
            )
            per_client = np.zeros(config.clients)
            per_client[active] = estimate.values
            cumulative += per_client
            if len(active) >= 3:
                shape_sum[active] += alie_shape(updates)
            scores = tuple(float(v) for v in per_client)
        params = params + config.server_lr * outcome.aggregate
        previous = outcome.aggregate
        flagged = tuple(active[k] for k in outcome.flagged)
        for client in active:
            seen[client] += 1
        for client in flagged:
            flags[client] += 1
        if config.exclude_after is not None:
            excluded = _exclusions(config, flags, seen, excluded)
        results.append(
            RoundResult(
                round=round_no,
                test_accuracy=model.evaluate(params, data.x_test, data.y_test),
                test_loss=model.loss(params, data.x_test, data.y_test),
                participants=tuple(active),
                selected=tuple(active[k] for k in outcome.selected),
                flagged=flagged,
                excluded=tuple(excluded),
                digest=outcome.digest.hex(),
                update_norm=float(np.linalg.norm(outcome.aggregate)),
                contributions=scores,
                seconds=time.perf_counter() - started,
                b2=b2,
                b2_warning=warning,
                reputations=reputations,
            )
        )
        if on_round is not None:
            on_round(results[-1])
    warnings: list[str] = []
    if first_warning is not None:
        warnings.append(f"B^2 warning in {warned} of {config.rounds} rounds, first {first_warning}")
    honest_curve: tuple[float, ...] | None = None
    attack_free: float | None = None
    if config.baselines:
        bad = config.malicious + config.free_riders
        honest_curve = _baseline(config, setup, list(range(bad, config.clients)))
        attack_free = (
            honest_curve[-1]
            if bad == 0
            else _baseline(config, setup, list(range(config.clients)))[-1]
        )
    return SimulationResult(
        config=config,
        model_spec=model.spec(),
        malicious=tuple(range(config.malicious)),
        free_riders=tuple(range(config.malicious, config.malicious + config.free_riders)),
        rounds=tuple(results),
        params=params,
        model_digest=aggregate_digest(quantize(params, where="model")).hex(),
        excluded=tuple(excluded),
        contributions=None if cumulative is None else tuple(float(v) for v in cumulative),
        rule_used=rule_name,
        public_set_size=config.root_size,
        honest_only_accuracy=None if honest_curve is None else honest_curve[-1],
        honest_only_curve=honest_curve,
        attack_free_accuracy=attack_free,
        warnings=tuple(warnings),
        reputation_state=state,
        alie_shapes=None
        if cumulative is None
        else tuple(float(v) / max(seen[c], 1) for c, v in enumerate(shape_sum)),
        standings=None
        if state is None
        else tuple(
            s.to_json()
            for s in standings(state, magnitudes=[magnitudes[int(p)] for p in state.parties])
        ),
    )


def _reference(
    config: SimulationConfig, setup: _Setup, params: FloatArray, round_no: int, epochs: int
) -> FloatArray:
    """The round's reference update: ``epochs`` epochs of the clients' local training (same
    step, batch size and seeded shuffles) on the public set from ``params``."""
    trained = setup.model.train_local(
        params,
        setup.x_root,
        setup.y_root,
        epochs=epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        rng=_rng(config.seed, _SEED_SERVER, round_no),
    )
    out: FloatArray = trained - params
    return out


def _loss_evidence(
    config: SimulationConfig,
    setup: _Setup,
    params: FloatArray,
    updates: FloatArray,
    reference: FloatArray,
) -> FloatArray:
    """Each update's public-set loss decrease relative to the reference's, in [-1, 1]."""
    model = setup.model

    def loss(step: FloatArray) -> float:
        return model.loss(params + config.server_lr * step, setup.x_root, setup.y_root)

    before = model.loss(params, setup.x_root, setup.y_root)
    after = [loss(u) for u in updates]
    return loss_evidence(before, after, loss(reference))


def _baseline(config: SimulationConfig, setup: _Setup, clients: list[int]) -> tuple[float, ...]:
    """Test accuracy per round of FedAvg over ``clients``, all honest (same seeds)."""
    model = setup.model
    honest = replace(
        config, malicious=0, free_riders=0, attack="none", rule="fedavg", loss_evidence=False
    )
    params = model.init_params(_int_seed(config.seed, _SEED_INIT))
    curve = []
    for round_no in range(config.rounds):
        updates = _round_updates(honest, setup, params, clients, round_no, None)
        params = params + config.server_lr * RULES["fedavg"](updates).aggregate
        curve.append(model.evaluate(params, setup.dataset.x_test, setup.dataset.y_test))
    return tuple(curve)


def _exclusions(
    config: SimulationConfig, flags: list[int], seen: list[int], excluded: list[int]
) -> list[int]:
    """Excluded parties after a round: the old ones plus parties over the thresholds, most
    flagged first, while at least half the clients stay active."""
    assert config.exclude_after is not None
    candidates = sorted(
        (
            c
            for c in range(config.clients)
            if c not in excluded
            and flags[c] >= config.exclude_after
            and flags[c] >= config.exclude_fraction * seen[c]
        ),
        key=lambda c: (-flags[c], c),
    )
    room = config.clients - (config.clients + 1) // 2 - len(excluded)
    return sorted([*excluded, *candidates[: max(0, room)]])
