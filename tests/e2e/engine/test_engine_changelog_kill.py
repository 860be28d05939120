"""SIGKILL between the changelog write and the commit: the transaction aborts, both or neither.

The engine subprocess kills itself (``AION_TEST_KILL_BEFORE_COMMIT``, see crash_workflows)
right after the broker acknowledged a transaction's changelog records and before that
transaction commits. Its records stay in the logs, invisible to read_committed readers: the
restarted engine's producer fences the dead one and aborts the transaction. Then every
workflow completes exactly once, and the changelog read cold from Kafka describes exactly the
state the event log does.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

from .harness import (
    EngineProcess,
    Watcher,
    assert_changelog_matches_events,
    read_all_events,
    until,
)
from .test_engine_crash import check_log

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

PARENTS = 40


async def _count(settings: Settings, topic: str, isolation: str) -> int:
    count = 0
    for partition in range(settings.partitions):
        async for _ in read_partition_to_end(
            settings,
            topic,
            partition,
            isolation_level=isolation,  # type: ignore[arg-type]
        ):
            count += 1
    return count


async def test_sigkill_between_changelog_write_and_commit_keeps_both_logs_in_step(
    aion_settings: Settings, tmp_path: Path
) -> None:
    settings = aion_settings
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    rng = random.Random(7)
    parents = {
        f"k-{i:03d}": {"base": i, "children": rng.randint(1, 3), "sleep_child": i % 3 == 0}
        for i in range(PARENTS)
    }
    engine = EngineProcess(
        settings,
        tmp_path,
        transactions="on",
        instance_id="engine-1",
        extra_env={"AION_TEST_KILL_BEFORE_COMMIT": "5"},
    )
    watcher = Watcher(settings)
    await watcher.start()
    engine.start()
    try:
        for workflow_id, spec in parents.items():
            await watcher.send_start("e2e.parent", spec, workflow_id)
        await watcher.flush()
        await until(lambda: not engine.alive(), 120, "the engine's self-inflicted SIGKILL")
        assert engine.exit_code() == -9
        uncommitted = await _count(settings, topics.engine_state, "read_uncommitted")

        engine.extra_env.pop("AION_TEST_KILL_BEFORE_COMMIT")
        engine.start()
        await watcher.wait_closed(set(parents), timeout=120)
    finally:
        engine.stop()
        await watcher.stop()

    # The killed transaction's changelog records were written (read_uncommitted sees them)
    # and never became visible: aborted along with its event batches.
    assert uncommitted > 0
    committed_after = await _count(settings, topics.engine_state, "read_committed")
    uncommitted_after = await _count(settings, topics.engine_state, "read_uncommitted")
    assert uncommitted_after > committed_after, "the aborted records are in the log"
    records = await read_all_events(settings)
    check_log(records, parents, exactly_once=True)
    compared = await assert_changelog_matches_events(settings, tmp_path)
    assert compared == PARENTS + sum(int(s["children"]) for s in parents.values())
