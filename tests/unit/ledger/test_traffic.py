"""Fast traffic on a real anvil: local signing, batched sends, mining under control."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.errors import InputError
from ailedger.ledger.traffic import (
    TrafficNode,
    TxRequest,
    Wallet,
    contract_address,
    encode_eip1559,
    load_build_artifact,
    next_base_fee,
    rlp_encode,
)
from tests.conftest import AnvilNode

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "node_modules" / "@uniswap" / "v2-core" / "build"


# Vectors from the RLP specification's examples (ethereum.org, "Recursive-length prefix").
@pytest.mark.parametrize(
    ("item", "encoded"),
    [
        (b"dog", "83646f67"),
        ([b"cat", b"dog"], "c88363617483646f67"),
        (b"", "80"),
        ([], "c0"),
        (0, "80"),
        (b"\x00", "00"),
        (b"\x0f", "0f"),
        (b"\x04\x00", "820400"),
        ([[], [[]], [[], [[]]]], "c7c0c1c0c3c0c1c0"),
        (
            b"Lorem ipsum dolor sit amet, consectetur adipisicing elit",
            "b838" + b"Lorem ipsum dolor sit amet, consectetur adipisicing elit".hex(),
        ),
    ],
)
def test_rlp_matches_the_specification_examples(item: object, encoded: str) -> None:
    assert rlp_encode(item).hex() == encoded  # type: ignore[arg-type]


def test_create_address_known_answers() -> None:
    # the classic example: sender 0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0, nonces 0 and 1
    sender = "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0"
    assert contract_address(sender, 0).lower() == "0xcd234a471b72ba2f1ccf0a70fcaba648a5eecd8d"
    assert contract_address(sender, 1).lower() == "0x343c43a37d37dff08ae8c4a11544c718abb4fcf8"


@settings(max_examples=25, deadline=None)
@given(
    nonce=st.integers(0, 2**64 - 1),
    tip=st.integers(0, 10**12),
    value=st.integers(0, 10**24),
    data=st.binary(max_size=80),
    create=st.booleans(),
)
def test_local_signing_matches_eth_account(
    nonce: int, tip: int, value: int, data: bytes, create: bool
) -> None:
    wallet = Wallet.derive(b"seed", "signing")
    to = None if create else "0x" + "ab" * 20
    ours = encode_eip1559(
        wallet,
        chain_id=31337,
        nonce=nonce,
        tip=tip,
        max_fee=tip + 7 * 10**9,
        gas=100_000,
        to=bytes.fromhex(to[2:]) if to else None,
        value=value,
        data=data,
    )
    request: dict[str, object] = {
        "chainId": 31337,
        "nonce": nonce,
        "maxPriorityFeePerGas": tip,
        "maxFeePerGas": tip + 7 * 10**9,
        "gas": 100_000,
        "value": value,
        "data": data,
        "type": 2,
        "accessList": [],
    }
    if to:
        request["to"] = to_checksum_address(to)
    reference = Account.from_key(wallet.private_key).sign_transaction(request)
    assert ours == bytes(reference.raw_transaction)


def test_next_base_fee_follows_eip_1559() -> None:
    # at target: unchanged; full block: +12.5%; empty block: -12.5%
    assert next_base_fee(10**9, 15_000_000, 30_000_000) == 10**9
    assert next_base_fee(10**9, 30_000_000, 30_000_000) == 1_125_000_000
    assert next_base_fee(10**9, 0, 30_000_000) == 875_000_000


def test_missing_artifacts_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"npm install @uniswap/v2-core"):
        load_build_artifact("UniswapV2Pair", tmp_path / "nowhere")
    (tmp_path / "IERC20.json").write_text('{"abi": [], "bytecode": "0x"}')
    with pytest.raises(InputError, match="empty bytecode"):
        load_build_artifact("IERC20", tmp_path)
    with pytest.raises(InputError, match=r"no artifact Missing\.json"):
        load_build_artifact("Missing", tmp_path)


def test_artifacts_load_from_node_modules_or_build() -> None:
    pair = load_build_artifact("UniswapV2Pair", BUILD.parents[2])
    assert pair.bytecode and pair.interface.selector("swap").hex() == "022c0d9f"
    assert load_build_artifact("ERC20", BUILD).bytecode


@pytest.fixture
def node(own_anvil: AnvilNode) -> Iterator[TrafficNode]:
    with TrafficNode.connect(own_anvil.url, batch_size=50) as traffic:
        traffic.set_automine(False)
        yield traffic


def test_block_order_follows_tips_and_time(node: TrafficNode) -> None:
    wallets = [Wallet.derive(b"order", str(i)) for i in range(6)]
    node.set_balances([w.address for w in wallets], 10**21)
    head = node.head(refresh=True)
    # two transactions per sender, tips strictly decreasing in the listed order
    requests = [
        TxRequest(w, wallets[(i + 1) % 6].address, b"", i + 1, 21_000, 10**9 - 10 * k)
        for k, (i, w) in enumerate([(i, w) for i, w in enumerate(wallets)] * 2)
    ]
    mined = node.mine_block(requests, head.timestamp + 600)
    assert [m.index for m in mined] == list(range(12))
    assert {m.block for m in mined} == {head.number + 1}
    block = node.rpc("eth_getBlockByNumber", hex(head.number + 1), True)
    assert int(block["timestamp"], 16) == head.timestamp + 600
    assert [t["hash"] for t in block["transactions"]] == [m.hash for m in mined]
    tips = [int(t["maxPriorityFeePerGas"], 16) for t in block["transactions"]]
    assert tips == sorted(tips, reverse=True)
    # the next block's base fee is what EIP-1559 predicts from this one
    node.mine_block([], head.timestamp + 612)
    after = node.head(refresh=True)
    parent = node.rpc("eth_getBlockByNumber", hex(head.number + 1), False)
    assert after.base_fee == next_base_fee(
        int(parent["baseFeePerGas"], 16), int(parent["gasUsed"], 16), int(parent["gasLimit"], 16)
    )
    with pytest.raises(InputError, match="decreasing tips"):
        node.mine_block(requests[:2][::-1])


def test_uniswap_swap_moves_reserves_as_constant_product(node: TrafficNode) -> None:
    erc20, factory, pair = (
        load_build_artifact(n, BUILD) for n in ("ERC20", "UniswapV2Factory", "UniswapV2Pair")
    )
    owner = Wallet.derive(b"amm", "owner")
    node.set_balances([owner.address], 10**22)
    supply = 10**30
    token_a = node.deploy(owner, erc20, supply)
    token_b = node.deploy(owner, erc20, supply)
    fac = node.deploy(owner, factory, owner.address)
    fabi, tabi, pabi = factory.interface, erc20.interface, pair.interface
    node.mine_block(
        [TxRequest(owner, fac, fabi.encode("createPair", token_a, token_b), 0, 3_500_000)]
    )
    (pool,) = fabi.decode("getPair", node.call(fac, fabi.encode("getPair", token_a, token_b)))
    (token0,) = pabi.decode("token0", node.call(pool, pabi.encode("token0")))
    r0, r1 = 3_000 * 10**18, 7_000 * 10**18
    t0, t1 = (token_a, token_b) if str(token0).lower() == token_a.lower() else (token_b, token_a)
    node.mine_block(
        [
            TxRequest(owner, t0, tabi.encode("transfer", pool, r0), 0, 80_000, 3 * 10**9),
            TxRequest(owner, t1, tabi.encode("transfer", pool, r1), 0, 80_000, 3 * 10**9 - 1),
            TxRequest(owner, pool, pabi.encode("mint", owner.address), 0, 300_000, 3 * 10**9 - 2),
        ]
    )
    reserves = pabi.decode("getReserves", node.call(pool, pabi.encode("getReserves")))
    assert reserves[:2] == (r0, r1)
    # Uniswap V2 whitepaper §3.2.1: (x + 0.997 dx)(y - dy) >= x y, integer-rounded as the pair does
    dx = 50 * 10**18
    dy = dx * 997 * r1 // (r0 * 1000 + dx * 997)
    swap = [
        TxRequest(owner, t0, tabi.encode("transfer", pool, dx), 0, 80_000, 2 * 10**9),
        TxRequest(owner, pool, pabi.encode("swap", 0, dy, owner.address, b""), 0, 200_000, 10**9),
    ]
    mined = node.mine_block(swap)
    assert all(int(r["status"], 16) == 1 for r in node.receipts([m.hash for m in mined]))
    reserves = pabi.decode("getReserves", node.call(pool, pabi.encode("getReserves")))
    assert reserves[:2] == (r0 + dx, r1 - dy)
    # one unit more than the fee allows breaks the invariant: the pair reverts
    x, y = r0 + dx, r1 - dy
    greedy_out = dx * 997 * y // (x * 1000 + dx * 997) + 1
    greedy = [
        TxRequest(owner, t0, tabi.encode("transfer", pool, dx), 0, 80_000, 2 * 10**9),
        TxRequest(
            owner, pool, pabi.encode("swap", 0, greedy_out, owner.address, b""), 0, 200_000, 10**9
        ),
    ]
    mined = node.mine_block(greedy)
    statuses = [int(r["status"], 16) for r in node.receipts([m.hash for m in mined])]
    assert statuses == [1, 0]


def test_embedded_chain_sends_one_transaction_per_block(tmp_path: Path) -> None:
    from ailedger.ledger import Ledger

    funder = Wallet.derive(b"embedded", "funder")
    with Ledger.embedded(tmp_path / "chain", genesis_balances={funder.address: 10**21}) as ledger:
        node = TrafficNode.from_ledger(ledger)
        assert not node.mining_control
        start = node.head(refresh=True).number
        mined = node.mine_block(
            [
                TxRequest(funder, "0x" + "22" * 20, b"", 5, 21_000, 2 * 10**9),
                TxRequest(funder, "0x" + "22" * 20, b"", 6, 21_000, 10**9),
            ]
        )
        assert [m.block for m in mined] == [start + 1, start + 2]
        assert ledger.balance("0x" + "22" * 20) == 11
