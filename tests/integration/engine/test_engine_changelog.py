"""The engine's changelogs on the real broker: restores warm and cold (open work served while
the closed workflows load), the upgrade from a log written without changelogs and from the
single-changelog layout, a bad record, a rebalance while a partition restores, standbys.

After each, the changelog read cold from Kafka and the state rebuilt from ``aion.events``
describe the same workflows (every transaction wrote both or neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tests.e2e.engine.harness import assert_changelog_matches_events

from aion_common.codecs import Codec, encode_key
from aion_common.domain import StartWorkflow, WorkflowCompleted
from aion_common.kafka import partition_for
from aion_common.kafka.changelog import MARKER_KEY, STATE_HEADER, Marker
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_engine import _recovery
from aion_engine import service as service_module
from aion_engine.service import EngineService

from .conftest import EngineRig
from .workflows import REGISTRY

pytestmark = pytest.mark.kafka


async def _workload(rig: EngineRig, *, closed: int, open_: int) -> tuple[list[str], list[str]]:
    """``closed`` parents run to completion (each with one child), ``open_`` approvals left
    waiting for a signal."""
    done = [
        await rig.start_workflow("it.parent", {"outcomes": ["complete"]}) for _ in range(closed)
    ]
    waiting = [await rig.start_workflow("it.approval", {"count": 1}) for _ in range(open_)]
    for workflow_id in done:
        await rig.wait_closed(workflow_id, timeout=60)
    for workflow_id in waiting:
        await rig.wait_for(workflow_id, lambda h: len(h) >= 1)
    return done, waiting


async def _approve(rig: EngineRig, waiting: list[str]) -> None:
    for workflow_id in waiting:
        await rig.signal(workflow_id, "approve", _payload(workflow_id))
    for workflow_id in waiting:
        history = await rig.wait_closed(workflow_id)
        assert isinstance(history[-1], WorkflowCompleted)
        assert history[-1].result.to_json() == [workflow_id]


def _payload(value: object) -> Any:
    from aion_common.domain import Payload

    return Payload.from_json(value)


async def _owned(rig: EngineRig) -> dict[int, dict[str, object]]:
    every = list(range(rig.settings.partitions))
    for _ in range(600):
        if rig.engine.owned_partitions == every:
            return rig.engine.acquisitions()
        await asyncio.sleep(0.05)
    raise AssertionError(f"owned {rig.engine.owned_partitions}")


async def _stopped_after(
    settings: Settings, *, closed: int, open_: int, quiesce: bool = False
) -> tuple[EngineRig, list[str], list[str]]:
    """One engine takes every partition, runs :func:`_workload` (and, with ``quiesce``, waits
    until every command is applied) and stops: the rig (for its histories), done and waiting."""
    rig = EngineRig(settings)
    await rig.start()
    try:
        await _owned(rig)
        done, waiting = await _workload(rig, closed=closed, open_=open_)
        if quiesce:
            await _quiesced(settings)
    finally:
        await rig.stop()
    return rig, done, waiting


async def test_a_restart_reads_the_changelog_tail_and_a_lost_store_restores_cold(
    aion_settings: Settings, tmp_path: Path
) -> None:
    rig = EngineRig(aion_settings)
    await rig.start()
    try:
        first = await _owned(rig)
        assert all(a["built_from_events"] == 0 for a in first.values())  # new topics: empty
        done, waiting = await _workload(rig, closed=30, open_=6)
    finally:
        await rig.stop()

    warm = EngineRig(aion_settings)
    warm.histories = rig.histories
    await warm.start()
    try:
        restored = await _owned(warm)
        assert all(not a["cold"] and a["built_from_events"] is None for a in restored.values())
        # only the tail written since the last store write is read (nothing, after a clean stop)
        assert sum(int(a["changelog_records_read"]) for a in restored.values()) == 0  # type: ignore[call-overload]
        assert sum(int(a["open_workflows"]) for a in restored.values()) == len(waiting)  # type: ignore[call-overload]
        # a duplicate start of a closed workflow is still recognised (its state is on disk)
        last = len(warm.histories[done[0]])
        await warm.send(_start_again(done[0], warm))
        await _approve(warm, waiting[:3])
        assert len(warm.histories[done[0]]) == last
    finally:
        await warm.stop()

    shutil.rmtree(aion_settings.state_dir)
    cold = EngineRig(aion_settings)
    cold.histories = warm.histories
    await cold.start()
    try:
        restored = await _owned(cold)
        assert all(a["cold"] for a in restored.values())
        read = sum(int(a["changelog_records_read"]) for a in restored.values())  # type: ignore[call-overload]
        assert read > 0
        await _approve(cold, waiting[3:])
    finally:
        await cold.stop()
    assert await assert_changelog_matches_events(aion_settings, tmp_path) >= 66


async def test_the_position_is_the_changelogs_and_only_a_group_offset_further_on_wins(
    aion_settings: Settings, tmp_path: Path
) -> None:
    # Every transaction records the partition's position in engine-state; the group's offsets
    # are committed outside the transactions (now and then, and on release).
    # (no stand-in watcher: its late duplicates could land after the engine stopped)
    rig = EngineRig(aion_settings, act_as_watcher=False)
    await rig.start()
    try:
        await _owned(rig)
        _, waiting = await _workload(rig, closed=6, open_=2)
        await _quiesced(aion_settings)
    finally:
        await rig.stop()
    topics = Topics(aion_settings.topic_prefix)
    partitions = range(aion_settings.partitions)
    # (a position is the offset after the last command read: the partition's end may be
    # past it by a transaction's commit marker, when the engine wrote that command)
    read = await _after_last_records(aion_settings, topics.commands)
    assert await _positions(aion_settings, tmp_path) == read
    assert await _group_offsets(aion_settings) == read
    ends = await _ends(aion_settings, topics.commands)

    # The group rewound to the start (a reset, a stale commit): not used. On one partition,
    # commands the engine never read with the group's offset past them (what an engine of an
    # older version, which commits only there, leaves when it served them): skipped.
    skipped = f"wf-skipped-{uuid.uuid4().hex[:8]}"
    partition = partition_for(skipped, aion_settings.partitions)
    after = _same_partition(f"wf-after-{uuid.uuid4().hex[:8]}", partition, aion_settings)
    offsets = dict.fromkeys(partitions, 0)
    offsets[partition] = ends[partition] + 1
    await _send(aion_settings, _start(skipped, "it.child", {"outcome": "complete", "i": 0}))
    await _commit_group(aion_settings, offsets)

    again = EngineRig(aion_settings)
    again.histories = rig.histories
    await again.start()
    try:
        acquired = await _owned(again)
        resumed = {p: (a["position"], a["position_from"]) for p, a in acquired.items()}
        expected = {p: (read[p], "changelog") for p in partitions}
        expected[partition] = (ends[partition] + 1, "group")
        assert resumed == expected
        await _approve(again, waiting)  # the open work goes on from the restored state
        await again.start_workflow("it.child", {"outcome": "complete", "i": 1}, workflow_id=after)
        await again.wait_closed(after)
        assert skipped not in again.histories  # read past, never started
    finally:
        await again.stop()
    assert await assert_changelog_matches_events(aion_settings, tmp_path) == 15


def _start(workflow_id: str, workflow_type: str, input_value: object) -> StartWorkflow:
    return StartWorkflow(
        command_id=str(uuid.uuid4()),
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        input=_payload(input_value),
    )


async def _send(settings: Settings, command: StartWorkflow) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            Topics(settings.topic_prefix).commands,
            Codec().encode_command(command),
            key=encode_key(command.workflow_id),
        )
    finally:
        await producer.stop()


def _same_partition(prefix: str, partition: int, settings: Settings) -> str:
    return next(
        f"{prefix}-{n}"
        for n in range(10_000)
        if partition_for(f"{prefix}-{n}", settings.partitions) == partition
    )


async def _ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def _after_last_records(settings: Settings, topic: str) -> dict[int, int]:
    after: dict[int, int] = {}
    for partition in range(settings.partitions):
        after[partition] = 0
        async for record in read_partition_to_end(settings, topic, partition):
            after[partition] = record.offset + 1
    return after


async def _positions(settings: Settings, directory: Path) -> dict[int, int | None]:
    """Each partition's position as a cold restore of engine-state reads it."""
    from aion_common.kafka.changelog import ChangelogStore, catch_up
    from aion_engine._changelog import read_position

    topic = Topics(settings.topic_prefix).engine_state
    positions: dict[int, int | None] = {}
    for partition in range(settings.partitions):
        store = ChangelogStore(directory / f"positions-{uuid.uuid4().hex[:6]}.sqlite")
        try:
            await catch_up(settings, topic, partition, store)
            positions[partition] = read_position(store, partition)
        finally:
            store.close()
    return positions


@contextlib.asynccontextmanager
async def _in_engine_group(
    settings: Settings,
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer of the engine's group that only reads and commits offsets (no engine may be
    in the group to commit), and the commands topic's partitions."""
    topic = Topics(settings.topic_prefix).commands
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"{settings.topic_prefix}.engine",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        yield consumer, [TopicPartition(topic, p) for p in range(settings.partitions)]
    finally:
        await consumer.stop()


async def _group_offsets(settings: Settings) -> dict[int, int | None]:
    async with _in_engine_group(settings) as (consumer, tps):
        return {tp.partition: await consumer.committed(tp) for tp in tps}


async def _commit_group(settings: Settings, offsets: dict[int, int]) -> None:
    async with _in_engine_group(settings) as (consumer, tps):
        consumer.assign(tps)
        await consumer.commit({tp: offsets[tp.partition] for tp in tps})


def _start_again(workflow_id: str, rig: EngineRig) -> StartWorkflow:
    first = rig.histories[workflow_id][0]
    return StartWorkflow(
        command_id=first.command_id,
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        workflow_type="it.parent",
        input=_payload({"outcomes": ["complete"]}),
    )


async def test_an_upgrade_builds_the_changelog_once_from_a_log_without_one(
    aion_settings: Settings, tmp_path: Path
) -> None:
    old = EngineRig(aion_settings)
    old.engine = EngineService(aion_settings, REGISTRY, changelog=False)
    await old.start()
    try:
        assert not old.engine.uses_changelog
        done, waiting = await _workload(old, closed=25, open_=5)
    finally:
        await old.stop()
    topics = Topics(aion_settings.topic_prefix)
    assert await _count(aion_settings, topics.engine_state) == 0  # written without one

    upgraded = EngineRig(aion_settings)
    upgraded.histories = old.histories
    await upgraded.start()
    try:
        acquired = await _owned(upgraded)
        built = [a["built_from_events"] for a in acquired.values()]
        assert sum(int(b) for b in built if b is not None) == sum(
            len(h) for h in old.histories.values()
        )
        assert sum(int(a["open_workflows"]) for a in acquired.values()) == len(waiting)  # type: ignore[call-overload]
        # the old engine's offsets were in the group (in its transactions)
        assert {a["position_from"] for a in acquired.values()} == {"group"}
        await _approve(upgraded, waiting)
        # a late duplicate of a closed workflow's start is still a no-op after the upgrade
        last = len(upgraded.histories[done[0]])
        await upgraded.send(_start_again(done[0], upgraded))
    finally:
        await upgraded.stop()
    # a partition the upgraded engine wrote a transaction to has its position in the changelog
    # (one it wrote none to still has only the group's)
    recorded = await _positions(aion_settings, tmp_path)
    assert any(position is not None for position in recorded.values())

    again = EngineRig(aion_settings)
    again.histories = upgraded.histories
    await again.start()
    try:
        acquired = await _owned(again)
        assert all(a["built_from_events"] is None for a in acquired.values())  # built once
        assert {p: a["position_from"] for p, a in acquired.items()} == {
            p: "group" if position is None else "changelog" for p, position in recorded.items()
        }
        assert len(again.histories[done[0]]) == last
    finally:
        await again.stop()
    assert await assert_changelog_matches_events(aion_settings, tmp_path) >= 55


async def test_an_unreadable_changelog_record_is_rebuilt_from_the_event_log(
    aion_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig, _, waiting = await _stopped_after(aion_settings, closed=10, open_=3)
    victim = waiting[0]
    partition = partition_for(victim, aion_settings.partitions)
    topics = Topics(aion_settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=aion_settings.bootstrap_servers)
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            topics.engine_state,
            b"\x00not a snapshot",
            key=encode_key(victim),
            partition=partition,
            headers=[(STATE_HEADER, b"open")],
        )
    finally:
        await producer.stop()
    shutil.rmtree(aion_settings.state_dir)  # a cold restore reads the bad record

    again = EngineRig(aion_settings)
    again.histories = rig.histories
    caplog.set_level("ERROR", logger="aion.engine")
    await again.start()
    try:
        acquired = await _owned(again)
        assert acquired[partition]["built_from_events"], acquired
        assert acquired[partition]["position_from"] == "changelog"  # the build kept it
        errors = [r for r in caplog.records if "unreadable engine changelog" in r.getMessage()]
        assert errors
        message = str(errors[0].__dict__.get("error"))
        assert f"partition {partition} offset {metadata.offset}" in message
        await _approve(again, waiting)
    finally:
        await again.stop()
    assert await assert_changelog_matches_events(aion_settings, tmp_path) == 23


async def test_a_rebalance_while_partitions_restore_loses_nothing(
    aion_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig, _, waiting = await _stopped_after(aion_settings, closed=20, open_=6)
    shutil.rmtree(aion_settings.state_dir)

    gate = asyncio.Event()
    restoring: list[int] = []
    real_catch_up = _recovery.catch_up

    async def slow_catch_up(*args: Any, **kwargs: Any) -> Any:
        caught = await real_catch_up(*args, **kwargs)
        restoring.append(args[2])
        await gate.wait()  # the store is caught up; the core not yet restored
        return caught

    monkeypatch.setattr(_recovery, "catch_up", slow_catch_up)
    first = EngineRig(aion_settings)
    first.histories = rig.histories
    other = dataclasses.replace(aion_settings, instance_id="engine-b")
    second = EngineRig(other)
    second.histories = rig.histories
    await first.start()
    try:
        for _ in range(600):
            if len(restoring) >= aion_settings.partitions:
                break
            await asyncio.sleep(0.05)
        await second.start()  # joins: a rebalance while every partition is mid-restore
        await asyncio.sleep(3)
        gate.set()
        await _approve(first, waiting)
        owned = set(first.engine.owned_partitions) | set(second.engine.owned_partitions)
        assert owned == set(range(aion_settings.partitions))
        assert second.engine.owned_partitions, "the rebalance gave the second engine nothing"
    finally:
        gate.set()
        await second.stop()
        await first.stop()
    assert await assert_changelog_matches_events(aion_settings, tmp_path) >= 46


async def _quiesced(settings: Settings) -> None:
    """Wait until the engine group has committed past every record of the commands topic."""
    async with _in_engine_group(settings) as (consumer, tps):
        pending = -1
        for _ in range(100):
            pending = 0
            for tp in tps:
                committed = await consumer.committed(tp) or 0
                async for record in read_partition_to_end(settings, tp.topic, tp.partition):
                    pending += record.offset >= committed
            if not pending:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{pending} commands not applied")


async def _count(settings: Settings, topic: str) -> int:
    from aion_common.kafka.consumer import read_partition_to_end

    count = 0
    for partition in range(settings.partitions):
        async for _ in read_partition_to_end(settings, topic, partition):
            count += 1
    return count


async def test_a_standby_keeps_the_partitions_it_does_not_own_warm(
    aion_settings: Settings, tmp_path: Path
) -> None:
    first = EngineRig(aion_settings)
    first.engine = EngineService(aion_settings, REGISTRY, standbys=1)
    other = dataclasses.replace(aion_settings, instance_id="engine-b")
    second = EngineRig(other)
    second.engine = EngineService(other, REGISTRY, standbys=1)
    second.histories = first.histories
    await first.start()
    await _owned(first)
    await second.start()
    try:
        for _ in range(600):
            split = set(first.engine.owned_partitions) | set(second.engine.owned_partitions)
            if second.engine.owned_partitions and len(split) == aion_settings.partitions:
                break
            await asyncio.sleep(0.05)
        standing = set(second.engine.standby_partitions)
        assert standing == set(range(aion_settings.partitions)) - set(
            second.engine.owned_partitions
        )
        _, waiting = await _workload(first, closed=20, open_=4)
        await asyncio.sleep(2)  # the standby tails what the owners commit
        await first.stop()  # a clean leave: its partitions move to the second engine now
        acquired = await _owned(second)
        assert second.engine.standby_partitions == []  # it owns every partition now
        for partition in standing:
            report = acquired[partition]
            assert not report["cold"], report  # the standby's store: only its tail was read
        await _approve(second, waiting)
    finally:
        await second.stop()
        await first.stop()
    assert await assert_changelog_matches_events(aion_settings, tmp_path) == 44


async def test_a_cold_restore_serves_open_work_while_closed_workflows_load(
    aion_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every command applied (a closing parent's commands to its children too): one left for a
    # closed workflow would hold its partition until the closed load below
    rig, done, waiting = await _stopped_after(aion_settings, closed=12, open_=4, quiesce=True)
    shutil.rmtree(aion_settings.state_dir)  # a new machine: no local store

    gate = asyncio.Event()
    loading: list[int] = []
    real_load = service_module.load_closed

    async def gated_load(*args: Any, **kwargs: Any) -> Any:
        loading.append(args[2])
        await gate.wait()
        return await real_load(*args, **kwargs)

    monkeypatch.setattr(service_module, "load_closed", gated_load)
    cold = EngineRig(aion_settings)
    cold.histories = rig.histories
    await cold.start()
    try:
        acquired = await _owned(cold)  # serving, with every closed load held back
        assert all(a["cold"] and a["closed_complete_s"] is None for a in acquired.values())
        assert sum(int(a["open_workflows"]) for a in acquired.values()) == len(waiting)  # type: ignore[call-overload]
        await _approve(cold, waiting)  # open work is served meanwhile

        # a duplicate start and a new start of a closed id, and a start of a fresh id: each
        # needs the closed workflows (the duplicate guard, the run before, "no such id")
        reused, fresh = done[0], f"fresh-{uuid.uuid4().hex[:8]}"
        before = len(cold.histories[reused])
        await cold.send(_start_again(reused, cold))
        again = dataclasses.replace(_start_again(reused, cold), command_id=str(uuid.uuid4()))
        await cold.send(again)
        await cold.start_workflow("it.parent", {"outcomes": ["complete"]}, workflow_id=fresh)
        await asyncio.sleep(2)
        assert len(cold.histories[reused]) == before, "applied before the closed load"
        assert not cold.histories[fresh], "applied before the closed load"

        gate.set()
        history = await cold.wait_for(reused, lambda h: len(h) > before)
        started = history[before]
        assert started.seq == before + 1  # a new run after the closed one, not a new seq 1
        assert started.command_id == again.command_id  # the duplicate appended nothing
        await cold.wait_closed(reused)
        assert (await cold.wait_closed(fresh))[0].seq == 1
        for _ in range(200):  # a partition no command waited on may still be loading
            loaded = await _owned(cold)
            if all(a["closed_complete_s"] is not None for a in loaded.values()):
                break
            await asyncio.sleep(0.05)
        assert all(a["closed_complete_s"] is not None for a in loaded.values()), loaded
        assert sum(int(a["closed_records_read"]) for a in loaded.values()) > 0  # type: ignore[call-overload]
    finally:
        gate.set()
        await cold.stop()
    assert await assert_changelog_matches_events(aion_settings, tmp_path) == 31


async def test_a_partition_built_in_the_single_changelog_layout_is_built_again(
    aion_settings: Settings, tmp_path: Path
) -> None:
    rig, done, waiting = await _stopped_after(aion_settings, closed=8, open_=3)
    recorded = await _positions(aion_settings, tmp_path)
    # What the first layout left: the closed workflows' heads in engine-state too (copied from
    # engine-closed), then a complete marker without a version.
    topics = Topics(aion_settings.topic_prefix)
    old_heads: dict[int, set[bytes]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=aion_settings.bootstrap_servers)
    await producer.start()
    try:
        for partition in range(aion_settings.partitions):
            heads = old_heads.setdefault(partition, set())
            async for record in read_partition_to_end(
                aion_settings, topics.engine_closed, partition
            ):
                if record.key == MARKER_KEY or record.value is None:
                    continue
                heads.add(record.key)
                await producer.send_and_wait(
                    topics.engine_state,
                    record.value,
                    key=record.key,
                    partition=partition,
                    headers=list(record.headers),
                )
            await producer.send_and_wait(
                topics.engine_state,
                Marker("complete", 0).encode(),
                key=MARKER_KEY,
                partition=partition,
            )
    finally:
        await producer.stop()

    upgraded = EngineRig(aion_settings)
    upgraded.histories = rig.histories
    await upgraded.start()
    try:
        acquired = await _owned(upgraded)
        assert all(a["built_from_events"] is not None for a in acquired.values()), acquired
        # the build kept each partition's position (a partition no transaction wrote to yet
        # has none: the group's)
        assert {p: a["position_from"] for p, a in acquired.items()} == {
            p: "group" if position is None else "changelog" for p, position in recorded.items()
        }
        last = len(upgraded.histories[done[0]])
        await upgraded.send(_start_again(done[0], upgraded))  # still a duplicate
        await _approve(upgraded, waiting)
        assert len(upgraded.histories[done[0]]) == last
    finally:
        await upgraded.stop()
    assert await assert_changelog_matches_events(aion_settings, tmp_path) == 19
    # The old layout's heads are tombstoned in engine-state (compaction would keep them live
    # for ever otherwise, and every cold restore would read them).
    assert sum(map(len, old_heads.values())) >= 8
    for partition, heads in old_heads.items():
        latest: dict[bytes, bytes | None] = {}
        async for record in read_partition_to_end(aion_settings, topics.engine_state, partition):
            latest[record.key] = record.value
        assert {key for key in heads if latest.get(key) is not None} == set(), partition
