"""Where announced endpoints may send a party (SSRF), and relaying between honest parties.

Every server here is on loopback; addresses that must be refused are refused before any
connection is made. Name lookups are replaced only to play a rebinding DNS server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ailedger.errors import InputError
from ailedger.federated.protocol import Party, TaskSpec, create_task, model_digest, run_local
from ailedger.federated.transport import (
    BlobPending,
    BlobServer,
    BlobStore,
    BlobUnavailable,
    blob_digest,
    fetch_any,
    fetch_blob,
    parse_networks,
)
from ailedger.ledger.training import TrainingTask
from tests.conftest import Chain, new_signer
from tests.unit.federated.test_protocol import DIM, MAX_NORM, Unreachable, linear_party
from tests.unit.federated.test_transport import HostilePeer, reply

BLOB = b"a party's update \x00\xff" * 64
DIGEST = blob_digest(BLOB)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[BlobServer]:
    store = BlobStore(tmp_path / "served")
    store.put(BLOB)
    with BlobServer(store, digests=[DIGEST]) as server:
        yield server


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),  # cloud metadata
        ("http://169.254.1.1:8080", "link-local"),
        ("http://[fe80::1]:8080", "link-local"),
        ("http://[::ffff:169.254.169.254]", "link-local"),  # the same, IPv4-mapped
        ("http://224.0.0.1:80", "multicast"),
        ("http://[ff02::1]:80", "multicast"),
        ("http://255.255.255.255:80", "broadcast"),
        ("http://[::ffff:0.0.0.0]:80", "unspecified"),
    ],
)
def test_endpoints_on_forbidden_addresses_are_refused_before_connecting(
    endpoint: str, why: str
) -> None:
    started = time.monotonic()
    with pytest.raises(BlobUnavailable, match=why) as info:
        fetch_blob(endpoint, DIGEST, timeout=5)
    assert "refusing to fetch" in str(info.value)
    assert time.monotonic() - started < 1.0  # refused, not timed out on a connection


def test_loopback_names_and_private_ranges_stay_allowed(served: BlobServer) -> None:
    assert fetch_blob(served.url, DIGEST) == BLOB
    assert fetch_blob(f"http://localhost:{served.port}", DIGEST) == BLOB
    assert fetch_blob(served.url, DIGEST, allowed_networks=["127.0.0.0/8"]) == BLOB
    assert fetch_blob(served.url, DIGEST, allowed_networks=["::1/128", "127.0.0.1"]) == BLOB


def test_an_allowlist_restricts_fetches_to_its_networks(served: BlobServer) -> None:
    with pytest.raises(BlobUnavailable, match="outside the allowed peer networks"):
        fetch_blob(served.url, DIGEST, allowed_networks=["10.0.0.0/8", "fd00::/8"])
    # a refused endpoint is one failure among others: the next endpoint still delivers
    blob = fetch_any(
        ["http://169.254.169.254", served.url], DIGEST, allowed_networks=["127.0.0.0/8"]
    )
    assert blob == BLOB
    with pytest.raises(InputError, match=r"not a network in CIDR notation: '10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/33"])
    with pytest.raises(InputError, match="CIDR"):
        fetch_blob(served.url, DIGEST, allowed_networks=["not-a-net"])


def test_the_name_is_resolved_once_and_the_checked_address_used(
    served: BlobServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebinding DNS server answers loopback for the check, then the metadata address: the
    fetch connects to the address it checked and never looks the name up again."""
    real = socket.getaddrinfo
    calls: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        address = "127.0.0.1" if len(calls) == 1 else "169.254.169.254"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    assert fetch_blob(f"http://rebind.example:{served.port}", DIGEST) == BLOB
    assert calls == ["rebind.example"]
    # looked up again (a new fetch), it now gives the metadata address: refused
    with pytest.raises(BlobUnavailable, match="link-local"):
        fetch_blob(f"http://rebind.example:{served.port}", DIGEST)


def test_redirects_are_not_followed(served: BlobServer) -> None:
    asked: list[bytes] = []

    def redirect(conn: socket.socket) -> None:
        asked.append(b"redirect")
        location = f"{served.url}/{DIGEST.hex()}".encode()
        conn.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
        )

    peer = HostilePeer(redirect)
    try:
        with pytest.raises(BlobUnavailable, match="302 Found: redirects are not followed"):
            fetch_blob(peer.url, DIGEST, timeout=5)
    finally:
        peer.close()
    assert asked == [b"redirect"]


# --------------------------------------------------------------------------- relaying


def serves_once(peer: HostilePeer, blob: bytes, delay: float) -> Callable[[socket.socket], None]:
    """An owner that serves ``blob`` to the first party that asks for it (after ``delay``
    seconds) and to nobody else (404); a request for any other blob is a 404 that does not
    use up the one time."""
    lock = threading.Lock()
    served: list[bool] = []
    path = b"/" + blob_digest(blob).hex().encode()

    def behave(conn: socket.socket) -> None:
        request_line = peer.request.data.split(b"\r\n", 1)[0]
        wanted = request_line.split(b" ")[1:2] == [path]
        with lock:
            first = wanted and not served
            if wanted:
                served.append(True)
        if not first:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        time.sleep(delay)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(blob) + blob)

    return behave


def fetch_side_by_side(
    tmp_path: Path, *, relay: bool
) -> tuple[dict[str, bytes | BaseException], BlobServer]:
    """Parties A and B fetch the owner's blob at the same time; the owner serves only A
    (slowly), so B asks A while A is still fetching it."""
    owner = HostilePeer(reply(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
    owner.behave = serves_once(owner, BLOB, delay=1.0)
    stores = {name: BlobStore(tmp_path / name) for name in "AB"}
    servers = {name: BlobServer(store) for name, store in stores.items()}
    results: dict[str, bytes | BaseException] = {}

    def fetch(me: str, other: str, wait: float) -> None:
        time.sleep(wait)
        try:
            results[me] = fetch_any(
                [owner.url, servers[other].url],
                DIGEST,
                timeout=5,
                total=8,
                relay=servers[me] if relay else None,
            )
        except BlobUnavailable as exc:
            results[me] = exc

    threads = [
        threading.Thread(target=fetch, args=("A", "B", 0.0)),
        threading.Thread(target=fetch, args=("B", "A", 0.3)),  # the owner is busy with A
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        owner.close()
        servers["B"].close()
    return results, servers["A"]


def test_a_party_relays_what_it_fetched_so_the_owner_cannot_split_the_others(
    tmp_path: Path,
) -> None:
    results, a_server = fetch_side_by_side(tmp_path, relay=True)
    try:
        assert results == {"A": BLOB, "B": BLOB}
        assert a_server.allowed(DIGEST)  # A serves it from now on, checked
        assert a_server.store.get(DIGEST) == BLOB
        assert fetch_blob(a_server.url, DIGEST) == BLOB
    finally:
        a_server.close()


def test_without_relaying_the_same_owner_splits_the_two(tmp_path: Path) -> None:
    """The control: a party that gives up on a peer still fetching gets nothing."""
    results, a_server = fetch_side_by_side(tmp_path, relay=False)
    a_server.close()
    assert results["A"] == BLOB
    assert isinstance(results["B"], BlobUnavailable)
    assert "404" in str(results["B"])


def test_a_pending_peer_answers_503_until_its_owner_fetch_ends(
    tmp_path: Path, served: BlobServer
) -> None:
    store = BlobStore(tmp_path / "relay")
    with BlobServer(store) as relay:
        relay._pending_add(DIGEST)
        with pytest.raises(BlobPending, match="503"):
            fetch_blob(relay.url, DIGEST)
        relay._pending_discard(DIGEST)
        with pytest.raises(BlobUnavailable, match="404") as info:
            fetch_blob(relay.url, DIGEST)
        assert not isinstance(info.value, BlobPending)
        # the owner delivers: the relay serves the blob, and no longer answers 503 for it
        assert fetch_any([served.url], DIGEST, relay=relay) == BLOB
        assert fetch_blob(relay.url, DIGEST) == BLOB
        # an owner that fails: no 503 left behind, only a 404
        other = blob_digest(b"never served")
        with pytest.raises(BlobUnavailable):
            fetch_any([served.url], other, relay=relay)
        with pytest.raises(BlobUnavailable, match="404"):
            fetch_blob(relay.url, other)


class SelectiveOwner(Party):
    """Serves its update from its own server to the first party that asks, to nobody else."""

    peer: HostilePeer

    def publish(self, blob: bytes) -> bytes:
        self.peer.behave = serves_once(self.peer, blob, delay=0.0)
        return self.store.put(blob)


@pytest.mark.parametrize("backend", ["embedded"])
def test_three_parties_agree_though_the_owner_serves_only_one(chain: Chain, tmp_path: Path) -> None:
    """A protocol round: the owner serves its update to one honest party only, and a fourth
    party announces the cloud metadata address. The two honest parties get the owner's
    update (one from the other), all three agree, and only the fourth is faulty."""
    miner = chain.ledger(new_signer())
    contract = TrainingTask.deploy(miner)
    ledgers = [chain.ledger(new_signer()) for _ in range(4)]
    n = len(ledgers)
    spec = TaskSpec(
        shape=(DIM,),
        initial_digest=model_digest(np.zeros(DIM)),
        rounds=1,
        quorum=n // 2 + 1,
        max_norm=MAX_NORM,
        commit_blocks=3 * n + 4,
        reveal_blocks=3 * n + 4,
        attest_blocks=3 * n + 4,
    )
    task, _ = create_task(contract, spec, [lg.account for lg in ledgers])
    peer = HostilePeer(reply(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
    servers = [BlobServer(BlobStore(tmp_path / f"party{i}")) for i in (1, 2)]
    kinds: list[type[Party]] = [SelectiveOwner, Party, Party, Unreachable]
    endpoints = [peer.url, servers[0].url, servers[1].url, "http://169.254.169.254:80"]
    parties: list[Party] = []
    for i, (kind, ledger) in enumerate(zip(kinds, ledgers, strict=True)):
        train, evaluate = linear_party(i)
        server = servers[i - 1] if i in (1, 2) else None
        party = kind(
            contract=contract.with_ledger(ledger),
            task=task,
            spec=spec,
            initial_params=np.zeros(DIM),
            train=train,
            evaluate=evaluate,
            store=server.store if server else BlobStore(tmp_path / f"party{i}"),
            endpoint=endpoints[i],
            server=server,
            fetch_timeout=3.0,
        )
        if isinstance(party, SelectiveOwner):
            party.peer = peer
        parties.append(party)
    try:
        run_local(parties, miner=miner)
    finally:
        peer.close()
        for server in servers:
            server.close()
    owner, first, second, metadata = parties
    outcome = contract.outcome(task, 0)
    assert outcome.status == "finalized" and outcome.aggregate_digest is not None
    honest = [owner, first, second]
    assert {p.reports[0].aggregate_digest for p in honest} == {outcome.aggregate_digest.hex()}
    for party in honest:
        report = party.reports[0]
        assert sorted(report.accepted) == sorted(p.address for p in honest)
        assert "link-local" in report.rejected[metadata.address], report.rejected
    # the owner's update reached both honest parties, and both now serve it
    digest = contract.party_state(task, owner.address).update_digest
    assert digest is not None
    assert all(server.allowed(digest) for server in servers)
