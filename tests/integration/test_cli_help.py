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


def _library_choices() -> dict[tuple[tuple[str, ...], str], tuple[str, ...]]:
    """Each finite option's values, as the library defines them (the CLI must take exactly
    these)."""
    from ailedger.federated._classifier import PARTY_ATTACKS
    from ailedger.federated.aggregate import RULES
    from ailedger.federated.models import MODELS
    from ailedger.federated.simulate import ATTACK_NAMES
    from ailedger.service.auth import Scope

    return {
        (("train", "simulate"), "--attack"): ATTACK_NAMES,
        (("train", "simulate"), "--rule"): ("auto", *RULES),
        (("train", "simulate"), "--contribution"): ("none", "gtg", "exact"),
        (("train", "simulate"), "--data"): ("digits", "mnist"),
        (("train", "simulate"), "--model"): tuple(MODELS),
        (("train", "create"), "--rule"): tuple(r for r in RULES if r != "fltrust"),
        (("train", "create"), "--contribution"): ("gtg", "weights"),
        (("train", "create"), "--model"): tuple(MODELS),
        (("train", "join"), "--attack"): PARTY_ATTACKS,
        (("provenance", "register"), "--kind"): ("dataset", "model"),
        (("keys", "api", "create"), "--scope"): tuple(s.value for s in Scope),
    }


@pytest.mark.parametrize(
    ("path", "option"),
    list(_library_choices()),
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
)
def test_finite_options_are_choices_shown_in_help(path: tuple[str, ...], option: str) -> None:
    expected = _library_choices()[(path, option)]
    command = dict(COMMANDS)[path]
    param = next(p for p in command.params if option in p.opts)
    assert isinstance(param.type, click.Choice)
    assert tuple(param.type.choices) == tuple(expected)
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400"}, color=False)
    assert result.exit_code == 0, result.output
    assert "[" + "|".join(expected) + "]" in _words(result.output)


def test_global_options_are_offered_before_the_command() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400"}, color=False)
    shown = _words(result.output)
    for option in ("--workspace", "--rpc", "--json"):
        assert option in shown
    # and every command that takes one of them has it under the same name
    for path, command in COMMANDS:
        names = {o for p in command.params for o in p.opts}
        assert not ({"-w"} & names) or "--workspace" in names, path
