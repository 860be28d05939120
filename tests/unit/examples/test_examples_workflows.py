"""The example workflows, run deterministically on the engine core in memory.

Each test runs a workflow to quiescence (timers fired in time order, the watcher played by the
harness) and asserts its result and the histories of the parent and its children. Where it
matters, the same run is repeated with no resident coroutines (``max_resident=0``), so every
step is a replay from history, and must give the same histories.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from examples.fanout import expected_result
from examples_world import At, World, children, new_world, outcome, run


def _kinds(world: World, workflow_id: str) -> list[str]:
    return world.kinds(workflow_id)


@pytest.mark.parametrize("max_resident", [0, 10_000])
def test_order_charges_through_a_flaky_provider_then_ships_and_files_the_invoice(
    max_resident: int,
) -> None:
    world = new_world(max_resident)
    wid = f"o1-{max_resident}"  # the shop remembers idempotency keys across tests
    run(world, wid, "examples.order", {"order_id": "A-1", "amount": 50, "fail_payment_attempts": 1})

    status, result = outcome(world, wid)
    assert status == "completed"
    assert result["status"] == "shipped"
    assert result["payment_attempts"] == 2
    assert result["receipt"].startswith("RCPT-")
    assert result["tracking"].startswith("TRK-")
    invoice = json.loads(Path(result["invoice"]).read_text(encoding="utf-8"))
    assert invoice["receipt"] == result["receipt"]
    assert invoice["tracking"] == result["tracking"]
    assert children(world, wid) == []
    assert _kinds(world, wid) == [
        "WorkflowStarted",
        "ActivityScheduled",  # charge: the provider answers 503 the first time
        "ActivityAttemptFailed",
        "ActivityAttemptScheduled",  # the retry, after the policy's back-off
        "ActivityCompleted",
        "ActivityScheduled",  # ship
        "ActivityCompleted",
        "ActivityScheduled",  # write_invoice
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    failed = world.history(wid)[2]
    assert failed.error.error_type == "ConnectionError"  # type: ignore[union-attr]
    assert "payment provider answered 503" in failed.error.message  # type: ignore[union-attr]


def test_order_replayed_from_history_records_the_same_events() -> None:
    resident, replayed = new_world(10_000), new_world(0)
    run(resident, "o1", "examples.order", {"order_id": "R-1", "amount": 50})
    run(replayed, "o1", "examples.order", {"order_id": "R-2", "amount": 50})
    assert _kinds(replayed, "o1") == _kinds(resident, "o1")
    assert outcome(replayed, "o1")[0] == "completed"


def test_order_fails_with_payment_declined_when_every_attempt_fails() -> None:
    world = new_world()
    spec = {"order_id": "A-2", "amount": 5, "fail_payment_attempts": 9, "max_payment_attempts": 2}
    run(world, "o2", "examples.order", spec)

    status, message = outcome(world, "o2")
    assert status == "failed"
    assert message.startswith("PaymentDeclined: order A-2: payment failed after 2 attempt(s)")
    assert _kinds(world, "o2").count("ActivityAttemptFailed") == 1
    assert "ActivityFailed" in _kinds(world, "o2")


def test_a_declined_amount_is_not_retried() -> None:
    world = new_world()
    run(world, "o3", "examples.order", {"order_id": "A-3", "amount": 0})

    status, message = outcome(world, "o3")
    assert status == "failed"
    assert "after 1 attempt(s)" in message
    assert "declined" in message


@pytest.mark.parametrize("max_resident", [0, 10_000])
def test_fanout_aggregates_fifty_mixed_outcomes(max_resident: int) -> None:
    world = new_world(max_resident)
    run(world, "f", "examples.fanout", {"items": 50, "fail_every": 7})

    assert outcome(world, "f") == ("completed", expected_result(50, 7))
    kids = children(world, "f")
    assert len(kids) == 50
    failed = [k for k in kids if outcome(world, k)[0] == "failed"]
    assert failed == [f"f:item-{i:03d}" for i in range(6, 50, 7)]
    kinds = _kinds(world, "f")
    assert kinds.count("ChildWorkflowScheduled") == 50
    assert kinds.count("ChildWorkflowCompleted") == 50 - len(failed)
    assert kinds.count("ChildWorkflowFailed") == len(failed)


def test_expected_fanout_result_counts_failures() -> None:
    expected = expected_result(10, 3)
    assert [f["item"] for f in expected["failed"]] == [2, 5, 8]
    assert expected["succeeded"] == 7
    assert expected["total"] == sum(i * i for i in (0, 1, 3, 4, 6, 7, 9))


@pytest.mark.parametrize("max_resident", [0, 10_000])
def test_poller_continues_as_new_until_ready(max_resident: int) -> None:
    world = new_world(max_resident)
    run(world, "p", "examples.poller", {"ready_after": 3, "interval": 5})

    status, result = outcome(world, "p")
    assert status == "completed"
    assert result["polls"] == 3
    assert len(result["checked_at"]) == 3
    assert result["checked_at"] == sorted(result["checked_at"])
    run_ids = {event.run_id for event in world.history("p")}
    assert len(run_ids) == 3
    assert _kinds(world, "p") == [
        "WorkflowStarted",
        "TimerScheduled",
        "TimerFired",
        "WorkflowContinuedAsNew",
    ] * 2 + ["WorkflowStarted", "TimerScheduled", "TimerFired", "WorkflowCompleted"]


@pytest.mark.parametrize(
    ("signal_at", "payload", "status", "by"),
    [
        (0.0, {"approved": True, "by": "ann"}, "approved", "ann"),
        (3.0, {"approved": True, "by": "bob"}, "approved", "bob"),
        (3.0, {"approved": False, "by": "cy"}, "rejected", "cy"),
    ],
)
def test_approval_decided_by_signal(
    signal_at: float, payload: dict[str, Any], status: str, by: str
) -> None:
    world = new_world()
    steps = (At(signal_at, "signal", name="decision", payload=payload),)
    run(world, "a", "examples.approval", {"request": "r", "timeout": 10}, steps)

    state, result = outcome(world, "a")
    assert state == "completed"
    assert (result["status"], result["outcome"], result["by"]) == (status, status, by)
    assert "SignalReceived" in _kinds(world, "a")
    assert "TimerFired" not in _kinds(world, "a")


def test_approval_signal_sent_before_the_wait_is_buffered() -> None:
    world = new_world()
    world.start("a", "examples.approval", {"request": "r", "timeout": 10})
    world.signal("a", "other", "ignored")  # a different signal does not decide it
    world.signal("a", "decision", {"approved": True, "by": "dee"})
    assert outcome(world, "a")[1]["by"] == "dee"


def test_approval_times_out_to_a_decided_outcome() -> None:
    world = new_world()
    run(world, "a", "examples.approval", {"request": "r", "timeout": 2})

    status, result = outcome(world, "a")
    assert status == "completed"
    assert (result["status"], result["outcome"], result["by"]) == ("expired", "rejected", None)
    assert _kinds(world, "a") == [
        "WorkflowStarted",
        "TimerScheduled",
        "TimerFired",
        "WorkflowCompleted",
    ]
    # A decision after the timeout is refused: the workflow is closed.
    assert world.signal("a", "decision", {"approved": True}).refusal is not None


@pytest.mark.parametrize("max_resident", [0, 10_000])
def test_cancellation_propagates_to_the_children(max_resident: int) -> None:
    world = new_world(max_resident)
    steps = (At(1.0, "cancel", reason="stop it"),)
    run(world, "c", "examples.cancellation", {"workers": 3}, steps)

    assert outcome(world, "c") == ("cancelled", "stop it")
    assert _kinds(world, "c")[-2:] == ["CancelRequested", "WorkflowCancelled"]
    assert children(world, "c") == ["c:job-0", "c:job-1", "c:job-2"]
    for job in ("c:job-0", "c:job-1"):  # REQUEST_CANCEL: they clean up, then end cancelled
        status, _ = outcome(world, job)
        assert status == "cancelled"
        assert _kinds(world, job) == [
            "WorkflowStarted",
            "CancelRequested",
            "TimerScheduled",
            "TimerFired",
            "WorkflowCancelled",
        ]
    status, message = outcome(world, "c:job-2")  # TERMINATE: ended at once
    assert status == "failed"
    assert message.startswith("terminated:")


def test_cancellation_example_completes_when_its_jobs_finish() -> None:
    world = new_world()
    world.start("c", "examples.cancellation", {"workers": 2})
    world.signal("c:job-1", "finish", "b")
    world.signal("c:job-0", "finish", "a")

    assert outcome(world, "c") == (
        "completed",
        [{"index": 0, "finished": "a"}, {"index": 1, "finished": "b"}],
    )
