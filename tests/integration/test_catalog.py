"""The version catalog on a real broker: a deploy is read back whole, a route and a deletion
reach every reader, a new reader catches up on what is there, a package larger than
Kafka's default record size goes through, and a writer whose producer was fenced writes on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from aion_common.codecs import Codec
from aion_common.domain import InfrastructureError, PackageRecord, RouteRecord
from aion_common.kafka.catalog import CatalogReader, CatalogWriter
from aion_common.kafka.options import client_options
from aion_common.packages import Package
from aion_common.settings import Settings
from aion_projector.api._catalog import CatalogState

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _records(package: Package, types: tuple[str, ...]) -> list[PackageRecord]:
    return [
        PackageRecord(
            workflow_type=t,
            version=package.version,
            workflow_types=types,
            top_level=package.top_level,
            archive=package.archive(),
            uploaded_at=AT,
        )
        for t in types
    ]


async def _until(check: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


@asynccontextmanager
async def _catalog(
    settings: Settings, codec: Codec
) -> AsyncIterator[tuple[CatalogWriter, CatalogReader, CatalogState]]:
    """A started writer, a started reader, and the state the reader keeps up to date."""
    writer = CatalogWriter(settings, codec=codec)
    state = CatalogState()
    reader = CatalogReader(settings, state, codec=codec)
    await writer.start()
    await reader.start()
    try:
        yield writer, reader, state
    finally:
        await reader.stop()
        await writer.stop()


async def test_a_deploy_a_route_and_a_deletion_reach_readers_old_and_new(
    aion_settings: Settings,
) -> None:
    codec = Codec()
    async with _catalog(aion_settings, codec) as (writer, reader, first):
        assert await reader.caught_up(20), "an empty catalog is caught up at once"
        # 3 MiB of incompressible data: over Kafka's 1 MiB default record size
        big = Package((("flows.py", b"x = 1\n"), ("blob.bin", os.urandom(3 * 1024 * 1024))))
        await writer.deploy(_records(big, ("a", "b")))
        await _until(lambda: len(first.records()) == 2)
        assert first.version(big.version)[0].archive == big.archive()
        route = RouteRecord(workflow_type="a", version=big.version, routed_at=AT)
        await writer.route(route)
        await _until(lambda: first.routes().get("a") == route)
        await writer.remove("b", big.version)
        await _until(lambda: [r.workflow_type for r in first.version(big.version)] == ["a"])

        late = CatalogState()
        newcomer = CatalogReader(aion_settings, late, codec=codec)
        await newcomer.start()
        try:
            assert await newcomer.caught_up(20)
            assert [(r.workflow_type, r.version) for r in late.records()] == [("a", big.version)]
            assert late.routes() == {"a": route}
        finally:
            await newcomer.stop()


async def test_a_writer_whose_producer_was_fenced_writes_on(aion_settings: Settings) -> None:
    """A transaction open past the coordinator's timeout (across a long outage) or a second
    API process with the same instance id fences the catalog's producer; aiokafka then refuses
    every later transaction of it. The writer starts a new producer and writes again."""
    async with _catalog(aion_settings, Codec()) as (writer, _, state):
        package = Package((("flows.py", b"x = 1\n"),))
        await writer.deploy(_records(package, ("a",)))
        newer = AIOKafkaProducer(
            **client_options(aion_settings),
            transactional_id=f"{aion_settings.topic_prefix}.catalog.{aion_settings.instance_id}",
        )
        await newer.start()  # a new epoch of the writer's transactional id: it is fenced
        await newer.stop()
        first = RouteRecord(workflow_type="a", version=package.version, routed_at=AT)
        await writer.route(first)  # found fenced, written again on a new producer
        await _until(lambda: state.routes().get("a") == first)
        await writer.remove("a", package.version)
        await _until(lambda: state.records() == [])


async def test_a_replacement_that_cannot_start_is_started_by_the_next_write(
    aion_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new producer's start fails (Kafka went away meanwhile): that write fails with the
    reason, and the next one starts the producer instead of finding none."""
    async with _catalog(aion_settings, Codec()) as (writer, _, state):
        package = Package((("flows.py", b"x = 2\n"),))
        await writer.deploy(_records(package, ("a",)))
        newer = AIOKafkaProducer(
            **client_options(aion_settings),
            transactional_id=f"{aion_settings.topic_prefix}.catalog.{aion_settings.instance_id}",
        )
        await newer.start()
        await newer.stop()
        starting = AIOKafkaProducer.start

        async def unreachable(self: AIOKafkaProducer) -> None:
            raise KafkaConnectionError("the broker went away (injected)")

        monkeypatch.setattr(AIOKafkaProducer, "start", unreachable)
        route = RouteRecord(workflow_type="a", version=package.version, routed_at=AT)
        with pytest.raises(InfrastructureError, match="starting the Kafka producer"):
            await writer.route(route)
        monkeypatch.setattr(AIOKafkaProducer, "start", starting)
        await writer.route(route)
        await _until(lambda: state.routes().get("a") == route)
