"""The engine under failure: restarts, cancellation with open children, hostile commands."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from aion_common.domain import (
    CancelWorkflow,
    ChildWorkflowScheduled,
    Payload,
    SignalWorkflow,
    TimerScheduled,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
)
from aion_common.kafka.dead_letter import read_dead_letters
from aion_common.settings import Settings

from .conftest import EngineRig

pytestmark = pytest.mark.kafka


async def test_durable_sleep_spans_an_engine_restart(aion_settings: Settings) -> None:
    first = EngineRig(aion_settings)
    await first.start()
    workflow_id = await first.start_workflow("it.sleeper", {"seconds": 2.0})
    await first.wait_for(workflow_id, lambda h: any(isinstance(e, TimerScheduled) for e in h))
    await first.stop()

    second = EngineRig(aion_settings)
    await second.start()
    try:
        history = await second.wait_closed(workflow_id, timeout=30)
    finally:
        await second.stop()
    assert isinstance(history[-1], WorkflowCompleted)
    assert history[-1].result.to_json() == "woke"


async def test_workflow_execution_timeout(engine_rig: EngineRig) -> None:
    workflow_id = await engine_rig.start_workflow(
        "it.sleeper", {"seconds": 3600}, execution_timeout_ms=500
    )
    history = await engine_rig.wait_closed(workflow_id)
    assert type(history[-1]).__name__ == "WorkflowTimedOut"


def _cancel(workflow_id: str) -> CancelWorkflow:
    return CancelWorkflow(
        command_id=str(uuid.uuid4()),
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        reason="operator",
    )


@pytest.mark.parametrize(
    ("policy", "child_end"),
    [("TERMINATE", WorkflowFailed), ("REQUEST_CANCEL", WorkflowCancelled), ("ABANDON", None)],
)
async def test_cancel_of_a_parent_applies_its_close_policy_to_open_children(
    engine_rig: EngineRig, policy: str, child_end: type | None
) -> None:
    parent = await engine_rig.start_workflow("it.policy_parent", {"policy": policy})
    history = await engine_rig.wait_for(
        parent, lambda h: sum(isinstance(e, ChildWorkflowScheduled) for e in h) == 2
    )
    children = [e.child_workflow_id for e in history if isinstance(e, ChildWorkflowScheduled)]
    for child in children:
        await engine_rig.wait_for(child, lambda h: any(isinstance(e, TimerScheduled) for e in h))

    await engine_rig.send(_cancel(parent))
    parent_history = await engine_rig.wait_closed(parent)

    assert isinstance(parent_history[-1], WorkflowCancelled)
    assert parent_history[-1].reason == "operator"
    for child in children:
        if child_end is None:
            continue
        child_history = await engine_rig.wait_closed(child)
        assert isinstance(child_history[-1], child_end)
    if child_end is None:
        for child in children:
            assert type(engine_rig.histories[child][-1]).__name__ == "TimerScheduled"


async def test_hostile_commands_go_to_the_dead_letter_topic_and_processing_continues(
    engine_rig: EngineRig, aion_settings: Settings
) -> None:
    topics = engine_rig.topics
    producer = AIOKafkaProducer(bootstrap_servers=aion_settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topics.commands, b"\x00garbage", key=b"wf-garbage")
        await producer.send_and_wait(topics.commands, b"\xc3\x01" + b"\x00" * 8, key=b"wf-x")
        await producer.send_and_wait(topics.commands, b"anything", key=b"\xff\xfe")
    finally:
        await producer.stop()
    unknown_type = await engine_rig.start_workflow("it.no-such-type", {})
    await engine_rig.send(
        SignalWorkflow(
            command_id=str(uuid.uuid4()),
            issued_at=datetime.now(UTC),
            workflow_id=f"missing-{uuid.uuid4().hex[:6]}",
            name="approve",
            payload=Payload.from_json(1),
        )
    )
    # The engine keeps processing: a normal workflow still completes.
    ok = await engine_rig.start_workflow("it.poller", {"remaining": 0, "runs": 0})
    history = await engine_rig.wait_closed(ok)
    assert isinstance(history[-1], WorkflowCompleted)
    assert not engine_rig.histories[unknown_type], "an unknown type must not start"

    letters = []
    for _ in range(100):
        letters = [d async for d in read_dead_letters(aion_settings, topics.dead_letter)]
        if len(letters) >= 3:
            break
        await asyncio.sleep(0.1)
    reasons = sorted(letter.reason for letter in letters)
    assert len(letters) == 3, reasons
    assert any("marker" in r or "fingerprint" in r or "short" in r for r in reasons), reasons
    assert all(letter.source_topic == topics.commands for letter in letters)
    assert not any(isinstance(e, WorkflowStarted) for e in engine_rig.histories["wf-garbage"])
