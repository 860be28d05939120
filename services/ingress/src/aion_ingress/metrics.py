"""The ingress's Prometheus metrics (one registry per service, as the worker's)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IngressMetrics"]


class IngressMetrics:
    """Records by outcome, commands by type, lag per source partition, transaction times."""

    def __init__(self) -> None:
        """Create the metrics in a private registry."""
        self.registry = r = CollectorRegistry()
        self.records = Counter(
            "aion_ingress_records",
            "Source records processed and committed, by topic and outcome "
            "(command, dead_letter, skipped)",
            ["topic", "outcome"],
            registry=r,
        )
        self.commands = Counter(
            "aion_ingress_commands",
            "Commands sent to the engine, by command type",
            ["type"],
            registry=r,
        )
        self.lag = Gauge(
            "aion_ingress_lag",
            "Records of a source partition not yet committed (last stable offset - position)",
            ["topic", "partition"],
            registry=r,
        )
        self.transactions = Counter(
            "aion_ingress_transactions",
            "Batches committed (one Kafka transaction each, or one offset commit without them)",
            registry=r,
        )
        self.failures = Counter(
            "aion_ingress_emit_failures",
            "Batches whose emit failed (the partition is acquired again and re-read)",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "aion_ingress_batch_seconds",
            "Time to map and commit one batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=r,
        )
        self.delay_seconds = Histogram(
            "aion_ingress_record_delay_seconds",
            "A record's timestamp to its command's commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300),
            registry=r,
        )
