"""Parents and children: fan-out with mixed outcomes, continue-as-new chains, close policies."""

from __future__ import annotations

import pytest
from engine_harness import World
from engine_workflows import make_registry

from aion_common.domain import (
    CancelWorkflow,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    RecordChildTerminal,
    StartWorkflow,
    TerminateWorkflow,
    WorkflowCancelled,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTimedOut,
    outcome_of,
)

MODES = ("complete", "fail", "cancel", "timeout")


def _expected(n: int) -> list[list[object]]:
    expected: list[list[object]] = []
    for i in range(n):
        mode = MODES[i % 4]
        if mode == "complete":
            expected.append(["ok", {"i": i}])
        elif mode == "fail":
            expected.append(["err", f"ValueError: boom {i}"])
        elif mode == "cancel":
            expected.append(["err", f"cancelled:stop {i}"])
        else:
            expected.append(["err", "timed_out:30s"])
    return expected


@pytest.mark.parametrize("n", [1, 10, 100])
@pytest.mark.parametrize("max_resident", [0, 10_000])
def test_parent_receives_exactly_its_childrens_mixed_outcomes(n: int, max_resident: int) -> None:
    world = World(make_registry(), max_resident=max_resident)
    specs = [{"mode": MODES[i % 4], "i": i} for i in range(n)]

    first = world.start("parent", "fanout", specs)

    # One batch: the start plus every child scheduled; one StartWorkflow per child, linked.
    assert first.batch is not None
    assert [type(e).__name__ for e in first.batch.events] == ["WorkflowStarted"] + [
        "ChildWorkflowScheduled"
    ] * n
    starts = [c for c in first.outgoing if isinstance(c, StartWorkflow)]
    assert [c.workflow_id for c in starts] == [f"parent/c{i}" for i in range(n)]
    assert all(c.parent is not None and c.parent.workflow_id == "parent" for c in starts)

    # Children that wait: cancel some, time out the others (in reverse order).
    for i in reversed(range(n)):
        if MODES[i % 4] == "cancel":
            world.cancel(f"parent/c{i}", reason=f"stop {i}")
    for request in list(world.timers.values()):
        world.fire(request)

    assert world.kinds("parent")[-1] == "WorkflowCompleted"
    assert world.result("parent") == _expected(n)
    terminals = [
        e
        for e in world.history("parent")
        if isinstance(e, ChildWorkflowCompleted | ChildWorkflowFailed)
    ]
    assert sorted(e.child_workflow_id for e in terminals) == sorted(
        f"parent/c{i}" for i in range(n)
    )
    timed_out = [i for i in range(n) if MODES[i % 4] == "timeout"]
    for i in timed_out:
        assert isinstance(world.history(f"parent/c{i}")[-1], WorkflowTimedOut)


def test_child_continues_as_new_three_times_then_completes() -> None:
    world = World(make_registry())
    world.start("p", "runs-counter")
    for _ in range(3):
        world.fire_all("counter-child")

    child = world.history("counter-child")
    starts = [e for e in child if isinstance(e, WorkflowStarted)]
    continued = [e for e in child if isinstance(e, WorkflowContinuedAsNew)]
    assert len(starts) == 4
    assert len(continued) == 3
    assert [s.input.to_json() for s in starts] == [0, 1, 2, 3]
    assert {s.first_run_id for s in starts} == {starts[0].run_id}
    assert [s.previous_run_id for s in starts] == [None] + [s.run_id for s in starts[:-1]]
    assert [c.next_run_id for c in continued] == [s.run_id for s in starts[1:]]
    assert len({s.parent for s in starts}) == 1
    assert starts[0].parent is not None
    assert starts[0].parent.workflow_id == "p"
    # Each continue-as-new and the next run's start share one batch (one command).
    for batch in world.batches:
        kinds = [type(e).__name__ for e in batch.events]
        if "WorkflowContinuedAsNew" in kinds:
            index = kinds.index("WorkflowContinuedAsNew")
            assert kinds[index + 1] == "WorkflowStarted"
    # The parent recorded the final terminal only, exactly once: the engine's record (in the
    # child's last batch) and the watcher's are one command, the second a no-op.
    assert world.result("p") == {"final": 3}
    records = [
        (c, d)
        for c, d in world.decisions
        if isinstance(c, RecordChildTerminal) and c.workflow_id == "p"
    ]
    assert len({c for c, _ in records}) == 1
    assert [d.batch is not None for _, d in records] == [True, False]


def test_a_childs_last_batch_carries_the_watchers_record_to_its_parent() -> None:
    """Decision 37: the engine puts the parent's ``RecordChildTerminal`` in the transaction
    that writes the child's final terminal — the watcher's command byte for byte (id, issue
    time = the terminal's ``recorded_at``) — and none for a continue-as-new."""
    world = World(make_registry(), watch=False)
    world.start("p", "runs-counter")
    for _ in range(3):
        world.fire_all("counter-child")
    assert world.result("p") == {"final": 3}
    records, finals = [], []
    for _, decision in world.decisions:
        if decision.batch is None or decision.batch.workflow_id != "counter-child":
            continue
        records += [c for c in decision.outgoing if isinstance(c, RecordChildTerminal)]
        finals += [
            e
            for e in decision.batch.events
            if outcome_of(e) is not None and not isinstance(e, WorkflowContinuedAsNew)
        ]
    (record,), (completed,) = records, finals
    started = [e for e in world.history("p") if isinstance(e, WorkflowStarted)][-1]
    assert record == RecordChildTerminal.of(
        "p",
        started.run_id,
        child_workflow_id="counter-child",
        child_run_id=completed.run_id,
        outcome=outcome_of(completed),
        issued_at=completed.recorded_at,
    )


def test_continue_as_new_without_waiting_runs_in_one_command() -> None:
    world = World(make_registry())
    decision = world.start("eager", "eager-counter", 0)
    assert decision.batch is not None
    assert [type(e).__name__ for e in decision.batch.events] == [
        "WorkflowStarted",
        "WorkflowContinuedAsNew",
        "WorkflowStarted",
        "WorkflowContinuedAsNew",
        "WorkflowStarted",
        "WorkflowContinuedAsNew",
        "WorkflowStarted",
        "WorkflowCompleted",
    ]
    assert world.result("eager") == 3


def test_a_workflow_that_only_continues_as_new_is_failed_not_looped() -> None:
    world = World(make_registry())
    decision = world.start("loop", "looper", 0)
    assert decision.batch is not None
    last = decision.batch.events[-1]
    assert isinstance(last, WorkflowFailed)
    assert "loops" in last.error.message


def test_cancel_of_parent_applies_each_close_policy_to_open_children() -> None:
    world = World(make_registry(), hold_types=(TerminateWorkflow, CancelWorkflow))
    world.start("g", "guardian")
    assert world.result("g-done") == {"i": 3}

    decision = world.cancel("g", reason="shutdown")

    assert decision.batch is not None
    assert [type(e).__name__ for e in decision.batch.events] == [
        "CancelRequested",
        "WorkflowCancelled",
    ]
    cancelled = decision.batch.events[-1]
    assert isinstance(cancelled, WorkflowCancelled)
    assert cancelled.reason == "shutdown"
    outgoing = {c.workflow_id: c for c in decision.outgoing}
    assert set(outgoing) == {"g-terminate", "g-cancel"}  # abandon and the finished child: nothing
    assert isinstance(outgoing["g-terminate"], TerminateWorkflow)
    assert isinstance(outgoing["g-cancel"], CancelWorkflow)

    world.release_held()
    terminated = world.history("g-terminate")[-1]
    assert isinstance(terminated, WorkflowFailed)
    assert terminated.error.message.startswith("terminated:parent-close:TERMINATE:")
    assert terminated.error.message.endswith(":g")  # the parent's id, last
    assert isinstance(world.history("g-cancel")[-1], WorkflowCancelled)
    assert world.kinds("g-abandon") == ["WorkflowStarted"]  # abandoned: still waiting
    # The children's terminals reach a closed parent: nothing is appended (ParentTerminal).
    assert world.kinds("g")[-1] == "WorkflowCancelled"


def test_terminate_fails_the_run_and_applies_close_policy() -> None:
    world = World(make_registry(), hold_types=(TerminateWorkflow, CancelWorkflow))
    world.start("g", "guardian")
    decision = world.terminate("g", reason="ops")
    assert decision.batch is not None
    (failed,) = decision.batch.events
    assert isinstance(failed, WorkflowFailed)
    assert failed.error.message == "terminated:ops"
    assert {c.workflow_id for c in decision.outgoing} == {"g-terminate", "g-cancel"}


def test_refused_child_start_fails_the_childs_result_in_the_parent() -> None:
    world = World(make_registry())
    world.start("p", "bad-child")
    message = world.result("p")
    assert isinstance(message, str)
    assert message.startswith("start_refused:UNKNOWN_WORKFLOW_TYPE:workflow type 'no-such-type'")
    assert "loaded types: " in message


def test_child_ids_and_start_commands_are_deterministic() -> None:
    one, two = World(make_registry()), World(make_registry())
    for world in (one, two):
        world.start("p", "runs-counter", command_id="same")
    assert one.batches[0] == two.batches[0]
    assert one.decisions[0][1].outgoing == two.decisions[0][1].outgoing
    scheduled = one.batches[0].events[1]
    assert isinstance(scheduled, ChildWorkflowScheduled)
    assert scheduled.start_command_id == one.decisions[0][1].outgoing[0].command_id
