"""The service's Prometheus metrics (``/metrics``), one registry per app.

Names follow Prometheus' naming guide (https://prometheus.io/docs/practices/naming/): a unit
suffix (``_seconds``, ``_bytes``), ``_total`` on counters. Gauges that describe the log (its
size, the checkpoint's size, the anchoring lag) are read when scraped, through callbacks, so
they are never stale. A per-app :class:`prometheus_client.CollectorRegistry` keeps two apps in
one process (tests) apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "StatusCounter"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 10, 100, 1_000, 10_000)


class Metrics:
    """Every metric one service exposes.

    ``appends`` counts entries appended (single or batched); ``append_seconds`` is the time
    from a request's body being read to its entries being durable, labelled ``kind`` =
    ``single`` or ``batch`` (``append_single`` and ``append_batch`` are those two series);
    ``batch_size`` counts entries per batch request; ``responses`` counts HTTP responses by
    status code (:meth:`count_response`). :meth:`watch` adds a gauge read at scrape time.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.appends = Counter(
            "ailedger_appends", "Entries appended to the log.", registry=self.registry
        )
        self.append_seconds = Histogram(
            "ailedger_append_seconds",
            "Time until an append request's entries are durable, in seconds.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ailedger_batch_entries",
            "Entries per batch append request.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter(
            "ailedger_http_responses",
            "HTTP responses sent, by status code.",
            ["status"],
            registry=self.registry,
        )
        # label lookups hash and lock: the hot path keeps the children it uses
        self.append_single = self.append_seconds.labels("single")
        self.append_batch = self.append_seconds.labels("batch")
        self._by_status: dict[int, Any] = {}

    def count_response(self, status: int) -> None:
        """Count one HTTP response with ``status`` in ``responses``."""
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status.setdefault(status, self.responses.labels(str(status)))
        child.inc()

    def watch(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """Add a gauge ``name`` whose value ``read()`` gives at each scrape."""
        gauge = Gauge(name, documentation, registry=self.registry)
        gauge.set_function(read)

    def render(self) -> bytes:
        """The text exposition format of every metric (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


class StatusCounter:
    """ASGI middleware counting responses by status into ``metrics.responses``."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count_response(int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)
