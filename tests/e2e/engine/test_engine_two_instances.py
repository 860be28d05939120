"""Two engine subprocesses in one group; one is SIGKILLed mid-way and the other takes over."""

from __future__ import annotations

from pathlib import Path

import pytest

from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

from .harness import EngineProcess, Watcher, expected_sum, read_all_events, result_of, until
from .test_engine_crash import check_log

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

WORKFLOWS = 200


async def test_killed_instances_partitions_move_to_the_survivor(
    aion_settings: Settings, tmp_path: Path
) -> None:
    settings = aion_settings
    await ensure_topics(settings, Topics(settings.topic_prefix))
    survivor = EngineProcess(settings, tmp_path, transactions="on", instance_id="engine-a")
    victim = EngineProcess(settings, tmp_path, transactions="on", instance_id="engine-b")
    watcher = Watcher(settings)
    await watcher.start()
    survivor.start()
    await until(survivor.acquired, 60, "engine-a to acquire partitions", poll=0.1)
    victim.start()
    # The group rebalances: engine-b takes some partitions, engine-a keeps the rest.
    await until(victim.acquired, 60, "engine-b to acquire partitions", poll=0.1)
    victims = set(victim.acquired())
    assert victims
    assert victims != set(range(settings.partitions))

    specs: dict[str, dict[str, object]] = {
        f"w-{i:04d}": {"base": i, "children": 1 + i % 3, "sleep_parent": True, "sleep_child": True}
        for i in range(WORKFLOWS)
    }
    try:
        for workflow_id, spec in specs.items():
            await watcher.send_start("e2e.parent", spec, workflow_id)
        await watcher.flush()
        # Mid-way: some parents closed, not all.
        await until(
            lambda: len(watcher.closed) >= WORKFLOWS // 4, 60, "a quarter to close", poll=0.1
        )
        closed_at_kill = len(watcher.closed)
        acquired_before = len(survivor.acquired())
        victim.kill()
        await watcher.wait_closed(set(specs), timeout=120)
    finally:
        victim.stop()
        survivor.stop()
        await watcher.stop()

    total_closed = len(watcher.closed)
    assert closed_at_kill < total_closed, "the kill must land while work was outstanding"
    taken_over = set(survivor.acquired()[acquired_before:])
    assert victims <= taken_over, f"engine-a took {taken_over}, engine-b had {victims}"
    for workflow_id, spec in specs.items():
        assert result_of(watcher.closed[workflow_id]) == expected_sum(spec)
    figures = check_log(await read_all_events(settings), specs, exactly_once=True)
    print(f"victim partitions={sorted(victims)} closed at kill={closed_at_kill} {figures}")
