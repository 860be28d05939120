"""Rebuild a run's coroutine by replaying its history, and detect non-determinism.

Workflow code is run from its start against the run's recorded events. Input events are fed
to the executor in order; every decision the code makes must match the next recorded
decision event (a child with the same id and type, a timer with the same id, the same kind
of outcome). A terminal the engine forced while the code was blocked (terminate, execution
timeout, an earlier non-determinism failure) is accepted as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from aion_common.domain import (
    ActivityAttemptFailed,
    ActivityAttemptScheduled,
    ActivityCancelled,
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeatRecorded,
    ActivityScheduled,
    ActivityStarted,
    ActivityTimedOut,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    Event,
    InvalidInput,
    NonDeterminism,
    RecordPublished,
    SignalReceived,
    TimerFired,
    TimerScheduled,
    WorkflowBlocked,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowMoved,
    WorkflowStarted,
    WorkflowTimedOut,
)
from aion_common.domain import (
    Cancelled as CancelledOutcome,
)
from aion_common.domain import (
    Completed as CompletedOutcome,
)
from aion_engine._executor import (
    ContinueAsNewDecision,
    Executor,
    Finish,
    Publish,
    RequestCancelActivity,
    ScheduleActivity,
    ScheduleChild,
    ScheduleTimer,
    WorkflowDecision,
    execution_timeout_timer_id,
)
from aion_engine.registry import WorkflowFn
from aion_engine.signal_start import leading_inputs

__all__ = ["describe_decision", "describe_event", "replay_run"]

_INPUTS = (
    CancelRequested,
    SignalReceived,
    TimerFired,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    ActivityCancelled,
)
# What the engine records about an activity on its own (worker reports, retries, the run's
# cancellation reaching it): neither a decision of the code nor an input to it.
_ENGINE_ONLY = (
    ActivityStarted,
    ActivityHeartbeatRecorded,
    ActivityAttemptFailed,
    ActivityAttemptScheduled,
    WorkflowBlocked,
    WorkflowMoved,
)
_TERMINALS = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowTimedOut,
    WorkflowContinuedAsNew,
)


def describe_event(event: Event) -> str:  # noqa: PLR0911 - one form per event type
    """A short, stable description of an event for non-determinism messages."""
    match event:
        case ChildWorkflowScheduled(child_workflow_id=child, child_workflow_type=wtype):
            return f"ChildWorkflowScheduled({child}, type={wtype})"
        case TimerScheduled(timer_id=timer_id) | TimerFired(timer_id=timer_id):
            return f"{type(event).__name__}({timer_id})"
        case SignalReceived(name=name):
            return f"SignalReceived({name})"
        case RecordPublished(topic=topic):
            return f"RecordPublished({topic})"
        case ActivityScheduled(activity_id=aid, activity_type=atype):
            return f"ActivityScheduled({aid}, type={atype})"
        case (
            ActivityCancelRequested(activity_id=aid)
            | ActivityCompleted(activity_id=aid)
            | ActivityFailed(activity_id=aid)
            | ActivityTimedOut(activity_id=aid)
            | ActivityCancelled(activity_id=aid)
        ):
            return f"{type(event).__name__}({aid})"
        case (
            ChildWorkflowCompleted(child_workflow_id=child)
            | ChildWorkflowFailed(child_workflow_id=child)
        ):
            return f"{type(event).__name__}({child})"
        case _:
            return type(event).__name__


def describe_decision(decision: WorkflowDecision) -> str:  # noqa: PLR0911 - one per decision
    """The event a decision would record, described like :func:`describe_event`."""
    match decision:
        case ScheduleChild(child_id=child, workflow_type=wtype):
            return f"ChildWorkflowScheduled({child}, type={wtype})"
        case ScheduleTimer(timer_id=timer_id):
            return f"TimerScheduled({timer_id})"
        case ScheduleActivity(activity_id=aid, activity_type=atype):
            return f"ActivityScheduled({aid}, type={atype})"
        case RequestCancelActivity(activity_id=aid):
            return f"ActivityCancelRequested({aid})"
        case Publish(topic=topic):
            return f"RecordPublished({topic})"
        case Finish(outcome=outcome):
            return _terminal_name(outcome)
        case ContinueAsNewDecision():
            return "WorkflowContinuedAsNew"
        case _:
            assert_never(decision)


def _terminal_name(outcome: object) -> str:
    if isinstance(outcome, CompletedOutcome):
        return "WorkflowCompleted"
    if isinstance(outcome, CancelledOutcome):
        return "WorkflowCancelled"
    return "WorkflowFailed"


def _matches(decision: WorkflowDecision, event: Event) -> bool:  # noqa: PLR0911 - per decision
    match decision, event:
        case ScheduleChild(), ChildWorkflowScheduled():
            return (decision.child_id, decision.workflow_type) == (
                event.child_workflow_id,
                event.child_workflow_type,
            )
        case ScheduleTimer(), TimerScheduled():
            return decision.timer_id == event.timer_id
        case ScheduleActivity(), ActivityScheduled():
            return (decision.activity_id, decision.activity_type) == (
                event.activity_id,
                event.activity_type,
            )
        case RequestCancelActivity(), ActivityCancelRequested():
            return decision.activity_id == event.activity_id
        case ContinueAsNewDecision(), WorkflowContinuedAsNew():
            return decision.workflow_type == event.workflow_type
        case Publish(), RecordPublished():
            return (decision.topic, decision.key) == (event.topic, event.key)
        case Finish(), _:
            return _terminal_name(decision.outcome) == type(event).__name__
        case _:
            return False


def replay_run(
    fn: WorkflowFn, segment: Sequence[Event], *, pending_ok: bool = False, trace: bool = False
) -> Executor:
    """Rebuild the executor of the run ``segment`` opens; raises :class:`NonDeterminism`.

    The returned executor is finished when the segment holds the run's terminal. With
    ``pending_ok``, decisions the code makes past the end of the history are left queued on
    it (moving a blocked run to new code: it goes on from where the old code stopped) instead
    of being a divergence. With ``trace``, a divergence names the line of the code that made
    (or did not make) the decision (``aion replay``; it costs a frame walk per decision).
    """
    started = segment[0]
    if not isinstance(started, WorkflowStarted):
        raise InvalidInput("a run segment starts with WorkflowStarted")
    executor = Executor(fn, started, trace=trace)
    timeout_timer = execution_timeout_timer_id(started.workflow_id, started.run_id)
    # inputs recorded with the start reach the code before its first step, as they did live
    leading = leading_inputs(segment, timeout_timer)
    for event in leading:
        executor.deliver(event)
    executor.start()
    for event in segment[1:]:
        if isinstance(event, TimerScheduled) and event.timer_id == timeout_timer:
            continue
        if leading and event is leading[0]:
            leading.pop(0)
            continue
        if isinstance(
            event, ChildWorkflowScheduled | TimerScheduled | ActivityScheduled | RecordPublished
        ) or (isinstance(event, ActivityCancelRequested) and event.by_workflow_code):
            _expect(executor, event)
        elif isinstance(event, (*_ENGINE_ONLY, ActivityCancelRequested)):
            continue
        elif isinstance(event, _TERMINALS):
            if executor.has_decisions:
                _expect(executor, event)
            executor.close()
            return executor
        elif isinstance(event, _INPUTS):
            _no_extra_decision(executor, event, event.seq)
            executor.deliver(event)
        else:
            raise NonDeterminism(
                started.workflow_id, event.seq, f"{describe_event(event)} inside a run"
            )
    if not pending_ok:
        _no_extra_decision(executor, None, segment[-1].seq + 1)
    return executor


def _expect(executor: Executor, event: Event) -> None:
    decision = executor.take_decision()
    if decision is None:
        detail = (
            f"expected {describe_event(event)} at seq {event.seq}, "
            f"code made no decision ({executor.describe_wait()})"
        )
        source = executor.where() if executor.traced else ""
    elif not _matches(decision, event):
        detail = (
            f"expected {describe_event(event)} at seq {event.seq}, "
            f"code scheduled {describe_decision(decision)}"
        )
        source = executor.last_source
    else:
        return
    executor.close()
    raise _divergence(event.workflow_id, event.seq, detail, source)


def _no_extra_decision(executor: Executor, event: Event | None, seq: int) -> None:
    decision = executor.take_decision()
    if decision is None:
        return
    where = f"history holds {describe_event(event)}" if event is not None else "history ends"
    detail = f"code made {describe_decision(decision)} but at seq {seq} {where}"
    source = executor.last_source
    executor.close()
    raise _divergence(executor.started.workflow_id, seq, detail, source)


def _divergence(workflow_id: str, seq: int, detail: str, source: str) -> NonDeterminism:
    error = NonDeterminism(workflow_id, seq, f"{detail} (code at {source})" if source else detail)
    error.source = source
    return error
