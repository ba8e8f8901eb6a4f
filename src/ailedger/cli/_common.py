"""Options, output and error handling shared by every command.

The conventions are those of git, cosign and rekor-cli (STYLE.md, "CLI"): what a command
produces goes to stdout (text for people, or one JSON document with ``--json``), so ``> file``
and ``| jq`` work either way; progress, warnings and diagnostics go to stderr, with or without
``--json``. ``--workspace``, ``--rpc`` and ``--json`` are taken before the subcommand as well as
after it (:func:`global_defaults`).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console

__all__ = [
    "GLOBAL_OPTIONS",
    "JsonOpt",
    "LazyChoice",
    "RpcOpt",
    "Ticker",
    "WorkspaceOpt",
    "ascii_int",
    "ascii_int_params",
    "emit",
    "err_console",
    "global_defaults",
    "out_console",
    "progress",
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
# results for people (tables): stdout, looked up when printing so a captured stdout is used
out_console = Console(highlight=False, soft_wrap=True, markup=False)


class _State:
    verbosity: int = 0


state = _State()


def emit(as_json: bool, document: dict[str, Any], text: str | None = None) -> None:
    """Print a command's result on stdout: one JSON document (one line), or people's text."""
    if as_json:
        sys.stdout.write(json.dumps(document, indent=None, sort_keys=True) + "\n")
    elif text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


class _Interrupt:
    """Whether Ctrl-C was pressed during this command (set by :func:`on_sigint`)."""

    seen = False


def on_sigint(signum: int, frame: object) -> None:
    """The CLI's SIGINT handler: Python's (raise KeyboardInterrupt), remembered too. Python
    drops an exception raised while a finalizer or a callback from C runs ("Exception ignored
    in ..."), and a Ctrl-C that lands there would be lost; :func:`check_interrupt`, called
    with every progress line, raises it again."""
    _Interrupt.seen = True
    raise KeyboardInterrupt


def reset_interrupt() -> None:
    """Forget an earlier Ctrl-C (a new command starts)."""
    _Interrupt.seen = False


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed during this command."""
    if _Interrupt.seen:
        raise KeyboardInterrupt


def progress(line: str) -> None:
    """Print a progress or status line on stderr (with or without ``--json``).

    A plain write, not rich: a Ctrl-C in the middle of it leaves nothing half-buffered that
    would swallow the "interrupted" line after it.
    """
    check_interrupt()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Ticker:
    """Calls :func:`progress` at most about once a second (plain periodic lines, as on a
    pipe or in a log file, where a live bar would be noise)."""

    def __init__(self, every: float = 1.0) -> None:
        """``every``: seconds between two lines."""
        self._every = every
        self._next = time.monotonic() + every

    def __call__(self, line: str, *, force: bool = False) -> None:
        """Print ``line`` if a period has passed since the last one (or ``force``)."""
        check_interrupt()
        now = time.monotonic()
        if force or now >= self._next:
            progress(line)
            self._next = now + self._every


#: options every command that has them also takes before its subcommand, by their long name
GLOBAL_OPTIONS = ("--workspace", "--rpc", "--json")


def _long_name(param: click.Parameter) -> str | None:
    return next((o for o in param.opts if o in GLOBAL_OPTIONS), None)


def global_defaults(root: click.Command, args: list[str], given: dict[str, Any]) -> dict[str, Any]:
    """A click ``default_map`` giving ``given`` (long option name -> value, e.g. ``--json``:
    ``True``) as the defaults of those options in every command under ``root``.

    ``args`` are the words after the root's own options (the subcommand path first); an option
    given before a subcommand that does not take it is a usage error (exit 2) rather than
    silently ignored.
    """

    def walk(command: click.Command) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for param in command.params:
            name = _long_name(param)
            if name in given and param.name is not None:
                found[param.name] = given[name]
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                found[sub_name] = walk(sub)
        return found

    leaf: click.Command = root
    path: list[str] = []
    for word in args:
        if not isinstance(leaf, click.Group) or word.startswith("-"):
            break
        sub = leaf.commands.get(word)
        if sub is None:
            break  # click reports the unknown command
        leaf, path = sub, [*path, word]
    if not isinstance(leaf, click.Group) and "--help" not in args:
        taken = {_long_name(p) for p in leaf.params}
        for name in given:
            if name not in taken:
                raise click.UsageError(f"{name} does not apply to 'ailedger {' '.join(path)}'")
    return walk(root)


class LazyChoice(click.Choice[str]):
    """A ``click.Choice`` whose values come from the library when first needed (``--help``, or
    a value to check), so the library stays the one list and the CLI starts without importing
    numpy for every command."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load
        self._loaded: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        if self._loaded is None:
            self._loaded = tuple(self._load())
        return self._loaded

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        pass  # click.Choice.__init__ sets it; the values are loaded lazily instead


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
