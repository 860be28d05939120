"""End to end: a real engine and a real watcher, the watcher SIGKILLed three times, the broker
stopped for five seconds once.

100 parents x 10 children, each child completing, failing, being cancelled (by a
``CancelWorkflow`` the test sends) or timing out, a third of them after one to three
continue-as-new hops. The test runs on its OWN broker (it stops it). Afterwards ``aion.events``
is read end to end: every parent completed, its history holds exactly one child-terminal event
per child with the right outcome, and its result agrees.

The engine and the watcher run supervised, as in a deployment: a process that exits on its own
is restarted and counted. The watcher is expected never to exit on its own (the outage included);
the engine's exits are reported, not asserted, since the engine is not under test here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from aion_common.codecs import Codec
from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    RecordChildTerminal,
    WorkflowCompleted,
)
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_common.testing.broker import KafkaBroker
from e2e.engine.harness import EngineProcess, count_records, read_all_events, stacks_of

from .harness import Driver, WatcherProcess, engine_env
from .workflows import expected_outcome

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

_log = logging.getLogger("aion.e2e.watcher")

PARENTS = 100
CHILDREN = 10
KINDS = ("complete", "fail", "cancel", "timeout")
WATCHER_KILLS = 3
OUTAGE_S = 5.0
FEED_S = 40.0


def _parent_spec(index: int, rng: random.Random) -> dict[str, Any]:
    children = []
    for c in range(CHILDREN):
        kind = KINDS[(index + c) % len(KINDS)]
        children.append(
            {
                "id": f"wx-{index:03d}-c{c}",
                "kind": kind,
                "value": index * 100 + c,
                "hops": rng.choice((1, 2, 3)) if rng.random() < 1 / 3 else 0,
                "sleep": rng.choice((0, 0, 0.3, 1.0)) if kind in ("complete", "fail") else 0,
            }
        )
    return {"children": children}


class _Supervisor:
    """Restarts the engine and the watcher when they exit on their own; counts it."""

    def __init__(self, engine: EngineProcess, watcher: WatcherProcess) -> None:
        self.engine, self.watcher = engine, watcher
        self.engine_exits = 0
        self.watcher_exits: list[tuple[int, int | None]] = []

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            if not self.engine.alive():
                self.engine_exits += 1
                _log.warning("engine exited on its own; restarting (see %s)", self.engine.log_path)
                self.engine.start()
            if not self.watcher.alive():
                self.watcher_exits.append((self.watcher.starts, self.watcher.exit_code()))
                _log.warning("watcher exited; restarting (see %s)", self.watcher.log_path)
                self.watcher.start()


async def _wait_for(predicate: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _child_terminals(history: list[Event]) -> list[ChildWorkflowCompleted | ChildWorkflowFailed]:
    return [e for e in history if isinstance(e, ChildWorkflowCompleted | ChildWorkflowFailed)]


def _as_outcome(event: ChildWorkflowCompleted | ChildWorkflowFailed) -> dict[str, Any]:
    if isinstance(event, ChildWorkflowCompleted):
        return {"ok": event.result.to_json()}
    return {"error": event.error.message}


async def _record_commands(settings: Settings) -> Counter[str]:
    """Every ``RecordChildTerminal`` on ``aion.commands``, counted by command id."""
    codec, counts = Codec(), Counter[str]()
    topic = Topics(settings.topic_prefix).commands
    for partition in range(settings.partitions):
        async for record in read_partition_to_end(settings, topic, partition):
            command = codec.decode_command(record.value)
            if isinstance(command, RecordChildTerminal):
                counts[command.command_id] += 1
    return counts


async def _trace(settings: Settings, parent_id: str) -> str:
    """What the logs hold for one parent: its events, its children's last events, and every
    command keyed to it (for a failure's message: which side dropped what)."""
    codec, topics = Codec(), Topics(settings.topic_prefix)
    lines = [f"trace of {parent_id}:"]
    lines.extend(
        f"  event p{partition}@{offset} {event.workflow_id} #{event.seq} {type(event).__name__}"
        for partition, offset, batch in await read_all_events(settings)
        for event in batch.events
        if event.workflow_id == parent_id or event.workflow_id.startswith(parent_id + "-")
    )
    for partition in range(settings.partitions):
        async for record in read_partition_to_end(settings, topics.commands, partition):
            if record.key is not None and record.key.decode(errors="replace") == parent_id:
                command = codec.decode_command(record.value)
                lines.append(
                    f"  command p{partition}@{record.offset} {type(command).__name__} "
                    f"{command.command_id} {getattr(command, 'child_workflow_id', '')}"
                )
    lines.extend(await _ends(settings))
    return "\n".join(lines)


async def _ends(settings: Settings) -> list[str]:
    """Each partition's last stable offset beside its high watermark: a transaction left open
    holds every read_committed reader (the watcher, the views) at the first."""
    topics = Topics(settings.topic_prefix)
    lines = []
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, isolation_level=isolation
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in (
                    topics.events,
                    topics.commands,
                    topics.engine_state,
                    topics.engine_closed,
                )
                for p in range(settings.partitions)
            ]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        lines.append(
            f"  ends ({isolation}): "
            + " ".join(f"{tp.topic}[{tp.partition}]={ends[tp]}" for tp in tps)
        )
    return lines


async def test_every_child_terminal_recorded_once_through_watcher_kills_and_an_outage(
    own_broker: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("AION_CHAOS_SEED", random.randrange(2**32)))
    print(f"watcher chaos seed={seed} (rerun with AION_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers, topic_prefix="chaos", partitions=3
    )
    await ensure_topics(settings, Topics(settings.topic_prefix))
    for name, value in engine_env().items():
        monkeypatch.setenv(name, value)

    parents = {f"wx-{i:03d}": _parent_spec(i, rng) for i in range(PARENTS)}
    children = {c["id"]: c for spec in parents.values() for c in spec["children"]}
    engine = EngineProcess(settings, tmp_path, transactions="on", instance_id="engine")
    watcher = WatcherProcess(
        settings,
        tmp_path,
        instance_id="watcher",
        # the watcher issues every record itself too (the engine's, decision 44, are then
        # duplicates): its own path is what the kills exercise
        extra_env={
            "AION_WATCHER_GRACE_MS": "3000",
            "AION_WATCHER_SWEEP_MS": "500",
            "AION_WATCHER_ENGINE_REPORTS": "0",
        },
    )
    supervisor = _Supervisor(engine, watcher)
    engine.start()
    watcher.start()
    supervising: asyncio.Task[None] | None = None
    chaos_log: list[str] = []
    began = time.monotonic()

    def note(what: str) -> None:
        chaos_log.append(f"{time.monotonic() - began:6.1f}s {what}")
        print(chaos_log[-1])

    try:
        async with Driver(settings) as driver:
            driver.cancel_open = {i for i, c in children.items() if c["kind"] == "cancel"}
            await _wait_for(lambda: len(watcher.assigned()) > 0, "the watcher's partitions", 60)
            supervising = asyncio.create_task(supervisor.run())

            async def feed() -> None:
                chunk = 10
                for start in range(0, PARENTS, chunk):
                    for workflow_id in list(parents)[start : start + chunk]:
                        await driver.start_workflow("wx.parent", workflow_id, parents[workflow_id])
                    await asyncio.sleep(FEED_S * chunk / PARENTS)
                note("all parents started")

            feeding = asyncio.create_task(feed())
            # The chaos, while parents are still arriving and children ending.
            for at, action in sorted(
                # Kills >= 12 s apart: a SIGKILLed member holds the group's rebalance until its
                # 10 s session expires, so closer kills would only find nothing to take over.
                [
                    (rng.uniform(3, 5), "kill"),
                    (rng.uniform(17, 19), "kill"),
                    (rng.uniform(26, 28), "outage"),
                    (rng.uniform(44, 46), "kill"),
                ]
            ):
                await asyncio.sleep(max(0.0, began + at - time.monotonic()))
                if action == "kill":
                    seen = driver.child_terminals_seen
                    watcher.kill()
                    note(f"watcher SIGKILLed ({seen} child terminals recorded so far)")
                    watcher.start()
                else:
                    note("broker stopping")
                    # Blocks this loop while the broker is down; the services are subprocesses.
                    own_broker.restart(down_for=OUTAGE_S)
                    note(f"broker back after a {OUTAGE_S:.0f} s outage")
            await feeding
            try:
                await driver.wait_closed(set(parents), timeout=150)
            except TimeoutError:
                open_parents = sorted(set(parents) - driver.closed)
                pytest.fail(
                    f"{len(open_parents)} parents still open after 150 s: {open_parents[:10]}\n"
                    + "\n".join(chaos_log)
                    + "\n"
                    + stacks_of(engine)
                    + "\n"
                    + stacks_of(watcher)
                    + "\n"
                    + await _trace(settings, open_parents[0])
                )
            note("all parents closed")
            if driver.send_failures:
                note(f"the driver retried {len(driver.send_failures)}: {driver.send_failures[:3]}")
    finally:
        if supervising is not None:
            supervising.cancel()
            await asyncio.gather(supervising, return_exceptions=True)
        watcher_status = watcher.stop()
        engine.stop()

    histories: dict[str, dict[int, Event]] = {}
    for _partition, _offset, batch in await read_all_events(settings):
        for event in batch.events:
            histories.setdefault(event.workflow_id, {}).setdefault(event.seq, event)

    for parent_id, spec in parents.items():
        history = [histories[parent_id][s] for s in sorted(histories[parent_id])]
        assert isinstance(history[-1], WorkflowCompleted), f"{parent_id}: {history[-1]!r}"
        terminals = _child_terminals(history)
        per_child = Counter(e.child_workflow_id for e in terminals)
        assert per_child == Counter(c["id"] for c in spec["children"]), (
            f"{parent_id}: child-terminal events per child {dict(per_child)}"
        )
        for event in terminals:
            assert _as_outcome(event) == expected_outcome(children[event.child_workflow_id]), (
                f"{parent_id}: {event!r}"
            )
        result = history[-1].result.to_json()
        assert result == {c["id"]: expected_outcome(c) for c in spec["children"]}

    commands = await _record_commands(settings)
    dead = await count_records(settings, Topics(settings.topic_prefix).dead_letter)
    hops = sum(c["hops"] for c in children.values())
    print(
        f"children={len(children)} continue-as-new hops={hops} "
        f"kinds={dict(Counter(c['kind'] for c in children.values()))} "
        f"record commands={sum(commands.values())} distinct={len(commands)} "
        f"re-issued={sum(n - 1 for n in commands.values())} dead_letters={dead} "
        f"watcher starts={watcher.starts} engine exits={supervisor.engine_exits} "
        f"watcher exits={supervisor.watcher_exits} elapsed={time.monotonic() - began:.1f}s"
    )
    assert len(commands) == len(children), "one record id per (parent run, child)"
    assert dead == 0
    assert watcher.starts == WATCHER_KILLS + 1, "the watcher exited on its own (see its logs)"
    assert supervisor.watcher_exits == []
    assert watcher_status == 0, "the last watcher did not stop cleanly on SIGTERM"
