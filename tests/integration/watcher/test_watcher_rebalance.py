"""Two watchers in one group: one is SIGKILLed, the other takes its partitions over.

Watcher B is a real ``python -m aion_watcher`` subprocess (so it can die by SIGKILL, leaving no
commit, no LeaveGroup); watcher A runs in-process. The test plays the engine (``harness.Rig``):
the record rule it applies is the engine's own, so a record issued twice — by B before it died
and by A after it re-read B's uncommitted offsets — is absorbed there, and a record lost in the
handover would leave a parent short of a child.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from pathlib import Path

import pytest

from aion_common.kafka.topics import partition_for
from aion_common.settings import Settings
from aion_watcher import WatcherService

from .harness import FAST, Flow, Rig, assigned_partitions, spawn_watcher

pytestmark = [pytest.mark.kafka]

PARTITIONS = 6
PARENTS = 12
CHILDREN = 5


async def _until(predicate: object, what: str, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_survivor_takes_the_killed_watchers_partitions_and_records_every_terminal_once(
    aion_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(aion_settings, partitions=PARTITIONS)
    async with Rig(settings) as rig:
        parents = [rig.flow() for _ in range(PARENTS)]
        children: dict[str, list[Flow]] = {
            p.workflow_id: [rig.flow() for _ in range(CHILDREN)] for p in parents
        }
        await rig.publish(*(p.start() for p in parents))
        await rig.publish(*(c.start(p) for p in parents for c in children[p.workflow_id]))

        b_log = tmp_path / "watcher-b.log"
        b = spawn_watcher(
            settings,
            b_log,
            AION_INSTANCE_ID="watcher-b",
            AION_WATCHER_GRACE_MS="600",
            AION_WATCHER_SWEEP_MS="100",
        )
        a = WatcherService(settings, FAST)
        running: asyncio.Task[None] | None = None
        try:
            await _until(
                lambda: len(assigned_partitions(b_log)) == PARTITIONS, "watcher B's partitions", 60
            )
            await a.start()
            running = asyncio.create_task(a.run())
            # A joins: the group splits the partitions between A and B.
            await _until(
                lambda: 0 < len(a.state.owned) < PARTITIONS and not a.rebuilding(),
                "a split between the two watchers",
                60,
            )
            b_partitions = set(range(PARTITIONS)) - a.state.owned

            # Half the children end while both run; each is recorded by whichever owns it.
            first = [c for cs in children.values() for c in cs[: CHILDREN // 2]]
            await rig.publish(*(c.complete(c.workflow_id) for c in first))
            await rig.wait_until(lambda: all(rig.commands_for(c) for c in first), timeout=30)
            by_b = [c for c in first if partition_for(c.workflow_id, PARTITIONS) in b_partitions]
            assert by_b, "watcher B must have recorded some terminals before it dies"

            b.send_signal(signal.SIGKILL)  # no commit, no LeaveGroup: its session must expire
            b.wait()
            # The rest end while B is dead: those on B's partitions wait for the takeover.
            rest = [c for cs in children.values() for c in cs[CHILDREN // 2 :]]
            await rig.publish(*(c.fail(f"boom {c.workflow_id}") for c in rest))
            orphaned = [c for c in rest if partition_for(c.workflow_id, PARTITIONS) in b_partitions]
            assert orphaned, "some terminals must land on the killed watcher's partitions"

            await _until(
                lambda: a.state.owned == set(range(PARTITIONS)), "A to own every partition", 60
            )
            await rig.wait_until(
                lambda: all(len(p.child_terminals()) == CHILDREN for p in parents), timeout=60
            )
            await asyncio.sleep(FAST.grace_period * 2)  # sweeps and re-reads run; nothing more
        finally:
            if b.poll() is None:
                b.kill()
                b.wait()
            await a.stop()
            if running is not None:
                await running

    for parent in parents:
        for child in children[parent.workflow_id]:
            assert len(parent.child_terminals(child)) == 1, (parent.workflow_id, child.workflow_id)
            ids = {c.command_id for c in rig.commands_for(child)}
            assert len(ids) == 1, f"{child.workflow_id}: one deterministic record id, got {ids}"
    terminals = PARENTS * CHILDREN
    print(
        f"B owned {sorted(b_partitions)}; records issued {len(rig.commands)} for "
        f"{terminals} terminals ({len(rig.commands) / terminals:.2f} per terminal; "
        f"{len(orphaned)} ended while B was dead)"
    )
