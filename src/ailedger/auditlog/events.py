"""Events of the other capabilities (registrations, grants, training rounds) in the audit log."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ailedger.auditlog.log import AuditLog

__all__ = ["event_record", "record_event"]


def event_record(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The record of an event: ``{"type": "event", "kind", "fields", "time"}``."""
    return {
        "type": "event",
        "kind": kind,
        "fields": dict(fields),
        "time": datetime.now(UTC).isoformat(timespec="microseconds"),
    }


def record_event(workspace: Any, kind: str, fields: Mapping[str, Any]) -> int | None:
    """Append an event to the workspace's audit log; None when the workspace has no log.

    ``kind`` is dotted, e.g. ``provenance.register``; ``fields`` must be JSON values.
    """
    if not workspace.log_path.exists():
        return None
    with AuditLog.for_workspace(workspace) as log:
        return log.append(event_record(kind, fields))
