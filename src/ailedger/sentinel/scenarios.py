"""Synthetic but real chain traffic: benign DeFi activity and published attacks, labels apart.

Everything runs on a real EVM (anvil, driven by :mod:`ailedger.ledger.traffic`) with real
contracts: Uniswap V2's compiled ``UniswapV2Factory``, ``UniswapV2Pair`` and ``ERC20`` (npm
package ``@uniswap/v2-core`` 1.0.1). Benign accounts send ether and tokens to their usual
counterparties, approve spenders, swap on constant-product pools (Uniswap V2 whitepaper,
Adams, Zinsmeister, Robinson 2020, §3.2.1: ``out = in*997*R_out / (R_in*1000 + in*997)``) and
add or remove liquidity, with a daily cycle of activity (block times span simulated days) and
bursts. Attacks follow published taxonomies, each labelled with its source (:data:`SOURCES`):

- ``sandwich``: Qin, Zhou, Gervais, "Quantifying Blockchain Extractable Value: How dark is the
  forest?", IEEE S&P 2022, §4.1: a front-running swap, the victim's swap and a back-running
  swap in one block, ordered by their priority fees (front > victim > back);
- ``spam_flood``: Li, Wang, Zhang, "DETER: Denial of Ethereum Txpool sERvices", ACM CCS 2021:
  many cheap transactions (junk calldata, calls that revert) filling blocks from freshly funded
  accounts;
- ``address_poisoning``: look-alike addresses sharing the first and last hex characters of a
  victim's usual counterparty, which appear in the victim's history through zero-value
  ``transferFrom`` or dust transfers (Guan et al., "Characterizing Ethereum Address Poisoning
  Attack", ACM CCS 2024), sometimes followed by the victim paying the look-alike;
- ``approval_drain``: victims approve a drainer (phishing), the drainer ``transferFrom``\\ s
  their tokens and fans them out to fresh addresses (laundering), as in Forta's attack stages;
- ``price_manipulation``: a large swap (8-60% of the pool's reserve) moves a pool's price, the
  attacker trades against the mispriced neighbouring pools, then swaps back, in one block (Qin,
  Zhou, Livshits, Gervais, "Attacking the DeFi Ecosystem with Flash Loans for Fun and Profit",
  FC 2021, §4); the capital a flash loan would lend arrives a few blocks before, unlabelled;
- ``sybil_laundering``: Forta Network's attack stages (funding, preparation, exploitation,
  laundering; Forta "Attack Detector" feed): one source funds 3-25 fresh accounts with ether
  and tokens, or ether alone (fan-out, ``funding``; gas money or tokens first, a few to many
  per block, amounts spread around a common size), and after a drawn delay everything goes to
  one fresh collector (fan-in, ``laundering``) in one of four shapes: approve the collector
  (``preparation``) then pay it, pay it at once, approve it and let it pull with
  ``transferFrom`` (the collector gets its gas money from the source), or send the ether on.
  There is no protocol here to
  exploit, so this class has no ``exploitation`` stage; ``approval_drain`` and
  ``price_manipulation`` are the exploitations.

Half of the attack budget is spent in the earlier part of the run and half in the later (planned
once half of the traffic is out), so a time split finds every class on both sides. Labels go to
a separate JSON-lines file (``tx``, ``block``, ``class``, ``role``, ``incident``, ``source``),
never on chain. Every size, timing, count and amount is drawn from a generator seeded by
:attr:`ScenarioConfig.seed`: the same seed gives the same chain and labels on a fresh node,
another seed other parameters, so a detector cannot key on one script.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ailedger._input import parse_json
from ailedger.errors import InputError, LedgerError
from ailedger.ledger.traffic import (
    BuildArtifact,
    ContractABI,
    Included,
    TrafficNode,
    TxRequest,
    Wallet,
    checksum_address,
    contract_address,
    load_build_artifact,
)

__all__ = [
    "ATTACK_CLASSES",
    "SOURCES",
    "ScenarioConfig",
    "ScenarioParameters",
    "ScenarioSummary",
    "amount_out",
    "read_labels",
    "run_scenario",
]

SOURCES: dict[str, str] = {
    "sandwich": "Qin, Zhou, Gervais, Quantifying Blockchain Extractable Value, IEEE S&P 2022",
    "spam_flood": "Li, Wang, Zhang, DETER: Denial of Ethereum Txpool sERvices, ACM CCS 2021",
    "address_poisoning": "Guan et al., Characterizing Ethereum Address Poisoning Attack, "
    "ACM CCS 2024",
    "approval_drain": "Forta Network attack stages (funding, preparation, exploitation, "
    "laundering): approval phishing",
    "price_manipulation": "Qin, Zhou, Livshits, Gervais, Attacking the DeFi Ecosystem with "
    "Flash Loans for Fun and Profit, FC 2021",
    "sybil_laundering": "Forta Network attack stages (funding, preparation, exploitation, "
    "laundering): Sybil fan-out and fan-in",
}
ATTACK_CLASSES: tuple[str, ...] = tuple(SOURCES)

_DAY = 86_400
_E18 = 10**18
_GWEI = 10**9
_MAX_UINT = 2**256 - 1
_SUPPLY = 10**12 * _E18
# gas limits per operation, before each wallet's own margin (measured upper bounds on anvil)
_GAS = {
    "eth": 21_000,
    "transfer": 60_000,
    "approve": 50_000,
    "transfer_from": 75_000,
    "swap": 130_000,
    "mint": 230_000,
    "burn": 190_000,
}
_LABEL_FIELDS = ("tx", "block", "class", "role", "incident", "source")


@dataclass(frozen=True, kw_only=True)
class ScenarioConfig:
    """What to generate. ``None`` fields are drawn from the seed (see :class:`ScenarioParameters`).

    ``transactions`` counts the traffic after setup (deployments and initial funding are not
    counted and lie in their own block range). ``attack_rate`` is the share of those that
    are labelled (0.008-0.018 when drawn). Times are in seconds.
    """

    seed: int = 0
    transactions: int = 2_000
    accounts: int | None = None
    tokens: int | None = None
    attack_rate: float | None = None
    attacks: tuple[str, ...] = ATTACK_CLASSES
    block_time: int = 12
    start_time: int | None = None
    txs_per_block: float | None = None
    day_amplitude: float | None = None
    burst_probability: float | None = None

    def __post_init__(self) -> None:
        if self.transactions < 1:
            raise InputError("a scenario needs at least one transaction")
        if self.attack_rate is not None and not 0.0 <= self.attack_rate <= 0.5:
            raise InputError("attack_rate is a share between 0 and 0.5")
        unknown = sorted(set(self.attacks) - set(ATTACK_CLASSES))
        if unknown:
            raise InputError(f"unknown attack classes: {', '.join(unknown)}")
        if self.block_time < 1:
            raise InputError("block_time is at least 1 second")
        if self.accounts is not None and self.accounts < 8:
            raise InputError("a scenario needs at least 8 benign accounts")
        if self.tokens is not None and not 2 <= self.tokens <= 16:
            raise InputError("tokens must be between 2 and 16")


@dataclass(frozen=True, kw_only=True)
class ScenarioParameters:
    """The generator's parameters once drawn from the seed (kept out of the chain and labels)."""

    accounts: int
    tokens: int
    pairs: int
    attack_rate: float
    txs_per_block: float
    day_amplitude: float
    day_phase: float
    burst_probability: float
    burst_multiplier: float
    burst_length: int
    mix: dict[str, float]
    attackers: int


@dataclass(frozen=True, kw_only=True)
class ScenarioSummary:
    """What a run produced: counts per class (``benign`` included), ranges and addresses."""

    seed: int
    parameters: ScenarioParameters
    transactions: int
    counts: dict[str, int]
    incidents: dict[str, int]
    setup_blocks: tuple[int, int]
    blocks: tuple[int, int]
    start_time: int
    end_time: int
    factory: str
    tokens: tuple[str, ...]
    pairs: tuple[str, ...]
    labels: str
    seconds: float
    tx_per_second: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """Uniswap V2's output for ``amount_in`` with the 0.3% fee (UniswapV2Library.getAmountOut)."""
    if amount_in <= 0 or reserve_in <= 0 or reserve_out <= 0:
        return 0
    with_fee = amount_in * 997
    return with_fee * reserve_out // (reserve_in * 1000 + with_fee)


def read_labels(path: Path) -> list[dict[str, Any]]:
    """The labels a run wrote (one JSON object per line)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read labels {path}: {exc.strerror}") from exc
    out = []
    for number, line in enumerate(lines, 1):
        try:
            record = parse_json(line, what=f"{path} line {number}")
        except InputError as exc:
            raise InputError(f"{path} line {number}: not JSON") from exc
        if not isinstance(record, dict) or any(k not in record for k in _LABEL_FIELDS):
            raise InputError(f"{path} line {number}: not a label record")
        out.append(record)
    return out


# -- the simulated world: local mirror of balances and reserves ----------------------------------


@dataclass
class _Pool:
    address: str
    token0: str
    token1: str
    reserve0: int = 0
    reserve1: int = 0
    supply: int = 0
    lp: dict[str, int] = field(default_factory=dict)

    def reserves(self, token_in: str) -> tuple[int, int]:
        if token_in == self.token0:
            return self.reserve0, self.reserve1
        return self.reserve1, self.reserve0


@dataclass
class _Label:
    cls: str
    role: str
    incident: int


@dataclass
class _Unit:
    """Transactions that must run back to back (one sender), built when their turn comes."""

    tip: int
    build: Callable[[], list[tuple[TxRequest, _Label | None]]]
    gas: int = 400_000
    """An upper bound of the gas limits it will use."""


class _World:
    def __init__(self, rng: random.Random, erc20: ContractABI, pair: ContractABI) -> None:
        self.rng = rng
        self.erc20 = erc20
        self.pair_abi = pair
        self.tokens: list[str] = []
        self.pools: list[_Pool] = []
        self.balances: dict[tuple[str, str], int] = {}
        self.margin: dict[str, float] = {}

    def bal(self, token: str, who: str) -> int:
        return self.balances.get((token, who), 0)

    def move(self, token: str, src: str, dst: str, amount: int) -> None:
        have = self.bal(token, src)
        if amount > have:
            raise LedgerError(f"scenario bug: {src} lacks {amount} of {token}")
        self.balances[(token, src)] = have - amount
        self.balances[(token, dst)] = self.bal(token, dst) + amount

    def gas(self, wallet: Wallet, op: str) -> int:
        if op == "eth":
            return _GAS["eth"]
        return int(_GAS[op] * self.margin.get(wallet.address, 1.2))

    # each returns the transactions (not yet signed) and updates the mirror as the EVM will

    def transfer(self, w: Wallet, token: str, to: str, amount: int) -> TxRequest:
        self.move(token, w.address, to, amount)
        data = self.erc20.encode("transfer", to, amount)
        return TxRequest(w, token, data, 0, self.gas(w, "transfer"))

    def pull_all(self, spender: Wallet, token: str, owner: str) -> list[TxRequest]:
        """``spender`` takes all of ``owner``'s ``token`` by ``transferFrom`` (nothing if empty)."""
        amount = self.bal(token, owner)
        if amount <= 0:
            return []
        self.move(token, owner, spender.address, amount)
        data = self.erc20.encode("transferFrom", owner, spender.address, amount)
        return [TxRequest(spender, token, data, 0, self.gas(spender, "transfer_from"))]

    def swap(self, w: Wallet, pool: _Pool, token_in: str, amount: int, out: int) -> list[TxRequest]:
        """Pay ``amount`` of ``token_in`` into ``pool`` and take ``out`` (0.3% fee checked)."""
        r_in, r_out = pool.reserves(token_in)
        if out <= 0 or out > amount_out(amount, r_in, r_out):
            raise LedgerError("scenario bug: a swap asks more than the pool gives")
        pay = self.transfer(w, token_in, pool.address, amount)
        token_out = pool.token1 if token_in == pool.token0 else pool.token0
        self.balances[(token_out, pool.address)] = self.bal(token_out, pool.address) - out
        self.balances[(token_out, w.address)] = self.bal(token_out, w.address) + out
        self._sync(pool)
        a0, a1 = (0, out) if token_in == pool.token0 else (out, 0)
        data = self.pair_abi.encode("swap", a0, a1, w.address, b"")
        return [pay, TxRequest(w, pool.address, data, 0, self.gas(w, "swap"))]

    def add_liquidity(
        self, w: Wallet, pool: _Pool, amount0: int, amount1: int | None = None
    ) -> list[TxRequest]:
        if amount1 is None:
            amount1 = (amount0 * pool.reserve1 // pool.reserve0 if pool.reserve0 else amount0) or 1
        txs = [
            self.transfer(w, pool.token0, pool.address, amount0),
            self.transfer(w, pool.token1, pool.address, amount1),
        ]
        if pool.supply == 0:
            minted = math.isqrt(amount0 * amount1) - 1000
            pool.supply = 1000
        else:
            minted = min(
                amount0 * pool.supply // pool.reserve0, amount1 * pool.supply // pool.reserve1
            )
        if minted <= 0:
            raise LedgerError("scenario bug: liquidity too small to mint")
        pool.supply += minted
        pool.lp[w.address] = pool.lp.get(w.address, 0) + minted
        self._sync(pool)
        data = self.pair_abi.encode("mint", w.address)
        return [*txs, TxRequest(w, pool.address, data, 0, self.gas(w, "mint"))]

    def remove_liquidity(self, w: Wallet, pool: _Pool, liquidity: int) -> list[TxRequest]:
        pool.lp[w.address] -= liquidity
        give = TxRequest(
            w,
            pool.address,
            self.pair_abi.encode("transfer", pool.address, liquidity),
            0,
            self.gas(w, "transfer"),
        )
        out0 = liquidity * self.bal(pool.token0, pool.address) // pool.supply
        out1 = liquidity * self.bal(pool.token1, pool.address) // pool.supply
        pool.supply -= liquidity
        self.move(pool.token0, pool.address, w.address, out0)
        self.move(pool.token1, pool.address, w.address, out1)
        self._sync(pool)
        burn = TxRequest(
            w, pool.address, self.pair_abi.encode("burn", w.address), 0, self.gas(w, "burn")
        )
        return [give, burn]

    def _sync(self, pool: _Pool) -> None:
        pool.reserve0 = self.bal(pool.token0, pool.address)
        pool.reserve1 = self.bal(pool.token1, pool.address)


# -- the run ------------------------------------------------------------------------------------


def _draw_parameters(config: ScenarioConfig, rng: random.Random) -> ScenarioParameters:
    accounts = config.accounts or max(16, min(2_000, int(config.transactions / rng.uniform(8, 20))))
    tokens = config.tokens or rng.randint(3, 5)
    all_pairs = tokens * (tokens - 1) // 2
    mix_raw = {
        "eth": rng.uniform(0.15, 0.35),
        "transfer": rng.uniform(0.2, 0.4),
        "approve": rng.uniform(0.03, 0.08),
        "swap": rng.uniform(0.15, 0.3),
        "add": rng.uniform(0.01, 0.04),
        "remove": rng.uniform(0.005, 0.03),
    }
    total = sum(mix_raw.values())
    return ScenarioParameters(
        accounts=accounts,
        tokens=tokens,
        pairs=rng.randint(max(2, all_pairs // 2), all_pairs),
        attack_rate=config.attack_rate
        if config.attack_rate is not None
        else rng.uniform(0.008, 0.018),
        txs_per_block=config.txs_per_block or rng.uniform(8, 30),
        day_amplitude=config.day_amplitude
        if config.day_amplitude is not None
        else rng.uniform(0.3, 0.8),
        day_phase=rng.uniform(0, 2 * math.pi),
        burst_probability=(
            config.burst_probability
            if config.burst_probability is not None
            else rng.uniform(0.005, 0.03)
        ),
        burst_multiplier=rng.uniform(2.0, 5.0),
        burst_length=rng.randint(2, 8),
        mix={k: round(v / total, 6) for k, v in mix_raw.items()},
        attackers=rng.randint(2, 6),
    )


def run_scenario(
    config: ScenarioConfig,
    node: TrafficNode,
    labels_path: Path,
    *,
    artifacts: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScenarioSummary:
    """Generate ``config``'s traffic on ``node`` (anvil) and write its labels to ``labels_path``.

    ``artifacts`` is the folder of Uniswap V2's ``build/*.json`` (default: ``node_modules`` of
    the working directory or the repository). ``progress(done, total)`` is called per block.
    Raises :class:`InputError` for missing artifacts, :class:`LedgerError` if the node is not
    anvil or refuses the traffic.
    """
    factory_art = load_build_artifact("UniswapV2Factory", artifacts)
    pair_art = load_build_artifact("UniswapV2Pair", artifacts)
    erc20_art = load_build_artifact("ERC20", artifacts)
    if not node.mining_control:
        raise LedgerError("scenarios need a node with mining control (anvil)")
    started = time.perf_counter()
    sent_before = node.sent
    gen = _Generator(config, node, labels_path, factory_art, pair_art, erc20_art)
    return gen.run(progress, started, sent_before)


class _Generator:
    def __init__(
        self,
        config: ScenarioConfig,
        node: TrafficNode,
        labels_path: Path,
        factory_art: BuildArtifact,
        pair_art: BuildArtifact,
        erc20_art: BuildArtifact,
    ) -> None:
        self.config = config
        self.node = node
        self.labels_path = labels_path
        self.rng = random.Random(config.seed)
        self.params = _draw_parameters(config, self.rng)
        self.seed_bytes = (
            config.seed.to_bytes(32, "big", signed=False)
            if config.seed >= 0
            else (str(config.seed).encode())
        )
        self.factory_art = factory_art
        self.erc20_art = erc20_art
        self.world = _World(self.rng, erc20_art.interface, pair_art.interface)
        self.treasury = self._wallet("treasury")
        self.accounts = [self._wallet(f"user{i}") for i in range(self.params.accounts)]
        self.attackers = [self._wallet(f"attacker{i}") for i in range(self.params.attackers)]
        self.counterparties: dict[str, list[str]] = {}
        self.fresh = 0
        self.incident = 0
        self.counts: dict[str, int] = {"benign": 0}
        self.schedule: dict[int, list[_Unit]] = {}
        self.locked: dict[int, set[str]] = {}
        head = node.head(refresh=True)
        start = config.start_time if config.start_time is not None else head.timestamp + 1
        if start <= head.timestamp:
            raise InputError(f"start_time {start} is not after the node's head ({head.timestamp})")
        self.clock = start
        self.start_time = start

    def _wallet(self, label: str) -> Wallet:
        wallet = Wallet.derive(self.seed_bytes, label)
        self.world.margin[wallet.address] = self.rng.choice((1.0, 1.1, 1.2, 1.5, 2.0))
        return wallet

    def _new_fresh(self, role: str) -> Wallet:
        self.fresh += 1
        return self._wallet(f"{role}{self.fresh}")

    def _tip(self) -> int:
        """A priority fee in wei: log-normal around 1 gwei, as on mainnet."""
        return max(10_000_000, int(_GWEI * self.rng.lognormvariate(0.0, 0.9)))

    def _mine(self, units: list[_Unit]) -> list[tuple[Included, _Label | None]]:
        units.sort(key=lambda u: -u.tip)
        txs: list[TxRequest] = []
        labels: list[_Label | None] = []
        floor: int | None = None
        for unit in units:
            tip = unit.tip if floor is None else min(unit.tip, floor - 1)
            for tx, label in unit.build():
                txs.append(TxRequest(tx.sender, tx.to, tx.data, tx.value, tx.gas, tip))
                labels.append(label)
                floor = tip
                tip -= 1
        self.clock += self.config.block_time
        included = self.node.mine_block(txs, self.clock)
        return list(zip(included, labels, strict=True))

    # -- setup -------------------------------------------------------------------------------

    def _setup(self) -> tuple[int, int]:
        node, world, rng = self.node, self.world, self.rng
        node.set_automine(False)
        everyone = [self.treasury, *self.accounts, *self.attackers]
        node.set_balances([w.address for w in everyone], 10_000 * _E18)
        node.sync_nonces(everyone)
        first = node.head().number + 1
        # tokens and the factory, deployed by the treasury
        deploys: list[TxRequest] = []
        erc20 = self.erc20_art
        for _ in range(self.params.tokens):
            world.tokens.append(_create_address(self.treasury, len(deploys)))
            deploys.append(
                TxRequest(
                    self.treasury,
                    None,
                    erc20.bytecode + erc20.interface.encode_constructor(_SUPPLY),
                    0,
                    1_500_000,
                )
            )
        factory = _create_address(self.treasury, len(deploys))
        deploys.append(
            TxRequest(
                self.treasury,
                None,
                self.factory_art.bytecode
                + self.factory_art.interface.encode_constructor(self.treasury.address),
                0,
                5_000_000,
            )
        )
        self._mine([_Unit(10 * _GWEI, _plain(deploys))])
        for token in world.tokens:
            world.balances[(token, self.treasury.address)] = _SUPPLY
        self.factory = factory
        # pairs: createPair over a random subset of token pairs
        combos = [(a, b) for i, a in enumerate(world.tokens) for b in world.tokens[i + 1 :]]
        rng.shuffle(combos)
        chosen = combos[: self.params.pairs]
        fabi = self.factory_art.interface
        creates = [
            TxRequest(self.treasury, factory, fabi.encode("createPair", a, b), 0, 3_000_000)
            for a, b in chosen
        ]
        for start in range(0, len(creates), 6):
            chunk = creates[start : start + 6]
            self._mine([_Unit(10 * _GWEI, _plain(chunk))])
        replies = node.calls([(factory, fabi.encode("getPair", a, b)) for a, b in chosen])
        for (a, b), reply in zip(chosen, replies, strict=True):
            (address,) = fabi.decode("getPair", reply)
            t0, t1 = sorted((a, b), key=lambda t: bytes.fromhex(t[2:]))
            world.pools.append(_Pool(address=str(address), token0=t0, token1=t1))
        # initial liquidity from the treasury, then tokens to users and attackers
        seeding: list[TxRequest] = []
        for pool in world.pools:
            amount0 = rng.randint(10**6, 10**8) * _E18
            seeding += world.add_liquidity(
                self.treasury, pool, amount0, int(amount0 * rng.lognormvariate(0, 1.5))
            )
        self._mine([_Unit(10 * _GWEI, _plain(seeding))])
        grants: list[TxRequest] = []
        for w in self.accounts:
            for token in rng.sample(world.tokens, rng.randint(1, len(world.tokens))):
                grants.append(
                    world.transfer(
                        self.treasury, token, w.address, int(rng.lognormvariate(8, 1.5) * _E18)
                    )
                )
        for w in self.attackers:
            for token in world.tokens:
                grants.append(
                    world.transfer(
                        self.treasury, token, w.address, rng.randint(10**5, 10**7) * _E18
                    )
                )
        per_block = self.node.head().gas_limit * 9 // 10 // (2 * _GAS["transfer"])
        for start in range(0, len(grants), per_block):
            chunk = grants[start : start + per_block]
            self._mine([_Unit(10 * _GWEI, _plain(chunk))])
        for w in self.accounts:
            self.counterparties[w.address] = [
                rng.choice(self.accounts).address for _ in range(rng.randint(1, 4))
            ]
        return first, node.last_block

    # -- benign ------------------------------------------------------------------------------

    def _benign_unit(self, locked: set[str]) -> _Unit | None:
        rng, world = self.rng, self.world
        kind = rng.choices(list(self.params.mix), weights=list(self.params.mix.values()))[0]
        w = rng.choice(self.accounts)
        me = w.address
        if me in locked:
            return None
        held = [t for t in world.tokens if world.bal(t, me) > 0]
        pools = [p for p in world.pools if p.address not in locked]

        def one(tx: TxRequest) -> list[tuple[TxRequest, _Label | None]]:
            return [(tx, None)]

        if kind == "eth" or not held:
            to = rng.choice(self.counterparties[me])
            value = int(rng.lognormvariate(-2, 1.5) * _E18)
            return _Unit(self._tip(), lambda: one(TxRequest(w, to, b"", value, 21_000)), 21_000)
        if kind == "transfer":
            token = rng.choice(held)
            to = rng.choice(self.counterparties[me])

            def build_transfer() -> list[tuple[TxRequest, _Label | None]]:
                amount = int(world.bal(token, me) * rng.uniform(0.01, 0.3))
                if amount <= 0:
                    return []
                return one(world.transfer(w, token, to, amount))

            return _Unit(self._tip(), build_transfer, 2 * _GAS["transfer"])
        if kind == "approve":
            spender = rng.choice([*[p.address for p in world.pools], *self.counterparties[me]])
            amount = _MAX_UINT if rng.random() < 0.6 else int(rng.lognormvariate(6, 2) * _E18)
            token = rng.choice(held)
            data = world.erc20.encode("approve", spender, amount)
            return _Unit(
                self._tip(),
                lambda: one(TxRequest(w, token, data, 0, world.gas(w, "approve"))),
                2 * _GAS["approve"],
            )
        usable = [p for p in pools if p.token0 in held or p.token1 in held]
        if kind in ("swap", "add") and not usable:
            return None
        if kind == "swap":
            pool = rng.choice(usable)
            token_in = pool.token0 if pool.token0 in held else pool.token1

            def build_swap() -> list[tuple[TxRequest, _Label | None]]:
                amount = max(10**6, int(world.bal(token_in, me) * rng.uniform(0.02, 0.5)))
                if amount > world.bal(token_in, me):
                    return []
                r_in, r_out = pool.reserves(token_in)
                quote = amount_out(amount, r_in, r_out)
                out = quote * (1000 - rng.randint(0, 30)) // 1000
                if out <= 0:
                    return []
                return [(tx, None) for tx in world.swap(w, pool, token_in, amount, out)]

            return _Unit(self._tip(), build_swap, 2 * (_GAS["transfer"] + _GAS["swap"]))
        if kind == "add":
            both = [
                p for p in usable if world.bal(p.token0, me) > 0 and world.bal(p.token1, me) > 0
            ]
            if not both:
                return None
            pool = rng.choice(both)

            def build_add() -> list[tuple[TxRequest, _Label | None]]:
                a0 = int(world.bal(pool.token0, me) * rng.uniform(0.05, 0.5))
                need1 = a0 * pool.reserve1 // pool.reserve0 + 1
                if a0 <= 0 or need1 > world.bal(pool.token1, me):
                    a0 = world.bal(pool.token1, me) * pool.reserve0 // pool.reserve1 // 2
                if a0 <= 10**6:
                    return []
                try:
                    return [(tx, None) for tx in world.add_liquidity(w, pool, a0)]
                except LedgerError:
                    return []

            return _Unit(self._tip(), build_add, 2 * (2 * _GAS["transfer"] + _GAS["mint"]))
        mine_lp = [p for p in pools if p.lp.get(me, 0) > 0]
        if not mine_lp:
            return None
        pool = rng.choice(mine_lp)

        def build_remove() -> list[tuple[TxRequest, _Label | None]]:
            liquidity = max(1, int(pool.lp.get(me, 0) * rng.uniform(0.2, 1.0)))
            if liquidity > pool.lp.get(me, 0):
                return []
            return [(tx, None) for tx in world.remove_liquidity(w, pool, liquidity)]

        return _Unit(self._tip(), build_remove, 2 * (_GAS["transfer"] + _GAS["burn"]))

    def _activity(self, timestamp: int, burst: bool) -> float:
        phase = 2 * math.pi * (timestamp % _DAY) / _DAY + self.params.day_phase
        rate = self.params.txs_per_block / 1.4 * (1 + self.params.day_amplitude * math.sin(phase))
        return rate * (self.params.burst_multiplier if burst else 1.0)

    # -- attacks -----------------------------------------------------------------------------

    def _add(self, block: int, unit: _Unit, lock: tuple[str, ...] = ()) -> None:
        self.schedule.setdefault(block, []).append(unit)
        self.locked.setdefault(block, set()).update(lock)

    def _labelled(
        self, cls: str, role: str, incident: int, txs: list[TxRequest]
    ) -> list[tuple[TxRequest, _Label | None]]:
        return [(tx, _Label(cls, role, incident)) for tx in txs]

    def _plan_attacks(self, low: int, high: int, budget: int, first: int) -> None:
        """Schedule incidents between blocks ``low`` and ``high`` until ``budget`` labelled
        transactions are used, round robin over the classes starting at class ``first``."""
        classes = list(self.config.attacks)
        if not classes or budget <= 0:
            return
        classes = classes[first % len(classes) :] + classes[: first % len(classes)]
        # each class an equal share of the budget, so classes of small incidents (a sandwich is
        # 6 transactions) get as many transactions as the others
        per_class = budget / len(classes)
        spent = dict.fromkeys(classes, 0)
        total = 0
        while total < budget:
            for cls in classes:
                if total >= budget or spent[cls] >= per_class:
                    continue
                size = round(per_class * self.rng.uniform(0.2, 0.6))
                left = max(4, min(budget - total, round(per_class - spent[cls]), size))
                at = self.rng.randint(low, max(low, high))
                self.incident += 1
                used = int(getattr(self, f"_plan_{cls}")(at, self.incident, left))
                spent[cls] += used
                total += used

    def _pick_pool(self) -> _Pool:
        return self.rng.choice(self.world.pools)

    def _plan_sandwich(self, at: int, incident: int, left: int) -> int:
        rng, world = self.rng, self.world
        pool = self._pick_pool()
        bot = rng.choice(self.attackers)
        victim = rng.choice(self.accounts)
        token_in = rng.choice((pool.token0, pool.token1))
        token_out = pool.token1 if token_in == pool.token0 else pool.token0
        slippage = rng.randint(5, 30)  # tenths of a percent
        victim_tip = self._tip()
        cls = "sandwich"
        state: dict[str, int] = {}

        def build_victim() -> list[tuple[TxRequest, _Label | None]]:
            if "min" not in state:
                return []
            amount = state["amount"]
            r_in, r_out = pool.reserves(token_in)
            if amount_out(amount, r_in, r_out) < state["min"]:
                return []
            if world.bal(token_in, victim.address) < amount:
                return []
            return self._labelled(
                cls, "victim", incident, world.swap(victim, pool, token_in, amount, state["min"])
            )

        def build_front() -> list[tuple[TxRequest, _Label | None]]:
            r_in, r_out = pool.reserves(token_in)
            amount = int(world.bal(token_in, victim.address) * rng.uniform(0.5, 0.95))
            if amount <= 0:
                return []
            minimum = amount_out(amount, r_in, r_out) * (1000 - slippage) // 1000
            # largest front-run that leaves the victim its minimum (binary search)
            lo, hi = 0, min(world.bal(token_in, bot.address), r_in)
            for _ in range(60):
                mid = (lo + hi + 1) // 2
                got = amount_out(mid, r_in, r_out)
                if amount_out(amount, r_in + mid, r_out - got) >= minimum:
                    lo = mid
                else:
                    hi = mid - 1
            front = int(lo * rng.uniform(0.6, 0.98))
            got = amount_out(front, r_in, r_out)
            if front <= 0 or got <= 0:
                return []
            state.update(amount=amount, min=minimum, got=got)
            return self._labelled(
                cls, "front", incident, world.swap(bot, pool, token_in, front, got)
            )

        def build_back() -> list[tuple[TxRequest, _Label | None]]:
            if "got" not in state:
                return []
            give = min(state["got"], world.bal(token_out, bot.address))
            r_in, r_out = pool.reserves(token_out)
            out = amount_out(give, r_in, r_out)
            if out <= 0:
                return []
            txs = world.swap(bot, pool, token_out, give, out)
            return self._labelled(cls, "back", incident, txs)

        bribe = int(victim_tip * rng.uniform(1.5, 20))
        # the pool and the victim sit out of benign traffic in that block, so nothing but the
        # three swaps touches them
        self._add(at, _Unit(victim_tip + bribe, build_front), (pool.address, victim.address))
        self._add(at, _Unit(victim_tip, build_victim))
        self._add(at, _Unit(max(1_000_000, int(victim_tip * rng.uniform(0.2, 0.9))), build_back))
        # the victim must hold token_in: a benign-looking top-up earlier (not labelled)
        top_up = int(pool.reserves(token_in)[0] * rng.uniform(0.002, 0.02))
        self._add(
            max(1, at - rng.randint(1, 10)),
            _Unit(
                self._tip(),
                lambda: [
                    (self.world.transfer(self.treasury, token_in, victim.address, top_up), None)
                ],
            ),
        )
        return 6

    def _plan_spam_flood(self, at: int, incident: int, left: int) -> int:
        rng, world = self.rng, self.world
        cls = "spam_flood"
        master = rng.choice(self.attackers)
        senders = [
            self._new_fresh("spam") for _ in range(rng.randint(1, max(1, min(8, left // 4))))
        ]
        blocks = rng.randint(1, max(1, min(4, left // 4)))
        per_block = max(1, (left - len(senders)) // blocks)
        per_block = min(per_block, rng.randint(20, 150))
        fund = [
            TxRequest(master, s.address, b"", rng.randint(1, 5) * _E18, 21_000) for s in senders
        ]
        self._add(at, _Unit(self._tip(), _fixed(cls, "funding", incident, fund)))
        targets = [*world.tokens, *[p.address for p in world.pools]]
        gas_limit = rng.choice((30_000, 60_000, 100_000, 200_000))
        per_block = max(1, min(per_block, self.node.head().gas_limit // 2 // gas_limit))
        tip = max(1_000_000, int(_GWEI * rng.uniform(0.01, 0.3)))
        for b in range(blocks):
            for _ in range(per_block):
                s = rng.choice(senders)
                if rng.random() < 0.5:
                    # junk calldata to a throw-away address; 40 gas per byte covers the EIP-7623
                    # calldata floor (10 per token, 4 tokens per non-zero byte)
                    junk = rng.randbytes(rng.randint(0, 64))
                    sink = checksum_address("0x" + rng.randbytes(20).hex())
                    tx = TxRequest(s, sink, junk, 0, 21_000 + 40 * len(junk))
                else:
                    junk = rng.randbytes(4) + rng.randbytes(rng.choice((0, 32, 64)))
                    tx = TxRequest(s, rng.choice(targets), junk, 0, gas_limit)
                self._add(
                    at + 1 + b,
                    _Unit(
                        tip + rng.randint(0, 10**6),
                        _fixed(cls, "flood", incident, [tx]),
                        tx.gas,
                    ),
                )
        return len(fund) + blocks * per_block

    def _plan_address_poisoning(self, at: int, incident: int, left: int) -> int:
        rng, world = self.rng, self.world
        cls = "address_poisoning"
        poisoner = rng.choice(self.attackers)
        victims = rng.sample(
            self.accounts, min(len(self.accounts), rng.randint(1, max(1, min(6, left // 2))))
        )
        count = 0
        for i, victim in enumerate(victims):
            target = rng.choice(self.counterparties[victim.address])
            keep = rng.randint(3, 5)
            body = target[2:]
            middle = "".join(rng.choice("0123456789abcdef") for _ in range(40 - 2 * keep))
            lookalike = checksum_address("0x" + body[:keep].lower() + middle + body[-keep:].lower())
            token = rng.choice(world.tokens)
            if rng.random() < 0.6:
                data = world.erc20.encode("transferFrom", victim.address, lookalike, 0)
                tx = TxRequest(poisoner, token, data, 0, world.gas(poisoner, "transfer_from"))
                self._add(
                    at + i,
                    _Unit(self._tip(), _fixed(cls, "poison", incident, [tx])),
                )
                count += 1
            elif rng.random() < 0.5:
                # a fake incoming transfer: Transfer(look-alike -> victim, 0)
                data = world.erc20.encode("transferFrom", lookalike, victim.address, 0)
                tx = TxRequest(poisoner, token, data, 0, world.gas(poisoner, "transfer_from"))
                self._add(
                    at + i,
                    _Unit(self._tip(), _fixed(cls, "poison", incident, [tx])),
                )
                count += 1
            else:
                # dust from a vanity look-alike (first and last hex character match, as cheap
                # poisoners do), funded by the poisoner
                vanity = self._vanity(target)
                lookalike = vanity.address
                dust = rng.randint(1, 10**12)
                fund = [
                    TxRequest(poisoner, vanity.address, b"", rng.randint(1, 9) * 10**15, 21_000),
                ]

                def fund_dust(
                    vanity: Wallet = vanity,
                    token: str = token,
                    dust: int = dust,
                    fund: list[TxRequest] = fund,
                ) -> list[tuple[TxRequest, _Label | None]]:
                    amount = min(dust, world.bal(token, poisoner.address))
                    txs = [*fund, world.transfer(poisoner, token, vanity.address, amount)]
                    return self._labelled(cls, "funding", incident, txs)

                def send_dust(
                    vanity: Wallet = vanity,
                    victim: Wallet = victim,
                    token: str = token,
                    dust: int = dust,
                ) -> list[tuple[TxRequest, _Label | None]]:
                    held = world.bal(token, vanity.address)
                    if held <= 0:
                        return []
                    return self._labelled(
                        cls,
                        "poison",
                        incident,
                        [world.transfer(vanity, token, victim.address, min(dust, held))],
                    )

                self._add(at + i, _Unit(self._tip(), fund_dust))
                self._add(at + i + 1, _Unit(self._tip(), send_dust))
                count += 3
            if rng.random() < 0.3:

                def loss(
                    victim: Wallet = victim, lookalike: str = lookalike, token: str = token
                ) -> list[tuple[TxRequest, _Label | None]]:
                    amount = world.bal(token, victim.address) // rng.randint(3, 10)
                    if amount <= 0:
                        value = int(rng.uniform(0.05, 2) * _E18)
                        return self._labelled(
                            cls,
                            "loss",
                            incident,
                            [TxRequest(victim, lookalike, b"", value, 21_000)],
                        )
                    return self._labelled(
                        cls, "loss", incident, [world.transfer(victim, token, lookalike, amount)]
                    )

                self._add(at + i + rng.randint(2, 10), _Unit(self._tip(), loss))
                count += 1
        return count

    def _vanity(self, target: str) -> Wallet:
        """A fresh key whose address shares ``target``'s first and last hex character."""
        want = target[2:].lower()
        while True:
            wallet = self._new_fresh("vanity")
            got = wallet.address[2:].lower()
            if got[0] == want[0] and got[-1] == want[-1]:
                return wallet

    def _plan_approval_drain(self, at: int, incident: int, left: int) -> int:
        rng, world = self.rng, self.world
        cls = "approval_drain"
        drainer = rng.choice(self.attackers)
        token = rng.choice(world.tokens)
        holders = [w for w in self.accounts if world.bal(token, w.address) > 0] or self.accounts
        victims = rng.sample(holders, min(len(holders), rng.randint(1, max(1, min(5, left // 4)))))
        hops = rng.randint(2, max(2, min(10, left // 3)))
        count = 0
        gap = rng.randint(1, 6)
        for i, victim in enumerate(victims):
            data = world.erc20.encode("approve", drainer.address, _MAX_UINT)
            tx = TxRequest(victim, token, data, 0, world.gas(victim, "approve"))
            self._add(
                at + i,
                _Unit(self._tip(), _fixed(cls, "approve", incident, [tx])),
            )

            def drain(victim: Wallet = victim) -> list[tuple[TxRequest, _Label | None]]:
                return self._labelled(
                    cls, "drain", incident, world.pull_all(drainer, token, victim.address)
                )

            self._add(at + len(victims) + gap, _Unit(self._tip() * 3, drain))
            count += 2
        sinks = [self._new_fresh("launder").address for _ in range(hops)]
        for j, sink in enumerate(sinks):

            def launder(sink: str = sink) -> list[tuple[TxRequest, _Label | None]]:
                amount = world.bal(token, drainer.address) // max(2, hops)
                if amount <= 0:
                    return []
                return self._labelled(
                    cls, "launder", incident, [world.transfer(drainer, token, sink, amount)]
                )

            self._add(at + len(victims) + gap + 1 + j // 4, _Unit(self._tip(), launder))
            count += 1
        return count

    def _plan_price_manipulation(self, at: int, incident: int, left: int) -> int:
        rng, world = self.rng, self.world
        cls = "price_manipulation"
        pool = self._pick_pool()
        others = [
            p
            for p in world.pools
            if p is not pool and {p.token0, p.token1} & {pool.token0, pool.token1}
        ]
        attacker = rng.choice(self.attackers)
        token_in = rng.choice((pool.token0, pool.token1))
        token_out = pool.token1 if token_in == pool.token0 else pool.token0
        state: dict[str, int] = {}
        tip = self._tip() * rng.randint(5, 50)
        share = rng.uniform(0.08, 0.6)

        def capital() -> list[tuple[TxRequest, _Label | None]]:
            # the capital a flash loan would lend within the transaction; here a transfer from
            # the treasury a few blocks before (not labelled: moving funds is not the attack)
            need = int(pool.reserves(token_in)[0] * share * 1.2)
            short = need - world.bal(token_in, attacker.address)
            if short <= 0 or world.bal(token_in, self.treasury.address) < short:
                return []
            return [(world.transfer(self.treasury, token_in, attacker.address, short), None)]

        def manipulate() -> list[tuple[TxRequest, _Label | None]]:
            r_in, r_out = pool.reserves(token_in)
            amount = min(world.bal(token_in, attacker.address), int(r_in * share))
            got = amount_out(amount, r_in, r_out)
            if got <= 0:
                return []
            state["got"] = got
            return self._labelled(
                cls, "manipulate", incident, world.swap(attacker, pool, token_in, amount, got)
            )

        def exploit(other: _Pool) -> list[tuple[TxRequest, _Label | None]]:
            held = token_out if token_out in (other.token0, other.token1) else token_in
            r_in, r_out = other.reserves(held)
            amount = min(
                world.bal(held, attacker.address) // 4, int(r_in * rng.uniform(0.01, 0.05))
            )
            got = amount_out(amount, r_in, r_out)
            if got <= 0 or amount <= 0:
                return []
            return self._labelled(
                cls, "exploit", incident, world.swap(attacker, other, held, amount, got)
            )

        def restore() -> list[tuple[TxRequest, _Label | None]]:
            if "got" not in state:
                return []
            give = min(state["got"], world.bal(token_out, attacker.address))
            r_in, r_out = pool.reserves(token_out)
            got = amount_out(give, r_in, r_out)
            if got <= 0:
                return []
            return self._labelled(
                cls, "restore", incident, world.swap(attacker, pool, token_out, give, got)
            )

        chosen = rng.sample(others, min(len(others), rng.randint(1, 2)))
        self._add(max(1, at - rng.randint(1, 10)), _Unit(self._tip(), capital))
        self._add(at, _Unit(tip, manipulate), (pool.address, *[o.address for o in chosen]))
        for k, other in enumerate(chosen):
            self._add(at, _Unit(tip - 1000 * (k + 1), functools.partial(exploit, other)))
        self._add(at, _Unit(tip - 1000 * (len(chosen) + 1), restore))
        return 4 + 2 * len(chosen)

    def _plan_sybil_laundering(self, at: int, incident: int, left: int) -> int:
        """Funding, (preparation,) laundering; the shape varies per incident: how many sybils,
        tokens or ETH, gas money before or after the tokens, how the collector collects (each
        sybil approves it then pays; pays at once; approves and the collector pulls with
        ``transferFrom``; ETH sent on), amounts spread around a common size, and timing."""
        rng, world = self.rng, self.world
        cls = "sybil_laundering"
        source = rng.choice(self.attackers)
        n = rng.randint(3, max(3, min(25, left // 3)))
        sybils = [self._new_fresh("sybil") for _ in range(n)]
        collector = self._new_fresh("collector")
        token = rng.choice(world.tokens)
        mode = rng.choice(("approve_pay", "pay", "pull", "eth"))
        tokens_first = rng.random() < 0.5
        per_block = rng.randint(1, 12)
        spread = rng.uniform(0.0, 0.4)
        per = world.bal(token, source.address) // (4 * n)
        wait = rng.randint(2, 12)
        count = 0
        end = at + (n - 1) // per_block
        if mode == "pull":
            # the collector needs gas money for its transferFrom calls: from the same source
            gas = int(rng.uniform(0.05, 0.3) * _E18)
            tx = TxRequest(source, collector.address, b"", gas, 21_000)
            self._add(at, _Unit(self._tip(), _fixed(cls, "funding", incident, [tx])))
            count += 1
        for i, s in enumerate(sybils):
            block = at + i // per_block
            value = int(rng.uniform(0.05, 0.5) * _E18)
            if mode == "eth":
                value = int(rng.uniform(0.5, 5.0) * _E18)
            eth = TxRequest(source, s.address, b"", value, 21_000)
            tips = sorted((self._tip(), self._tip()))
            # which lands first in the block (the higher tip): the gas money or the tokens
            eth_tip, token_tip = tips if tokens_first else tips[::-1]
            units: list[_Unit] = [_Unit(eth_tip, _fixed(cls, "funding", incident, [eth]))]
            share = 1.0 + rng.uniform(-spread, spread)

            def fund_token(
                s: Wallet = s, share: float = share
            ) -> list[tuple[TxRequest, _Label | None]]:
                # the source may have spent on other incidents since this one was planned
                amount = min(int(per * share), world.bal(token, source.address) // 2)
                if amount <= 0:
                    return []
                txs = [world.transfer(source, token, s.address, amount)]
                return self._labelled(cls, "funding", incident, txs)

            if mode != "eth":
                units.append(_Unit(token_tip, fund_token))
            for unit in units:
                self._add(block, unit)
            count += len(units)
            stage = end + wait + rng.randint(0, 6)

            def prepare(s: Wallet = s) -> list[tuple[TxRequest, _Label | None]]:
                data = world.erc20.encode("approve", collector.address, _MAX_UINT)
                return self._labelled(
                    cls,
                    "preparation",
                    incident,
                    [TxRequest(s, token, data, 0, world.gas(s, "approve"))],
                )

            def collect(s: Wallet = s) -> list[tuple[TxRequest, _Label | None]]:
                amount = world.bal(token, s.address)
                if amount <= 0:
                    return []
                return self._labelled(
                    cls,
                    "laundering",
                    incident,
                    [world.transfer(s, token, collector.address, amount)],
                )

            def pull(s: Wallet = s) -> list[tuple[TxRequest, _Label | None]]:
                return self._labelled(
                    cls, "laundering", incident, world.pull_all(collector, token, s.address)
                )

            def send_eth(
                s: Wallet = s, value: int = value
            ) -> list[tuple[TxRequest, _Label | None]]:
                # everything but the gas this transfer costs (priced well above the base fee)
                keep = 21_000 * 1_000 * _GWEI
                if value <= keep:
                    return []
                tx = TxRequest(s, collector.address, b"", value - keep, 21_000)
                return self._labelled(cls, "laundering", incident, [tx])

            later = stage + rng.randint(1, 6)
            if mode == "approve_pay":
                self._add(stage, _Unit(self._tip(), prepare))
                self._add(later, _Unit(self._tip(), collect))
                count += 2
            elif mode == "pay":
                self._add(stage, _Unit(self._tip(), collect))
                count += 1
            elif mode == "pull":
                self._add(stage, _Unit(self._tip(), prepare))
                self._add(later, _Unit(self._tip(), pull))
                count += 2
            else:
                self._add(stage, _Unit(self._tip(), send_eth))
                count += 1
        return count

    # -- main loop ---------------------------------------------------------------------------

    def run(
        self, progress: Callable[[int, int], None] | None, started: float, sent_before: int
    ) -> ScenarioSummary:
        setup = self._setup()
        # the collector of Sybil funds needs gas for nothing; fresh sybils need ETH: they get
        # it on chain from the source (funding stage)
        # the attack budget in two halves: the earlier one planned now, over the blocks the
        # traffic should take at its nominal rate (the daily cycle and bursts change the real
        # count, so only the first 40% of them); the later one once half of the traffic is
        # out, over the blocks the second half will take at the rate seen so far. A time split
        # then finds every class on both sides.
        budget = round(self.params.attack_rate * self.config.transactions)
        expected = max(2, int(self.config.transactions / self.params.txs_per_block))
        self._plan_attacks(12, int(expected * 0.4) - 16, budget // 2, 0)
        later_planned = False
        self.labels_path.parent.mkdir(parents=True, exist_ok=True)
        total = 0
        first_block: int | None = None
        last_block = setup[1]
        burst_left = 0
        index = 0
        seen: set[tuple[str, int]] = set()
        with self.labels_path.open("w", encoding="utf-8") as sink:
            while total < self.config.transactions or any(k >= index for k in self.schedule):
                index += 1
                if not later_planned and total >= self.config.transactions // 2:
                    later_planned = True
                    self._plan_attacks(
                        index + 12, index + int(index * 0.85) - 24, budget - budget // 2, 3
                    )
                if burst_left == 0 and self.rng.random() < self.params.burst_probability:
                    burst_left = self.params.burst_length
                burst = burst_left > 0
                burst_left = max(0, burst_left - 1)
                units = self.schedule.pop(index, [])
                locked = self.locked.pop(index, set())
                if total < self.config.transactions:
                    wanted = _poisson(
                        self.rng, self._activity(self.clock + self.config.block_time, burst)
                    )
                    for _ in range(wanted):
                        unit = self._benign_unit(locked)
                        if unit is not None:
                            units.append(unit)
                units = self._fit_gas(units)
                mined = self._mine(units)
                for included, label in mined:
                    if label is None:
                        self.counts["benign"] += 1
                        continue
                    self.counts[label.cls] = self.counts.get(label.cls, 0) + 1
                    seen.add((label.cls, label.incident))
                    record = {
                        "tx": included.hash,
                        "block": included.block,
                        "class": label.cls,
                        "role": label.role,
                        "incident": label.incident,
                        "source": SOURCES[label.cls],
                    }
                    sink.write(json.dumps(record, sort_keys=True) + "\n")
                total += len(mined)
                last_block = self.node.last_block
                if first_block is None:
                    first_block = last_block
                if progress is not None:
                    progress(total, self.config.transactions)
        self.node.set_automine(True)
        self._check_reserves()
        elapsed = time.perf_counter() - started
        sent = self.node.sent - sent_before
        return ScenarioSummary(
            seed=self.config.seed,
            parameters=self.params,
            transactions=total,
            counts=dict(sorted(self.counts.items())),
            incidents={c: sum(1 for k, _ in seen if k == c) for c in sorted({k for k, _ in seen})},
            setup_blocks=setup,
            blocks=(first_block or setup[1] + 1, last_block),
            start_time=self.start_time,
            end_time=self.clock,
            factory=self.factory,
            tokens=tuple(self.world.tokens),
            pairs=tuple(p.address for p in self.world.pools),
            labels=str(self.labels_path),
            seconds=round(elapsed, 3),
            tx_per_second=round(sent / elapsed, 1) if elapsed > 0 else 0.0,
        )

    def _check_reserves(self) -> None:
        """The pools' reserves on chain must be what the local mirror computed."""
        pabi = self.world.pair_abi
        replies = self.node.calls(
            [(p.address, pabi.encode("getReserves")) for p in self.world.pools]
        )
        for pool, reply in zip(self.world.pools, replies, strict=True):
            r0, r1, _ = pabi.decode("getReserves", reply)
            if (r0, r1) != (pool.reserve0, pool.reserve1):
                raise LedgerError(
                    f"pool {pool.address} holds reserves ({r0}, {r1}) on chain, the scenario "
                    f"expected ({pool.reserve0}, {pool.reserve1}): was the node shared?"
                )

    def _fit_gas(self, units: list[_Unit]) -> list[_Unit]:
        """Scheduled (attack) units first; benign ones past the block's gas limit are dropped,
        as a full block crowds transactions out."""
        room = self.node.head().gas_limit * 9 // 10
        kept: list[_Unit] = []
        for unit in units:
            if unit.gas <= room:
                kept.append(unit)
                room -= unit.gas
        return kept


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; a normal approximation for large means)."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _plain(txs: list[TxRequest]) -> Callable[[], list[tuple[TxRequest, _Label | None]]]:
    return lambda: [(tx, None) for tx in txs]


def _fixed(
    cls: str, role: str, incident: int, txs: list[TxRequest]
) -> Callable[[], list[tuple[TxRequest, _Label | None]]]:
    return lambda: [(tx, _Label(cls, role, incident)) for tx in txs]


def _create_address(sender: Wallet, offset: int) -> str:
    return contract_address(sender.address, sender.nonce + offset)
