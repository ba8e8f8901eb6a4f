"""Access to the service: API keys with scopes, per-key rate limits, and the FastAPI guard.

Tokens (issued once by :meth:`ApiKeys.create`, never stored)::

    ailedger_<id: 16 hex digits>_<secret: 64 hex digits>

The id names the key (it is shown by ``keys api list`` and is not secret); the secret is 256
bits from :mod:`secrets`. The store keeps only ``SHA-256("ailedger-api-key-v1" 0x00 id 0x00
secret)`` (the id is bound into the hash, so a row's hash cannot be moved to another id) and
compares it with :func:`hmac.compare_digest`. A token whose id is unknown is compared against
a dummy hash, so an unknown id, a wrong secret and a revoked key take the same path and answer
the same way. A 256-bit secret cannot be guessed, so a plain hash (no slow KDF, no pepper) is
enough: a copy of the store gives nothing that opens the service.

The store is a SQLite database in the workspace, ``service/api_keys.sqlite`` (folder 0700,
file 0600), in WAL mode, separate from the audit log: ``ailedger keys api create|revoke`` write
to it while ``ailedger serve`` holds the log, and the service notices within
``refresh_interval`` seconds (``PRAGMA data_version`` changes when another connection commits,
see https://sqlite.org/pragma.html#pragma_data_version).

Scopes: ``append`` logs decisions; ``read`` reads entries with their private fields and the
other read endpoints; ``admin`` erases entries and implies both others (an operator who can
erase can read). ``append`` does not imply ``read``: a service that logs decisions does not
get to read anyone's private fields.

HTTP answers follow RFC 6750 §3 (The OAuth 2.0 Authorization Framework: Bearer Token Usage):
401 with ``WWW-Authenticate: Bearer`` when the key is missing, malformed, unknown or revoked;
403 with ``error="insufficient_scope"`` for the wrong scope; 429 with ``Retry-After`` (RFC
6585 §4) from the per-key token bucket (:class:`RateLimiter`).

This module imports FastAPI only inside :func:`require`, so the CLI manages keys without the
``service`` extra installed; it does not use ``from __future__ import annotations`` because
FastAPI reads the guard's parameter annotations at run time.
"""

import builtins
import hashlib
import hmac
import math
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from ailedger._fs import create_private_file, make_private_dir, tighten
from ailedger.errors import InputError, WorkspaceError
from ailedger.service.context import ServiceContext, context

if TYPE_CHECKING:
    from ailedger.workspace import Workspace

__all__ = [
    "DEFAULT_RATE_BURST",
    "DEFAULT_RATE_LIMIT",
    "ApiKey",
    "ApiKeys",
    "RateLimiter",
    "Scope",
    "authorize",
    "parse_scopes",
    "require",
]

#: requests per second per key, and the burst, when config.toml's ``[service]`` says nothing
DEFAULT_RATE_LIMIT = 1000.0
DEFAULT_RATE_BURST = 2000.0

_TOKEN = re.compile(r"ailedger_([0-9a-f]{16})_([0-9a-f]{64})", re.ASCII)
_KEY_ID = re.compile(r"[0-9a-f]{16}", re.ASCII)
_HASH_DOMAIN = b"ailedger-api-key-v1"
_MAX_NAME = 100
_MAX_HEADER = 1024
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT,
    scopes TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER
);
"""


class Scope(StrEnum):
    """What an API key may do (see the module docstring for what each one covers)."""

    APPEND = "append"
    READ = "read"
    ADMIN = "admin"


def parse_scopes(scopes: Iterable[str]) -> frozenset[Scope]:
    """The scopes named in ``scopes`` (``"append"``, ``"read"``, ``"admin"``).

    Raises :class:`InputError` for an unknown name or when none is given.
    """
    found: set[Scope] = set()
    for name in scopes:
        try:
            found.add(Scope(name))
        except ValueError:
            shown = name if isinstance(name, str) and len(name) <= 40 else f"{str(name)[:40]}..."
            raise InputError(
                f"unknown scope {shown!r}: use {', '.join(s.value for s in Scope)}"
            ) from None
    if not found:
        raise InputError("an API key needs at least one scope: append, read or admin")
    return frozenset(found)


def _iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ApiKey:
    """One API key as the store describes it (never its secret or hash).

    ``created`` and ``revoked`` are Unix times in whole seconds (``revoked`` None: live).
    """

    id: str
    name: str | None
    scopes: frozenset[Scope]
    created: int
    revoked: int | None = None

    @property
    def live(self) -> bool:
        """Whether the key is not revoked."""
        return self.revoked is None

    def allows(self, scope: Scope) -> bool:
        """Whether this key grants ``scope`` (``admin`` grants every scope)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: id, name, scopes (sorted), created and revoked (ISO 8601 UTC or None)."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(s.value for s in self.scopes),
            "created": _iso(self.created),
            "revoked": _iso(self.revoked),
        }


def _secret_hash(key_id: str, secret: str) -> bytes:
    """SHA-256 over the domain, the id and the secret (32 bytes); see the module docstring."""
    return hashlib.sha256(
        _HASH_DOMAIN + b"\x00" + key_id.encode("ascii") + b"\x00" + secret.encode("ascii")
    ).digest()


#: compared against when a token's id is unknown, so that path costs the same as a wrong secret
_DUMMY_HASH = _secret_hash("0" * 16, "0" * 64)


def _check_name(name: str | None) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise InputError("an API key's name must be a non-empty string")
    if len(name) > _MAX_NAME:
        raise InputError(f"an API key's name is at most {_MAX_NAME} characters, got {len(name)}")
    if not name.isprintable():
        raise InputError("an API key's name must not contain control characters")
    return name


class ApiKeys:
    """The workspace's API keys: create, list, revoke, and check a bearer token.

    Thread-safe. :meth:`check` answers from an in-memory copy of the store, reloaded when
    another process has changed the store (checked at most every ``refresh_interval``
    seconds), so checking a token costs no disk access on the hot path.
    """

    def __init__(self, *, path: Path, refresh_interval: float = 0.1) -> None:
        if not (math.isfinite(refresh_interval) and refresh_interval >= 0):
            raise InputError("refresh_interval must be a finite number of seconds >= 0")
        self.path = Path(path)
        self.refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._snapshot: dict[str, tuple[ApiKey, bytes]] = {}
        self._version: int | None = None
        self._checked = -math.inf

    @classmethod
    def for_workspace(cls, workspace: "Workspace", *, refresh_interval: float = 0.1) -> "ApiKeys":
        """The keys of ``workspace`` (``service/api_keys.sqlite``; created on first use)."""
        return cls(
            path=workspace.path / "service" / "api_keys.sqlite", refresh_interval=refresh_interval
        )

    # -- the database -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The open connection (hold ``_lock``); creates the folder and file privately."""
        if self._conn is not None:
            return self._conn
        try:
            make_private_dir(self.path.parent)
            tighten(self.path.parent, 0o700)
            # 0600 before SQLite creates it; its -wal and -shm files then get that mode too
            create_private_file(self.path)
            tighten(self.path, 0o600)
        except OSError as exc:
            raise WorkspaceError(
                f"cannot create the API key store {self.path}: {exc.strerror or exc}"
            ) from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > _SCHEMA_VERSION:
                raise WorkspaceError(
                    f"the API key store {self.path} was made by a newer ailedger (format {version})"
                )
            if version < _SCHEMA_VERSION:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise _store_error(self.path, exc) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn
        return conn

    def close(self) -> None:
        """Close the store's connection (a later call opens it again)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._version = None
            self._checked = -math.inf

    def __enter__(self) -> "ApiKeys":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, conn: sqlite3.Connection) -> builtins.list[tuple[ApiKey, bytes]]:
        rows = conn.execute(
            "SELECT id, name, scopes, secret_hash, created, revoked FROM api_keys "
            "ORDER BY created, rowid"
        ).fetchall()
        out = []
        for key_id, name, scopes, digest, created, revoked in rows:
            try:
                parsed = frozenset(Scope(s) for s in str(scopes).split(",") if s)
            except ValueError:
                raise WorkspaceError(
                    f"the API key store {self.path} holds an unknown scope for key {key_id}"
                ) from None
            key = ApiKey(
                id=str(key_id),
                name=None if name is None else str(name),
                scopes=parsed,
                created=int(created),
                revoked=None if revoked is None else int(revoked),
            )
            out.append((key, bytes(digest)))
        return out

    # -- managing keys --------------------------------------------------------------------

    def create(self, scopes: Iterable[Scope | str], name: str | None = None) -> tuple[ApiKey, str]:
        """A new live key with ``scopes``; returns it and its token (the only time it exists).

        Raises :class:`InputError` for an unknown or missing scope or a bad name,
        :class:`WorkspaceError` when the store cannot be written.
        """
        parsed = parse_scopes(scopes)
        name = _check_name(name)
        stored = ",".join(sorted(s.value for s in parsed))
        with self._lock:
            conn = self._connection()
            for _ in range(8):  # an id collision (2^-64 per pair) only retries
                key_id = secrets.token_hex(8)
                secret = secrets.token_hex(32)
                created = int(time.time())
                try:
                    conn.execute(
                        "INSERT INTO api_keys (id, name, scopes, secret_hash, created) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (key_id, name, stored, _secret_hash(key_id, secret), created),
                    )
                except sqlite3.IntegrityError:
                    continue
                except sqlite3.Error as exc:
                    raise _store_error(self.path, exc) from exc
                self._version = None  # our own write: reload on the next check
                key = ApiKey(id=key_id, name=name, scopes=parsed, created=created)
                return key, f"ailedger_{key_id}_{secret}"
        raise WorkspaceError(f"cannot find a free key id in {self.path}")  # pragma: no cover

    def list(self) -> builtins.list[ApiKey]:
        """Every key, live and revoked, oldest first (never a hash or a secret)."""
        with self._lock:
            conn = self._connection()
            try:
                return [key for key, _ in self._rows(conn)]
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc

    def revoke(self, key_id: str) -> bool:
        """Revoke the key ``key_id``; False when there is no such key.

        Revoking a revoked key keeps its first revocation time and returns True. Raises
        :class:`InputError` when ``key_id`` is not 16 hex digits.
        """
        if not isinstance(key_id, str) or _KEY_ID.fullmatch(key_id) is None:
            shown = str(key_id)[:40]
            raise InputError(f"{shown!r} is not an API key id (16 hex digits)")
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(
                    "UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                    (int(time.time()), key_id),
                )
                found = conn.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc
            self._version = None
            return found is not None

    # -- checking tokens ------------------------------------------------------------------

    def check(self, token: str) -> ApiKey | None:
        """The live key ``token`` belongs to, or None (malformed, unknown, wrong, revoked).

        The secret's hash is compared in constant time whether or not the id is known.
        Raises :class:`WorkspaceError` when the store cannot be read (fail closed).
        """
        if not isinstance(token, str) or len(token) > _MAX_HEADER:
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._lock:
            self._refresh()
            found = self._snapshot.get(key_id)
        expected = _DUMMY_HASH if found is None else found[1]
        same = hmac.compare_digest(_secret_hash(key_id, secret), expected)
        if found is None or not same or not found[0].live:
            return None
        return found[0]

    def _refresh(self) -> None:
        """Reload the in-memory copy if the store changed (hold ``_lock``)."""
        now = time.monotonic()
        if self._version is not None and now - self._checked < self.refresh_interval:
            return
        conn = self._connection()
        try:
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if version != self._version:
                self._snapshot = {key.id: (key, digest) for key, digest in self._rows(conn)}
                self._version = version
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        self._checked = now


def _store_error(path: Path, exc: sqlite3.Error) -> WorkspaceError:
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return WorkspaceError(f"the API key store {path} is busy (locked by another process)")
    return WorkspaceError(f"cannot use the API key store {path}: {exc}")


# -- rate limits ------------------------------------------------------------------------------


def _config_number(
    table: Mapping[str, Any], key: str, default: float, where: str, *, minimum: float
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = type(value).__name__
        raise WorkspaceError(f"{where}: service.{key} must be a number, got a {kind}")
    if not math.isfinite(value) or not minimum <= value <= 1e9:
        raise WorkspaceError(f"{where}: service.{key} must be between {minimum:g} and 1e9")
    return float(value)


class RateLimiter:
    """Per-key token buckets: ``rate`` requests per second on average, bursts of ``burst``.

    Each key's bucket holds up to ``burst`` tokens, refills at ``rate`` per second, and each
    request takes one (the token bucket of RFC 2697 §1, one rate and one bucket). Thread-safe.
    Memory is bounded: at most ``max_keys`` buckets are kept, the least recently used is
    dropped first (a dropped key starts again with a full bucket). ``clock`` returns seconds
    (monotonic); tests pass their own.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise InputError(f"a rate limit must be a positive number per second, got {rate}")
        if not (math.isfinite(burst) and burst >= 1):
            raise InputError(f"a rate limit's burst must be at least 1, got {burst}")
        if max_keys < 1:
            raise InputError(f"a rate limiter keeps at least 1 key, got {max_keys}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, where: str = "config.toml"
    ) -> "RateLimiter | None":
        """The limiter ``[service]`` asks for: ``rate_limit`` (requests per second per key,
        default :data:`DEFAULT_RATE_LIMIT`; 0 turns limits off and returns None) and
        ``rate_burst`` (default twice the rate, at least 1). A bad value raises
        :class:`WorkspaceError` naming the key."""
        table = config.get("service", {})
        if not isinstance(table, Mapping):
            raise WorkspaceError(f"{where}: service must be a table")
        rate = _config_number(table, "rate_limit", DEFAULT_RATE_LIMIT, where, minimum=0)
        if rate == 0:
            return None
        default_burst = max(1.0, 2 * rate) if "rate_limit" in table else DEFAULT_RATE_BURST
        burst = _config_number(table, "rate_burst", default_burst, where, minimum=1)
        return cls(rate=rate, burst=burst)

    @classmethod
    def for_workspace(cls, workspace: "Workspace") -> "RateLimiter | None":
        """:meth:`from_config` over the workspace's config.toml."""
        return cls.from_config(workspace.config, where=str(workspace.config_path))

    def acquire(self, key: str) -> float:
        """Take one token from ``key``'s bucket: 0.0 when granted, else the seconds to wait
        until one is there (nothing is taken then)."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            if tokens >= 1:
                tokens -= 1
                wait = 0.0
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[key] = (tokens, now)  # now the most recently used
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait

    def __len__(self) -> int:
        """How many buckets are kept."""
        with self._lock:
            return len(self._buckets)


# -- the FastAPI guard ------------------------------------------------------------------------

_REALM = 'Bearer realm="ailedger"'


def _denied(status: int, message: str, challenge: str | None = None) -> Exception:
    from fastapi import HTTPException

    headers = {"WWW-Authenticate": challenge} if challenge else None
    return HTTPException(status_code=status, detail=message, headers=headers)


def authorize(
    header: str | None, ctx: ServiceContext, scope: Scope, *, public: bool = False
) -> ApiKey | None:
    """The decision :func:`require` makes for one request's ``Authorization`` header.

    Returns the key when it is live and grants ``scope``; None when the service has no keys
    (``ctx.keys`` is None) or when the route is public, the service's reads are public and no
    header was sent (a valid key sent to a public route is returned only if it grants
    ``scope``, else None: it reads as anyone does). Raises ``fastapi.HTTPException`` (detail:
    one line) with 401, 403, 429 or 503 otherwise.
    """
    keys = ctx.keys
    if keys is None:
        return None
    open_route = public and ctx.public_reads
    if header is None:
        if open_route:
            return None
        raise _denied(401, "an API key is required: send Authorization: Bearer TOKEN", _REALM)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(header) > _MAX_HEADER:
        raise _denied(
            401,
            "malformed Authorization header: expected 'Bearer TOKEN'",
            _REALM + ', error="invalid_request"',
        )
    if _TOKEN.fullmatch(token) is None:
        raise _denied(
            401,
            "malformed API key: an ailedger token is ailedger_<16 hex>_<64 hex>",
            _REALM + ', error="invalid_token"',
        )
    try:
        key = keys.check(token)
    except WorkspaceError as exc:
        raise _denied(503, "the API key store cannot be read") from exc
    if key is None:
        raise _denied(401, "unknown or revoked API key", _REALM + ', error="invalid_token"')
    limiter = ctx.limiter
    if limiter is not None:
        wait = limiter.acquire(key.id)
        if wait > 0:
            from fastapi import HTTPException

            raise HTTPException(
                status_code=429,
                detail=f"rate limit of API key {key.id} exceeded: retry in {wait:.3g} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
    if key.allows(scope):
        return key
    if open_route:
        return None
    raise _denied(
        403,
        f"API key {key.id} lacks the {scope.value} scope",
        _REALM + f', error="insufficient_scope", scope="{scope.value}"',
    )


def require(scope: Scope, *, public: bool = False) -> Callable[..., Awaitable[ApiKey | None]]:
    """A FastAPI dependency that lets a request through with ``scope``.

    ``Depends(require(Scope.READ, public=True))`` guards the log's public data (open unless
    the service's ``public_reads`` is off); ``Depends(require(Scope.APPEND))`` a write. It reads
    ``Authorization: Bearer TOKEN`` and answers as :func:`authorize` says; the key (or None)
    is the dependency's value and is also left in ``request.state.api_key``. A guarded
    (non-public) route declares the bearer scheme in the OpenAPI document.
    """
    from fastapi import Request, Security
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    scope = Scope(scope)
    # the context is read with a plain call, not Depends(context): one attribute lookup, and
    # FastAPI need not resolve context()'s annotations (they are strings there)

    if public:

        async def public_guard(request: Request) -> ApiKey | None:
            ctx = context(request)
            key = authorize(request.headers.get("authorization"), ctx, scope, public=True)
            request.state.api_key = key
            return key

        return public_guard

    bearer = HTTPBearer(
        scheme_name="ApiKey",
        description="An ailedger API key (`ailedger keys api create --scope S`).",
        auto_error=False,
    )

    async def guard(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> ApiKey | None:
        key = authorize(request.headers.get("authorization"), context(request), scope)
        request.state.api_key = key
        return key

    return guard
