"""The projector consumer's health report and metrics, served when ``AION_PROJECTOR_PORT`` is set.

- live (``/health``, ``/health/live``): 200 while the consume loop is starting or running;
- ready (``/health/ready``): 200 once partitions are assigned, the views are within
  ``AION_PROJECTOR_READY_LAG`` records (default 1000) of the log's end, i.e. caught up, and
  the Kafka cluster answers; a projector replaying a long history, or waiting for a broker
  that went away, is live but not ready (``not_ready`` says why, ``kafka`` shows the link);
- ``/metrics``: the loop's counters (``aion_projector_records`` …) and per-partition lag.

Only :attr:`ProjectorService.status` is read (:class:`ProjectorView`), never internals. The HTTP
API (``python -m aion_projector.api``) is another process with its own ``/health``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from aion_common.kafka.link import BrokerLink
from aion_common.runtime.health import HealthEndpoint, MonitoredService, serve_monitored
from aion_common.runtime.lifecycle import Service
from aion_common.settings import whole_from_env
from aion_projector.service import ProjectorStatus

__all__ = [
    "DEFAULT_READY_LAG",
    "ENDPOINT_ENV_PREFIX",
    "MAX_READY_LAG",
    "READY_LAG_ENV",
    "ProjectorView",
    "projector_registry",
    "projector_report",
    "ready_lag_from_env",
    "serve",
]

ENDPOINT_ENV_PREFIX = "AION_PROJECTOR"
"""``AION_PROJECTOR_PORT`` (0 or unset: no endpoint) and ``AION_PROJECTOR_HOST`` (127.0.0.1)."""
READY_LAG_ENV = "AION_PROJECTOR_READY_LAG"
DEFAULT_READY_LAG = 1000
MAX_READY_LAG = 1_000_000_000


class ProjectorView(Service, Protocol):
    """What the health report reads from a projector service."""

    @property
    def status(self) -> ProjectorStatus:
        """Counters and per-partition lag."""
        ...

    @property
    def link(self) -> BrokerLink:
        """Whether the Kafka cluster answers."""
        ...


def ready_lag_from_env(env: Mapping[str, str] | None = None) -> int:
    """``AION_PROJECTOR_READY_LAG``: records behind the log end still counted as caught up
    (0 to :data:`MAX_READY_LAG`; the default when unset or blank)."""
    source = os.environ if env is None else env
    return whole_from_env(
        source,
        READY_LAG_ENV,
        DEFAULT_READY_LAG,
        minimum=0,
        maximum=MAX_READY_LAG,
        what="a whole number of records",
        why="a billion: past it the lag never holds readiness back",
    )


def projector_report(
    monitored: MonitoredService, projector: ProjectorView, ready_lag: int
) -> dict[str, object]:
    """The ``/health`` body: ``ok`` (alive), ``ready`` (reaches Kafka, assigned and caught
    up), ``not_ready`` (why not), and detail."""
    status = projector.status
    lag = dict(sorted(status.lag.items()))
    body = monitored.report()
    reason = projector.link.not_ready_reason()
    if reason is None and not monitored.running:
        reason = f"the projector is {monitored.phase.value}"
    if reason is None and not lag:
        reason = "no partition assigned yet"
    if reason is None and status.total_lag > ready_lag:
        reason = f"the views are {status.total_lag} records behind (ready at {ready_lag})"
    body.update(
        ready=reason is None,
        partitions=sorted(status.next_offsets),
        lag=lag,
        total_lag=status.total_lag,
        applied=status.applied,
        held=status.held,
        kafka=projector.link.report(),
    )
    if reason is not None:
        body["not_ready"] = reason
    return body


class _ProjectorCollector:
    """Reads the loop's status at scrape time."""

    def __init__(self, monitored: MonitoredService, projector: ProjectorView) -> None:
        self._monitored = monitored
        self._projector = projector

    def collect(self) -> Iterable[Metric]:
        status = self._projector.status
        up = GaugeMetricFamily("aion_projector_up", "1 while the projector's loop is running")
        up.add_metric([], 1.0 if self._monitored.running else 0.0)
        yield up
        for name, doc, value in (
            ("aion_projector_records", "Event records consumed", status.records),
            ("aion_projector_events_applied", "Events applied to the views", status.applied),
            ("aion_projector_events_duplicate", "Events already applied", status.duplicates),
            ("aion_projector_events_held", "Events held at a seq gap", status.held),
            ("aion_projector_dead_letters", "Records sent to dead letter", status.dead_lettered),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], float(value))
            yield counter
        lag = GaugeMetricFamily(
            "aion_projector_lag", "Records between the views and the log end", labels=["partition"]
        )
        for partition, behind in sorted(status.lag.items()):
            lag.add_metric([str(partition)], float(behind))
        yield lag


def projector_registry(monitored: MonitoredService, projector: ProjectorView) -> CollectorRegistry:
    """A private registry whose collector reads ``projector.status`` at each scrape."""
    registry = CollectorRegistry()
    registry.register(_ProjectorCollector(monitored, projector))
    return registry


async def serve(projector: ProjectorView, endpoint: HealthEndpoint, ready_lag: int) -> int:
    """Run ``projector`` until a signal, with the health endpoint when ``endpoint`` is enabled."""
    monitored = MonitoredService(projector)
    return await serve_monitored(
        monitored,
        endpoint,
        lambda: projector_report(monitored, projector, ready_lag),
        projector_registry(monitored, projector),
    )
