"""Static membership: an engine SIGKILLed and restarted under the same id resumes at once.

The group's session timeout is 45 s here, so with dynamic membership a restarted instance would
get no partition until its dead predecessor's session expired. The proof that it did not wait
is ordering, not a stopwatch: when a member's session expires the group rebalances into a new
generation, so the restarted instance handling new commands while still in the generation its
predecessor joined means it took the assignment over before that session could expire
(KIP-345: the broker hands a static member's assignment to its new incarnation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

from .harness import EngineProcess, Watcher, expected_sum, read_all_events, result_of, until
from .test_engine_crash import check_log

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SESSION_TIMEOUT_MS = 45_000


def _specs(prefix: str, count: int) -> dict[str, dict[str, object]]:
    return {
        f"{prefix}-{i:03d}": {"base": i, "children": 1 + i % 2, "sleep_child": i % 3 == 0}
        for i in range(count)
    }


@pytest.mark.parametrize("transactions", ["on", "off"])
async def test_sigkilled_static_member_restarts_into_its_assignment(
    aion_settings: Settings, tmp_path: Path, transactions: str
) -> None:
    settings = aion_settings
    await ensure_topics(settings, Topics(settings.topic_prefix))
    engine = EngineProcess(
        settings,
        tmp_path,
        transactions=transactions,
        instance_id="engine-static",
        extra_env={"AION_ENGINE_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)},
    )
    watcher = Watcher(settings)
    await watcher.start()
    engine.start()
    before, after = _specs("before", 30), _specs("after", 30)
    try:
        await until(lambda: len(engine.acquired()) == settings.partitions, 60, "acquisition")
        for workflow_id, spec in before.items():
            await watcher.send_start("e2e.parent", spec, workflow_id)
        await watcher.flush()
        await watcher.wait_closed(set(before), timeout=60)
        first_generation = engine.generations()[-1]

        engine.kill()
        engine.start()  # the same AION_INSTANCE_ID, at once
        for workflow_id, spec in after.items():
            await watcher.send_start("e2e.parent", spec, workflow_id)
        await watcher.flush()
        await watcher.wait_closed(set(after), timeout=120)
        # Read the log only now: everything it shows happened before the commands completed.
        restarted_generations = engine.generations()
        restarted_acquired = engine.acquired()
    finally:
        engine.stop()
        await watcher.stop()

    assert restarted_generations == [first_generation], (
        f"the restarted instance joined generation(s) {restarted_generations}, its predecessor "
        f"{first_generation}: a rebalance happened, so it waited for the old session"
    )
    assert sorted(restarted_acquired) == list(range(settings.partitions))
    for workflow_id, spec in {**before, **after}.items():
        assert result_of(watcher.closed[workflow_id]) == expected_sum(spec)
    figures = check_log(
        await read_all_events(settings), {**before, **after}, exactly_once=transactions == "on"
    )
    print(f"mode={transactions} generation={first_generation} {figures}")
