"""Settings for the CLI and the service, from flags and the environment.

The library reads no environment variables; only this module does, for the front ends:
``AILEDGER_WORKSPACE`` (the workspace folder) and ``AILEDGER_PASSPHRASE`` (the key passphrase,
for non-interactive use; without it the CLI prompts on a terminal).
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ailedger.errors import InputError
from ailedger.workspace import DEFAULT_DIRNAME

__all__ = ["passphrase_source", "workspace_path"]

ENV_WORKSPACE = "AILEDGER_WORKSPACE"
ENV_PASSPHRASE = "AILEDGER_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret


def workspace_path(option: Path | None) -> Path:
    """The workspace folder, absolute: the flag, else ``$AILEDGER_WORKSPACE``, else
    ``./.ailedger`` (relative paths are taken from the current folder)."""
    if option is not None:
        return Path(os.path.abspath(option))
    from_env = os.environ.get(ENV_WORKSPACE)
    return Path(os.path.abspath(from_env)) if from_env else Path.cwd() / DEFAULT_DIRNAME


def passphrase_source(*, confirm: bool = False) -> Callable[[], str]:
    """A callable giving the passphrase once asked: the environment, else a prompt.

    The value is read at most once per process, only when a key must be unlocked.
    """
    cached: list[str] = []

    def get() -> str:
        if cached:
            return cached[0]
        value = os.environ.get(ENV_PASSPHRASE)
        if value is None:
            if not sys.stdin.isatty():
                raise InputError(
                    f"a passphrase is needed: set {ENV_PASSPHRASE} or run on a terminal"
                )
            value = getpass.getpass("Passphrase: ")
            if confirm and getpass.getpass("Repeat passphrase: ") != value:
                raise InputError("the passphrases do not match")
        if not value:
            raise InputError("the passphrase is empty")
        cached.append(value)
        return value

    return get
