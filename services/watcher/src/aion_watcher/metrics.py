"""Counters and gauges of the watcher (served by :class:`aion_common.runtime.health.HealthServer`).

``/metrics`` is Prometheus text (prometheus_client, one registry per service so tests and
several watchers in one process never collide); ``/health`` is JSON, 200 while the consumer
loop is alive, 503 otherwise.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from aion_common.runtime.health import HealthServer  # moved there; re-exported for old imports

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
