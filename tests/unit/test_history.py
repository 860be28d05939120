"""The pure history model: counterparts of the reference's history-level tests.

Each test named after a reference test (``aion_child_watch.rs``) checks the same behaviour on
the Python domain model; the rest cover the model's edges.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from aion_common.domain import (
    AlreadyRecorded,
    Cancelled,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Completed,
    ContinuedAsNew,
    Event,
    Failed,
    InvariantViolation,
    ParentLink,
    ParentTerminal,
    Payload,
    RecordChildTerminal,
    Recorded,
    RecordRefused,
    SequenceError,
    TerminalOutcome,
    TimedOut,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowStarted,
    check_history,
    check_next_seq,
    current_run_segment,
    decide_child_terminal_record,
    latest_run_id,
    record_child_terminal_id,
    run_is_terminal,
    terminal_outcome,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def payload(label: str) -> Payload:
    return Payload.from_json({"label": label})


class History:
    """Builds a well-formed history for one workflow id, appending with the next seq."""

    def __init__(self, workflow_id: str | None = None) -> None:
        self.workflow_id = workflow_id or new_id()
        self.events: list[Event] = []
        self.run_id = ""

    def envelope(self) -> dict[str, object]:
        return {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "seq": len(self.events) + 1,
            "recorded_at": NOW,
            "command_id": new_id(),
        }

    def start(self, run_id: str | None = None, parent: ParentLink | None = None) -> str:
        run_id = run_id or new_id()
        self.events.append(
            WorkflowStarted(
                workflow_id=self.workflow_id,
                run_id=run_id,
                seq=len(self.events) + 1,
                recorded_at=NOW,
                command_id=new_id(),
                workflow_type="parent",
                input=payload("input"),
                first_run_id=run_id,
                parent=parent,
            )
        )
        self.run_id = run_id
        return run_id

    def continue_as_new(self) -> str:
        previous = self.events[-1] if self.events else None
        first = next(e for e in self.events if isinstance(e, WorkflowStarted))
        parent = first.parent
        next_run = new_id()
        self.events.append(
            WorkflowContinuedAsNew(
                workflow_id=self.workflow_id,
                run_id=self.run_id,
                seq=len(self.events) + 1,
                recorded_at=NOW,
                command_id=new_id(),
                input=payload("next"),
                workflow_type=None,
                next_run_id=next_run,
            )
        )
        assert previous is not None
        self.events.append(
            WorkflowStarted(
                workflow_id=self.workflow_id,
                run_id=next_run,
                seq=len(self.events) + 1,
                recorded_at=NOW,
                command_id=new_id(),
                workflow_type="parent",
                input=payload("next"),
                first_run_id=first.first_run_id,
                previous_run_id=self.run_id,
                parent=parent,
            )
        )
        self.run_id = next_run
        return next_run

    def complete(self, label: str = "done") -> None:
        self.events.append(
            WorkflowCompleted(
                workflow_id=self.workflow_id,
                run_id=self.run_id,
                seq=len(self.events) + 1,
                recorded_at=NOW,
                command_id=new_id(),
                result=payload(label),
            )
        )

    def record(self, child: str, outcome: TerminalOutcome) -> Recorded | object:
        decision = decide_child_terminal_record(
            self.events,
            parent_run_id=self.run_id,
            child_workflow_id=child,
            outcome=outcome,
            command_id=record_child_terminal_id(self.workflow_id, self.run_id, child),
            recorded_at=NOW,
        )
        if isinstance(decision, Recorded):
            self.events.append(decision.event)
        return decision


def child_terminal_count(history: History, child: str) -> int:
    return sum(
        1
        for event in history.events
        if isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed)
        and event.child_workflow_id == child
    )


def test_latest_run_id_reads_the_newest_started_run() -> None:
    history = History()
    first = history.start()
    second = history.continue_as_new()

    assert first != second
    assert latest_run_id(history.events) == second
    assert latest_run_id([]) is None


def test_record_is_terminal_guarded_and_duplicate_suppressed() -> None:
    history = History()
    history.start()
    child = new_id()
    outcome = Completed(result=payload("child-result"))

    first = history.record(child, outcome)
    second = history.record(child, outcome)

    assert isinstance(first, Recorded)
    assert isinstance(second, AlreadyRecorded)
    assert child_terminal_count(history, child) == 1, "duplicate record attempts must not append"
    assert isinstance(history.record(new_id(), outcome), Recorded)

    history.complete()
    length = len(history.events)
    assert isinstance(history.record(new_id(), outcome), ParentTerminal)
    assert len(history.events) == length, "terminal-guarded record must append nothing"


def test_cancelled_and_timed_out_map_to_failed_with_prefixes() -> None:
    history = History()
    history.start()

    history.record(new_id(), Cancelled(reason="operator"))
    history.record(new_id(), TimedOut(timeout="30s"))

    messages = [e.error.message for e in history.events if isinstance(e, ChildWorkflowFailed)]
    assert messages == ["cancelled:operator", "timed_out:30s"]


def test_failed_outcome_keeps_message_and_details() -> None:
    history = History()
    history.start()
    error = WorkflowError(message="card declined", details=payload("details"))

    decision = history.record(new_id(), Failed(error=error))

    assert isinstance(decision, Recorded)
    assert isinstance(decision.event, ChildWorkflowFailed)
    assert decision.event.error == error


def test_continue_as_new_outcome_is_refused_as_a_recordable_terminal() -> None:
    history = History()
    history.start()
    before = list(history.events)

    decision = history.record(
        new_id(),
        ContinuedAsNew(input=payload("next"), workflow_type=None, next_run_id=new_id()),
    )

    assert isinstance(decision, RecordRefused)
    assert "not a recordable child terminal" in decision.reason
    assert history.events == before


def test_current_run_handle_selects_the_latest_run_not_an_arbitrary_one() -> None:
    # The reference resolves a handle for the newest run among several registered runs. At the
    # history level that is: the latest run's segment is the one a record lands in, and a
    # record addressed to an older (continued-as-new) run is terminal-guarded.
    history = History()
    old_run = history.start()
    child = new_id()
    new_run = history.continue_as_new()

    assert latest_run_id(history.events) == new_run
    segment = current_run_segment(history.events, new_run)
    assert [e.run_id for e in segment] == [new_run]
    assert run_is_terminal(history.events, old_run)
    old_decision = decide_child_terminal_record(
        history.events,
        parent_run_id=old_run,
        child_workflow_id=child,
        outcome=Completed(result=payload("x")),
        command_id=new_id(),
        recorded_at=NOW,
    )
    assert isinstance(old_decision, ParentTerminal)
    assert isinstance(history.record(child, Completed(result=payload("x"))), Recorded)
    assert history.events[-1].run_id == new_run


def test_record_for_an_unknown_parent_run_is_refused() -> None:
    history = History()
    history.start()

    decision = decide_child_terminal_record(
        history.events,
        parent_run_id=new_id(),
        child_workflow_id=new_id(),
        outcome=Completed(result=payload("x")),
        command_id=new_id(),
        recorded_at=NOW,
    )

    assert isinstance(decision, RecordRefused)
    assert "does not exist" in decision.reason


def test_a_child_recorded_in_an_earlier_run_is_recordable_again_in_the_new_run() -> None:
    history = History()
    history.start()
    child = new_id()
    history.record(child, Completed(result=payload("first")))
    history.continue_as_new()

    assert isinstance(history.record(child, Completed(result=payload("second"))), Recorded)
    assert child_terminal_count(history, child) == 2


def test_recorded_event_takes_the_next_seq_and_the_derived_command_id() -> None:
    history = History()
    run = history.start()
    child = new_id()

    decision = history.record(child, Completed(result=payload("r")))

    assert isinstance(decision, Recorded)
    assert decision.event.seq == 2
    assert decision.event.run_id == run
    assert decision.event.command_id == record_child_terminal_id(history.workflow_id, run, child)


def test_record_child_terminal_of_carries_the_id_every_issuer_derives() -> None:
    outcome = Completed(result=Payload.from_json(7))
    record = RecordChildTerminal.of(
        "parent", "run-1", child_workflow_id="child", child_run_id="c-1", outcome=outcome,
        issued_at=NOW,
    )  # fmt: skip
    assert record.command_id == record_child_terminal_id("parent", "run-1", "child")
    assert (record.workflow_id, record.parent_run_id, record.child_workflow_id) == (
        "parent", "run-1", "child",
    )  # fmt: skip
    assert (record.child_run_id, record.outcome, record.issued_at) == ("c-1", outcome, NOW)
    # Same child and parent run: one command, whatever the child run or time of issue.
    again = RecordChildTerminal.of(
        "parent", "run-1", child_workflow_id="child", child_run_id="c-2", outcome=outcome,
        issued_at=datetime(2027, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert again.command_id == record.command_id
    other_run = RecordChildTerminal.of(
        "parent", "run-2", child_workflow_id="child", child_run_id="c-1", outcome=outcome,
        issued_at=NOW,
    )  # fmt: skip
    assert other_run.command_id != record.command_id


def test_terminal_outcome_reads_each_run() -> None:
    history = History()
    first = history.start()
    second = history.continue_as_new()
    assert isinstance(terminal_outcome(history.events, first), ContinuedAsNew)
    assert terminal_outcome(history.events, second) is None
    history.complete("final")
    outcome = terminal_outcome(history.events, second)
    assert isinstance(outcome, Completed)
    assert outcome.result.to_json() == {"label": "final"}


def test_segment_of_an_unknown_run_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="does not appear"):
        current_run_segment([], "missing")


def test_check_next_seq_refuses_gaps_and_repeats() -> None:
    history = History()
    history.start()
    event = history.events[0]
    check_next_seq(history.workflow_id, 0, event)
    with pytest.raises(SequenceError, match="expected event seq 2, got 1"):
        check_next_seq(history.workflow_id, 1, event)


def test_derived_record_id_is_stable_and_distinct_per_key() -> None:
    a = record_child_terminal_id("p", "r1", "c")
    assert a == record_child_terminal_id("p", "r1", "c")
    assert a != record_child_terminal_id("p", "r2", "c")
    assert a != record_child_terminal_id("p", "r1", "d")
    # separators keep ("ab", "c") and ("a", "bc") apart
    assert record_child_terminal_id("ab", "c", "x") != record_child_terminal_id("a", "bc", "x")


def test_check_history_accepts_a_continue_as_new_chain_with_a_parent() -> None:
    history = History()
    history.start(parent=ParentLink(workflow_id="p", run_id="pr"))
    history.continue_as_new()
    history.continue_as_new()
    history.complete()
    check_history(history.events)


def test_check_history_refuses_a_new_run_that_drops_the_parent_link() -> None:
    history = History()
    history.start(parent=ParentLink(workflow_id="p", run_id="pr"))
    history.continue_as_new()
    started = history.events[-1]
    assert isinstance(started, WorkflowStarted)
    broken = [
        *history.events[:-1],
        WorkflowStarted(
            workflow_id=started.workflow_id,
            run_id=started.run_id,
            seq=started.seq,
            recorded_at=NOW,
            command_id=started.command_id,
            workflow_type="parent",
            input=started.input,
            first_run_id=started.first_run_id,
            previous_run_id=started.previous_run_id,
            parent=None,
        ),
    ]
    with pytest.raises(InvariantViolation, match="lost the parent link"):
        check_history(broken)


def test_check_history_refuses_events_after_a_terminal() -> None:
    history = History()
    history.start()
    history.complete()
    history.complete()
    with pytest.raises(InvariantViolation, match="after run"):
        check_history(history.events)
