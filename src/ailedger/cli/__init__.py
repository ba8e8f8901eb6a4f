"""The ``ailedger`` command line: each command body only calls the library.

Exit codes (STYLE.md): 0 ok; 1 a check failed; 2 usage error or bad input; 3 a node or service
is unavailable. Errors print one line on stderr; ``-vv`` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated

import typer

from ailedger import __version__
from ailedger.cli._common import (
    JsonOpt,
    RpcOpt,
    WorkspaceOpt,
    ascii_int_params,
    emit,
    err_console,
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

app = typer.Typer(
    name="ailedger",
    help="Accountable AI on a public ledger.",
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
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-vv shows tracebacks.")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    state.verbosity = verbose


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
        Path | None, typer.Option(help="Create the demo workspace here and keep it.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole story on the embedded chain in a fresh temporary workspace."""
    from ailedger.demo import run_demo

    report = run_demo(lambda line: err_console.print(line), keep=keep)
    emit(as_json, report, "demo finished: every check passed")


def main() -> None:
    """Entry point: run the app and turn every error into one line and an exit code.

    A usage error (an unknown command, a value of the wrong type) is one line and exit code 2,
    like every ailedger error, which becomes one line on stderr with the error's exit code;
    every warning is one line ``warning: ...``.
    """
    import click

    warnings.showwarning = _show_warning
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
    except click.exceptions.Abort:
        err_console.print("interrupted")
        sys.exit(130)
    except AiledgerError as exc:
        _fail(exc, exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        _fail(exc, 1, internal=True)
    if isinstance(code, int) and code != 0:  # typer.Exit(code) returns its code here
        sys.exit(code)


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
