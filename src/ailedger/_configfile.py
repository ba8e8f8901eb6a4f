"""Checking a workspace's ``config.toml`` before anything reads it.

A person edits this file, so every value ailedger reads from it is checked for its type and
range here, and refused with one line naming the key (:class:`WorkspaceError`, CLI exit code
2), instead of failing later inside whatever first used it. Sections and keys ailedger does not
know are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ailedger.errors import InputError, WorkspaceError

__all__ = ["check_config"]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


#: the largest integer and number a setting may hold (a TOML integer is 64-bit; seconds, gas
#: margins and fees beyond these are typos, and a huge one would overflow where it is used)
_MAX_INTEGER = 2**63 - 1
_MAX_NUMBER = 1e9


def _integer(minimum: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {_kind(value)}"
        if value < minimum:
            return f"must be at least {minimum}, got {value}"
        if value > _MAX_INTEGER:
            return f"must be at most {_MAX_INTEGER}"
        return None

    return check


def _number(*, positive: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {_kind(value)}"
        if value != value or value in (float("inf"), float("-inf")):
            return "must be a finite number"
        if value < 0 or (positive and value == 0):
            return f"must be {'above' if positive else 'at least'} 0, got {value}"
        if value > _MAX_NUMBER:
            return f"must be at most {_MAX_NUMBER:g}"
        return None

    return check


def _backend(value: Any) -> str | None:
    if value in ("embedded", "rpc"):
        return None
    return (
        f'must be "embedded" or "rpc", got {value!r}'
        if isinstance(value, str)
        else (f"must be a string, got {_kind(value)}")
    )


def _url(value: Any) -> str | None:
    from ailedger.ledger._settings import check_rpc_url

    if not isinstance(value, str):
        return f"must be the node's URL, got {_kind(value)}"
    try:
        check_rpc_url(value)
    except InputError as exc:
        return f"is refused: {exc}"
    return None


def _fee_policy(value: Any) -> str | None:
    if value in ("default", "scheduled"):
        return None
    return (
        f'must be "default" or "scheduled", got {value!r}'
        if isinstance(value, str)
        else f"must be a string, got {_kind(value)}"
    )


def _fee_wait_blocks(value: Any) -> str | None:
    problem = _integer(1)(value)
    if problem is None and value > 1000:
        return f"must be at most 1000 blocks, got {value}"
    return problem


def _fee_stall_seconds(value: Any) -> str | None:
    problem = _number(positive=False)(value)
    if problem is None and value > 86_400:
        return f"must be at most 86400 seconds, got {value}"
    return problem


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else f"must be a string, got {_kind(value)}"


#: chain.<key> -> check; the LedgerSettings fields and what Workspace.ledger reads
_CHAIN: dict[str, Callable[[Any], str | None]] = {
    "backend": _backend,
    "rpc": _url,
    "chain_id": _integer(1),
    "lock_timeout": _number(positive=True),
    "confirmations": _integer(1),
    "retries": _integer(1),
    "backoff": _number(positive=False),
    "backoff_max": _number(positive=False),
    "request_timeout": _number(positive=True),
    "receipt_timeout": _number(positive=True),
    "poll_interval": _number(positive=False),
    "priority_fee_wei": _integer(0),
    "gas_margin": _number(positive=True),
    "fee_policy": _fee_policy,
    "fee_wait_blocks": _fee_wait_blocks,
    "fee_stall_seconds": _fee_stall_seconds,
}
_LOG: dict[str, Callable[[Any], str | None]] = {"origin": _text}


def check_config(config: Mapping[str, Any], where: str) -> None:
    """Refuse (:class:`WorkspaceError`) a config whose known keys have the wrong type or range.

    ``where`` names the file in the message: ``"<where>: chain.retries must be an integer,
    got a string"``.
    """
    for section, checks in (("chain", _CHAIN), ("log", _LOG)):
        table = config.get(section, {})
        if not isinstance(table, Mapping):
            raise WorkspaceError(f"{where}: {section} must be a table, got {_kind(table)}")
        for key, check in checks.items():
            if key in table:
                problem = check(table[key])
                if problem is not None:
                    raise WorkspaceError(f"{where}: {section}.{key} {problem}")
    chain = config.get("chain", {})
    if chain.get("backend") == "rpc" and "rpc" not in chain:
        raise WorkspaceError(f"{where}: chain.rpc must be the node's URL (chain.backend is rpc)")
    contracts = config.get("contracts", {})
    if not isinstance(contracts, Mapping):
        raise WorkspaceError(f"{where}: contracts must be a table, got {_kind(contracts)}")
    for chain_id, names in contracts.items():
        if not chain_id.isdecimal() or not chain_id.isascii():
            raise WorkspaceError(f"{where}: contracts.{chain_id} is not a chain id")
        if not isinstance(names, Mapping):
            raise WorkspaceError(
                f"{where}: contracts.{chain_id} must be a table, got {_kind(names)}"
            )
        for name, address in names.items():
            if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
                raise WorkspaceError(
                    f"{where}: contracts.{chain_id}.{name} must be a 0x address, "
                    f"got {_kind(address)}"
                )
