"""Every command's `--help` shows what each positional argument means.

Some click releases silently drop the help text of positional arguments under the typer we
use; this walks the whole command tree so a dependency bump that does it again fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
import typer.main
from typer.testing import CliRunner

from ailedger.cli import app


def _commands(
    group: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            yield from _commands(command, (*path, name))
    else:
        yield path, group


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))


def _words(text: str) -> str:
    return re.sub(r"[\s│╭╮╰╯─]+", " ", text).strip()


def test_the_tree_has_commands_with_arguments() -> None:
    with_args = [p for p, c in COMMANDS if any(isinstance(x, click.Argument) for x in c.params)]
    assert len(with_args) >= 10, with_args


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_help_shows_every_positional_argument_with_its_help(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400"}, color=False)
    assert result.exit_code == 0, result.output
    shown = _words(result.output)
    for param in command.params:
        if not isinstance(param, click.Argument):
            continue
        text = getattr(param, "help", None)
        assert text, f"argument {param.name} of {' '.join(path)} has no help text"
        assert _words(text)[:40] in shown, f"help of {param.name} missing from --help"
