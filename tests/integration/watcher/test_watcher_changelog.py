"""The watcher's changelog on a real broker: a restart restores its open watches from the
changelog instead of re-reading the history; an upgrade from a log without one builds it; a
rebuild over an earlier build (an interrupted build, an unreadable record) keeps every fact."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from aion_common.kafka import partition_for
from aion_common.kafka.changelog import MARKER_KEY, Marker
from aion_common.kafka.options import client_options
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_watcher import ParentStatus
from aion_watcher.changelog import WorkflowFacts, encode_workflow, workflow_key
from aion_watcher.stores import WatcherStores

from .harness import FAST, Flow, Rig


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


async def test_a_cold_restore_serves_open_watches_while_closed_workflows_load(
    aion_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision 57: a watcher with no local store restores open work and goes on at once; the
    closed workflows load in the background (held here), and a child's terminal whose parent
    closed waits for them — then it is known to need no record."""
    async with Rig(aion_settings) as rig:
        parent, child = rig.flow(), rig.flow()
        gone, orphan = rig.flow(), rig.flow()  # a parent that closed before its child ended
        async with rig.watcher() as first:
            await rig.publish(parent.start(), child.start(parent), gone.start())
            await rig.publish(orphan.start(gone), gone.complete())
            flow = [rig.flow() for _ in range(4)]
            await rig.publish(*(f.start() for f in flow), *(f.complete() for f in flow))
            await rig.wait_until(lambda: first.state.watch_count() == 1)
            await asyncio.sleep(0.5)  # folded, logged and committed

        gate = asyncio.Event()
        real = WatcherStores.load_closed_store

        async def gated(self: WatcherStores, partition: int, progress: Any = None) -> Any:
            await gate.wait()
            return await real(self, partition, progress)

        monkeypatch.setattr(WatcherStores, "load_closed_store", gated)
        cold = Rig.settings_for(aion_settings, instance_id="cold-watcher")  # no local store
        async with rig.watcher(settings=cold) as again:
            assert again.state.loading_partitions == frozenset(range(aion_settings.partitions))
            assert again.health()["loading_closed"]
            assert again.state.watch_count() == 1  # open work restored
            await rig.publish(child.complete())  # its parent is open: recorded at once
            await rig.wait_until(lambda: len(parent.child_terminals(child)) == 1)
            await rig.publish(orphan.complete())  # its parent's status needs the closed load
            home = partition_for(orphan.workflow_id, aion_settings.partitions)
            await rig.wait_until(lambda: home in again._held)
            assert rig.commands_for(orphan) == []
            gate.set()
            await rig.wait_until(lambda: not again.state.loading_partitions)
            await rig.wait_until(lambda: home not in again._held)
            await rig.wait_until(
                lambda: again.metrics.value("aion_watcher_records_suppressed_total") == 1
            )
            assert rig.commands_for(orphan) == []  # the parent closed: nothing to record
            assert all("closed_loaded_s" in r for r in again.restores.values())
            assert again.state.current_run(flow[0].workflow_id) == flow[0].run_id


async def test_a_changelog_in_the_single_topic_layout_is_built_again(
    aion_settings: Settings,
) -> None:
    """An upgrade from decision 47's layout (closed workflows' records in watcher-state, a
    build marker without a version): the watcher builds both changelogs again from the event
    log, tombstoning the old closed records, and a cold restore then reads open work only."""
    async with Rig(aion_settings) as rig:
        parent, open_child = rig.flow(), rig.flow()
        closed = [rig.flow() for _ in range(6)]
        async with rig.watcher(dataclasses.replace(FAST, changelog=False)):
            await rig.publish(parent.start(), open_child.start(parent))
            await rig.publish(*(c.start() for c in closed), *(c.complete() for c in closed))
            await asyncio.sleep(0.5)  # folded and committed
        await _write_single_topic_layout(aion_settings, closed)
        async with rig.watcher() as upgraded:
            await rig.wait_until(lambda: len(upgraded.restores) == aion_settings.partitions)
            assert all("replayed_to" in r for r in upgraded.restores.values())
            await rig.wait_until(lambda: not upgraded.rebuilding())
            await asyncio.sleep(0.3)
        cold = Rig.settings_for(aion_settings, instance_id="cold-after-upgrade")
        async with rig.watcher(settings=cold) as again:
            await rig.wait_until(lambda: not again.state.loading_partitions)
            assert all("replayed_to" not in r for r in again.restores.values())
            assert again.state.watch_count() == 1
            stores = again._stores
            assert stores is not None
            for partition in range(aion_settings.partitions):
                keys = [k for k, _, _ in stores.store(partition).scan_all()]
                assert all(
                    not k.startswith(b"w")
                    or k[1:].decode() in {parent.workflow_id, open_child.workflow_id}
                    for k in keys
                ), keys  # no closed workflow's record left in watcher-state
            for flow in closed:
                assert again.state.parent_status(flow.workflow_id, flow.run_id) is (
                    ParentStatus.CLOSED
                )


async def _write_single_topic_layout(settings: Settings, closed: list[Flow]) -> None:
    """What decision 47's watcher left: closed workflows' records in watcher-state, then a
    ``complete`` marker of layout 1 on every partition."""
    producer = AIOKafkaProducer(**client_options(settings))
    topic = Topics(settings.topic_prefix).watcher_state
    await producer.start()
    try:
        for flow in closed:
            facts = WorkflowFacts(
                workflow_id=flow.workflow_id,
                last_seq=len(flow.history),
                run_id=flow.run_id,
                parent=None,
                open=False,
                runs=(flow.run_id,),
            )
            await producer.send_and_wait(
                topic,
                encode_workflow(facts),
                key=workflow_key(flow.workflow_id),
                partition=partition_for(flow.workflow_id, settings.partitions),
            )
        for partition in range(settings.partitions):
            await producer.send_and_wait(
                topic, Marker("complete", 0).encode(), key=MARKER_KEY, partition=partition
            )
    finally:
        await producer.stop()
