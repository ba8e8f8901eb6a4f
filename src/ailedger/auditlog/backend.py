"""Which store holds a workspace's audit log: SQLite (the default) or PostgreSQL.

A workspace's ``config.toml`` chooses in its ``[log]`` table::

    [log]
    backend = "postgres"          # or "sqlite" (the default: keys/log.key and log.sqlite)
    dsn = "host=db.internal dbname=ailedger user=ailedger password=..."

Both backends are an :class:`~ailedger.auditlog.log.AuditLog` over a different store, so
they hold the same entries, tiles, proofs and checkpoints, byte for byte; the PostgreSQL one
(:mod:`.pglog`) lets several processes (``ailedger serve`` replicas) share one log. Both use
the workspace's origin (``[log] origin``, else one derived from its signing key) and its data
key file. A workspace whose log is in PostgreSQL has no ``log.sqlite``: nothing here creates
one. A DSN is never printed with its password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ailedger.auditlog.log import AuditLog, default_origin
from ailedger.errors import InputError, WorkspaceError

if TYPE_CHECKING:
    from ailedger.workspace import Workspace

__all__ = ["BACKENDS", "Log", "LogSettings", "log_settings", "open_log"]

#: either backend (for annotations): a PostgreSQL log is an AuditLog over another store
Log: TypeAlias = AuditLog

BACKENDS = ("sqlite", "postgres")


class LogSettings:
    """The ``[log]`` table of a workspace's config, checked: ``backend`` and ``dsn``."""

    def __init__(self, backend: Literal["sqlite", "postgres"], dsn: str | None) -> None:
        self.backend = backend
        self.dsn = dsn

    def __repr__(self) -> str:
        from ailedger.auditlog.pglog import describe_dsn

        where = "" if self.dsn is None else f", dsn={describe_dsn(self.dsn)!r}"
        return f"LogSettings(backend={self.backend!r}{where})"


def log_settings(config: Mapping[str, Any]) -> LogSettings:
    """Read and check ``[log] backend`` and ``[log] dsn`` (:class:`WorkspaceError` if bad)."""
    table = config.get("log", {})
    if not isinstance(table, Mapping):
        raise WorkspaceError("config.toml: [log] must be a table")
    backend = table.get("backend", "sqlite")
    if backend not in BACKENDS:
        raise WorkspaceError(
            f"config.toml: [log] backend must be one of {', '.join(BACKENDS)}, "
            f"got {str(backend)[:40]!r}"
        )
    dsn = table.get("dsn")
    if backend == "sqlite":
        if dsn is not None:
            raise WorkspaceError('config.toml: [log] dsn is only for backend = "postgres"')
        return LogSettings("sqlite", None)
    if dsn is None:
        raise WorkspaceError('config.toml: [log] backend = "postgres" needs a dsn')
    try:
        from ailedger.auditlog.pglog import parse_dsn
    except ImportError as exc:
        raise WorkspaceError(
            "the PostgreSQL log backend needs psycopg: pip install 'ailedger[service]'"
        ) from exc
    try:
        parse_dsn(dsn)
    except InputError as exc:
        raise WorkspaceError(f"config.toml: [log] dsn: {exc}") from None
    return LogSettings("postgres", str(dsn))


def open_log(workspace: Workspace, *, writable: bool = True) -> Log:
    """The workspace's audit log in the store its config names.

    :class:`WorkspaceError` for a bad ``[log]`` table; :class:`LogStoreUnavailable` (a
    :class:`WorkspaceError`, exit code 3) when the PostgreSQL server cannot be reached.
    """
    settings = log_settings(workspace.config)
    origin = workspace.config.get("log", {}).get("origin") or default_origin(workspace.public_key())
    if settings.backend == "sqlite":
        return AuditLog.open(
            workspace.log_path,
            origin=str(origin),
            writable=writable,
            key_path=workspace.log_key_path,
        )
    from ailedger.auditlog.pglog import PostgresLog

    assert settings.dsn is not None
    return PostgresLog.open(
        settings.dsn,
        origin=str(origin),
        writable=writable,
        key_path=workspace.log_key_path,
    )
