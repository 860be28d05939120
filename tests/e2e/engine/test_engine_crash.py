"""The engine as a subprocess, SIGKILLed at random points and restarted, in both delivery modes.

Test code plays the watcher (in-process, reading events from the beginning). Afterwards every
parent has its right result and ``<prefix>.events`` read end to end holds every
(workflow_id, seq) with no gap.

What is asserted about duplicates on the log:

- transactional (``on``): every (workflow_id, seq) appears in exactly one record, because a
  killed instance's open transaction is aborted when the next owner's producer fences it;
- at-least-once (``off``): a (workflow_id, seq) may legitimately appear in more than one record
  (an event batch acknowledged by the broker but whose offset commit died with the process is
  re-decided after restart); readers dedupe by seq. So: no two DIFFERENT events may share a
  (workflow_id, seq) — copies must be equal in everything but ``recorded_at`` (the engine stamps
  re-decided events with the wall clock; see the module note in the report) — and after dedupe
  the seqs run 1..n with no gap and ``check_history`` passes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aion_common.domain import ChildWorkflowCompleted, Event, EventBatch, check_history
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

from .harness import (
    EngineProcess,
    Watcher,
    assert_changelog_matches_events,
    count_records,
    expected_sum,
    read_all_events,
    result_of,
    stacks_of,
)

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

_log = logging.getLogger("aion.e2e.crash")

PARENTS = 500
MIN_KILLS = 5


def _spec(index: int, rng: random.Random) -> dict[str, object]:
    return {
        "base": index,
        "children": rng.randint(1, 3),
        "sleep_parent": rng.random() < 0.25,
        "sleep_child": rng.random() < 0.25,
    }


async def _wait_acquired(engine: EngineProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.acquired():
            return
        if not engine.alive():
            raise AssertionError(f"engine exited: {stacks_of(engine)}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"engine acquired no partition in {timeout}s: {stacks_of(engine)}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _strip_clock(event: Event) -> Event:
    return dataclasses.replace(event, recorded_at=_EPOCH)


def check_log(
    records: list[tuple[int, int, EventBatch]],
    parents: dict[str, dict[str, object]],
    *,
    exactly_once: bool,
) -> dict[str, int]:
    """Assert the log's (workflow_id, seq) invariants and every parent's result."""
    copies: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for _partition, _offset, batch in records:
        for event in batch.events:
            copies[(event.workflow_id, event.seq)].append(event)

    duplicated = {key: evs for key, evs in copies.items() if len(evs) > 1}
    if exactly_once:
        assert not duplicated, f"{len(duplicated)} (workflow_id, seq) duplicated, e.g. " + repr(
            next(iter(duplicated.items()))
        )
    for key, evs in duplicated.items():
        assert all(_strip_clock(e) == _strip_clock(evs[0]) for e in evs), (
            f"different events share {key}: {evs}"
        )

    histories: dict[str, list[Event]] = defaultdict(list)
    for (workflow_id, _seq), evs in sorted(copies.items()):
        histories[workflow_id].append(evs[0])
    for workflow_id, history in histories.items():
        assert [e.seq for e in history] == list(range(1, len(history) + 1)), (
            f"{workflow_id}: gap in seqs {[e.seq for e in history]}"
        )
        check_history(history)

    for workflow_id, spec in parents.items():
        history = histories[workflow_id]
        assert result_of(history[-1]) == expected_sum(spec), workflow_id
        recorded = [e for e in history if isinstance(e, ChildWorkflowCompleted)]
        assert len(recorded) == spec["children"], workflow_id
        assert len({e.child_workflow_id for e in recorded}) == spec["children"]
    children = len(histories) - len(parents)
    assert children == sum(int(s["children"]) for s in parents.values())  # type: ignore[call-overload]
    return {
        "records": len(records),
        "events": len(copies),
        "duplicated_keys": len(duplicated),
        "workflows": len(histories),
    }


@pytest.mark.parametrize("transactions", ["on", "off"])
async def test_engine_survives_sigkill_at_random_points(
    aion_settings: Settings, tmp_path: Path, transactions: str
) -> None:
    seed = int(os.environ.get("AION_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed={seed} (rerun with AION_CRASH_SEED={seed})")
    _log.warning("crash test seed=%s", seed)
    rng = random.Random(seed)
    settings = aion_settings
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)

    engine = EngineProcess(settings, tmp_path, transactions=transactions, instance_id="engine-1")
    watcher = Watcher(settings)
    await watcher.start()
    engine.start()
    parents = {f"p-{i:04d}": _spec(i, rng) for i in range(PARENTS)}

    async def feed() -> None:
        # Paced, so that starts keep arriving across the kills.
        for chunk_start in range(0, PARENTS, 25):
            for workflow_id in list(parents)[chunk_start : chunk_start + 25]:
                await watcher.send_start("e2e.parent", parents[workflow_id], workflow_id)
            await watcher.flush()
            await asyncio.sleep(1.6)

    feeder = asyncio.create_task(feed())
    kills = 0
    try:
        while kills < MIN_KILLS or not feeder.done():
            # Let the (re)started engine join and acquire, then kill it at a random point.
            await _wait_acquired(engine, timeout=60)
            delay = rng.uniform(0.5, 3.0)
            await asyncio.sleep(delay)
            before = watcher.events_seen
            engine.kill()
            kills += 1
            print(f"kill {kills}: {delay:.2f}s after acquisition; {before} events seen so far")
            engine.start()
        await feeder
        try:
            await watcher.wait_closed(set(parents), timeout=120)
        except AssertionError as err:  # with what the engine was doing, or how it ended
            raise AssertionError(f"{err}\n{stacks_of(engine)}") from err
    finally:
        feeder.cancel()
        engine.stop()
        await watcher.stop()

    records = await read_all_events(settings)
    figures = check_log(records, parents, exactly_once=transactions == "on")
    dead = await count_records(settings, topics.dead_letter)
    refusals = await count_records(settings, topics.replies)
    print(f"mode={transactions} kills={kills} {figures} dead_letters={dead} refusals={refusals}")
    assert kills >= MIN_KILLS
    assert dead == 0, "no command may be dead-lettered in this workload"
    if transactions == "on":
        # every transaction wrote its changelog records and its events, or neither
        assert await assert_changelog_matches_events(settings, tmp_path) == figures["workflows"]
