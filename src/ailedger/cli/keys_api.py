"""``ailedger keys api``: the API keys of ``ailedger serve`` (create, list, revoke).

The keys live in their own store in the workspace (``service/api_keys.sqlite``), not in the
audit log, so these commands work while ``ailedger serve`` holds the log; the service sees a
new or revoked key within a fraction of a second (:mod:`ailedger.service.auth`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer

from ailedger.cli._common import JsonOpt, WorkspaceOpt, emit, err_console
from ailedger.config import workspace_path

__all__ = ["api_app"]

api_app = typer.Typer(
    help="API keys for `ailedger serve`: create (the token is shown once), list, revoke.",
    no_args_is_help=True,
)


@api_app.command()
def create(
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            "-s",
            click_type=click.Choice(["append", "read", "admin"]),
            help="append (log decisions), read (read entries and private fields) or admin "
            "(everything, erasure too); repeatable.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="A label for the key (who or what uses it).")
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; its token is printed once, to stdout, and never stored."""
    from ailedger.service.auth import ApiKeys, parse_scopes
    from ailedger.workspace import Workspace

    scopes = parse_scopes(scope)  # a bad name is refused before the workspace is opened
    ws = Workspace.open(workspace_path(workspace))
    with ApiKeys.for_workspace(ws) as keys:
        key, token = keys.create(scopes, name=name)
    if as_json:
        emit(True, {"id": key.id, "token": token})
        return
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    scopes_text = ", ".join(sorted(s.value for s in key.scopes))
    err_console.print(
        f"warning: API key {key.id} ({scopes_text}): its token is shown only this once; "
        "store it now"
    )


@api_app.command("list")
def list_keys(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List the API keys: id, name, scopes, created, revoked (never a token or a hash)."""
    from ailedger.service.auth import ApiKeys
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    with ApiKeys.for_workspace(ws) as keys:
        found = [key.to_dict() for key in keys.list()]
    lines = [
        f"{k['id']}  {','.join(k['scopes']):<17} created {k['created']}  "
        + (f"revoked {k['revoked']}" if k["revoked"] else "live")
        + (f"  {k['name']}" if k["name"] else "")
        for k in found
    ]
    emit(as_json, {"keys": found}, "\n".join(lines) or "no API keys")


@api_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (16 hex digits).")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key: the service refuses it from then on (exit 1 if there is no such key)."""
    from ailedger.service.auth import ApiKeys
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    with ApiKeys.for_workspace(ws) as keys:
        found = keys.revoke(key_id)
    if not found:
        err_console.print(f"error: no API key {key_id} in {ws.path}")
        raise typer.Exit(1)
    emit(as_json, {"id": key_id, "revoked": True}, f"revoked API key {key_id}")
