"""The watcher's pure fold: given event batches, then the records to issue and the sweep's due."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aion_common.domain import (
    Cancelled,
    CarriedChild,
    ChildWorkflowCompleted,
    Completed,
    Event,
    EventBatch,
    ParentClosePolicy,
    ParentLink,
    Payload,
    TimedOut,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowPurged,
    WorkflowStarted,
    WorkflowTimedOut,
    record_child_terminal_id,
)
from aion_watcher import ParentStatus, WatchState

AT = datetime(2026, 1, 1, tzinfo=UTC)
GRACE = 5.0


@dataclass
class Flow:
    """Builds one workflow's batches with contiguous seqs across runs."""

    workflow_id: str = field(default_factory=lambda: f"wf-{uuid.uuid4().hex[:8]}")
    seq: int = 0
    run_id: str = ""
    first_run_id: str = ""
    parent: ParentLink | None = None

    def _env(self) -> dict[str, object]:
        self.seq += 1
        return {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "seq": self.seq,
            "recorded_at": AT,
            "command_id": str(uuid.uuid4()),
        }

    def _started(
        self, previous: str | None = None, carried: tuple[CarriedChild, ...] = ()
    ) -> WorkflowStarted:
        return WorkflowStarted(
            **self._env(),  # type: ignore[arg-type]
            workflow_type="t",
            input=Payload.from_json(None),
            first_run_id=self.first_run_id,
            previous_run_id=previous,
            parent=self.parent,
            carried_children=carried,
        )

    def batch(self, *events: Event) -> EventBatch:
        return EventBatch(
            workflow_id=self.workflow_id, command_id=str(uuid.uuid4()), writer="w", events=events
        )

    def start(self, parent: ParentLink | None = None) -> EventBatch:
        self.run_id = self.first_run_id = str(uuid.uuid4())
        self.parent = parent
        return self.batch(self._started())

    def link(self) -> ParentLink:
        return ParentLink(workflow_id=self.workflow_id, run_id=self.run_id)

    def complete(self, result: object = "ok") -> EventBatch:
        return self.batch(WorkflowCompleted(**self._env(), result=Payload.from_json(result)))  # type: ignore[arg-type]

    def cancel(self, reason: str) -> EventBatch:
        return self.batch(WorkflowCancelled(**self._env(), reason=reason))  # type: ignore[arg-type]

    def time_out(self, timeout: str) -> EventBatch:
        return self.batch(WorkflowTimedOut(**self._env(), timeout=timeout))  # type: ignore[arg-type]

    def continue_as_new(self, carry: Mapping[str, str] | None = None) -> EventBatch:
        """The run continues-as-new; ``carry`` maps the children still open (child id to the
        run that scheduled it) that the engine hands to the next run, as it lists them."""
        carried = tuple(
            CarriedChild(
                child_workflow_id=child,
                child_workflow_type="t",
                parent_close_policy=ParentClosePolicy.ABANDON,
                origin_run_id=origin,
            )
            for child, origin in (carry or {}).items()
        )
        previous, next_run = self.run_id, str(uuid.uuid4())
        closing = WorkflowContinuedAsNew(
            **self._env(),  # type: ignore[arg-type]
            input=Payload.from_json(None),
            workflow_type=None,
            next_run_id=next_run,
        )
        self.run_id = next_run
        return self.batch(closing, self._started(previous, carried))

    def purge(self, reason: str = "retention ran out") -> EventBatch:
        return self.batch(WorkflowPurged(**self._env(), reason=reason))  # type: ignore[arg-type]

    def record_child(self, child: str) -> EventBatch:
        return self.batch(
            ChildWorkflowCompleted(
                **self._env(), child_workflow_id=child, result=Payload.from_json(1)
            )  # type: ignore[arg-type]
        )


def new_state() -> WatchState:
    state = WatchState(blind_limit=2)
    state.own(0)
    return state


def test_child_terminal_issues_one_record_to_the_parent_run() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    assert state.apply(child.start(parent.link()), partition=0, now=0).records == ()
    applied = state.apply(child.complete({"n": 1}), partition=0, now=1)
    (record,) = applied.records
    assert applied.terminals == 1
    assert record.workflow_id == parent.workflow_id
    assert record.parent_run_id == parent.run_id
    assert record.child_workflow_id == child.workflow_id
    assert record.child_run_id == child.run_id
    assert record.command_id == record_child_terminal_id(
        parent.workflow_id, parent.run_id, child.workflow_id
    )
    assert record.outcome == Completed(result=Payload.from_json({"n": 1}))
    assert record.issued_at == AT  # the terminal's time: a re-issue is the same command


def test_when_the_engine_reports_the_terminal_the_watcher_only_sweeps() -> None:
    """Decision 37: the engine's transaction carried the record, so the fold issues nothing
    now and the sweep re-issues it only if the parent has not recorded it after the grace."""
    state, parent, child = WatchState(blind_limit=2, engine_reports=True), Flow(), Flow()
    state.own(0)
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    applied = state.apply(child.complete({"n": 1}), partition=0, now=1)
    assert applied.records == ()
    assert applied.terminals == 1
    (pending,) = state.pending()
    assert state.sweep(now=5, grace=10) == []
    (item,) = state.sweep(now=11, grace=10)
    assert item.command == pending
    state.apply(parent.record_child(child.workflow_id), partition=0, now=12)
    assert state.pending() == ()


def test_cancelled_and_timed_out_pass_through_raw() -> None:
    state, parent, a, b = new_state(), Flow(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    for child in (a, b):
        state.apply(child.start(parent.link()), partition=0, now=0)
    (cancelled,) = state.apply(a.cancel("operator"), partition=0, now=0).records
    (timed_out,) = state.apply(b.time_out("30s"), partition=0, now=0).records
    assert cancelled.outcome == Cancelled(reason="operator")
    assert timed_out.outcome == TimedOut(timeout="30s")


def test_continue_as_new_chain_of_three_yields_one_record_naming_the_final_run() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    first = child.run_id
    for _ in range(3):
        assert state.apply(child.continue_as_new(), partition=0, now=0).records == ()
    assert state.watch_count() == 1
    assert state.current_run(child.workflow_id) == child.run_id != first
    applied = state.apply(child.complete(), partition=0, now=0)
    assert [r.child_run_id for r in applied.records] == [child.run_id]
    assert applied.terminals == 1


def test_a_workflow_without_parent_issues_nothing() -> None:
    state, lone = new_state(), Flow()
    state.apply(lone.start(), partition=0, now=0)
    applied = state.apply(lone.complete(), partition=0, now=0)
    assert applied.records == ()
    assert applied.terminals == 0
    assert state.watch_count() == 0


def test_duplicate_batches_are_ignored() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    started = child.start(parent.link())
    state.apply(started, partition=0, now=0)
    assert state.apply(started, partition=0, now=0).duplicate
    assert state.watch_count() == 1
    terminal = child.complete()
    assert len(state.apply(terminal, partition=0, now=0).records) == 1
    again = state.apply(terminal, partition=0, now=0)
    assert again.duplicate
    assert again.records == ()


def test_sweep_candidates_appear_after_grace_and_go_once_recorded() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    (record,) = state.apply(child.complete(), partition=0, now=10).records
    assert state.sweep(now=10 + GRACE - 0.1, grace=GRACE) == []
    (due,) = state.sweep(now=10 + GRACE, grace=GRACE)
    assert due.command == record
    assert due.parent_status is ParentStatus.OPEN
    assert state.sweep(now=10 + GRACE + 1, grace=GRACE) == []  # at most once per grace
    assert len(state.sweep(now=10 + 2 * GRACE, grace=GRACE)) == 1
    state.apply(parent.record_child(child.workflow_id), partition=0, now=20)
    assert state.sweep(now=100, grace=GRACE) == []
    assert state.watch_count() == 0


def test_sweep_candidates_go_when_the_parent_run_closes() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    state.apply(child.complete(), partition=0, now=0)
    state.apply(parent.complete(), partition=0, now=1)
    assert state.sweep(now=100, grace=GRACE) == []
    assert state.parent_status(parent.workflow_id, parent.run_id) is ParentStatus.CLOSED


def test_a_terminal_after_the_parent_closed_or_recorded_is_suppressed() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    state.apply(parent.complete(), partition=0, now=0)
    applied = state.apply(child.complete(), partition=0, now=0)
    assert (applied.records, applied.suppressed) == ((), 1)


def test_closing_a_parent_run_drops_only_its_own_watches() -> None:
    state, a, b = new_state(), Flow(), Flow()
    for parent in (a, b):
        state.apply(parent.start(), partition=0, now=0)
        state.apply(Flow().start(parent.link()), partition=0, now=0)
    assert state.watch_count() == 2
    state.apply(a.complete(), partition=0, now=0)
    assert {w.parent_workflow_id for w in state.watches()} == {b.workflow_id}


def test_unknown_parent_is_reissued_blind_with_doubling_spacing_up_to_the_limit() -> None:
    state = WatchState(blind_limit=3)
    state.own(0)
    parent_link = ParentLink(workflow_id="p-elsewhere", run_id="r1")
    child = Flow()
    state.apply(child.start(parent_link), partition=0, now=0)
    assert len(state.apply(child.complete(), partition=0, now=0).records) == 1
    hits: list[float] = []
    for n in range(1, 40):  # a sweep every grace period for 39 of them
        for item in state.sweep(now=GRACE * n, grace=GRACE):
            assert item.parent_status is ParentStatus.UNKNOWN
            hits.append(GRACE * n)
    # grace after the issue, then 2, then 4 grace periods after each blind re-issue; then none.
    assert hits == [GRACE * 1, GRACE * 3, GRACE * 7]
    assert state.watch_count() == 1  # still watched: a parent learnt later is served again


def test_a_parent_learnt_after_blind_reissues_is_back_to_once_per_grace() -> None:
    state = WatchState(blind_limit=5)
    state.own(0)
    parent, child = Flow(), Flow()
    parent_start = parent.start()  # folded only later, once its partition is assigned here
    state.apply(child.start(parent.link()), partition=0, now=0)
    state.apply(child.complete(), partition=0, now=0)
    assert [i.parent_status for i in state.sweep(now=GRACE, grace=GRACE)] == [ParentStatus.UNKNOWN]
    assert state.sweep(now=GRACE * 2, grace=GRACE) == []  # blind: next one at 3 grace
    state.own(1)  # the parent's partition is assigned here and its start folded
    state.apply(parent_start, partition=1, now=GRACE * 2)
    (item,) = state.sweep(now=GRACE * 2, grace=GRACE)
    assert item.parent_status is ParentStatus.OPEN


def test_dropping_a_partition_forgets_its_facts() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    state.drop_partition(0)
    assert state.watch_count() == 0
    assert state.current_run(child.workflow_id) is None
    assert state.parent_status(parent.workflow_id, parent.run_id) is ParentStatus.UNKNOWN


def test_a_purged_workflow_is_forgotten_and_its_id_starts_afresh() -> None:
    state = WatchState()
    state.own(0)
    parent = Flow()
    state.apply(parent.start(), partition=0, now=0.0)
    state.apply(parent.complete(), partition=0, now=0.0)
    run = parent.run_id
    assert state.parent_status(parent.workflow_id, run) is ParentStatus.CLOSED
    state.apply(parent.purge(), partition=0, now=1.0)
    assert state.current_run(parent.workflow_id) is None
    assert state.parent_status(parent.workflow_id, run) is ParentStatus.UNKNOWN
    again = Flow(workflow_id=parent.workflow_id)  # the freed id: a new history from seq 1
    applied = state.apply(again.start(), partition=0, now=2.0)
    assert not applied.duplicate
    assert state.current_run(parent.workflow_id) == again.run_id


def test_a_child_carried_over_a_parents_continue_as_new_is_still_reported() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    origin = parent.run_id
    # the child moves to run 2
    state.apply(parent.continue_as_new({child.workflow_id: origin}), partition=0, now=0)
    assert state.parent_status(parent.workflow_id, origin) is ParentStatus.OPEN
    assert state.watch_count() == 1
    (record,) = state.apply(child.complete(), partition=0, now=1).records
    assert record.parent_run_id == origin  # as its start names it; the engine redirects
    state.apply(parent.record_child(child.workflow_id), partition=0, now=2)  # in run 2
    assert state.watch_count() == 0
    assert state.sweep(now=100, grace=GRACE) == []


def test_the_chain_end_drops_the_watches_it_carried() -> None:
    state, parent, child = new_state(), Flow(), Flow()
    state.apply(parent.start(), partition=0, now=0)
    state.apply(child.start(parent.link()), partition=0, now=0)
    origin = parent.run_id
    state.apply(parent.continue_as_new({child.workflow_id: origin}), partition=0, now=0)
    state.apply(parent.complete(), partition=0, now=0)  # the chain ends, the child still open
    assert state.parent_status(parent.workflow_id, origin) is ParentStatus.CLOSED
    assert state.watch_count() == 0
    assert state.apply(child.complete(), partition=0, now=1).records == ()
