"""The projector loop on a real broker: Kafka to SQL views, exactly once, on both backends."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from projector_rig import caught_up, running
from projector_workload import EventsWriter, dump, end_offsets, family, interleaved
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aion_common.kafka.dead_letter import read_dead_letters
from aion_common.settings import Settings
from aion_projector import (
    connect,
    describe,
    history,
    list_workflows,
    session_factory,
    stored_offsets,
)
from aion_projector.service import ProjectorService


@pytest.fixture
def settings(aion_settings: Settings, database_url: str) -> Settings:
    return dataclasses.replace(aion_settings, database_url=database_url)


@pytest.fixture
async def views(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = connect(settings.database_url)
    yield engine
    await engine.dispose()


async def _count_workflows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM workflows"))).scalar_one())


async def test_projects_committed_batches_into_the_views(
    settings: Settings, views: AsyncEngine
) -> None:
    async with EventsWriter(settings) as writer:
        await writer.write(interleaved(40), per_txn=50)
        await writer.write_aborted(family(0, prefix="zombie"))
    async with running(settings) as service:
        await caught_up(service, settings)
        status = service.status
    assert status.applied == 40 * 10
    assert (status.duplicates, status.held, status.dead_lettered) == (0, 0, 0)
    async with session_factory(views)() as session:
        parent = await describe(session, "wf-00007")
        assert parent is not None
        assert parent.summary.status == "COMPLETED"
        assert [r.run_id for r in parent.runs] == ["wf-00007-r1", "wf-00007-r2"]
        assert [(c.child_workflow_id, c.state) for c in parent.children] == [
            ("wf-00007-child", "COMPLETED")
        ]
        events = await history(session, "wf-00007")
        assert [e.seq for e in events] == list(range(1, 9))
        page = await list_workflows(session, limit=1000)
        assert len(page.items) == 80
        assert await describe(session, "zombie-00000") is None  # aborted: never read
        stored = await stored_offsets(session, writer.topic)
    ends = await end_offsets(settings)
    assert {p: o for (_, p), o in stored.items()} == {p: o for p, o in ends.items() if o}


async def test_a_redelivered_batch_changes_nothing(settings: Settings, views: AsyncEngine) -> None:
    batches = interleaved(20)
    async with EventsWriter(settings) as writer:
        await writer.write(batches)
    async with running(settings) as service:
        await caught_up(service, settings)
        before = await dump(views)
        async with EventsWriter(settings, transactional_id="zombie-engine") as zombie:
            await zombie.write(batches[:70])  # a zombie writer's copies, and re-deliveries
        await caught_up(service, settings)
        after = await dump(views)
        # every copy seen and none applied (a rebalance on a slow machine may re-deliver the
        # first pass too: more duplicates, still nothing applied twice)
        assert service.status.applied == sum(len(b.events) for b in batches)
        assert service.status.duplicates >= sum(len(b.events) for b in batches[:70])
    before.pop("projector_offsets")
    after.pop("projector_offsets")
    assert after == before


async def test_restart_resumes_from_the_offsets_stored_in_sql(
    settings: Settings, views: AsyncEngine
) -> None:
    async with EventsWriter(settings) as writer:
        await writer.write(interleaved(10))
        async with running(settings) as service:
            await caught_up(service, settings)
        await writer.write(interleaved(10, prefix="later"))
    async with running(settings) as service:
        await caught_up(service, settings)
        # Nothing seen twice: it sought to the SQL offsets, not to Kafka's or to zero.
        assert service.status.duplicates == 0
        assert service.status.applied == 10 * 10
    assert await _count_workflows(views) == 40


async def test_kafka_offsets_are_committed_at_most_once_a_second_and_on_stop(
    settings: Settings, views: AsyncEngine
) -> None:
    """SQL holds the offsets that count; Kafka's (for lag tooling) follow, without a broker
    write per applied fetch."""
    batches = interleaved(5)  # 50 batches, each in its own transaction, ~20 ms apart
    async with EventsWriter(settings) as writer, running(settings) as service:
        began = asyncio.get_running_loop().time()
        for batch in batches:
            await writer.write([batch])
            await asyncio.sleep(0.02)
        await caught_up(service, settings)
        elapsed = asyncio.get_running_loop().time() - began
        status = service.status
        assert status.records == len(batches)
        assert 1 <= status.kafka_commits <= elapsed + 1, (status.kafka_commits, elapsed)
    async with session_factory(views)() as session:
        stored = await stored_offsets(session, writer.topic)
    committed = await _kafka_committed(settings, f"{settings.topic_prefix}.projector")
    assert {p: o for (_, p), o in stored.items()} == {
        tp.partition: o for tp, o in committed.items() if tp.topic == writer.topic
    }


async def _kafka_committed(settings: Settings, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def test_rebuild_replays_into_equal_views(settings: Settings, views: AsyncEngine) -> None:
    async with EventsWriter(settings) as writer:
        await writer.write(interleaved(15))
    async with running(settings) as service:
        await caught_up(service, settings)
    projected = await dump(views)
    async with running(settings, rebuild=True) as service:
        await caught_up(service, settings)
        assert service.status.applied == 15 * 10
    assert await dump(views) == projected


async def test_undecodable_records_are_dead_lettered_and_skipped(
    aion_settings: Settings, sqlite_url: str
) -> None:
    settings = dataclasses.replace(aion_settings, database_url=sqlite_url)
    batches = interleaved(6)
    async with EventsWriter(settings) as writer:
        await writer.write(batches[:20])
        await writer.write_raw(b"wf-00001", b"\x00garbage, not avro")
        await writer.write(batches[20:])
        await writer.write_raw(b"wf-00002", b"")
    async with running(settings) as service:
        await caught_up(service, settings)
        assert service.status.dead_lettered == 2
        assert service.status.applied == 6 * 10
    letters = [d async for d in read_dead_letters(settings, f"{settings.topic_prefix}.dead-letter")]
    assert sorted(d.value or b"" for d in letters) == [b"", b"\x00garbage, not avro"]
    assert all(d.source_topic == f"{settings.topic_prefix}.events" for d in letters)


async def test_a_transient_database_error_is_retried(
    aion_settings: Settings, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(aion_settings, database_url=sqlite_url)
    async with EventsWriter(settings) as writer:
        await writer.write(interleaved(10))
    service = ProjectorService(settings)
    real_apply = service._projection.apply
    failures = []

    async def flaky_apply(session, deliveries, **options):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(1)
            raise sa_exc.OperationalError("INSERT", {}, ConnectionResetError("gone"), True)
        return await real_apply(session, deliveries, **options)

    monkeypatch.setattr(service._projection, "apply", flaky_apply)
    await service.start()
    task = asyncio.create_task(service.run())
    try:
        await caught_up(service, settings)
        assert failures == [1]
        assert service.status.applied == 10 * 10
        assert service.status.duplicates == 0
    finally:
        await service.stop()
        await task


async def test_a_permanent_database_error_stops_the_loop(
    aion_settings: Settings, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(aion_settings, database_url=sqlite_url)
    async with EventsWriter(settings) as writer:
        await writer.write(interleaved(2))
    service = ProjectorService(settings)

    async def broken_apply(session, deliveries, **options):  # type: ignore[no-untyped-def]
        raise sa_exc.ProgrammingError("INSERT", {}, ValueError("no such table: history"))

    monkeypatch.setattr(service._projection, "apply", broken_apply)
    await service.start()
    try:
        with pytest.raises(sa_exc.ProgrammingError):
            await service.run()
    finally:
        await service.stop()
