"""The ``ailedger`` command line: each command body only calls the library.

Exit codes (STYLE.md, README): 0 ok; 1 a check failed (anything "not registered" too); 2 usage
error or bad input; 3 a node, a service or the workspace is unavailable; 130 interrupted
(Ctrl-C, one line "interrupted"). Errors print one line on stderr; ``-vv`` adds the traceback.
Results go to stdout, progress and diagnostics to stderr (:mod:`ailedger.cli._common`).
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Annotated

import click
import typer
import typer.core

from ailedger import __version__
from ailedger.cli._common import (
    JsonOpt,
    RpcOpt,
    WorkspaceOpt,
    ascii_int_params,
    emit,
    global_defaults,
    on_sigint,
    progress,
    reset_interrupt,
    state,
)
from ailedger.cli.chain import chain_app
from ailedger.cli.consortium import consortium_app
from ailedger.cli.fees import fees_app
from ailedger.cli.keys_api import api_app
from ailedger.cli.log import log_app, verify
from ailedger.cli.provenance import keys_app, provenance_app, share_app
from ailedger.cli.sentinel import sentinel_app
from ailedger.cli.serve import serve
from ailedger.cli.train import train_app
from ailedger.cli.train_protocol import create_command, join_command  # noqa: F401 (registers)
from ailedger.cli.witness import witness_app
from ailedger.config import passphrase_source, workspace_path
from ailedger.errors import AiledgerError, InputError

__all__ = ["app", "main"]


class _Root(typer.core.TyperGroup):
    """The root group: keeps the words after its own options for :func:`_root`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        ctx.meta["ailedger.rest"] = [*ctx._protected_args, *ctx.args]
        return rest


app = typer.Typer(
    name="ailedger",
    help="Accountable AI on a public ledger.",
    cls=_Root,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(chain_app, name="chain")
app.add_typer(consortium_app, name="consortium")
app.add_typer(fees_app, name="fees")
app.add_typer(log_app, name="log")
app.command()(verify)
app.add_typer(provenance_app, name="provenance")
app.add_typer(sentinel_app, name="sentinel")
app.command()(serve)
app.add_typer(share_app, name="share")
keys_app.add_typer(api_app, name="api")
app.add_typer(keys_app, name="keys")
app.add_typer(train_app, name="train")
app.add_typer(witness_app, name="witness")


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"ailedger {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-vv shows tracebacks.")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Accountable AI on a public ledger.

    --workspace, --rpc and --json may be given here, before the command, or after it.
    """
    state.verbosity = verbose
    given = {
        name: value
        for name, value in (("--workspace", workspace), ("--rpc", rpc), ("--json", as_json))
        if value not in (None, False)
    }
    if given:
        ctx.default_map = global_defaults(ctx.command, ctx.meta.get("ailedger.rest", []), given)


@app.command()
def init(
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    anchor_registry: Annotated[
        str | None,
        typer.Option(help="Use this AnchorRegistry (shared with other workspaces) on the chain."),
    ] = None,
    join: Annotated[
        Path | None,
        typer.Option(
            "--join",
            help="Join the consortium this file describes: its node and every contract "
            "(nothing deployed).",
        ),
    ] = None,
    unsafe_fast_kdf: Annotated[
        bool,
        typer.Option(help="Protect the keystore with a cheap KDF (tests only: weak).", hidden=True),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a workspace (keys, settings) and set up its contracts on the chain."""
    from ailedger.workspace import Workspace

    consortium = None
    if join is not None:
        from ailedger.consortium import read_consortium

        if rpc is not None or anchor_registry is not None:
            raise InputError(
                "--join takes the node and contracts from the file: drop --rpc and "
                "--anchor-registry"
            )
        consortium = read_consortium(join)
    path = workspace_path(workspace)
    fresh = not (path / "keys" / "ethereum.json").exists()
    ws = Workspace.init(
        path,
        passphrase=passphrase_source(confirm=fresh),
        rpc=rpc,
        anchor_registry=anchor_registry,
        consortium=consortium,
        unsafe_fast_kdf=unsafe_fast_kdf,
    )
    chain = ws.config["chain"]
    chain_id = int(chain["chain_id"])
    contracts = ws.config["contracts"][str(chain_id)]
    doc = {
        "workspace": str(path),
        "account": ws.keystore().address,
        "backend": chain["backend"],
        "chain_id": chain_id,
        "contracts": contracts,
    }
    emit(
        as_json,
        doc,
        f"workspace {path}\naccount   {doc['account']}\nchain     {chain_id} ({chain['backend']})\n"
        + "\n".join(f"{name:<9} {address}" for name, address in contracts.items()),
    )


@app.command()
def demo(
    keep: Annotated[
        Path | None,
        typer.Option(
            help="Create the demo in this new (or empty) folder and keep it: the workspace, "
            "its data and the exported log; its keys take $AILEDGER_PASSPHRASE (or ask).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole story on the embedded chain in a fresh temporary workspace.

    Each step is reported on stderr as it runs; the result (with --json, the whole report)
    goes to stdout.
    """
    from ailedger.demo import run_demo

    passphrase = passphrase_source(confirm=True)() if keep is not None else None
    report = run_demo(progress, keep=keep, passphrase=passphrase)
    text = "demo finished: every check passed"
    if keep is not None:
        ws, export = report["workspace"], report["export"]
        text += (
            f"\n\nThe demo is kept in {Path(ws).parent}. Use its workspace with --workspace "
            "or:\n"
            f"  export AILEDGER_WORKSPACE={ws}\n"
            "  ailedger log info                 # size, origin, latest checkpoint, anchors\n"
            "  ailedger log search --actor demo-clinic\n"
            "  ailedger log show 0               # asks for the passphrase you gave\n"
            "  ailedger chain status\n"
            f"Verify its exported log as an outsider would:\n"
            f"  ailedger verify {export} --key '{report['verifier_key']}' --workspace {ws}"
        )
    emit(as_json, report, text)


def main() -> None:
    """Entry point: run the app and turn every error into one line and an exit code.

    A usage error (an unknown command, a value of the wrong type) is one line and exit code 2,
    like every ailedger error, which becomes one line on stderr with the error's exit code;
    every warning is one line ``warning: ...``.
    """
    warnings.showwarning = _show_warning
    _show_progress()
    reset_interrupt()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        code = ascii_int_params(typer.main.get_command(app))(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as before
        exc.show()
        sys.exit(2)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(InputError(exc.format_message() + where), 2)
    except click.ClickException as exc:
        _fail(InputError(exc.format_message()), exc.exit_code)
    except click.exceptions.Abort:  # click's form of Ctrl-C (and of EOF at a prompt)
        _interrupted()
    except AiledgerError as exc:
        _fail(exc, exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:
        _fail(exc, 1, internal=True)
    finally:
        if previous is not None and signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, previous)  # as it was (tests call main in-process)
    if code == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into Exit(130), returned here
        _interrupted()
    if isinstance(code, int) and code != 0:  # typer.Exit(code) returns its code here
        sys.exit(code)


def _show_progress() -> None:
    """Print the library's progress messages (logger ``ailedger.progress``: lock waits, node
    retries) as plain lines on stderr."""
    import logging

    class _Progress(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            progress(record.getMessage())

    logger = logging.getLogger("ailedger.progress")
    logger.handlers = [h for h in logger.handlers if type(h).__name__ != "_Progress"]
    logger.addHandler(_Progress())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _interrupted() -> None:
    """Ctrl-C: one line, exit code 130 (128 + SIGINT, as shells report it), no traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not interrupt this
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    sys.exit(130)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    text = str(message).splitlines()[0] if str(message) else category.__name__
    sys.stderr.write(f"warning: {text}\n")


def _fail(exc: BaseException, code: int, *, internal: bool = False) -> None:
    if state.verbosity >= 2:
        traceback.print_exception(exc, file=sys.stderr)
    prefix = "internal error" if internal else "error"
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    hint = " (run with -vv for the traceback)" if internal and state.verbosity < 2 else ""
    sys.stderr.write(f"{prefix}: {message}{hint}\n")
    sys.exit(code)
