"""The engine's activities: scheduling, the workers' reports, the activity clocks, cancellation.

Every function takes the command's :class:`~aion_engine._work.Work` and the open run, appends
the events the step produces (each through :func:`_append`, which arms the activity's new
clocks and disarms the ones it no longer needs) and the task records for the queue's topic,
and returns the event that *resolves* an activity (completed, failed, timed out, cancelled)
when it appended one: the caller delivers that event to the workflow's code. The rules:

- an attempt runs at least once; a report (started, heartbeat, completed, failed) counts only
  for the current attempt of an open activity — any other is refused as stale, and an exact
  duplicate is dropped by its command id;
- a failed attempt is retried after the retry policy's backoff on a durable timer, unless the
  error is non-retryable, the attempts are used up, or the next attempt would begin after the
  schedule-to-close deadline;
- start-to-close and heartbeat timeouts fail the attempt (and are retried like a failure);
  schedule-to-start and schedule-to-close end the activity;
- cancelling an activity that no worker has reported starting (or that is backing off) ends
  it at once; a started one is told (a cancel notice on its partition of the queue's topic)
  and ends when its worker confirms, or when it finishes anyway.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final, assert_never

from aion_common.domain import (
    ActivityAttemptFailed,
    ActivityAttemptScheduled,
    ActivityCancelled,
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeatRecorded,
    ActivityReport,
    ActivityScheduled,
    ActivityStarted,
    ActivityTask,
    ActivityTimedOut,
    CancelActivityTask,
    CompleteActivity,
    Event,
    FailActivityAttempt,
    RecordActivityHeartbeat,
    RecordActivityStarted,
    RefusalCode,
    TimeoutKind,
    WorkflowError,
    retry_delay_ms,
)
from aion_engine._activity_state import (
    HEARTBEAT,
    RETRY,
    SCHEDULE_TO_CLOSE,
    SCHEDULE_TO_START,
    START_TO_CLOSE,
    ActivityState,
)
from aion_engine._executor import ScheduleActivity
from aion_engine._state import RunState, WorkflowState
from aion_engine._work import Work, timer_request
from aion_engine.decision import TimerRequest

__all__ = [
    "ALREADY_STARTED",
    "close_notices",
    "fire",
    "is_activity_timer",
    "pending_timers",
    "propagate_cancel",
    "report",
    "report_refusal",
    "request_cancel",
    "resolve_cancelled",
    "schedule",
]

ALREADY_STARTED: Final = "already-started"
""":func:`report_refusal`'s verdict for a second start report of a started attempt: a no-op."""

_KIND_NAMES: Final = {
    START_TO_CLOSE: TimeoutKind.START_TO_CLOSE,
    HEARTBEAT: TimeoutKind.HEARTBEAT,
}


def _format_ms(ms: int) -> str:
    return f"{ms / 1000:g}s"


def _append(work: Work, run: RunState, event: Event) -> None:
    """Append an activity event, arming the clocks it starts and disarming those it ends."""
    activity_id: str = getattr(event, "activity_id")  # noqa: B009 - every activity event has one
    before = run.activities.get(activity_id)
    old = {} if before is None else before.timers
    work.append(event)
    after = run.activities.get(activity_id)
    new = {} if after is None else after.timers
    workflow_id, run_id = work.state.workflow_id, run.run_id
    for timer_id, (_, at) in old.items():
        if timer_id not in new:
            work.disarm.append(timer_request(workflow_id, run_id, timer_id, at).command.command_id)
    for timer_id, (_, at) in new.items():
        if timer_id not in old:
            work.timers.append(timer_request(workflow_id, run_id, timer_id, at))


def _task(run: RunState, activity: ActivityState) -> ActivityTask:
    scheduled = activity.scheduled
    return ActivityTask(
        workflow_id=scheduled.workflow_id,
        run_id=scheduled.run_id,
        workflow_type=run.started.workflow_type,
        activity_id=scheduled.activity_id,
        activity_type=scheduled.activity_type,
        attempt=activity.attempt,
        input=scheduled.input,
        options=scheduled.options,
        scheduled_at=scheduled.recorded_at,
        attempt_scheduled_at=activity.attempt_scheduled_at,
        heartbeat_details=activity.heartbeat_details,
    )


def _notice(work: Work, activity: ActivityState, reason: str, *, attempt: int = 0) -> None:
    scheduled = activity.scheduled
    work.tasks.append(
        (
            scheduled.options.task_queue,
            CancelActivityTask(
                workflow_id=scheduled.workflow_id,
                run_id=scheduled.run_id,
                activity_id=scheduled.activity_id,
                target_attempt=attempt,
                reason=reason,
                issued_at=work.now,
            ),
        )
    )


# -- scheduling -----------------------------------------------------------------------------


def schedule(work: Work, run: RunState, decision: ScheduleActivity) -> None:
    """Record the code's ``start_activity`` and dispatch its first attempt."""
    _append(
        work,
        run,
        ActivityScheduled(
            **work.envelope(run.run_id),
            activity_id=decision.activity_id,
            activity_type=decision.activity_type,
            input=decision.input,
            options=decision.options,
        ),
    )
    activity = run.activities[decision.activity_id]
    work.tasks.append((decision.options.task_queue, _task(run, activity)))


# -- the workers' reports ----------------------------------------------------------------------


def report_refusal(  # noqa: PLR0911 - one verdict per case
    cmd: ActivityReport, state: WorkflowState | None
) -> tuple[RefusalCode, str] | str | None:
    """Why a worker's report cannot apply (refusal code and reason), :data:`ALREADY_STARTED`
    for a repeated start report, or None when it applies to the current attempt."""
    what = f"{type(cmd).__name__} of activity {cmd.activity_id!r} attempt {cmd.attempt}"
    if state is None:
        return RefusalCode.UNKNOWN_WORKFLOW, f"{what}: workflow {cmd.workflow_id!r} does not exist"
    run = state.run
    if run is None or (run.run_id != cmd.run_id and cmd.run_id not in state.closed_runs):
        # a run older than the closed runs kept (decision 63) is refused as an unknown one
        note = state.unknown_run_note()
        return RefusalCode.UNKNOWN_ACTIVITY, f"{what}: workflow has no run {cmd.run_id!r}{note}"
    if run.run_id != cmd.run_id or not run.is_open:
        return RefusalCode.STALE_ACTIVITY_REPORT, f"{what}: run {cmd.run_id!r} has closed"
    activity = run.activities.get(cmd.activity_id)
    if activity is None:
        if cmd.activity_id in run.closed_activities:
            return RefusalCode.STALE_ACTIVITY_REPORT, f"{what}: the activity has ended"
        return RefusalCode.UNKNOWN_ACTIVITY, f"{what}: run {cmd.run_id!r} has no such activity"
    if cmd.attempt != activity.attempt or activity.retry_at is not None:
        current = "none is running" if activity.retry_at is not None else "it is not"
        return (
            RefusalCode.STALE_ACTIVITY_REPORT,
            f"{what}: not the current attempt (attempt {activity.attempt}; {current})",
        )
    if isinstance(cmd, RecordActivityStarted) and activity.started_at is not None:
        return ALREADY_STARTED
    return None


def report(work: Work, run: RunState, cmd: ActivityReport) -> Event | None:
    """Apply a report that :func:`report_refusal` admitted; returns the resolution, if any."""
    activity = run.activities[cmd.activity_id]
    env = work.envelope(run.run_id)
    match cmd:
        case RecordActivityStarted(worker=worker):
            _append(
                work,
                run,
                ActivityStarted(
                    **env, activity_id=cmd.activity_id, attempt=cmd.attempt, worker=worker
                ),
            )
            return None
        case RecordActivityHeartbeat(details=details):
            _append(
                work,
                run,
                ActivityHeartbeatRecorded(
                    **env, activity_id=cmd.activity_id, attempt=cmd.attempt, details=details
                ),
            )
            return None
        case CompleteActivity(result=result):
            return _resolve(
                work,
                run,
                ActivityCompleted(
                    **env, activity_id=cmd.activity_id, attempt=cmd.attempt, result=result
                ),
            )
        case FailActivityAttempt(error=error, non_retryable=non_retryable):
            return _attempt_failed(work, run, activity, error, None, non_retryable=non_retryable)
        case _:
            assert_never(cmd)


def _resolve(work: Work, run: RunState, event: Event) -> Event:
    _append(work, run, event)
    return event


def _attempt_failed(
    work: Work,
    run: RunState,
    activity: ActivityState,
    error: WorkflowError,
    timeout: TimeoutKind | None,
    *,
    non_retryable: bool,
) -> Event | None:
    """The current attempt failed: retry it later, or end the activity."""
    env = work.envelope(run.run_id)
    ids: dict[str, Any] = {"activity_id": activity.activity_id, "attempt": activity.attempt}
    if activity.cancel_requested:
        return _resolve(work, run, ActivityCancelled(**env, **ids, reason=activity.cancel_reason))
    retry = activity.options.retry
    if non_retryable or error.error_type in retry.non_retryable_errors:
        return _resolve(work, run, ActivityFailed(**env, **ids, error=error, non_retryable=True))
    if retry.maximum_attempts and activity.attempt >= retry.maximum_attempts:
        if timeout is not None:
            return _resolve(
                work, run, ActivityTimedOut(**env, **ids, timeout=timeout, last_error=error)
            )
        return _resolve(work, run, ActivityFailed(**env, **ids, error=error, non_retryable=False))
    retry_at = work.now + timedelta(milliseconds=retry_delay_ms(retry, activity.attempt))
    deadline = activity.schedule_to_close_deadline
    if deadline is not None and retry_at >= deadline:
        return _resolve(
            work,
            run,
            ActivityTimedOut(**env, **ids, timeout=TimeoutKind.SCHEDULE_TO_CLOSE, last_error=error),
        )
    _append(
        work,
        run,
        ActivityAttemptFailed(**env, **ids, error=error, next_attempt_at=retry_at, timeout=timeout),
    )
    return None


# -- clocks ---------------------------------------------------------------------------------


def is_activity_timer(run: RunState, timer_id: str) -> bool:
    """Whether ``timer_id`` is a clock of one of the run's open activities right now."""
    return timer_id in run.activity_timers


def fire(work: Work, run: RunState, timer_id: str) -> Event | None:
    """An activity clock ran out (:func:`is_activity_timer` held); returns the resolution."""
    activity = run.activities[run.activity_timers[timer_id]]
    kind, _ = activity.timers[timer_id]
    env = work.envelope(run.run_id)
    ids: dict[str, Any] = {"activity_id": activity.activity_id, "attempt": activity.attempt}
    options = activity.options
    if kind == RETRY:
        _append(
            work,
            run,
            ActivityAttemptScheduled(
                **env, activity_id=activity.activity_id, attempt=activity.attempt + 1
            ),
        )
        work.tasks.append((options.task_queue, _task(run, activity)))
        return None
    if kind == SCHEDULE_TO_CLOSE:
        _notice(work, activity, "schedule-to-close timeout")
        return _resolve(
            work,
            run,
            ActivityTimedOut(
                **env, **ids, timeout=TimeoutKind.SCHEDULE_TO_CLOSE, last_error=activity.last_error
            ),
        )
    if kind == SCHEDULE_TO_START:
        _notice(work, activity, "schedule-to-start timeout", attempt=activity.attempt)
        return _resolve(
            work, run, ActivityTimedOut(**env, **ids, timeout=TimeoutKind.SCHEDULE_TO_START)
        )
    if kind == START_TO_CLOSE:
        assert options.start_to_close_ms is not None
        problem = (
            f"attempt {activity.attempt} did not finish within "
            f"{_format_ms(options.start_to_close_ms)} of starting (start-to-close timeout)"
        )
    else:
        assert options.heartbeat_timeout_ms is not None
        problem = (
            f"attempt {activity.attempt} sent no heartbeat for "
            f"{_format_ms(options.heartbeat_timeout_ms)} (heartbeat timeout)"
        )
    _notice(work, activity, problem, attempt=activity.attempt)
    error = WorkflowError(message=f"TimeoutError: {problem}", error_type="TimeoutError")
    return _attempt_failed(work, run, activity, error, _KIND_NAMES[kind], non_retryable=False)


def pending_timers(run: RunState) -> list[TimerRequest]:
    """Every clock of the run's open activities (re-armed after a rebuild)."""
    workflow_id, run_id = run.started.workflow_id, run.run_id
    return [
        timer_request(workflow_id, run_id, timer_id, at)
        for activity in run.activities.values()
        for timer_id, (_, at) in activity.timers.items()
    ]


# -- cancellation ---------------------------------------------------------------------------


def request_cancel(
    work: Work, run: RunState, activity_id: str, reason: str, *, by_workflow_code: bool
) -> str | None:
    """Record a cancellation request and tell the worker. Returns the activity id when the
    activity should end cancelled right away (no attempt is known to run): the caller calls
    :func:`resolve_cancelled` for it once the code's queued decisions are recorded."""
    activity = run.activities.get(activity_id)
    if activity is None:
        return None
    _append(
        work,
        run,
        ActivityCancelRequested(
            **work.envelope(run.run_id),
            activity_id=activity_id,
            reason=reason,
            by_workflow_code=by_workflow_code,
        ),
    )
    if activity.retry_at is None:
        _notice(work, activity, reason)
    return None if activity.status == "started" else activity_id


def resolve_cancelled(work: Work, run: RunState, activity_id: str) -> Event | None:
    """End a cancel-requested activity that has no running attempt; returns the resolution."""
    activity = run.activities.get(activity_id)
    if activity is None or activity.status == "started":
        return None
    return _resolve(
        work,
        run,
        ActivityCancelled(
            **work.envelope(run.run_id),
            activity_id=activity_id,
            attempt=activity.attempt,
            reason=activity.cancel_reason,
        ),
    )


def propagate_cancel(work: Work, run: RunState, reason: str) -> list[str]:
    """The run was asked to cancel: request cancellation of each of its open activities
    (:func:`request_cancel`); returns the ids to resolve at once."""
    pending = [
        activity_id
        for activity_id, activity in list(run.activities.items())
        if not activity.cancel_requested
    ]
    resolve: list[str] = []
    for activity_id in pending:
        now = request_cancel(work, run, activity_id, reason, by_workflow_code=False)
        if now is not None:
            resolve.append(now)
    return resolve


def close_notices(work: Work, run: RunState) -> None:
    """The run closed: tell the workers of its open activities to stop, forget their clocks."""
    workflow_id = work.state.workflow_id
    reason = f"workflow run {run.run_id} closed ({type(run.terminal).__name__})"
    for activity in run.activities.values():
        if activity.retry_at is None:
            _notice(work, activity, reason)
        for timer_id, (_, at) in activity.timers.items():
            work.disarm.append(
                timer_request(workflow_id, run.run_id, timer_id, at).command.command_id
            )
