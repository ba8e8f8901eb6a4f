"""Glue between the protocol and the numpy classifiers: task specs for a data set and a model,
and each party's local training, attacks and evaluation on its shard."""

from __future__ import annotations

import io
import json
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ailedger._fs import write_atomic
from ailedger._input import read_bounded
from ailedger.errors import InputError
from ailedger.federated.attacks import label_flip
from ailedger.federated.data import Dataset, load_dataset, partition
from ailedger.federated.models import Model, make_model
from ailedger.federated.protocol import (
    Party,
    PublicSet,
    RoundReport,
    TaskRef,
    TaskSpec,
    TrainingError,
    check_public_set,
    create_task,
    model_digest,
)
from ailedger.federated.transport import BlobServer, BlobStore, announce_url
from ailedger.ledger import Ledger
from ailedger.ledger.training import TrainingTask

__all__ = [
    "PARTY_ATTACKS",
    "LocalSetup",
    "classifier_settings",
    "classifier_setup",
    "classifier_spec",
    "create_classifier_task",
    "public_reference",
    "run_classifier_party",
]

FloatArray = npt.NDArray[np.float64]

#: what a malicious protocol party may do to its own update (it sees no one else's):
#: ``label_flip`` trains on flipped labels (Tolpegin et al. 2020); ``scaling`` boosts that
#: update 10 times (Bagdasaryan et al. 2020); ``sign_flip`` negates its honest update;
#: ``gaussian`` sends N(0, 1) noise; ``free_rider`` sends zeros (Lin et al. 2019)
PARTY_ATTACKS = ("none", "label_flip", "scaling", "sign_flip", "gaussian", "free_rider")
_VALIDATION_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class LocalSetup:
    """One party's side of a classifier task: the initial model, its training function, its
    evaluation on its own held-out examples (for contribution scores), and test accuracy."""

    model: Model
    initial: FloatArray
    train: Callable[[FloatArray], FloatArray]
    evaluate: Callable[[FloatArray], float]
    test_accuracy: Callable[[FloatArray], float]


def _model(name: str, dataset: Dataset, hidden: int) -> Model:
    options: dict[str, Any] = {"hidden": hidden} if name == "mlp" else {}
    return make_model(
        name, num_features=dataset.num_features, num_classes=dataset.num_classes, **options
    )


def classifier_spec(
    *,
    parties: int,
    rounds: int,
    quorum: int,
    rule: str = "default",
    data: str = "digits",
    data_dir: Path | None = None,
    model: str = "logreg",
    hidden: int = 32,
    seed: int = 0,
    partition_spec: str = "iid",
    local_epochs: int = 1,
    lr: float = 0.1,
    batch_size: int = 32,
    commit_blocks: int = 40,
    reveal_blocks: int = 40,
    attest_blocks: int = 40,
    exclude_after: int = 2,
    max_norm: float = 1000.0,
    contribution: str = "gtg",
    public_set: PublicSet | None = None,
    fallback: bool = False,
    sized_for: float | None = None,
    timing: str = "fixed",
) -> TaskSpec:
    """The spec of a task training ``model`` on ``data`` split among ``parties`` shards
    (``public_set``, ``fallback``, ``sized_for``, ``timing``: see :class:`TaskSpec`)."""
    dataset = load_dataset(data, data_dir, seed=seed)
    net = _model(model, dataset, hidden)
    initial = net.init_params(seed)
    return TaskSpec(
        shape=initial.shape,
        initial_digest=model_digest(initial),
        rounds=rounds,
        quorum=quorum,
        rule=rule,
        max_norm=max_norm,
        commit_blocks=commit_blocks,
        reveal_blocks=reveal_blocks,
        attest_blocks=attest_blocks,
        exclude_after=exclude_after,
        contribution=contribution,
        public_set=public_set,
        fallback=fallback,
        sized_for=sized_for,
        timing=timing,
        extra={
            "data": data,
            "model": net.spec() | ({"hidden": hidden} if model == "mlp" else {}),
            "seed": seed,
            "partition": partition_spec,
            "shards": parties,
            "local_epochs": local_epochs,
            "lr": lr,
            "batch_size": batch_size,
        },
    )


def classifier_settings(spec: TaskSpec) -> dict[str, Any]:
    """The classifier settings in ``spec.extra`` (a task file is outside data: each type and
    range checked), or :class:`InputError` naming the first bad one."""
    extra = spec.extra
    bad = "the task spec does not describe a classifier task"

    def get(key: str, kind: type | tuple[type, ...], doc: Any = extra) -> Any:
        if not isinstance(doc, dict) or key not in doc:
            raise InputError(f"{bad}: missing extra.{key}")
        value = doc[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InputError(f"{bad}: extra.{key} has the wrong type")
        return value

    def integer(key: str, low: int, high: int, doc: Any = extra) -> int:
        value: int = get(key, int, doc)
        if not low <= value <= high:
            raise InputError(f"{bad}: extra.{key} must be in [{low}, {high}]")
        return value

    model_doc = get("model", dict)
    settings: dict[str, Any] = {
        "data": get("data", str),
        "seed": integer("seed", 0, 2**32 - 1),
        "shards": integer("shards", 1, 64),
        "local_epochs": integer("local_epochs", 0, 1000),
        "lr": float(get("lr", (int, float))),
        "batch_size": integer("batch_size", 1, 1 << 20),
        "partition": get("partition", str)[:64],
        "model": get("model", str, model_doc),
        "hidden": integer("hidden", 1, 4096, model_doc) if "hidden" in model_doc else 32,
    }
    if not 0 < settings["lr"] < float("inf"):
        raise InputError(f"{bad}: extra.lr must be a positive finite number")
    return settings


def classifier_setup(
    spec: TaskSpec,
    *,
    shard: int,
    attack: str = "none",
    data_dir: Path | None = None,
    dataset: Dataset | None = None,
) -> LocalSetup:
    """Load the spec's data, take shard ``shard`` of its partition (a fifth held out for
    validation), and build the party's training (with ``attack``) and evaluation."""
    settings = classifier_settings(spec)
    data, seed, shards = settings["data"], settings["seed"], settings["shards"]
    epochs, lr, batch = settings["local_epochs"], settings["lr"], settings["batch_size"]
    scheme = settings["partition"]
    if attack not in PARTY_ATTACKS:
        raise InputError(f"unknown attack {attack!r}; use one of {', '.join(PARTY_ATTACKS)}")
    if not 0 <= shard < shards:
        raise InputError(f"shard must be in [0, {shards}), got {shard}")
    loaded = dataset or load_dataset(data, data_dir, seed=seed)
    net = _model(settings["model"], loaded, settings["hidden"])
    initial = net.init_params(seed)
    if model_digest(initial) != spec.initial_digest:
        raise InputError("this model and seed do not give the task's initial model")
    split = partition(loaded.y_train, shards, scheme, seed=seed)
    own = split[shard]
    held = max(1, int(len(own) * _VALIDATION_FRACTION))
    x_train, y_train = loaded.x_train[own[held:]], loaded.y_train[own[held:]]
    x_val, y_val = loaded.x_train[own[:held]], loaded.y_train[own[:held]]
    if attack in ("label_flip", "scaling"):
        y_train = label_flip(y_train, loaded.num_classes)
    rng = np.random.default_rng([seed, shard])

    def train(params: FloatArray) -> FloatArray:
        if attack == "free_rider":
            return np.zeros_like(params)
        if attack == "gaussian":
            return rng.normal(0.0, 1.0, size=params.shape)
        trained = net.train_local(
            params, x_train, y_train, epochs=epochs, lr=lr, batch_size=batch, rng=rng
        )
        update = trained - params
        if attack == "scaling":
            return 10.0 * update
        if attack == "sign_flip":
            return -update
        return update

    return LocalSetup(
        model=net,
        initial=initial,
        train=train,
        evaluate=lambda params: net.evaluate(params, x_val, y_val),
        test_accuracy=lambda params: net.evaluate(params, loaded.x_test, loaded.y_test),
    )


_MAX_PUBLIC_SET = 64 * 1024 * 1024


def public_reference(
    spec: TaskSpec, path: Path, *, data_dir: Path | None = None
) -> Callable[[FloatArray, int], FloatArray]:
    """The reference trainer of a classifier task on its public validation set at ``path``
    (an ``.npz`` with ``x``, float, shape ``(m, features)``, and ``y``, integer labels,
    shape ``(m,)``; check it against the task first with
    :func:`~ailedger.federated.protocol.check_public_set`).

    ``reference(params, round)`` runs the task's local training (model, epochs, learning rate,
    batch size) on the public set from ``params`` with a generator seeded by the task's seed
    and ``round`` only, and returns the update; the same at every party.
    """
    settings = classifier_settings(spec)
    dataset = load_dataset(settings["data"], data_dir, seed=settings["seed"])
    net = _model(settings["model"], dataset, settings["hidden"])
    bad = f"public set {path}"
    try:
        with path.open("rb") as handle:
            raw = read_bounded(handle, limit=_MAX_PUBLIC_SET, what=bad)
        with np.load(io.BytesIO(raw), allow_pickle=False) as doc:
            x = np.asarray(doc["x"], dtype=np.float64)
            y = np.asarray(doc["y"])
    except OSError as exc:
        raise InputError(f"cannot read the {bad}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{bad}: not an .npz with arrays x and y") from exc
    if x.ndim != 2 or x.shape[1] != dataset.num_features or not len(x):
        raise InputError(f"{bad}: x must have shape (m, {dataset.num_features}), m >= 1")
    if y.shape != (len(x),) or y.dtype.kind not in "iu":
        raise InputError(f"{bad}: y must hold {len(x)} integer labels")
    if not np.all(np.isfinite(x)) or y.min() < 0 or y.max() >= dataset.num_classes:
        raise InputError(f"{bad}: non-finite features or labels outside [0, {dataset.num_classes})")
    labels = y.astype(np.int64)
    seed = settings["seed"]
    epochs, lr, batch = settings["local_epochs"], settings["lr"], settings["batch_size"]

    def reference(params: FloatArray, round: int) -> FloatArray:
        rng = np.random.default_rng([seed, round, 0x9E3779B9])
        trained = net.train_local(
            params, x, labels, epochs=epochs, lr=lr, batch_size=batch, rng=rng
        )
        return np.asarray(trained - params, dtype=np.float64)

    return reference


def create_classifier_task(
    contract: TrainingTask, *, participants: Sequence[str], **settings: Any
) -> TaskRef:
    """Create a classifier task (``settings`` as :func:`classifier_spec` takes, without
    ``parties``) for ``participants``, whose order gives each its data shard."""
    if len(set(participants)) != len(participants) or not participants:
        raise InputError("participants must be distinct addresses, at least one")
    spec = classifier_spec(parties=len(participants), **settings)
    task, _ = create_task(contract, spec, participants)
    return TaskRef(
        chain_id=contract.ledger.chain_id,
        contract=contract.address,
        task=task,
        spec=spec,
        participants=tuple(contract.participants(task)),
    )


def run_classifier_party(
    ref: TaskRef,
    *,
    ledger: Ledger,
    store: BlobStore,
    shard: int | None = None,
    attack: str = "none",
    data_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    announce: str | None = None,
    poll_interval: float = 0.2,
    mine_idle_after: float | None = 2.0,
    linger: float = 2.0,
    timeout: float = 600.0,
    workspace: Any = None,
    on_round: Callable[[RoundReport], None] | None = None,
    allowed_networks: Sequence[str] | None = None,
    public_set: Path | None = None,
    sentinel_marks: Path | None = None,
    on_serving: Callable[[str], None] | None = None,
    model_out: Path | None = None,
) -> dict[str, Any]:
    """Take part in the task ``ref`` as ``ledger``'s account until it finishes.

    ``model_out``: write the final global model there, an ``.npz`` with ``params`` (float64,
    the flat parameter vector) and ``spec`` (the task's model spec as JSON), the form
    ``provenance register`` and :func:`~ailedger.provenance.load_verified` take.

    ``allowed_networks`` (CIDR strings) restricts whom it fetches from (see :class:`Party`).
    ``public_set`` is the local copy of the task's public validation set (reputation tasks),
    checked against its registration (``workspace``'s provenance registry) before anything
    starts; ``sentinel_marks`` the sentinel's exclusion marks (see :class:`Party`).

    Serves this task's blobs of ``store`` over HTTP on ``host:port`` (0: any free port) while
    it runs, and for ``linger`` seconds after, so slower parties can still fetch its last
    blobs; announces ``announce`` as its endpoint, or the address others reach it at
    (:func:`~ailedger.federated.transport.announce_url`). ``shard``
    defaults to the account's position among the participants. With a ``workspace`` that has
    an audit log, each round is appended as a ``training.round`` event. Raises
    :class:`TrainingError` if the account is not a participant or the chain differs.
    """
    if ledger.chain_id != ref.chain_id:
        raise TrainingError(
            f"the task is on chain {ref.chain_id}, this node serves {ledger.chain_id}"
        )
    contract = TrainingTask(ledger=ledger, address=ref.contract)
    account = ledger.account
    if not contract.party_state(ref.task, account).participant:
        raise TrainingError(f"{account} is not a participant of task {ref.task}")
    if shard is None:
        shard = [p.lower() for p in ref.participants].index(account.lower())
    setup = classifier_setup(ref.spec, shard=shard, attack=attack, data_dir=data_dir)
    reference = None
    if public_set is not None:
        if ref.spec.public_set is None:
            raise InputError("this task names no public set; drop --public-set")
        if workspace is None and ref.spec.public_set.registry is None:
            raise InputError("checking the public set needs the workspace's provenance registry")
        from ailedger.ledger.provenance import ProvenanceRegistry
        from ailedger.provenance.registry import provenance_registry

        named = ref.spec.public_set
        registry = (
            ProvenanceRegistry(ledger=ledger, address=named.registry, chain_id=ledger.chain_id)
            if named.registry
            else provenance_registry(workspace, ledger)
        )
        check_public_set(registry, public_set, named)
        reference = public_reference(ref.spec, public_set, data_dir=data_dir)
    audit = _audit_hook(workspace, ref.task)

    def closed(report: RoundReport) -> None:
        if audit is not None:
            audit(report)
        if on_round is not None:
            on_round(report)

    with BlobServer(store, host=host, port=port) as server:
        node = urllib.parse.urlsplit(ledger.url).hostname if ledger.url else None
        endpoint = announce_url(server.host, server.port, announce=announce, peer=node)
        if on_serving is not None:  # the caller's progress line: where the blobs are served
            on_serving(endpoint)
        party = Party(
            contract=contract,
            task=ref.task,
            spec=ref.spec,
            initial_params=setup.initial,
            train=setup.train,
            evaluate=setup.evaluate,
            store=store,
            endpoint=endpoint,
            server=server,
            on_round=closed,
            allowed_networks=allowed_networks,
            reference=reference,
            sentinel_marks=sentinel_marks,
        )
        party.run(poll_interval=poll_interval, mine_idle_after=mine_idle_after, timeout=timeout)
        time.sleep(linger)
    if model_out is not None:
        packed = io.BytesIO()
        np.savez(packed, params=party.params, spec=json.dumps(dict(ref.spec.extra["model"])))
        write_atomic(model_out, packed.getvalue())
    return {
        "task": ref.task,
        "contract": ref.contract,
        "account": account,
        "shard": shard,
        "attack": attack,
        "endpoint": endpoint,
        "excluded": party.excluded,
        "stopped": party.refused,
        "rounds": [r.to_json() for r in party.reports],
        "model_digest": party.global_digest(),
        "test_accuracy": setup.test_accuracy(party.params),
        "gas_used": party.gas_used,
    }


def _audit_hook(workspace: Any, task: int) -> Callable[[RoundReport], None] | None:
    """Append each round to the workspace's audit log (``training.round`` events)."""
    if workspace is None:
        return None
    from ailedger.auditlog.events import record_event

    def hook(report: RoundReport) -> None:
        record_event(workspace, "training.round", {"task": task, **report.to_json()})

    return hook
