"""Records that decode but cannot be applied (poison pills) are dead-lettered and skipped; a
transient database error (a lost connection, a locked file) is retried, never dead-lettered;
refusals on the replies topic are projected. Real broker, real database, both backends."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from projector_rig import caught_up, running
from projector_workload import T0, EventsWriter, _batch, dump, interleaved
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    ChildWorkflowScheduled,
    CommandRefused,
    EventBatch,
    ParentClosePolicy,
    Payload,
    RefusalCode,
    SignalReceived,
    WorkflowStarted,
)
from aion_common.kafka import Topics, partition_for
from aion_common.kafka.dead_letter import DeadLetter, read_dead_letters
from aion_common.settings import Settings
from aion_projector import connect, history, migrate, session_factory
from aion_projector.operations import dead_letters as dead_letter_view
from aion_projector.queries import refusal, refusals
from aion_projector.service import ProjectorService

_P = Payload.from_json({"x": 1})


@pytest.fixture
def settings(aion_settings: Settings, database_url: str) -> Settings:
    return dataclasses.replace(aion_settings, database_url=database_url)


@pytest.fixture
async def views(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = connect(settings.database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


def _env(workflow_id: str, run_id: str, seq: int) -> dict[str, object]:
    at = T0 + timedelta(seconds=seq)
    return {
        "workflow_id": workflow_id,
        "run_id": run_id,
        "seq": seq,
        "recorded_at": at,
        "command_id": f"{workflow_id}-x{seq}",
    }


def _schedule(workflow_id: str, run_id: str, seq: int, child: str) -> EventBatch:
    return _batch(
        workflow_id,
        f"{workflow_id}-x{seq}",
        ChildWorkflowScheduled(
            **_env(workflow_id, run_id, seq),  # type: ignore[arg-type]
            child_workflow_id=child,
            child_workflow_type="pay",
            input=_P,
            parent_close_policy=ParentClosePolicy.ABANDON,
            start_command_id=f"{child}-start",
        ),
    )


def _poison() -> tuple[list[EventBatch], list[EventBatch]]:
    """(good batches, poison batches), in the order they are written after the families."""
    restart_r1 = _batch(  # wf-00000 restarted with run r1, which it already had
        "wf-00000",
        "wf-00000-x9",
        WorkflowStarted(
            **_env("wf-00000", "wf-00000-r1", 9),  # type: ignore[arg-type]
            workflow_type="order",
            input=_P,
            package_version="1.0.0",
            first_run_id="wf-00000-r1",
        ),
    )
    first = _schedule("wf-00001", "wf-00001-r2", 9, "dup-child")
    again = _schedule("wf-00001", "wf-00001-r2", 10, "dup-child")  # the same child, twice
    wrong_run = _batch(
        "wf-00002",
        "wf-00002-x9",
        SignalReceived(
            **_env("wf-00002", "wf-00002-r9", 9),  # type: ignore[arg-type]
            name="go",
            payload=_P,
        ),
    )
    return [first], [restart_r1, again, wrong_run]


async def _letters(settings: Settings) -> list[DeadLetter]:
    return [d async for d in read_dead_letters(settings, Topics(settings.topic_prefix).dead_letter)]


async def test_poison_pills_are_dead_lettered_and_the_projector_goes_on(
    settings: Settings, views: AsyncEngine
) -> None:
    good, poison = _poison()
    codec = Codec()
    async with EventsWriter(settings) as writer:
        await writer.write(interleaved(6))
        await writer.write([good[0], poison[0], poison[1], poison[2]], per_txn=1)
        await writer.write(interleaved(6, prefix="ok"))
    async with running(settings) as service:
        await caught_up(service, settings)
        assert service.status.poison == 3
        assert service.status.dead_lettered == 3
        assert service.status.applied == 60 + 1 + 60
        assert service.status.held == 0
        await _until_dead_letters_stored(service, settings)  # its own, read back as a view
    async with session_factory(views)() as session:
        shown = (await dead_letter_view(session, limit=10)).items
    assert sorted(d.workflow_id or "" for d in shown) == ["wf-00000", "wf-00001", "wf-00002"]
    assert all(d.reason.startswith("cannot be applied to the views: ") for d in shown)
    assert {d.source_topic for d in shown} == {f"{settings.topic_prefix}.events"}
    letters = await _letters(settings)
    assert sorted(d.value or b"" for d in letters) == sorted(codec.encode_batch(b) for b in poison)
    for letter in letters:
        assert letter.reason.startswith("cannot be applied to the views: "), letter.reason
        assert letter.source_topic == f"{settings.topic_prefix}.events"
    by_key = {d.key: d for d in letters}
    assert "already exists" in by_key[b"wf-00000"].reason
    assert "current run is 'wf-00002-r2'" in by_key[b"wf-00002"].reason
    # the duplicate child broke the database's key (separate transaction) or the in-memory
    # invariant (same apply): either way it is named
    assert by_key[b"wf-00001"].error in {"IntegrityError", "InvariantViolation"}
    sessions = session_factory(views)
    async with sessions() as session:
        seqs = [e.seq for e in await history(session, "wf-00001")]
        assert seqs == list(range(1, 10))
        assert [e.seq for e in await history(session, "wf-00000")] == list(range(1, 9))
        assert len(await history(session, "ok-00005")) == 8
    # a rebuild meets the same pills, dead-letters them again and ends in the same views
    projected = _without_dead_letters(await dump(views), settings)
    async with running(settings, rebuild=True) as service:
        await caught_up(service, settings)
        assert service.status.poison == 3
    assert _without_dead_letters(await dump(views), settings) == projected


def _without_dead_letters(
    tables: dict[str, list[tuple[object, ...]]], settings: Settings
) -> dict[str, list[tuple[object, ...]]]:
    """The views but the dead letters (a rebuild dead-letters the pills again: new records)."""
    dlq = Topics(settings.topic_prefix).dead_letter
    kept = {name: rows for name, rows in tables.items() if name != "dead_letters"}
    kept["projector_offsets"] = [r for r in kept["projector_offsets"] if r[0] != dlq]
    return kept


async def _until_dead_letters_stored(service: ProjectorService, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    expected = await _reply_ends(settings, Topics(settings.topic_prefix).dead_letter)
    while service.status.dead_letter_offsets != expected:
        assert loop.time() < deadline, (service.status.dead_letter_offsets, expected)
        await asyncio.sleep(0.1)


async def test_a_transient_database_error_is_retried_not_dead_lettered(
    settings: Settings, views: AsyncEngine
) -> None:
    """PostgreSQL: the projector's connection is terminated while it waits on a lock.
    SQLite: another connection holds the write lock past the busy timeout."""
    async with EventsWriter(settings) as writer:
        await writer.write(interleaved(20))
    postgres = views.dialect.name == "postgresql"
    async with views.connect() as blocker:
        if postgres:
            await blocker.execute(text("BEGIN"))
            await blocker.execute(text("LOCK TABLE history IN ACCESS EXCLUSIVE MODE"))
            lite = None
        else:
            database = settings.database_url.split("///", 1)[1]
            lite = sqlite3.connect(database, isolation_level=None)
            lite.execute("BEGIN EXCLUSIVE")
        async with running(settings) as service:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            if postgres:
                waiting = text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                async with views.connect() as admin:
                    while not (pids := (await admin.execute(waiting)).scalars().all()):
                        assert loop.time() < deadline, "the projector never waited on the lock"
                        await asyncio.sleep(0.05)
                    for pid in pids:
                        await admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                await blocker.execute(text("ROLLBACK"))
            else:
                while service.status.retries == 0:  # the busy timeout (10 s) runs out
                    assert loop.time() < deadline, "the projector never hit the lock"
                    await asyncio.sleep(0.1)
                assert lite is not None
                lite.execute("ROLLBACK")
                lite.close()
            await caught_up(service, settings)
            assert service.status.retries >= 1
            assert service.status.dead_lettered == 0
            assert service.status.applied == 20 * 10
            assert service.status.duplicates == 0
    assert await _letters(settings) == []
    tables = await dump(views)
    assert len(tables["history"]) == 200
    assert tables["held_events"] == []


async def _until_replies_stored(service: ProjectorService, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    expected = await _reply_ends(settings)
    while service.status.reply_offsets != expected:
        assert loop.time() < deadline, (service.status.reply_offsets, expected)
        await asyncio.sleep(0.1)


async def _reply_ends(settings: Settings, topic: str | None = None) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        topic = topic or Topics(settings.topic_prefix).replies
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def _refusal(workflow_id: str, command_id: str, code: RefusalCode) -> CommandRefused:
    return CommandRefused(
        command_id=command_id,
        workflow_id=workflow_id,
        command_type="StartWorkflow",
        code=code,
        reason=f"refused {command_id}",
        refused_at=T0 + timedelta(seconds=len(command_id)),
    )


async def test_refusals_on_the_replies_topic_are_projected(
    settings: Settings, views: AsyncEngine
) -> None:
    codec = Codec()
    topic = Topics(settings.topic_prefix).replies
    first = _refusal("wf-r", "cmd-1", RefusalCode.UNKNOWN_WORKFLOW_TYPE)
    second = _refusal("wf-r", "cmd-22", RefusalCode.ALREADY_RUNNING)
    other = _refusal("wf-other", "cmd-3", RefusalCode.WORKFLOW_CLOSED)
    async with EventsWriter(settings) as writer:  # creates the topics
        await writer.write(interleaved(2))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for r in (first, second, other, first):  # the last one re-delivered
            await producer.send_and_wait(
                topic,
                codec.encode_refusal(r),
                key=encode_key(r.workflow_id),
                partition=partition_for(r.workflow_id, settings.partitions),
            )
        await producer.send_and_wait(
            topic, b"not a refusal", key=b"wf-r", partition=partition_for("wf-r", 3)
        )
    finally:
        await producer.stop()
    async with running(settings) as service:
        await caught_up(service, settings)
        await _until_replies_stored(service, settings)
        assert service.status.refusals == 4
        assert service.status.dead_lettered == 1
        assert service.status.applied == 20
    async with session_factory(views)() as session:
        found = await refusals(session, "wf-r")
        assert [(r.command_id, r.code, r.reason) for r in found] == [
            ("cmd-22", "ALREADY_RUNNING", "refused cmd-22"),
            ("cmd-1", "UNKNOWN_WORKFLOW_TYPE", "refused cmd-1"),
        ]
        assert found[0].refused_at == second.refused_at
        one = await refusal(session, "wf-other", "cmd-3")
        assert one is not None
        assert one.code == "WORKFLOW_CLOSED"
        assert await refusal(session, "wf-other", "cmd-1") is None
    letters = await _letters(settings)
    assert [(d.source_topic, d.value) for d in letters] == [(topic, b"not a refusal")]
