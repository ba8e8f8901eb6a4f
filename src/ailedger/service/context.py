"""What every part of the service shares: the workspace, the log it serves, the API keys.

``create_app`` (:mod:`ailedger.service.app`) builds one :class:`ServiceContext` and stores it
as ``app.state.service``; routers reach it through :func:`context` (a FastAPI dependency).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# at run time: FastAPI reads ``context``'s annotation to inject the request (absent without
# the ``service`` extra, which only the service needs)
with contextlib.suppress(ImportError):
    from starlette.requests import Request

if TYPE_CHECKING:
    from ailedger.auditlog import AuditLog
    from ailedger.service.auth import ApiKeys, RateLimiter
    from ailedger.workspace import Workspace

__all__ = ["ServiceContext", "context"]


@dataclass
class ServiceContext:
    """The state one ``ailedger serve`` process holds.

    ``log`` is the log this process serves and writes (the SQLite backend, or PostgreSQL when
    the workspace's config says so); ``keys`` checks bearer tokens (None: no access control,
    used only by tests of other parts); ``limiter`` applies per-key rate limits; ``rpc`` is the
    chain node URL given to ``serve`` (None: the workspace's own chain settings); ``extra``
    holds whatever a component keeps for the process's lifetime (metrics, background tasks).
    """

    workspace: Workspace
    log: AuditLog
    keys: ApiKeys | None = None
    limiter: RateLimiter | None = None
    rpc: str | None = None
    public_reads: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def context(request: Request) -> ServiceContext:
    """The service's shared state (a FastAPI dependency)."""
    state: ServiceContext = request.app.state.service
    return state
