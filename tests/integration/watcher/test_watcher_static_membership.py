"""A SIGKILLed watcher restarted under the same AION_INSTANCE_ID resumes at once (static member).

The watcher is a real ``python -m aion_watcher`` subprocess with a 45 s session timeout; the test
plays the engine (``harness.Rig``). Without static membership the restarted process would be a
new member and the group would hand it the partitions only once the dead member's session
expired (45 s after the kill); with it, the restarted watcher takes its assignment back when it
joins. The assertion is an ordering, not a latency: every terminal that ended while the watcher
was dead is recorded, exactly once, before the dead member's session could have expired.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import time
from pathlib import Path

import pytest

from aion_common.settings import Settings

from .harness import Flow, Rig, assigned_partitions, spawn_watcher

pytestmark = [pytest.mark.kafka]

PARTITIONS = 4
PARENTS = 6
CHILDREN = 4
SESSION_TIMEOUT_S = 45.0


async def _until(predicate: object, what: str, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_killed_watcher_restarted_with_its_instance_id_records_before_its_session_expires(
    aion_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(aion_settings, partitions=PARTITIONS)
    env = {
        "AION_INSTANCE_ID": "watcher-static",
        "AION_WATCHER_SESSION_TIMEOUT_MS": str(int(SESSION_TIMEOUT_S * 1000)),
        "AION_WATCHER_GRACE_MS": "600",
        "AION_WATCHER_SWEEP_MS": "100",
    }
    async with Rig(settings) as rig:
        parents = [rig.flow() for _ in range(PARENTS)]
        children: dict[str, list[Flow]] = {
            p.workflow_id: [rig.flow() for _ in range(CHILDREN)] for p in parents
        }
        await rig.publish(*(p.start() for p in parents))
        await rig.publish(*(c.start(p) for p in parents for c in children[p.workflow_id]))
        first_log, second_log = tmp_path / "watcher-1.log", tmp_path / "watcher-2.log"
        watcher = spawn_watcher(settings, first_log, **env)
        try:
            await _until(
                lambda: len(assigned_partitions(first_log)) == PARTITIONS, "the first run", 60
            )
            early = [cs[0] for cs in children.values()]
            await rig.publish(*(c.complete("before") for c in early))
            await rig.wait_until(
                lambda: all(len(p.child_terminals()) == 1 for p in parents), timeout=30
            )

            watcher.send_signal(signal.SIGKILL)  # no commit, no LeaveGroup: still a member
            watcher.wait()
            killed_at = time.monotonic()
            late = [c for cs in children.values() for c in cs[1:]]
            await rig.publish(*(c.fail(f"while dead {c.workflow_id}") for c in late))

            watcher = spawn_watcher(settings, second_log, **env)
            await rig.wait_until(
                lambda: all(len(p.child_terminals()) == CHILDREN for p in parents),
                timeout=SESSION_TIMEOUT_S - 5,
            )
            recorded_after = time.monotonic() - killed_at
        finally:
            if watcher.poll() is None:
                watcher.send_signal(signal.SIGTERM)
                try:
                    watcher.wait(30)
                except subprocess.TimeoutExpired:
                    watcher.kill()
                    watcher.wait()

    assert recorded_after < SESSION_TIMEOUT_S, "the restart must not wait out the dead session"
    # The restarted member got every partition back (a rebalance would not change that, but a
    # watcher that did nothing would not log it either).
    assert sorted(set(assigned_partitions(second_log))) == list(range(PARTITIONS))
    for parent in parents:
        for child in children[parent.workflow_id]:
            assert len(parent.child_terminals(child)) == 1, (parent.workflow_id, child.workflow_id)
    print(f"all recorded {recorded_after:.1f} s after the kill (session timeout 45 s)")
