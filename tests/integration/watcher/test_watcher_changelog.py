"""The watcher's changelog on a real broker: a restart restores its open watches from the
changelog instead of re-reading the history; an upgrade from a log without one builds it; a
rebuild over an earlier build (an interrupted build, an unreadable record) keeps every fact."""

from __future__ import annotations

import asyncio
import dataclasses

from aiokafka import AIOKafkaProducer

from aion_common.kafka import partition_for
from aion_common.kafka.changelog import MARKER_KEY, Marker
from aion_common.kafka.options import client_options
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

from .harness import FAST, Rig


async def test_an_upgrade_builds_the_changelog_then_restarts_restore_from_it(
    aion_settings: Settings,
) -> None:
    async with Rig(aion_settings) as rig:
        parent, done, open_child = rig.flow(), rig.flow(), rig.flow()
        closed = [rig.flow() for _ in range(5)]
        async with rig.watcher(dataclasses.replace(FAST, changelog=False)) as old:
            assert not old.uses_changelog
            await rig.publish(parent.start(), done.start(parent), open_child.start(parent))
            await rig.publish(*(c.start() for c in closed), *(c.complete() for c in closed))
            await rig.publish(done.complete())
            await rig.wait_until(lambda: len(parent.child_terminals(done)) == 1)
            await asyncio.sleep(0.3)  # folded and committed
        async with rig.watcher() as upgraded:
            assert upgraded.uses_changelog
            await rig.wait_until(lambda: len(upgraded.restores) == aion_settings.partitions)
            replayed = [r for r in upgraded.restores.values() if "replayed_to" in r]
            assert any(int(r["replayed_to"]) > 0 for r in replayed)  # built from the log
            assert upgraded.state.watch_count() == 1
        async with rig.watcher() as again:
            await rig.wait_until(lambda: len(again.restores) == aion_settings.partitions)
            assert all("replayed_to" not in r for r in again.restores.values())
            assert again.state.watch_count() == 1  # open_child's watch, from the changelog
            home = partition_for(parent.workflow_id, aion_settings.partitions)
            assert int(again.restores[home]["open_workflows"]) >= 1  # type: ignore[call-overload]
            await asyncio.sleep(FAST.grace_period * 2)
            assert len(rig.commands) == 1  # nothing re-issued for what was recorded
            await rig.publish(open_child.complete())
            await rig.wait_until(lambda: len(parent.child_terminals(open_child)) == 1)
            assert again.metrics.value("aion_watcher_records_issued_total") == 1


async def _unbuild(settings: Settings) -> None:
    """A ``building`` marker on every partition: the changelog reads as never completed."""
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        for partition in range(settings.partitions):
            await producer.send_and_wait(
                Topics(settings.topic_prefix).watcher_state,
                Marker("building", -1).encode(),
                key=MARKER_KEY,
                partition=partition,
            )
    finally:
        await producer.stop()


async def test_a_rebuild_over_an_earlier_build_keeps_every_fact(aion_settings: Settings) -> None:
    async with Rig(aion_settings) as rig:
        parent, open_child = rig.flow(), rig.flow()
        async with rig.watcher() as first:
            await rig.publish(parent.start(), open_child.start(parent))
            await rig.wait_until(lambda: first.state.watch_count() == 1)
            await asyncio.sleep(0.3)  # folded, logged and committed
        await _unbuild(aion_settings)
        async with rig.watcher() as rebuilt:  # its local store holds the first build
            await rig.wait_until(lambda: len(rebuilt.restores) == aion_settings.partitions)
            assert any("replayed_to" in r for r in rebuilt.restores.values())
            await rig.wait_until(lambda: not rebuilt.rebuilding())
            await asyncio.sleep(0.3)
        async with rig.watcher() as again:
            await rig.wait_until(lambda: len(again.restores) == aion_settings.partitions)
            assert all("replayed_to" not in r for r in again.restores.values())
            home = partition_for(parent.workflow_id, aion_settings.partitions)
            assert int(again.restores[home]["open_workflows"]) >= 1  # type: ignore[call-overload]
            assert again.state.watch_count() == 1
            assert again.state.current_run(parent.workflow_id) is not None
