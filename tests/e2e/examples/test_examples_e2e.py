"""Every example, end to end on a real stack (Kafka, engine, watcher, projector, API), driven
through the ``aion.testing`` plugin's fixtures and helpers as a user's suite would be."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from examples.demo import DemoCase, Step, cases
from examples.fanout import expected_result

from aion import AionApiError, AionClient
from aion.testing import (
    AionStack,
    WorkflowNotCompleted,
    assert_history,
    history_types,
    run_workflow,
    wait_for_workflow,
)

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

CASES = cases("e2e")


async def _apply(client: AionClient, workflow_id: str, steps: tuple[Step, ...]) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    for step in sorted(steps, key=lambda s: s.after_s):
        await asyncio.sleep(max(0.0, began + step.after_s - loop.time()))
        if step.kind == "signal":
            assert step.name is not None
            await client.signal(workflow_id, step.name, step.payload)
        else:
            await client.cancel(workflow_id, step.reason or "")


@pytest.mark.parametrize("case", CASES, ids=[c.workflow_id.split("-", 2)[-1] for c in CASES])
async def test_demo_case_ends_as_expected(aion_client: AionClient, case: DemoCase) -> None:
    await aion_client.start(case.workflow_type, case.input, id=case.workflow_id)
    await _apply(aion_client, case.workflow_id, case.steps)
    run = await wait_for_workflow(aion_client, case.workflow_id, timeout=60)

    assert run.status == case.expect_status.upper(), run
    value = run.result if run.status == "COMPLETED" else run.error
    assert case.check(value) is None, case.check(value)
    assert len(run.children) == case.expect_children
    assert run.history[0].event_type == "WorkflowStarted"
    assert [e.seq for e in run.history] == list(range(1, len(run.history) + 1))


async def test_order_retries_payment_then_ships(aion_client: AionClient) -> None:
    workflow_id = "e2e-order-history"
    spec = {"order_id": "E-1", "amount": 10, "fail_payment_attempts": 1}
    result = await run_workflow(aion_client, "examples.order", spec, id=workflow_id)

    assert result["status"] == "shipped"
    assert result["payment_attempts"] == 2
    assert Path(result["invoice"]).is_file()
    await assert_history(
        aion_client,
        workflow_id,
        [
            "WorkflowStarted",
            "ActivityScheduled",
            "ActivityAttemptFailed",
            "ActivityAttemptScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "WorkflowCompleted",
        ],
        exact=False,  # a slow charge may also record ActivityStarted
    )


async def test_declined_order_fails_and_run_workflow_says_why(aion_client: AionClient) -> None:
    spec = {"order_id": "E-2", "amount": 1, "fail_payment_attempts": 5, "max_payment_attempts": 2}
    with pytest.raises(WorkflowNotCompleted, match="ended FAILED: PaymentDeclined") as raised:
        await run_workflow(aion_client, "examples.order", spec, id="e2e-order-declined")
    assert "ActivityFailed" in str(raised.value)


async def test_fanout_records_fifty_children_with_mixed_outcomes(aion_client: AionClient) -> None:
    workflow_id = "e2e-fanout"
    result = await run_workflow(
        aion_client, "examples.fanout", {"items": 50, "fail_every": 7}, id=workflow_id
    )

    assert result == expected_result(50, 7)
    run = await wait_for_workflow(aion_client, workflow_id)
    failed = sorted(c.child_workflow_id for c in run.children if c.state == "FAILED")
    assert failed == [f"{workflow_id}:item-{i:03d}" for i in range(6, 50, 7)]
    assert sum(c.state == "COMPLETED" for c in run.children) == 43
    types = run.event_types
    assert types.count("ChildWorkflowScheduled") == 50
    assert types.count("ChildWorkflowCompleted") + types.count("ChildWorkflowFailed") == 50


async def test_poller_continues_as_new_until_ready(aion_client: AionClient) -> None:
    workflow_id = "e2e-poller"
    result = await run_workflow(
        aion_client, "examples.poller", {"ready_after": 3, "interval": 0.2}, id=workflow_id
    )

    assert result["polls"] == 3
    run = await wait_for_workflow(aion_client, workflow_id)
    assert [r.status for r in run.description.runs] == [
        "CONTINUED_AS_NEW",
        "CONTINUED_AS_NEW",
        "COMPLETED",
    ]
    await assert_history(
        aion_client,
        workflow_id,
        ["WorkflowStarted", "WorkflowContinuedAsNew"] * 2
        + ["WorkflowStarted", "WorkflowCompleted"],
        exact=False,
    )


async def test_approval_signal_and_timeout(aion_client: AionClient) -> None:
    approved_id, expired_id = "e2e-approval-yes", "e2e-approval-expired"
    await aion_client.start("examples.approval", {"request": "r1", "timeout": 30}, id=approved_id)
    await aion_client.signal(approved_id, "decision", {"approved": True, "by": "e2e"})
    expired = await run_workflow(
        aion_client, "examples.approval", {"request": "r2", "timeout": 0.5}, id=expired_id
    )
    approved = await wait_for_workflow(aion_client, approved_id)

    assert (approved.result["status"], approved.result["by"]) == ("approved", "e2e")
    assert "SignalReceived" in approved.event_types
    assert (expired["status"], expired["outcome"]) == ("expired", "rejected")
    await assert_history(
        aion_client,
        expired_id,
        ["WorkflowStarted", "TimerScheduled", "TimerFired", "WorkflowCompleted"],
    )


async def test_cancellation_reaches_the_children(aion_client: AionClient) -> None:
    workflow_id = "e2e-cancellation"
    await aion_client.start("examples.cancellation", {"workers": 3}, id=workflow_id)
    jobs = [f"{workflow_id}:job-{i}" for i in range(3)]
    for job in jobs:  # every job has started before the cancellation
        await assert_history_eventually(aion_client, job, "WorkflowStarted")
    await aion_client.cancel(workflow_id, "e2e says stop")

    parent = await wait_for_workflow(aion_client, workflow_id)
    assert (parent.status, parent.error) == ("CANCELLED", "e2e says stop")
    outcomes = [await wait_for_workflow(aion_client, job) for job in jobs]
    assert [o.status for o in outcomes] == ["CANCELLED", "CANCELLED", "TERMINATED"]
    assert outcomes[2].error is not None
    assert outcomes[2].error.startswith("terminated:")
    for cancelled in outcomes[:2]:  # cleaned up (a durable sleep) before ending cancelled
        assert cancelled.event_types[-4:] == [
            "CancelRequested",
            "TimerScheduled",
            "TimerFired",
            "WorkflowCancelled",
        ]


async def assert_history_eventually(client: AionClient, workflow_id: str, kind: str) -> None:

    for _ in range(200):
        try:
            if kind in await history_types(client, workflow_id):
                return
        except AionApiError as err:
            if err.kind != "not-found":
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workflow_id} never recorded {kind}")


async def test_assert_history_reports_the_first_difference(aion_client: AionClient) -> None:
    workflow_id = "e2e-history-mismatch"
    await run_workflow(
        aion_client, "examples.fanout.item", {"index": 1, "fail": False}, id=workflow_id
    )

    with pytest.raises(AssertionError, match="differs at event 2: expected 'WorkflowFailed'"):
        await assert_history(aion_client, workflow_id, ["WorkflowStarted", "WorkflowFailed"])
    with pytest.raises(AssertionError, match="lacks, in order, 'TimerFired'"):
        await assert_history(aion_client, workflow_id, ["TimerFired"], exact=False)


def test_stack_fixture_names_its_api_and_settings(aion_stack: AionStack) -> None:
    assert aion_stack.api_url.startswith("http://127.0.0.1:")
    assert aion_stack.settings.topic_prefix.startswith("aiontest-")
    assert "examples" in aion_stack.workflows
    assert (aion_stack.logs / "engine-1.log").exists()
