"""Options, output and error handling shared by every command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["JsonOpt", "RpcOpt", "WorkspaceOpt", "emit", "err_console", "state"]

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace folder (default: $AILEDGER_WORKSPACE, else ./.ailedger).",
        show_default=False,
    ),
]


def _check_rpc(value: str | None) -> str | None:
    """Refuse a malformed ``--rpc`` URL before anything runs (InputError: one line, exit 2)."""
    from ailedger.ledger._settings import check_rpc_url

    return None if value is None else check_rpc_url(value)


RpcOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc",
        help="Use the Ethereum JSON-RPC node at this URL (http or https).",
        show_default=False,
        callback=_check_rpc,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout.")]

# markup off: text can hold outside data (an origin, a witness reply) with [brackets] in it
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class _State:
    verbosity: int = 0


state = _State()


def emit(as_json: bool, document: dict[str, Any], text: str | None = None) -> None:
    """Print a command's result: JSON on stdout, or people's text on stderr."""
    if as_json:
        sys.stdout.write(json.dumps(document, indent=None, sort_keys=True) + "\n")
        sys.stdout.flush()
    elif text is not None:
        err_console.print(text)
