"""``ailedger train create`` and ``ailedger train join``: the federated protocol with each party
in its own process, workspace and key, on one chain (a node by ``--rpc`` for several
processes: the embedded chain is held by one process at a time)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import click
import typer

from ailedger.cli._common import JsonOpt, LazyChoice, RpcOpt, WorkspaceOpt, emit, progress
from ailedger.cli.train import DATA_CHOICE, model_names, train_app

__all__ = ["create_command", "join_command"]


def _task_rules() -> tuple[str, ...]:
    from ailedger.federated.aggregate import RULES

    return tuple(name for name in RULES if name != "fltrust")


def _party_attacks() -> tuple[str, ...]:
    from ailedger.federated._classifier import PARTY_ATTACKS

    return PARTY_ATTACKS


@train_app.command("create")
def create_command(
    participants: Annotated[
        str,
        typer.Option(help="Comma-separated participant addresses; their order gives the shards."),
    ],
    out: Annotated[Path, typer.Option(help="Write the task file for `train join` here.")],
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 5,
    quorum: Annotated[
        int | None, typer.Option(help="Attestations that finalize a round (default: majority).")
    ] = None,
    rule: Annotated[
        str,
        typer.Option(help="Aggregation rule (not fltrust).", click_type=LazyChoice(_task_rules)),
    ] = "default",
    data: Annotated[str, typer.Option(help="Data set.", click_type=DATA_CHOICE)] = "digits",
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the four MNIST IDX gzip files.")
    ] = None,
    model: Annotated[
        str, typer.Option(help="Model.", click_type=LazyChoice(model_names))
    ] = "logreg",
    hidden: Annotated[int, typer.Option(help="Hidden units of the MLP.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the initial model and the partition.")] = 0,
    partition: Annotated[str, typer.Option(help="iid or dirichlet:ALPHA.")] = "iid",
    local_epochs: Annotated[int, typer.Option(help="Local SGD epochs per round.")] = 1,
    lr: Annotated[float, typer.Option(help="Parties' SGD learning rate.")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Local mini-batch size.")] = 32,
    phase_blocks: Annotated[
        int, typer.Option(help="Deadline of each phase (commit, reveal, attest), in blocks.")
    ] = 40,
    timing: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(["fixed", "adaptive"]),
            help="fixed: --phase-blocks for every round; adaptive: the parties learn the "
            "windows from the chain's record of the rounds and change them by quorum.",
        ),
    ] = "fixed",
    exclude_after: Annotated[
        int, typer.Option(help="Vote to exclude a party flagged in this many rounds.")
    ] = 2,
    max_norm: Annotated[
        float, typer.Option(help="Largest accepted L2 norm of an update.")
    ] = 1000.0,
    public_set: Annotated[
        str | None,
        typer.Option(
            help="The public validation set of the reputation rule: REGISTRANT:DIGEST of its "
            "`provenance register` registration (an .npz with x and y)."
        ),
    ] = None,
    fallback_reference: Annotated[
        bool,
        typer.Option(
            "--fallback-reference",
            help="Reputation rule without a public set: estimate the reference from the "
            "updates (narrower: only attackers a majority sees as outliers).",
        ),
    ] = False,
    contribution: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(["gtg", "weights"]),
            help="Contribution scores: gtg (GTG-Shapley, each party evaluates coalitions) or "
            "weights (the rule's weights, cheaper).",
        ),
    ] = "gtg",
    sized_for: Annotated[
        float | None,
        typer.Option(
            help="Malicious fraction the task is sized for; each round warns when it reaches "
            "1/(2+B^2) (default: the reputation rule's f over the parties)."
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a training task on chain and write the task file the parties join with."""
    from ailedger.config import passphrase_source, workspace_path
    from ailedger.federated._classifier import create_classifier_task
    from ailedger.federated.protocol import PublicSet, TaskSpec
    from ailedger.ledger.training import TrainingTask
    from ailedger.workspace import Workspace

    addresses = [a.strip() for a in participants.split(",") if a.strip()]
    named = PublicSet.parse(public_set) if public_set is not None else None
    # the reference options are checked before the key is unlocked or anything is sent
    TaskSpec(
        shape=(1,), initial_digest="0" * 64, rounds=1, quorum=1, rule=rule,
        public_set=named, fallback=fallback_reference, sized_for=sized_for, timing=timing,
    )  # fmt: skip
    ws = Workspace.open(workspace_path(workspace))
    with ws.ledger(rpc=rpc, passphrase=passphrase_source()) as ledger:
        progress(
            f"creating a task for {len(addresses)} parties on chain {ledger.chain_id} "
            f"(preparing {data} and the initial model, then one transaction) ..."
        )
        if named is not None:
            # the parties check the registration in this workspace's registry
            where = ws.contract_address(ledger.chain_id, "ProvenanceRegistry")
            named = dataclasses.replace(named, registry=where)
        options = {
            "public_set": named,
            "fallback": fallback_reference,
            "sized_for": sized_for,
            "timing": timing,
        }
        contract = TrainingTask(
            ledger=ledger, address=ws.contract_address(ledger.chain_id, TrainingTask.NAME)
        )
        ref = create_classifier_task(
            contract,
            participants=addresses,
            rounds=rounds,
            quorum=quorum if quorum is not None else len(addresses) // 2 + 1,
            rule=rule,
            data=data,
            data_dir=data_dir,
            model=model,
            hidden=hidden,
            seed=seed,
            partition_spec=partition,
            local_epochs=local_epochs,
            lr=lr,
            batch_size=batch_size,
            commit_blocks=phase_blocks,
            reveal_blocks=phase_blocks,
            attest_blocks=phase_blocks,
            exclude_after=exclude_after,
            max_norm=max_norm,
            contribution=contribution,
            **options,
        )
    ref.save(out)
    doc = {**ref.to_json(), "file": str(out)}
    emit(
        as_json,
        doc,
        f"task {ref.task} on {ref.contract} (chain {ref.chain_id}): {len(addresses)} parties, "
        f"{rounds} rounds, rule {rule}, {timing} windows of {phase_blocks} blocks"
        f"\ntask file {out}",
    )


@train_app.command("join")
def join_command(
    task_file: Annotated[Path, typer.Argument(help="The task file `train create` wrote.")],
    shard: Annotated[
        int | None, typer.Option(help="Data shard (default: this account's position).")
    ] = None,
    attack: Annotated[
        str,
        typer.Option(
            click_type=LazyChoice(_party_attacks),
            help="Play a malicious party, for experiments.",
        ),
    ] = "none",
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the four MNIST IDX gzip files.")
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Serve this party's blobs on this address (0.0.0.0 or :: for every interface)."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="... and this port (0: any free one).")
    ] = 0,
    announce: Annotated[
        str | None,
        typer.Option(
            help="The URL other parties fetch this party's blobs from (default: the --host "
            "address or, for a wildcard host, the address of the interface towards the node)."
        ),
    ] = None,
    peer_network: Annotated[
        list[str] | None,
        typer.Option(
            help="Fetch other parties' blobs only from addresses in this network (CIDR, "
            "repeat; default: config.toml [train] peer_networks, else any address but "
            "link-local, multicast, unspecified or broadcast)."
        ),
    ] = None,
    public_set: Annotated[
        Path | None,
        typer.Option(
            help="Local copy of the task's public validation set (reputation tasks); checked "
            "against its registration (digest and registrant) before use."
        ),
    ] = None,
    mine_idle_after: Annotated[
        float,
        typer.Option(
            help="Seconds without a new block before nudging the node with a 0-ETH "
            "self-transfer (for nodes that mine on demand, like anvil); 0 never does."
        ),
    ] = 2.0,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between looks at the chain while waiting.")
    ] = 0.2,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    model_out: Annotated[
        Path | None,
        typer.Option(
            help="Write the final model here (.npz: params and spec), ready for "
            "`provenance register`."
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take part in a training task until it finishes (serving this party's update blobs)."""
    from ailedger.config import passphrase_source, workspace_path
    from ailedger.federated._classifier import classifier_settings, run_classifier_party
    from ailedger.federated.protocol import RoundReport, TaskRef
    from ailedger.federated.transport import BlobStore, check_endpoint, parse_networks
    from ailedger.workspace import Workspace

    # the task file and --announce are checked before anything else starts
    ref = TaskRef.load(task_file)
    classifier_settings(ref.spec)
    if announce is not None:
        check_endpoint(announce)
    ws = Workspace.open(workspace_path(workspace))
    networks = peer_network or ws.config.get("train", {}).get("peer_networks")
    if networks is not None:
        if not isinstance(networks, list) or not all(isinstance(n, str) for n in networks):
            from ailedger.errors import InputError

            raise InputError("config.toml [train] peer_networks is a list of CIDR strings")
        parse_networks(networks)  # a malformed one is refused before anything starts

    def round_done(report: RoundReport) -> None:
        for warning in report.warnings:
            progress(f"warning: round {report.round}: {warning}")
        ran = ""
        if report.windows is not None:
            ran = ", windows {commit}/{reveal}/{attest} blocks".format(**report.windows)
        progress(
            f"round {report.round}: {report.status}, own update {report.own}, "
            f"{len(report.accepted)} aggregated, rejected {len(report.rejected)}, "
            f"excluded {len(report.excluded)}{ran}"
        )

    with ws.ledger(rpc=rpc, passphrase=passphrase_source()) as ledger:
        account = ledger.account.lower()
        party = next((i for i, p in enumerate(ref.participants) if p.lower() == account), None)
        joined = f"joined task {ref.task} as party {party}" if party is not None else ""

        def serving(url: str) -> None:
            if joined:
                progress(f"{joined} ({ledger.account}), serving blobs at {url}")

        result = run_classifier_party(
            ref,
            ledger=ledger,
            store=BlobStore(ws.blobs_dir),
            shard=shard,
            attack=attack,
            data_dir=data_dir,
            host=host,
            port=port,
            announce=announce,
            poll_interval=poll_interval,
            mine_idle_after=mine_idle_after or None,
            timeout=timeout,
            workspace=ws,
            on_round=round_done,
            on_serving=serving,
            allowed_networks=networks,
            public_set=public_set,
            sentinel_marks=ws.path / "sentinel" / "exclusions.json",
            model_out=model_out,
        )
    state = "excluded by the other parties" if result["excluded"] else "finished"
    emit(
        as_json,
        result,
        f"task {ref.task}: {state}; test accuracy {result['test_accuracy']:.4f}, "
        f"model {result['model_digest']}, gas {result['gas_used']}",
    )
