"""The worker's Prometheus metrics (one registry per service, as the watcher's)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    """Tasks running, completed, failed, retried, cancelled, abandoned; task latency."""

    def __init__(self) -> None:
        """Create the metrics in a private registry."""
        self.registry = r = CollectorRegistry()
        self.running = Gauge("aion_worker_tasks_running", "Attempts running now", registry=r)
        self.backlog = Gauge(
            "aion_worker_tasks_waiting", "Tasks fetched, waiting for a free slot", registry=r
        )
        self.completed = Counter(
            "aion_worker_tasks_completed", "Attempts that returned a result", registry=r
        )
        self.failed = Counter(
            "aion_worker_tasks_failed", "Attempts that raised (reported to the engine)", registry=r
        )
        self.retried = Counter(
            "aion_worker_tasks_retried",
            "Attempts started that were retries (attempt > 1)",
            registry=r,
        )
        self.cancelled = Counter(
            "aion_worker_tasks_cancelled", "Attempts that ended cancelled", registry=r
        )
        self.abandoned = Counter(
            "aion_worker_tasks_abandoned",
            "Attempts stopped unreported (past their deadline, or at shutdown)",
            registry=r,
        )
        self.skipped = Counter(
            "aion_worker_tasks_skipped",
            "Tasks not run: cancelled before they started, or already past their deadline",
            registry=r,
        )
        self.dead_letters = Counter(
            "aion_worker_dead_letters", "Undecodable task records dead-lettered", registry=r
        )
        self.latency = Histogram(
            "aion_worker_task_seconds",
            "Attempt duration, start to report",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300),
            registry=r,
        )
        self.queued = Histogram(
            "aion_worker_task_queue_seconds",
            "Attempt dispatch (by the engine) to start (on this worker)",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60),
            registry=r,
        )
