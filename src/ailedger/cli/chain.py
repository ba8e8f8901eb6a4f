"""``ailedger chain``: low-level chain commands for operators and debugging."""

from __future__ import annotations

from typing import Annotated

import typer

from ailedger.cli._common import JsonOpt, RpcOpt, WorkspaceOpt, emit
from ailedger.config import passphrase_source, workspace_path
from ailedger.errors import InputError

__all__ = ["chain_app"]

chain_app = typer.Typer(help="Low-level chain commands.", no_args_is_help=True)

OriginArg = Annotated[str, typer.Argument(help="Origin: 0x and 64 hex digits.")]


@chain_app.command()
def status(workspace: WorkspaceOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False) -> None:
    """Backend, chain id, block, account and balance."""
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace_path(workspace))
    account = ws.keystore().address
    with ws.ledger(rpc=rpc) as ledger:
        doc = {
            "backend": ledger.backend,
            "url": ledger.url,
            "chain_id": ledger.chain_id,
            "block": ledger.block_number(),
            "account": account,
            "balance_wei": str(ledger.balance(account)),
            "contracts": ws.config.get("contracts", {}).get(str(ledger.chain_id), {}),
        }
    ether = int(str(doc["balance_wei"])) / 10**18
    emit(
        as_json,
        doc,
        f"backend  {doc['backend']}{' ' + str(doc['url']) if doc['url'] else ''}\n"
        f"chain id {doc['chain_id']}\nblock    {doc['block']}\naccount  {account}\n"
        f"balance  {ether:.6f} ETH",
    )


@chain_app.command()
def anchor(
    origin: OriginArg,
    size: Annotated[str, typer.Argument(help="Tree size: a positive integer.")],
    root: Annotated[str, typer.Argument(help="Root hash: 0x and 64 hex digits.")],
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Anchor a checkpoint (ORIGIN, SIZE, ROOT) in the AnchorRegistry, as the workspace's
    account (anchors are kept per account: no other account's anchors of ORIGIN matter)."""
    from ailedger.ledger import parse_bytes32
    from ailedger.workspace import Workspace

    origin_bytes = parse_bytes32(origin, "ORIGIN")
    root_bytes = parse_bytes32(root, "ROOT")
    size_int = _parse_size(size)
    ws = Workspace.open(workspace_path(workspace))
    with ws.ledger(rpc=rpc, passphrase=passphrase_source()) as ledger:
        registry = ws.anchor_registry(ledger)
        receipt = registry.anchor(origin_bytes, size_int, root_bytes)
        doc = {
            "origin": origin.lower(),
            "size": size_int,
            "root": root.lower(),
            "tx_hash": receipt.tx_hash,
            "block_number": receipt.block_number,
            "block_hash": receipt.block_hash,
            "gas_used": receipt.gas_used,
        }
    emit(
        as_json,
        doc,
        f"anchored size {size_int} in block {receipt.block_number} "
        f"(tx {receipt.tx_hash}, {receipt.gas_used} gas)",
    )


@chain_app.command()
def anchors(
    origin: OriginArg,
    anchorer: Annotated[
        str | None,
        typer.Option(
            help="List the anchors this account made (default: the workspace's account).",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List every anchor of ORIGIN made by one account, oldest first."""
    from ailedger.ledger import parse_address, parse_bytes32
    from ailedger.workspace import Workspace

    origin_bytes = parse_bytes32(origin, "ORIGIN")
    ws = Workspace.open(workspace_path(workspace))
    who = parse_address(anchorer, "--anchorer") if anchorer else ws.keystore().address
    with ws.ledger(rpc=rpc) as ledger:
        found = ws.anchor_registry(ledger).anchors(who, origin_bytes)
    doc = {"origin": origin.lower(), "anchorer": who, "anchors": [a.to_json() for a in found]}
    lines = (
        [f"origin {origin.lower()} anchored by {who}"]
        if found
        else [f"no anchors of this origin by {who}"]
    )
    lines += [
        f"#{a.index:<4} size {a.size:<10} root 0x{a.root.hex()}  block {a.block_number}"
        for a in found
    ]
    emit(as_json, doc, "\n".join(lines))


_MAX_SIZE = 2**64 - 1


def _parse_size(text: str) -> int:
    """A tree size from the command line: ASCII decimal digits only, from 1 to 2**64-1.

    ``int()`` alone would also take ``1_0``, spaces, a sign and non-ASCII digits (``١``).
    """
    if not (text.isascii() and text.isdigit()) or len(text) > 40:
        raise InputError(f"SIZE must be a positive integer in ASCII digits, got {text!r}")
    value = int(text, 10)
    if not 0 < value <= _MAX_SIZE:
        raise InputError(f"SIZE must be from 1 to 2**64-1, got {value}")
    return value


@chain_app.command()
def fund(
    address: Annotated[str, typer.Argument(help="The account to fund: 0x and 40 hex digits.")],
    ether: Annotated[
        str, typer.Option(help="How much ether to add (e.g. 10 or 0.5).", show_default=True)
    ] = "100",
    workspace: WorkspaceOpt = None,
    rpc: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give ADDRESS ether on a development chain (anvil, or the embedded chain).

    anvil: anvil_setBalance; the embedded chain: sent by this workspace's account. Any other
    node is refused.
    """
    from ailedger.consortium import fund as fund_account
    from ailedger.consortium import parse_ether
    from ailedger.ledger import Ledger, parse_address
    from ailedger.workspace import Workspace

    target = parse_address(address, "ADDRESS")
    wei = parse_ether(ether)
    path = workspace_path(workspace)
    if rpc is not None and workspace is None and not (path / "config.toml").exists():
        ledger = Ledger.connect(rpc)
    else:
        ws = Workspace.open(path)
        embedded = rpc is None and ws.config.get("chain", {}).get("backend") != "rpc"
        # only the embedded chain needs the workspace's account (the sender) unlocked
        ledger = ws.ledger(rpc=rpc, passphrase=passphrase_source() if embedded else None)
    with ledger:
        balance = fund_account(ledger, target, wei)
        doc = {
            "address": target,
            "added_wei": str(wei),
            "balance_wei": str(balance),
            "chain_id": ledger.chain_id,
            "backend": ledger.backend,
        }
    emit(as_json, doc, f"funded {target}: balance {balance / 10**18:.6f} ETH")
