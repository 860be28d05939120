"""The engine's health report and metrics, served when ``AION_ENGINE_PORT`` is set.

- live (``/health``, ``/health/live``): 200 while the instance is starting or running;
- ready (``/health/ready``): 200 once it owns at least one partition whose state is rebuilt
  (a partition appears in :attr:`EngineService.owned_partitions` only after its rebuild) and
  the Kafka cluster answers, so an instance mid-rebalance, a surplus one beyond the partition
  count, or one waiting for a broker that went away, is live but not ready (``not_ready`` says
  why, ``kafka`` shows the link);
- ``/metrics``: ``aion_engine_up``, ``aion_engine_owned_partitions``,
  ``aion_engine_transactional``, ``aion_engine_versions_loaded``;
- the report lists ``versions_loaded``: the package versions whose code the engine has.

Only the service's public attributes are read (:class:`EngineView`), never its internals.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from aion_common.kafka.link import BrokerLink
from aion_common.runtime.health import HealthEndpoint, MonitoredService, serve_monitored
from aion_common.runtime.lifecycle import Service

__all__ = ["ENDPOINT_ENV_PREFIX", "EngineView", "engine_registry", "engine_report", "serve"]

ENDPOINT_ENV_PREFIX = "AION_ENGINE"
"""``AION_ENGINE_PORT`` (0 or unset: no endpoint) and ``AION_ENGINE_HOST`` (127.0.0.1)."""


class EngineView(Service, Protocol):
    """What the health report reads from an engine service."""

    @property
    def owned_partitions(self) -> list[int]:
        """Partitions owned and rebuilt."""
        ...

    @property
    def transactional(self) -> bool:
        """Whether batches go out in Kafka transactions."""
        ...

    @property
    def versions_loaded(self) -> tuple[str, ...]:
        """The package versions this process has the code of."""
        ...

    @property
    def link(self) -> BrokerLink:
        """Whether the Kafka cluster answers."""
        ...


def engine_report(
    monitored: MonitoredService, engine: EngineView, instance: str
) -> dict[str, object]:
    """The ``/health`` body: ``ok`` (alive), ``ready`` (owns a rebuilt partition and reaches
    Kafka), ``not_ready`` (why not), and detail."""
    partitions = list(engine.owned_partitions)
    body = monitored.report()
    reason = engine.link.not_ready_reason()
    if reason is None and not monitored.running:
        reason = f"the engine is {monitored.phase.value}"
    if reason is None and not partitions:
        reason = "no partition owned yet (rebalancing, rebuilding, or more engines than partitions)"
    body.update(
        ready=reason is None,
        instance=instance,
        partitions=partitions,
        transactional=engine.transactional,
        versions_loaded=list(engine.versions_loaded),
        kafka=engine.link.report(),
    )
    if reason is not None:
        body["not_ready"] = reason
    return body


class _EngineCollector:
    """Reads the gauges from the service at scrape time (nothing to keep in step)."""

    def __init__(self, monitored: MonitoredService, engine: EngineView) -> None:
        self._monitored = monitored
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("aion_engine_up", "1 while the engine's loop is running")
        up.add_metric([], 1.0 if self._monitored.running else 0.0)
        owned = GaugeMetricFamily(
            "aion_engine_owned_partitions", "Command partitions owned and rebuilt"
        )
        owned.add_metric([], float(len(self._engine.owned_partitions)))
        tx = GaugeMetricFamily(
            "aion_engine_transactional", "1 when batches are emitted in Kafka transactions"
        )
        tx.add_metric([], 1.0 if self._engine.transactional else 0.0)
        versions = GaugeMetricFamily(
            "aion_engine_versions_loaded", "Package versions whose code this engine has loaded"
        )
        versions.add_metric([], float(len(self._engine.versions_loaded)))
        return [up, owned, tx, versions]


def engine_registry(monitored: MonitoredService, engine: EngineView) -> CollectorRegistry:
    """A private registry whose collector reads ``engine`` at each scrape."""
    registry = CollectorRegistry()
    registry.register(_EngineCollector(monitored, engine))
    return registry


async def serve(engine: EngineView, endpoint: HealthEndpoint, instance: str) -> int:
    """Run ``engine`` until a signal, with the health endpoint when ``endpoint`` is enabled."""
    monitored = MonitoredService(engine)
    return await serve_monitored(
        monitored,
        endpoint,
        lambda: engine_report(monitored, engine, instance),
        engine_registry(monitored, engine),
    )
