"""Counters and gauges of the watcher, and a tiny HTTP endpoint serving them.

``/metrics`` is Prometheus text (prometheus_client, one registry per service so tests and
several watchers in one process never collide); ``/health`` is JSON, 200 while the consumer
loop is alive, 503 otherwise. The server is a few lines on ``asyncio.start_server``: two
read-only paths do not justify a web framework.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["HealthServer", "WatcherMetrics"]


class WatcherMetrics:
    """What the watcher counts; read them in tests with :meth:`value`."""

    def __init__(self) -> None:
        """Create the metrics in a private registry."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.terminals_seen = Counter(
            "aion_watcher_child_terminals",
            "Final child terminals folded (with a parent)",
            registry=r,
        )
        self.records_issued = Counter(
            "aion_watcher_records_issued", "RecordChildTerminal commands acknowledged", registry=r
        )
        self.records_suppressed = Counter(
            "aion_watcher_records_suppressed",
            "Terminals not issued: the parent run had recorded the child or closed",
            registry=r,
        )
        self.retries = Counter(
            "aion_watcher_send_retries", "Failed produces retried after a backoff", registry=r
        )
        self.reconciliation_hits = Counter(
            "aion_watcher_reconciliation_hits",
            "Records re-issued by the sweep, by parent status (open: a real miss; unknown: blind)",
            ["parent_status"],
            registry=r,
        )
        self.duplicate_batches = Counter(
            "aion_watcher_duplicate_batches",
            "Event batches whose seqs were already folded",
            registry=r,
        )
        self.dead_letters = Counter(
            "aion_watcher_dead_letters", "Undecodable event records sent to dead letter", registry=r
        )
        self.lag = Gauge(
            "aion_watcher_consumer_lag",
            "Records behind the last stable offset",
            ["partition"],
            registry=r,
        )
        self.watches = Gauge("aion_watcher_armed_watches", "Armed child watches", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """The current value of sample ``name`` (0 when it was never touched)."""
        sample = self.registry.get_sample_value(name, labels or None)
        return 0.0 if sample is None else sample

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class HealthServer:
    """Serves ``/health`` and ``/metrics`` on ``host:port`` (port 0 in tests: any free port)."""

    def __init__(
        self,
        metrics: WatcherMetrics,
        health: Callable[[], Mapping[str, object]],
        *,
        host: str,
        port: int,
    ) -> None:
        """``health()`` returns the JSON body; its ``ok`` field picks 200 or 503."""
        self._metrics = metrics
        self._health = health
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        if self._server is None:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, self._metrics.exposition()
            elif path == "/health":
                report = dict(self._health())
                status = "200 OK" if report.get("ok") else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(report).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that hung up or never spoke: nothing to answer
        finally:
            writer.close()
