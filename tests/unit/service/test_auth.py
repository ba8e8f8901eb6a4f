"""API keys, rate limits and the FastAPI guard (ailedger.service.auth)."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.auditlog import AuditLog
from ailedger.errors import InputError, WorkspaceError
from ailedger.service.auth import ApiKey, ApiKeys, RateLimiter, Scope, parse_scopes, require
from ailedger.service.context import ServiceContext
from ailedger.workspace import Workspace

TOKEN = re.compile(r"ailedger_([0-9a-f]{16})_([0-9a-f]{64})")


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[ApiKeys]:
    store = ApiKeys(path=tmp_path / "service" / "api_keys.sqlite", refresh_interval=0.0)
    yield store
    store.close()


def split(token: str) -> tuple[str, str]:
    match = TOKEN.fullmatch(token)
    assert match is not None, token
    return match.group(1), match.group(2)


# -- the store ---------------------------------------------------------------------------------


def test_only_a_hash_of_the_secret_is_stored(tmp_path: Path, keys: ApiKeys) -> None:
    key, token = keys.create([Scope.READ], name="auditor")
    key_id, secret = split(token)
    assert key.id == key_id and key.name == "auditor" and key.scopes == {Scope.READ}
    assert len(bytes.fromhex(secret)) == 32  # 256 bits
    folder = tmp_path / "service"
    stored = b"".join(p.read_bytes() for p in folder.iterdir())
    for needle in (token.encode(), secret.encode(), bytes.fromhex(secret)):
        assert needle not in stored
    # the documented construction, computed here with hashlib alone
    expected = hashlib.sha256(
        b"ailedger-api-key-v1\x00" + key_id.encode() + b"\x00" + secret.encode()
    ).digest()
    with sqlite3.connect(folder / "api_keys.sqlite") as conn:
        row = conn.execute("SELECT secret_hash FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    assert bytes(row[0]) == expected
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "api_keys.sqlite").stat().st_mode & 0o777 == 0o600


def test_check_takes_the_token_and_nothing_near_it(keys: ApiKeys) -> None:
    key, token = keys.create(["append", "read"])
    other, other_token = keys.create(["admin"])
    key_id, secret = split(token)
    assert keys.check(token) == key
    assert keys.check(other_token) == other
    flipped = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    refused = [
        f"ailedger_{key_id}_{flipped}",  # right id, wrong secret
        f"ailedger_{split(other_token)[0]}_{secret}",  # another key's id with this secret
        f"ailedger_{'0' * 16}_{secret}",  # unknown id
        token.upper(),
        token + "0",
        token[:-1],
        " " + token,
        "",
        "ailedger__",
    ]
    for bad in refused:
        assert keys.check(bad) is None, bad
    assert keys.check(None) is None  # type: ignore[arg-type]


def test_revoke_is_final_and_seen_at_once(keys: ApiKeys) -> None:
    key, token = keys.create(["read"])
    assert keys.revoke(key.id) is True
    assert keys.check(token) is None
    first = keys.list()[0]
    assert first.revoked is not None and not first.live
    assert keys.revoke(key.id) is True  # again: still revoked, first time kept
    assert keys.list()[0].revoked == first.revoked
    assert keys.revoke("0123456789abcdef") is False
    with pytest.raises(InputError, match="not an API key id"):
        keys.revoke("nope")


def test_list_describes_keys_without_secrets(keys: ApiKeys) -> None:
    _, token = keys.create(["read", "append"], name="svc")
    keys.create(["admin"])
    described = [k.to_dict() for k in keys.list()]
    assert [set(d) for d in described] == [{"id", "name", "scopes", "created", "revoked"}] * 2
    assert described[0]["scopes"] == ["append", "read"] and described[0]["name"] == "svc"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", described[0]["created"])
    assert split(token)[1] not in repr(described)


def test_scopes_and_names_are_checked(keys: ApiKeys) -> None:
    admin = ApiKey(id="a" * 16, name=None, scopes=frozenset({Scope.ADMIN}), created=0)
    append = ApiKey(id="b" * 16, name=None, scopes=frozenset({Scope.APPEND}), created=0)
    assert all(admin.allows(s) for s in Scope)
    assert append.allows(Scope.APPEND)
    assert not append.allows(Scope.READ) and not append.allows(Scope.ADMIN)
    assert parse_scopes(["read", "read"]) == {Scope.READ}
    with pytest.raises(InputError, match="unknown scope 'write'"):
        keys.create(["write"])
    with pytest.raises(InputError, match="at least one scope"):
        keys.create([])
    for name in ("", "x" * 101, "a\nb"):
        with pytest.raises(InputError, match="name"):
            keys.create(["read"], name=name)
    assert keys.list() == []  # nothing was stored by the refused calls


def test_a_second_connection_sees_changes_within_its_refresh_interval(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    with ApiKeys(path=path) as writer, ApiKeys(path=path, refresh_interval=0.05) as reader:
        assert reader.list() == []
        key, token = writer.create(["append"])
        assert poll(lambda: reader.check(token) == key, within=1.0)
        writer.revoke(key.id)
        assert poll(lambda: reader.check(token) is None, within=1.0)


def test_a_newer_or_broken_store_is_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(WorkspaceError, match="newer ailedger"):
        ApiKeys(path=newer).list()
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"not a database at all" * 100)
    broken.chmod(0o600)
    with pytest.raises(WorkspaceError, match="API key store"):
        ApiKeys(path=broken).create(["read"])


def poll(condition: Any, *, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


# -- rate limits -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_then_refills_per_key() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    assert limiter.acquire("other") == 0.0  # its own bucket
    clock.now += 0.5
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") > 0
    clock.now += 100  # never more than the burst
    assert [limiter.acquire("k") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_memory_is_bounded_by_max_keys() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=3, clock=Clock())
    for n in range(10):
        limiter.acquire(f"key{n}")
    assert len(limiter) == 3
    assert limiter.acquire("key9") > 0  # the most recent ones are kept


def test_concurrent_acquires_never_grant_more_than_the_burst() -> None:
    limiter = RateLimiter(rate=1e-6, burst=100, clock=Clock())
    granted = []

    def worker() -> None:
        granted.append(sum(limiter.acquire("shared") == 0.0 for _ in range(50)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 50),
    steps=st.lists(st.floats(0, 2), min_size=1, max_size=60),
)
def test_grants_never_exceed_burst_plus_refill(rate: float, burst: int, steps: list[float]) -> None:
    clock = Clock()
    limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
    start, granted = clock.now, 0
    for step in steps:
        clock.now += step
        wait = limiter.acquire("k")
        if wait == 0.0:
            granted += 1
        else:  # waiting as told is enough
            clock.now += wait * (1 + 1e-9)
            assert limiter.acquire("k") == 0.0
            granted += 1
    assert granted <= burst + rate * (clock.now - start) + 1e-6


def test_bad_limits_are_refused() -> None:
    for rate, burst in ((0.0, 1.0), (float("nan"), 1.0), (1.0, 0.5), (float("inf"), 1.0)):
        with pytest.raises(InputError):
            RateLimiter(rate=rate, burst=burst)


def test_limits_from_config() -> None:
    default = RateLimiter.from_config({})
    assert default is not None and (default.rate, default.burst) == (1000.0, 2000.0)
    assert RateLimiter.from_config({"service": {"rate_limit": 0}}) is None
    five = RateLimiter.from_config({"service": {"rate_limit": 5}})
    assert five is not None and (five.rate, five.burst) == (5.0, 10.0)
    set_both = RateLimiter.from_config({"service": {"rate_limit": 5, "rate_burst": 1}})
    assert set_both is not None and set_both.burst == 1.0
    bad = [
        ({"service": {"rate_limit": "fast"}}, "service.rate_limit must be a number"),
        ({"service": {"rate_limit": -1}}, "service.rate_limit must be between"),
        ({"service": {"rate_burst": 0}}, "service.rate_burst must be between"),
        ({"service": {"rate_limit": True}}, "must be a number"),
        ({"service": "x"}, "service must be a table"),
    ]
    for config, message in bad:
        with pytest.raises(WorkspaceError, match=message):
            RateLimiter.from_config(config, where="c.toml")


# -- the guard over HTTP -----------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path, keys: ApiKeys) -> Iterator[ServiceContext]:
    log = AuditLog.open(tmp_path / "log.sqlite", origin="auth.example/log")
    ctx = ServiceContext(
        workspace=Workspace(path=tmp_path, config={}),
        log=log,
        keys=keys,
        limiter=RateLimiter(rate=1e-3, burst=5),
    )
    yield ctx
    log.close()


PublicRead = Annotated[ApiKey | None, Depends(require(Scope.READ, public=True))]
Read = Annotated[ApiKey | None, Depends(require(Scope.READ))]
Append = Annotated[ApiKey | None, Depends(require(Scope.APPEND))]
Admin = Annotated[ApiKey | None, Depends(require(Scope.ADMIN))]


def make_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI()
    app.state.service = ctx

    @app.exception_handler(HTTPException)
    async def as_json(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/checkpoint")
    async def checkpoint(key: PublicRead) -> Any:
        return {"key": None if key is None else key.id}

    @app.get("/private")
    async def private(key: Read) -> Any:
        return {"key": None if key is None else key.id}

    @app.post("/entries")
    async def append(key: Append) -> Any:
        return {"key": None if key is None else key.id}

    @app.post("/erase")
    async def erase(request: Request, _: Admin) -> Any:
        return {"key": request.state.api_key.id}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    return str(body["error"])


def test_scopes_over_http(service: ServiceContext, keys: ApiKeys) -> None:
    reader, read_token = keys.create(["read"])
    appender, append_token = keys.create(["append"])
    admin, admin_token = keys.create(["admin"])
    with TestClient(make_app(service)) as client:
        assert client.get("/private", headers=bearer(read_token)).json() == {"key": reader.id}
        assert client.post("/entries", headers=bearer(append_token)).json() == {"key": appender.id}
        for method, path in (("GET", "/private"), ("POST", "/entries"), ("POST", "/erase")):
            done = client.request(method, path, headers=bearer(admin_token))
            assert done.json() == {"key": admin.id}, path
        denied = client.get("/private", headers=bearer(append_token))
        assert "lacks the read scope" in error_of(denied, 403)
        assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]
        assert "admin scope" in error_of(client.post("/erase", headers=bearer(read_token)), 403)
        assert error_of(client.post("/entries", headers=bearer(read_token)), 403)


def test_missing_malformed_unknown_and_revoked_keys_get_401(
    service: ServiceContext, keys: ApiKeys
) -> None:
    key, token = keys.create(["read"])
    key_id, secret = split(token)
    with TestClient(make_app(service)) as client:
        missing = client.get("/private")
        assert "API key is required" in error_of(missing, 401)
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", token, "Bearer " + "x" * 2000):
            done = client.get("/private", headers={"Authorization": header})
            assert "malformed Authorization header" in error_of(done, 401), header
        done = client.get("/private", headers=bearer("not-a-token"))
        assert "malformed API key" in error_of(done, 401)
        wrong = f"ailedger_{key_id}_{secret[::-1]}"
        unknown = f"ailedger_{'f' * 16}_{secret}"
        answers = {
            error_of(client.get("/private", headers=bearer(t)), 401) for t in (wrong, unknown)
        }
        assert answers == {"unknown or revoked API key"}  # the same answer either way
        assert client.get("/private", headers=bearer(token)).status_code == 200
        keys.revoke(key.id)
        revoked = client.get("/private", headers=bearer(token))
        assert error_of(revoked, 401) == "unknown or revoked API key"
        assert 'error="invalid_token"' in revoked.headers["WWW-Authenticate"]


def test_public_routes_are_open_unless_configured(service: ServiceContext, keys: ApiKeys) -> None:
    reader, read_token = keys.create(["read"])
    _, append_token = keys.create(["append"])
    with TestClient(make_app(service)) as client:
        assert client.get("/checkpoint").json() == {"key": None}
        assert client.get("/checkpoint", headers=bearer(read_token)).json() == {"key": reader.id}
        # a key without the scope reads public data as anyone does
        assert client.get("/checkpoint", headers=bearer(append_token)).json() == {"key": None}
        # a bad key is refused even where none is needed: its sender meant to use it
        unknown = "ailedger_" + "0" * 16 + "_" + "0" * 64
        error_of(client.get("/checkpoint", headers=bearer(unknown)), 401)
        service.public_reads = False
        assert "API key is required" in error_of(client.get("/checkpoint"), 401)
        error_of(client.get("/checkpoint", headers=bearer(append_token)), 403)
        assert client.get("/checkpoint", headers=bearer(read_token)).status_code == 200
        service.keys = None  # no access control at all (other parts' tests)
        assert client.get("/private").json() == {"key": None}


def test_rate_limit_answers_429_with_retry_after(service: ServiceContext, keys: ApiKeys) -> None:
    _, token = keys.create(["read"])
    _, other = keys.create(["read"])
    with TestClient(make_app(service)) as client:
        codes = [client.get("/private", headers=bearer(token)).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        limited = client.get("/private", headers=bearer(token))
        assert "rate limit" in error_of(limited, 429)
        assert int(limited.headers["Retry-After"]) >= 1
        assert client.get("/private", headers=bearer(other)).status_code == 200  # per key


def test_only_guarded_routes_declare_the_bearer_scheme(service: ServiceContext) -> None:
    schema = make_app(service).openapi()
    assert "security" not in schema["paths"]["/checkpoint"]["get"]
    assert schema["paths"]["/private"]["get"]["security"] == [{"ApiKey": []}]
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
