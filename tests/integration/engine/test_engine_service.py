"""The engine service on a real broker: children, signals, timers, continue-as-new, dedup."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Payload,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    check_history,
)
from aion_common.kafka.topics import RUN_ENDED_HEADER

from .conftest import EngineRig

pytestmark = pytest.mark.kafka


def result_of(history: list[object]) -> object:
    last = history[-1]
    assert isinstance(last, WorkflowCompleted), f"expected completion, got {last!r}"
    return last.result.to_json()


@pytest.mark.parametrize("children", [1, 10, 100])
async def test_parent_receives_exactly_its_childrens_mixed_outcomes(
    engine_rig: EngineRig, children: int
) -> None:
    kinds = ["complete", "fail", "complete", "time_out"]
    outcomes = [kinds[i % len(kinds)] for i in range(children)]

    parent = await engine_rig.start_workflow("it.parent", {"outcomes": outcomes})
    history = await engine_rig.wait_closed(parent, timeout=60)

    check_history(history)
    results = result_of(history)
    expected = []
    for index, outcome in enumerate(outcomes):
        if outcome == "complete":
            expected.append({"ok": {"i": index}})
        elif outcome == "fail":
            expected.append({"error": f"child {index} failed"})
        else:
            expected.append({"error": "timed_out:1s"})
    assert [r if "ok" in r else {"error": _strip(r["error"])} for r in results] == [
        e if "ok" in e else {"error": _strip(e["error"])} for e in expected
    ]
    recorded = [e for e in history if isinstance(e, ChildWorkflowCompleted | ChildWorkflowFailed)]
    assert len(recorded) == children
    assert len({e.child_workflow_id for e in recorded}) == children


def _strip(message: str) -> str:
    # A failed child's message may carry the exception type as a prefix; compare the text.
    return message.split(": ", 1)[-1]


async def test_child_continuing_as_new_three_times_then_completing(engine_rig: EngineRig) -> None:
    workflow_id = await engine_rig.start_workflow("it.poller", {"remaining": 3, "runs": 0})

    history = await engine_rig.wait_closed(workflow_id)

    check_history(history)
    assert sum(isinstance(e, WorkflowContinuedAsNew) for e in history) == 3
    starts = [e for e in history if isinstance(e, WorkflowStarted)]
    assert len(starts) == 4
    assert {s.first_run_id for s in starts} == {starts[0].run_id}
    assert result_of(history) == {"runs": 3}


async def test_signals_before_and_after_the_wait_are_delivered_in_order(
    engine_rig: EngineRig,
) -> None:
    workflow_id = await engine_rig.start_workflow("it.approval", {"count": 3})
    await engine_rig.wait_for(workflow_id, lambda h: len(h) >= 1)
    for n in range(3):
        await engine_rig.signal(workflow_id, "approve", Payload.from_json({"n": n}))

    history = await engine_rig.wait_closed(workflow_id)

    assert result_of(history) == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_durable_sleep_fires(engine_rig: EngineRig) -> None:
    workflow_id = await engine_rig.start_workflow("it.sleeper", {"seconds": 0.5})

    history = await engine_rig.wait_closed(workflow_id)

    assert result_of(history) == "woke"


async def test_duplicate_start_is_a_noop(engine_rig: EngineRig) -> None:
    workflow_id = f"dup-{uuid.uuid4().hex[:8]}"
    command_id = str(uuid.uuid4())
    for _ in range(3):
        await engine_rig.send(_start(workflow_id, command_id, "it.approval", {"count": 1}))
    await engine_rig.wait_for(workflow_id, lambda h: len(h) >= 1)
    await engine_rig.signal(workflow_id, "approve", Payload.from_json("yes"))
    history = await engine_rig.wait_closed(workflow_id)
    assert sum(isinstance(e, WorkflowStarted) for e in history) == 1
    assert result_of(history) == ["yes"]


def _start(workflow_id: str, command_id: str, workflow_type: str, input_value: object):  # type: ignore[no-untyped-def]
    from aion_common.domain import StartWorkflow

    return StartWorkflow(
        command_id=command_id,
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        input=Payload.from_json(input_value),
    )


_RUN_ENDS = (WorkflowContinuedAsNew, WorkflowCompleted)


async def test_records_that_end_or_continue_a_run_carry_the_run_ended_header(
    engine_rig: EngineRig,
) -> None:
    waiting = await engine_rig.start_workflow("it.approval", {"count": 1})
    await engine_rig.wait_for(waiting, lambda h: len(h) >= 1)
    await engine_rig.signal(waiting, "approve", Payload.from_json({"n": 1}))
    chain = await engine_rig.start_workflow("it.poller", {"remaining": 2, "runs": 0})
    await engine_rig.wait_closed(waiting)
    await engine_rig.wait_closed(chain)

    # the start, then the signal that completes it: only the second ends the run
    (_, start_headers), (ended, ended_headers) = engine_rig.records[waiting]
    assert start_headers == {}
    assert isinstance(ended.events[-1], WorkflowCompleted)
    assert ended_headers == {RUN_ENDED_HEADER: ended.events[-1].run_id.encode()}
    # a continue-as-new ends its run too (the next one starts in the same batch): a record
    # is marked with the last run it ended
    ended_runs = 0
    for batch, headers in engine_rig.records[chain]:
        ends = [
            e for e in batch.events if isinstance(e, WorkflowContinuedAsNew | WorkflowCompleted)
        ]
        ended_runs += len(ends)
        assert headers == ({RUN_ENDED_HEADER: ends[-1].run_id.encode()} if ends else {})
    assert ended_runs == 3
