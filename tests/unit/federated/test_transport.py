"""Blobs between parties: content-addressed stores, a real HTTP server, digests checked."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ailedger.errors import InputError
from ailedger.federated.transport import (
    BlobMismatch,
    BlobServer,
    BlobStore,
    BlobUnavailable,
    blob_digest,
    fetch_any,
    fetch_blob,
)

BLOB = b"an update blob \x00\x01\x02" * 100


def test_store_names_blobs_by_sha256_and_checks_them(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = store.put(BLOB)
    assert digest == hashlib.sha256(BLOB).digest() == blob_digest(BLOB)
    assert store.path(digest).name == digest.hex()
    assert store.put(BLOB) == digest
    assert store.get(digest) == BLOB
    assert sorted(p.name for p in store.directory.iterdir()) == [digest.hex()]
    store.path(digest).write_bytes(BLOB + b"!")
    with pytest.raises(BlobMismatch) as info:
        store.get(digest)
    assert info.value.expected == digest
    assert info.value.calculated == blob_digest(BLOB + b"!")
    with pytest.raises(BlobUnavailable, match="no blob"):
        store.get(blob_digest(b"absent"))
    with pytest.raises(InputError, match="32 bytes"):
        store.get(b"short")


def test_http_server_serves_blobs_that_fetch_checks(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "served")
    digest = store.put(BLOB)
    with BlobServer(store) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert fetch_blob(server.url, digest) == BLOB
        with pytest.raises(BlobUnavailable, match="404"):
            fetch_blob(server.url, blob_digest(b"never stored"))
        with pytest.raises(BlobUnavailable, match="exceeds"):
            fetch_blob(server.url, digest, max_bytes=10)
        for path in ("/../config.toml", "/" + "a" * 63, "/%2e%2e/keys"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(server.url + path, timeout=5)  # noqa: S310
            assert info.value.code == 404
        # a server that substitutes other bytes under the promised name is caught
        store.path(digest).write_bytes(b"poisoned update")
        with pytest.raises(BlobMismatch, match="does not match its digest"):
            fetch_blob(server.url, digest)
        url = server.url
    with pytest.raises(BlobUnavailable, match="unreachable"):
        fetch_blob(url, digest, timeout=2)


def test_file_endpoints_and_fallback_to_other_holders(tmp_path: Path) -> None:
    owner = BlobStore(tmp_path / "owner")
    peer = BlobStore(tmp_path / "peer")
    digest = peer.put(BLOB)
    assert fetch_blob(peer.uri, digest) == BLOB
    with pytest.raises(BlobUnavailable, match="no blob"):
        fetch_blob(owner.uri, digest)
    with pytest.raises(BlobUnavailable, match="unsupported"):
        fetch_blob("ftp://example.org", digest)
    with BlobServer(owner) as server:
        assert fetch_any([server.url, peer.uri], digest) == BLOB
        with pytest.raises(BlobUnavailable) as info:
            fetch_any([server.url, owner.uri], digest)
        assert "404" in str(info.value)
        assert "no blob" in str(info.value)
        owner.path(digest).write_bytes(b"substituted")
        assert fetch_any([server.url, peer.uri], digest) == BLOB
        with pytest.raises(BlobMismatch):
            fetch_any([server.url], digest)
    with pytest.raises(BlobUnavailable, match="no endpoint"):
        fetch_any([], digest)
