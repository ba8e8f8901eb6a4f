"""Options, output and error handling shared by every command."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console

__all__ = [
    "JsonOpt",
    "RpcOpt",
    "WorkspaceOpt",
    "ascii_int",
    "ascii_int_params",
    "emit",
    "err_console",
    "state",
]

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


_ASCII_INT = re.compile(r"[+-]?[0-9]{1,80}", re.ASCII)


def ascii_int(value: Any) -> int:
    """An integer written in ASCII digits (an optional sign, at most 80 digits).

    Python's ``int()`` (and so click's INT type) also takes other scripts' digits (``١``),
    ``_`` separators and surrounding spaces; a command-line integer takes none of them.
    Raises ValueError otherwise (click reports it as a usage error, exit 2).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or _ASCII_INT.fullmatch(value) is None:
        raise ValueError(value)
    return int(value)


def _check_ascii(kind: click.ParamType[Any], value: Any, param: Any, ctx: Any) -> None:
    if not isinstance(value, int):
        try:
            ascii_int(value)
        except ValueError:
            kind.fail(f"{value!r} is not an integer in ASCII digits.", param, ctx)


class _AsciiInt(click.types.IntParamType):
    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        _check_ascii(self, value, param, ctx)
        return super().convert(value, param, ctx)


class _AsciiIntRange(click.types.IntRange):
    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        _check_ascii(self, value, param, ctx)
        return super().convert(value, param, ctx)


def ascii_int_params(command: click.Command) -> click.Command:
    """Make every integer argument and option of ``command`` and its subcommands ASCII-only.

    Applied once to the whole command tree (``ailedger``'s entry point), so no command can
    forget it; a range (``min=``/``max=``) keeps its bounds. Returns ``command``.
    """
    for param in command.params:
        kind = param.type
        if isinstance(kind, click.types.IntRange) and not isinstance(kind, _AsciiIntRange):
            param.type = _AsciiIntRange(
                kind.min, kind.max, min_open=kind.min_open, max_open=kind.max_open, clamp=kind.clamp
            )
        elif type(kind) is click.types.IntParamType:
            param.type = _AsciiInt()
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            ascii_int_params(sub)
    return command
