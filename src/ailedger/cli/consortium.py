"""``ailedger consortium``: make, show and extend the file that several organisations share.

The file's format and its trust model are described in :mod:`ailedger.consortium`; others
join with ``ailedger init --join FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ailedger.cli._common import JsonOpt, WorkspaceOpt, emit
from ailedger.config import workspace_path

__all__ = ["consortium_app"]

consortium_app = typer.Typer(
    help="A consortium: one file naming the shared node, contracts and members' keys.",
    no_args_is_help=True,
)

MemberNameOpt = Annotated[
    str | None,
    typer.Option("--member-name", help="A label for this organisation in the members list."),
]


@consortium_app.command()
def create(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the consortium file.")],
    name: Annotated[
        str | None, typer.Option(help="The consortium's name (default: the file's stem).")
    ] = None,
    member_name: MemberNameOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a consortium file of this workspace's node, contracts and keys.

    This workspace is its first member. Refused on the embedded chain, which other
    organisations cannot reach.
    """
    from ailedger.consortium import consortium_of, save_to_workspace
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    _ensure_sharing_key(ws)
    made = consortium_of(ws, name=name or out.stem, member_name=member_name or "")
    made.write(out)
    save_to_workspace(ws, made)
    _show(
        made,
        as_json,
        f"wrote {out}: give it to the other organisations (`ailedger init --join {out.name}`)",
    )


@consortium_app.command()
def show(
    file: Annotated[
        Path | None,
        typer.Argument(help="A consortium file (default: the one this workspace joined)."),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a consortium: its chain, node, contracts and members."""
    from ailedger.consortium import read_consortium, workspace_consortium
    from ailedger.workspace import Workspace

    if file is not None:
        found = read_consortium(file)
    else:
        found = workspace_consortium(Workspace.open(workspace_path(workspace)))
    _show(found, as_json, None)


@consortium_app.command(name="add-member")
def add_member(
    file: Annotated[Path, typer.Argument(help="The consortium file to add this workspace to.")],
    member_name: MemberNameOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add (or update) this workspace's own entry in FILE, then send FILE on.

    The entry holds its account, its log's verifier key and its X25519 sharing key.
    """
    from ailedger.consortium import (
        check_fits,
        member_of,
        read_consortium,
        save_to_workspace,
    )
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    found = read_consortium(file)
    check_fits(ws, found, str(file))
    _ensure_sharing_key(ws)
    updated = found.with_member(member_of(ws, name=member_name or ""))
    updated.write(file)
    save_to_workspace(ws, updated)
    _show(updated, as_json, f"added {ws.keystore().address} to {file}")


def _ensure_sharing_key(ws: Any) -> None:
    """Make the workspace's X25519 sharing key if it has none yet (as ``keys show`` does), so
    its member entry names the key partners grant data to."""
    from ailedger.config import passphrase_source
    from ailedger.provenance.sharing import sharing_public_key

    sharing_public_key(ws, passphrase_source())


def _show(consortium: Any, as_json: bool, status: str | None) -> None:
    import sys

    doc = consortium.to_json()
    if as_json:
        emit(True, doc)
    else:
        lines = [
            f"consortium {consortium.name}",
            f"chain      {consortium.chain_id} at {consortium.rpc}",
            *(f"{n:<18} {a}" for n, a in consortium.contracts.items()),
            f"members    {len(consortium.members)}",
        ]
        for member in consortium.members:
            label = f" ({member.name})" if member.name else ""
            lines.append(f"  {member.account}{label}")
            if member.log_key:
                lines.append(f"    log key     {member.log_key}")
            if member.sharing_key:
                lines.append(f"    sharing key {member.sharing_key}")
        sys.stdout.write("\n".join(lines) + "\n")
    if status is not None:
        from ailedger.cli._common import err_console

        err_console.print(status)
