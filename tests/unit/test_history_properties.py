"""Property-based checks of history invariants over generated histories.

A generator plays random legal decisions (signals, timers, children, records, cancel requests,
continue-as-new, terminals) through the domain's own decision function, as the engine does;
every generated history must satisfy the invariants: seq strictly increasing by one, exactly
one terminal per closed run (and none while open), and every ContinuedAsNew followed by the
WorkflowStarted it names, which names the previous run and keeps the parent link.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from aion_common.domain import (
    Cancelled,
    CancelRequested,
    Completed,
    Event,
    Failed,
    ParentLink,
    Payload,
    Recorded,
    SignalReceived,
    TimedOut,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowStarted,
    check_history,
    decide_child_terminal_record,
    latest_run_id,
    outcome_of,
    run_is_terminal,
)

NOW = datetime(2026, 11, 28, tzinfo=UTC)
STEPS = st.lists(
    st.sampled_from(["signal", "cancel", "child", "record", "can", "complete", "fail"]),
    max_size=40,
)


def generate(steps: list[str], with_parent: bool) -> list[Event]:
    """Play ``steps`` into a history; steps that are illegal in the current state are skipped."""
    workflow_id = "wf"
    parent = ParentLink(workflow_id="parent", run_id="parent-run") if with_parent else None
    run = "run-0"
    history: list[Event] = [
        WorkflowStarted(
            workflow_id=workflow_id,
            run_id=run,
            seq=1,
            recorded_at=NOW,
            command_id="c0",
            workflow_type="t",
            input=Payload.from_json(0),
            first_run_id=run,
            parent=parent,
        )
    ]
    children = 0
    closed = False
    for index, step in enumerate(steps, start=1):
        if closed:
            break
        env = {
            "workflow_id": workflow_id,
            "run_id": run,
            "seq": len(history) + 1,
            "recorded_at": NOW,
            "command_id": f"c{index}",
        }
        match step:
            case "signal":
                history.append(SignalReceived(**env, name="s", payload=Payload.from_json(index)))  # type: ignore[arg-type]
            case "cancel":
                history.append(CancelRequested(**env, reason="r"))  # type: ignore[arg-type]
            case "child" | "record":
                children += 1
                outcome = [
                    Completed(result=Payload.from_json(index)),
                    Failed(error=WorkflowError(message="x")),
                    Cancelled(reason="op"),
                    TimedOut(timeout="1s"),
                ][index % 4]
                decision = decide_child_terminal_record(
                    history,
                    parent_run_id=run,
                    child_workflow_id=f"child-{children % 3}",
                    outcome=outcome,
                    command_id=f"c{index}",
                    recorded_at=NOW,
                )
                if isinstance(decision, Recorded):
                    history.append(decision.event)
            case "can":
                next_run = f"run-{index}"
                history.append(
                    WorkflowContinuedAsNew(
                        **env,  # type: ignore[arg-type]
                        input=Payload.from_json(index),
                        workflow_type=None,
                        next_run_id=next_run,
                    )
                )
                history.append(
                    WorkflowStarted(
                        workflow_id=workflow_id,
                        run_id=next_run,
                        seq=len(history) + 1,
                        recorded_at=NOW,
                        command_id=f"c{index}",
                        workflow_type="t",
                        input=Payload.from_json(index),
                        first_run_id="run-0",
                        previous_run_id=run,
                        parent=parent,
                    )
                )
                run = next_run
            case "complete":
                history.append(WorkflowCompleted(**env, result=Payload.from_json(1)))  # type: ignore[arg-type]
                closed = True
            case "fail":
                history.append(WorkflowFailed(**env, error=WorkflowError(message="boom")))  # type: ignore[arg-type]
                closed = True
    return history


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, with_parent=st.booleans())
def test_generated_histories_hold_every_invariant(steps: list[str], with_parent: bool) -> None:
    history = generate(steps, with_parent)

    check_history(history)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))

    runs = [e.run_id for e in history if isinstance(e, WorkflowStarted)]
    assert len(runs) == len(set(runs))
    for run in runs:
        terminals = [e for e in history if e.run_id == run and outcome_of(e) is not None]
        if run == latest_run_id(history):
            assert len(terminals) <= 1
        else:
            assert len(terminals) == 1, f"closed run {run} must have exactly one terminal"
            assert isinstance(terminals[0], WorkflowContinuedAsNew)
        assert run_is_terminal(history, run) == bool(terminals)

    for index, event in enumerate(history):
        if isinstance(event, WorkflowContinuedAsNew):
            following = history[index + 1]
            assert isinstance(following, WorkflowStarted)
            assert following.run_id == event.next_run_id
            assert following.previous_run_id == event.run_id
            first = history[0]
            assert isinstance(first, WorkflowStarted)
            assert following.parent == first.parent
            assert following.first_run_id == first.run_id


@settings(max_examples=200, deadline=None)
@given(steps=STEPS)
def test_each_child_is_recorded_at_most_once_per_run(steps: list[str]) -> None:
    history = generate(steps, with_parent=False)
    seen: set[tuple[str, str]] = set()
    for event in history:
        child = getattr(event, "child_workflow_id", None)
        if child is not None:
            key = (event.run_id, child)
            assert key not in seen, f"child {child} recorded twice in run {event.run_id}"
            seen.add(key)


def test_generator_covers_continue_as_new_and_records() -> None:
    history = generate(["child", "can", "record", "child", "complete"], with_parent=True)
    kinds = {type(e).__name__ for e in history}
    assert {"WorkflowContinuedAsNew", "ChildWorkflowCompleted", "ChildWorkflowFailed"} <= kinds
