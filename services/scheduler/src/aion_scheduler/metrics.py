"""The scheduler's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SchedulerMetrics"]


class SchedulerMetrics:
    """Fires by outcome, schedules held, fire delay, emit time."""

    def __init__(self) -> None:
        """Create the metrics in a private registry."""
        self.registry = r = CollectorRegistry()
        self.fires = Counter(
            "aion_scheduler_fires", "Runs started by schedules", ["outcome"], registry=r
        )
        self.schedules = Gauge(
            "aion_scheduler_schedules", "Schedules of the partitions owned here", registry=r
        )
        self.delay = Histogram(
            "aion_scheduler_fire_delay_seconds",
            "A fire's nominal time to its start command's commit",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 300),
            registry=r,
        )
        self.emit_seconds = Histogram(
            "aion_scheduler_emit_seconds",
            "Time to commit one batch of fires",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=r,
        )
