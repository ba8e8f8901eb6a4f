"""The EIP-1559 base-fee rule ("Fee market change for ETH 1.0 chain", Buterin et al., 2019).

Pure integer arithmetic exactly as the EIP's specification writes it, so that our forecasts,
our traffic generator and the node agree to the wei (tests check it against anvil's own
``baseFeePerGas`` block after block).
"""

from __future__ import annotations

from ailedger.errors import InputError

__all__ = [
    "BASE_FEE_MAX_CHANGE_DENOMINATOR",
    "ELASTICITY_MULTIPLIER",
    "INITIAL_BASE_FEE",
    "next_base_fee",
]

ELASTICITY_MULTIPLIER = 2
BASE_FEE_MAX_CHANGE_DENOMINATOR = 8
INITIAL_BASE_FEE = 1_000_000_000
"""Wei; the base fee of the fork block (EIP-1559)."""

_MAX_WEI = 2**256 - 1


def next_base_fee(
    parent_base_fee: int, parent_gas_used: int, parent_gas_limit: int, *, fork_block: bool = False
) -> int:
    """The base fee (wei per gas) of the block after a parent with these fields (EIP-1559).

    ``fork_block`` is True when the child is the first EIP-1559 block: its base fee is
    ``INITIAL_BASE_FEE``. Raises :class:`InputError` for values the rule does not define
    (negative numbers, gas used above the limit, a gas target of zero).
    """
    for name, value in (
        ("parent_base_fee", parent_base_fee),
        ("parent_gas_used", parent_gas_used),
        ("parent_gas_limit", parent_gas_limit),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_WEI:
            raise InputError(f"{name} must be an integer in [0, 2**256), got {value!r}")
    if parent_gas_used > parent_gas_limit:
        raise InputError(
            f"parent_gas_used {parent_gas_used} exceeds parent_gas_limit {parent_gas_limit}"
        )
    if fork_block:
        return INITIAL_BASE_FEE
    parent_gas_target = parent_gas_limit // ELASTICITY_MULTIPLIER
    if parent_gas_target == 0:
        raise InputError(f"parent_gas_limit {parent_gas_limit} gives a gas target of 0")
    if parent_gas_used == parent_gas_target:
        return parent_base_fee
    if parent_gas_used > parent_gas_target:
        gas_used_delta = parent_gas_used - parent_gas_target
        base_fee_delta = max(
            parent_base_fee
            * gas_used_delta
            // parent_gas_target
            // BASE_FEE_MAX_CHANGE_DENOMINATOR,
            1,
        )
        return parent_base_fee + base_fee_delta
    gas_used_delta = parent_gas_target - parent_gas_used
    base_fee_delta = (
        parent_base_fee * gas_used_delta // parent_gas_target // BASE_FEE_MAX_CHANGE_DENOMINATOR
    )
    return parent_base_fee - base_fee_delta
