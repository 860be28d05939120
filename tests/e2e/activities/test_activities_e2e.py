"""Activities end to end, on a real broker: the engine, a worker process and the views.

Each scenario starts a workflow through the API and reads its outcome and history back from
the views; the activities count their executions in files the test reads (see :mod:`.flows`).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aion import AionApiError, AionClient
from aion.testing import AionStack, wait_for_workflow
from aion_common.codecs import Codec
from aion_common.domain import CompleteActivity, Payload, activity_outcome_id
from aion_common.kafka.producer import KeyedProducer
from aion_common.kafka.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def runs(directory: Path, key: str) -> list[int]:
    """The attempt number of each execution of ``key``."""
    path = directory / f"{key}.runs"
    return [int(line) for line in path.read_text(encoding="utf-8").split()] if path.exists() else []


async def run(client: AionClient, workflow_id: str, spec: dict[str, Any], timeout: float = 30):
    await client.start("e2e.activity", spec, id=workflow_id)
    return await wait_for_workflow(client, workflow_id, timeout=timeout)


async def test_an_activity_failing_twice_then_succeeding(
    client: AionClient, runs_dir: Path
) -> None:
    spec = {"activity": "flaky", "args": [str(runs_dir), "f", 2], "start_to_close": 10}
    done = await run(client, "flaky-1", spec)
    assert done.status == "COMPLETED"
    assert done.result == {"runs": 3, "attempt": 3}
    types = done.event_types
    assert types.count("ActivityAttemptFailed") == 2
    assert types.count("ActivityCompleted") == 1
    failed = [e for e in done.history if e.event_type == "ActivityAttemptFailed"]
    assert failed[0].fields["error"]["error_type"] == "ConnectionError"
    assert "transient failure 1 of 2" in failed[0].fields["error"]["message"]
    assert "flows.py" in failed[0].fields["error"]["traceback"]
    assert runs(runs_dir, "f") == [1, 2, 3]


async def test_a_non_retryable_error_is_not_retried(client: AionClient, runs_dir: Path) -> None:
    spec = {"activity": "declined", "args": [str(runs_dir), "d"], "start_to_close": 10}
    done = await run(client, "declined-1", spec)
    assert done.result["error"] == {
        "type": "CardDeclined",
        "message": "CardDeclined: card declined",
        "attempt": 1,
        "timeout": None,
        "non_retryable": True,
        "cancelled": False,
    }
    assert "ActivityAttemptFailed" not in done.event_types
    assert runs(runs_dir, "d") == [1]


async def test_a_hanging_attempt_times_out_and_is_retried(
    client: AionClient, runs_dir: Path
) -> None:
    spec = {"activity": "hangs_first", "args": [str(runs_dir), "h"], "start_to_close": 1}
    done = await run(client, "hangs-1", spec)
    assert done.result == 2
    failed = next(e for e in done.history if e.event_type == "ActivityAttemptFailed")
    assert failed.fields["timeout"] == "START_TO_CLOSE"
    assert runs(runs_dir, "h") == [1, 2]


async def test_a_silent_attempt_times_out_and_the_next_sees_its_heartbeat(
    client: AionClient, runs_dir: Path
) -> None:
    spec = {
        "activity": "goes_silent",
        "args": [str(runs_dir), "s"],
        "start_to_close": 30,
        "heartbeat_timeout": 1,
    }
    done = await run(client, "silent-1", spec)
    assert done.result == {"attempt": 2, "seen": {"step": 2}}
    failed = next(e for e in done.history if e.event_type == "ActivityAttemptFailed")
    assert failed.fields["timeout"] == "HEARTBEAT"
    assert "ActivityHeartbeatRecorded" in done.event_types


async def test_schedule_to_close_ends_a_retrying_activity(
    client: AionClient, runs_dir: Path
) -> None:
    spec = {
        "activity": "always_fails",
        "args": [str(runs_dir), "a"],
        "start_to_close": 5,
        "schedule_to_close": 2,
    }
    done = await run(client, "s2c-1", spec)
    error = done.result["error"]
    assert error["timeout"] == "SCHEDULE_TO_CLOSE"
    assert error["message"] == "RuntimeError: still broken"
    assert len(runs(runs_dir, "a")) >= 2, "it was retried until the deadline"
    assert done.event_types[-2] == "ActivityTimedOut"


@pytest.mark.parametrize(
    "activity", ["heartbeats_until_cancelled", "sync_heartbeats_until_cancelled"]
)
async def test_cancelling_the_workflow_reaches_a_heartbeating_activity(
    client: AionClient, activity_stack: AionStack, runs_dir: Path, activity: str
) -> None:
    workflow_id = f"cancel-{activity}"
    spec = {"activity": activity, "args": [str(runs_dir), "c"], "start_to_close": 60}
    await client.start("e2e.activity", spec, id=workflow_id)
    for _ in range(200):  # until the activity runs
        if runs(runs_dir, "c"):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    await client.cancel(workflow_id, "test says stop")
    done = await wait_for_workflow(client, workflow_id, timeout=30)
    assert done.status == "CANCELLED"
    marker = runs_dir / "c.cancelled"
    for _ in range(100):
        if marker.exists():
            break
        await asyncio.sleep(0.05)
    assert marker.read_text(encoding="utf-8") == (
        "sync" if activity.startswith("sync") else "async"
    )


async def test_workflow_code_doing_io_is_blocked_naming_the_call_and_others_go_on(
    client: AionClient, runs_dir: Path
) -> None:
    # refused I/O is a defect of the code, not of the input: the run waits, blocked, for
    # code that does its I/O in an activity (issue 14), instead of failing for good
    await client.start("e2e.opens_a_file", "/etc/hostname", id="io-1")
    outcome = await client.result("io-1", wait=30)
    assert outcome.status == "BLOCKED"
    blocked = (await client.describe("io-1")).current_run
    assert blocked.error_type == "SandboxViolation"
    assert "open('/etc/hostname'" in (blocked.error_message or "")
    assert "activity" in (blocked.error_message or "")
    after = await run(
        client,
        "after-io",
        {"activity": "flaky", "args": [str(runs_dir), "x", 0], "start_to_close": 5},
    )
    assert after.status == "COMPLETED"


async def test_an_unknown_activity_fails_with_what_the_worker_has(client: AionClient) -> None:
    done = await run(client, "unknown-1", {"activity": "chrage", "args": [], "start_to_close": 5})
    error = done.result["error"]
    assert (error["type"], error["non_retryable"]) == ("ActivityNotRegistered", True)
    assert "'chrage' is not registered" in error["message"]
    assert "flaky" in error["message"]


async def test_bad_records_are_dead_lettered_or_refused_and_nothing_stops(
    client: AionClient, activity_stack: AionStack, runs_dir: Path
) -> None:
    settings = activity_stack.settings
    topics = Topics(settings.topic_prefix)
    codec = Codec()
    async with KeyedProducer(settings) as producer:
        # an undecodable task record, and a report for an activity that does not exist
        await producer.send(topics.tasks("default"), "junk-task", b"\x00not avro")
        report = CompleteActivity(
            command_id=activity_outcome_id("no-such-activity", 1, "completed"),
            issued_at=datetime.now(UTC),
            workflow_id="flaky-1",
            run_id="no-such-run",
            activity_id="no-such-activity",
            attempt=1,
            result=Payload.from_json(1),
        )
        await producer.send(topics.commands, "flaky-1", codec.encode_command(report))
    refusal = None
    for _ in range(100):
        found = await client.refusals("flaky-1")
        refusal = next((r for r in found if r.command_id == report.command_id), None)
        if refusal is not None:
            break
        await asyncio.sleep(0.1)
    assert refusal is not None
    assert refusal.code == "UNKNOWN_ACTIVITY"
    done = await run(
        client,
        "after-junk",
        {"activity": "flaky", "args": [str(runs_dir), "j", 0], "start_to_close": 5},
    )
    assert done.status == "COMPLETED", "the worker and engine kept going"


async def test_describe_shows_a_pending_activity(client: AionClient, runs_dir: Path) -> None:
    spec = {
        "activity": "always_fails",
        "args": [str(runs_dir), "p"],
        "start_to_close": 5,
        "schedule_to_close": 60,
    }
    await client.start("e2e.activity", spec, id="pending-1")
    description = None
    for _ in range(100):
        with contextlib.suppress(AionApiError):  # 404 until the views have it
            description = await client.describe("pending-1")
        pending = () if description is None else description.pending_activities
        if pending and pending[0].last_error_message:
            break
        await asyncio.sleep(0.1)
    assert description is not None
    activity = description.pending_activities[0]
    assert activity.activity_type == "always_fails"
    assert activity.attempt >= 1
    assert "still broken" in (activity.last_error_message or "")
    await client.terminate("pending-1", "done looking")


# -- local steps (ctx.run): the engine runs them, no worker (decision 45) ----------------------


async def test_a_local_step_runs_in_the_engine(client: AionClient, runs_dir: Path) -> None:
    await client.start("e2e.local", {"step": "flaky", "args": [str(runs_dir), "l1", 0]}, id="l-1")
    done = await wait_for_workflow(client, "l-1", timeout=30)
    assert done.result == 1
    scheduled = next(e for e in done.history if e.event_type == "ActivityScheduled")
    assert scheduled.fields["options"]["task_queue"] == "aion.local"
    assert scheduled.fields["activity_type"] == "tests.e2e.activities.flows.local_flaky"
    assert "ActivityStarted" not in done.event_types
    assert done.event_types.count("ActivityCompleted") == 1
    assert runs(runs_dir, "l1") == [1]


async def test_a_failing_local_step_is_retried(client: AionClient, runs_dir: Path) -> None:
    spec = {"step": "flaky", "args": [str(runs_dir), "l2", 2]}
    await client.start("e2e.local", spec, id="l-2")
    done = await wait_for_workflow(client, "l-2", timeout=30)
    assert done.result == 3
    assert done.event_types.count("ActivityAttemptFailed") == 2
    assert done.event_types.count("ActivityCompleted") == 1
    failed = next(e for e in done.history if e.event_type == "ActivityAttemptFailed")
    assert failed.fields["error"]["error_type"] == "ConnectionError"
    assert len(runs(runs_dir, "l2")) == 3


async def test_a_local_step_past_its_bound_is_refused_advising_an_activity(
    client: AionClient, runs_dir: Path
) -> None:
    spec = {"step": "slow", "args": [str(runs_dir), "l3", 3], "start_to_close": 0.2}
    await client.start("e2e.local", spec, id="l-3")
    done = await wait_for_workflow(client, "l-3", timeout=30)
    error = done.result["error"]
    assert (error["type"], error["non_retryable"]) == ("LocalStepTooLong", True)
    assert "run this as an activity" in error["message"]
    assert len(runs(runs_dir, "l3")) == 1


async def test_reads_after_a_result_agree_with_it(client: AionClient, runs_dir: Path) -> None:
    """The result is answered from the run's ending on the log, before the views have it
    (decision 64); describe, history and tree read right after it still show the run closed."""
    for n in range(15):
        workflow_id = f"l-read-{n}"
        spec = {"step": "flaky", "args": [str(runs_dir), f"read-{n}", 0]}
        await client.start("e2e.local", spec, id=workflow_id)
        outcome = await client.result(workflow_id, wait=30)
        described = await client.describe(workflow_id)
        history = await client.history(workflow_id)
        tree = await client.tree(workflow_id)
        assert (outcome.status, outcome.result) == ("COMPLETED", 1)
        assert described.current_run.status == "COMPLETED"
        assert described.current_run.run_id == outcome.run_id
        assert history.events[-1].event_type == "WorkflowCompleted"
        assert tree.status == "COMPLETED"
