"""What each activity event does to the ``activities`` view (pure; :mod:`.changes` folds it).

The row of an activity is inserted by its ``ActivityScheduled`` and then only updated: each
later event sets the columns it knows about, so re-applying the events in order always ends at
the same row.
"""

from __future__ import annotations

from aion_common.codecs.event_json import payload_text
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
    Event,
)
from aion_projector.schema import ActivityState

__all__ = ["ACTIVITY_EVENTS", "activity_key", "activity_update", "new_activity"]

ACTIVITY_EVENTS = (
    ActivityScheduled,
    ActivityStarted,
    ActivityHeartbeatRecorded,
    ActivityAttemptFailed,
    ActivityAttemptScheduled,
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    ActivityCancelRequested,
    ActivityCancelled,
)

Row = dict[str, object]


def activity_key(event: Event) -> tuple[str, str, str]:
    """The view's key of the activity an activity event is about."""
    return (event.workflow_id, event.run_id, getattr(event, "activity_id"))  # noqa: B009


def new_activity(event: ActivityScheduled) -> Row:
    """The row an ``ActivityScheduled`` inserts."""
    return {
        "workflow_id": event.workflow_id,
        "run_id": event.run_id,
        "activity_id": event.activity_id,
        "activity_type": event.activity_type,
        "task_queue": event.options.task_queue,
        "state": ActivityState.SCHEDULED.value,
        "attempt": 1,
        "scheduled_seq": event.seq,
        "scheduled_at": event.recorded_at,
        "started_at": None,
        "worker": None,
        "last_heartbeat_at": None,
        "heartbeat_details": None,
        "last_error_type": None,
        "last_error_message": None,
        "next_attempt_at": None,
        "timeout": None,
        "cancel_requested": False,
        "closed_at": None,
        "result": None,
    }


def activity_update(event: Event) -> Row:  # noqa: PLR0911 - one update per event type
    """The columns a later activity event sets."""
    at = event.recorded_at
    match event:
        case ActivityStarted(attempt=attempt, worker=worker):
            return {
                "state": ActivityState.STARTED.value,
                "attempt": attempt,
                "started_at": at,
                "worker": worker,
            }
        case ActivityHeartbeatRecorded(details=details):
            update: Row = {"state": ActivityState.STARTED.value, "last_heartbeat_at": at}
            if details is not None:
                update["heartbeat_details"] = payload_text(details)
            return update
        case ActivityAttemptFailed(error=error, next_attempt_at=retry_at, timeout=timeout):
            return {
                "state": ActivityState.BACKING_OFF.value,
                "last_error_type": error.error_type or None,
                "last_error_message": error.message,
                "next_attempt_at": retry_at,
                "timeout": None if timeout is None else timeout.value,
            }
        case ActivityAttemptScheduled(attempt=attempt):
            return {
                "state": ActivityState.SCHEDULED.value,
                "attempt": attempt,
                "started_at": None,
                "worker": None,
                "next_attempt_at": None,
            }
        case ActivityCancelRequested():
            return {"cancel_requested": True}
        case ActivityCompleted(attempt=attempt, result=result):
            return _closed(ActivityState.COMPLETED, at, attempt, result=payload_text(result))
        case ActivityFailed(attempt=attempt, error=error):
            return _closed(
                ActivityState.FAILED,
                at,
                attempt,
                error_type=error.error_type,
                error_message=error.message,
            )
        case ActivityTimedOut(attempt=attempt, timeout=timeout, last_error=last):
            closed = _closed(ActivityState.TIMED_OUT, at, attempt)
            closed["timeout"] = timeout.value
            if last is not None:
                closed.update(
                    last_error_type=last.error_type or None, last_error_message=last.message
                )
            return closed
        case ActivityCancelled(attempt=attempt, reason=reason):
            return _closed(
                ActivityState.CANCELLED,
                at,
                attempt,
                error_type="CancelledError",
                error_message=reason,
            )
        case _:
            return {}


def _closed(
    state: ActivityState,
    at: object,
    attempt: int,
    *,
    result: str | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
) -> Row:
    update: Row = {
        "state": state.value,
        "attempt": attempt,
        "closed_at": at,
        "next_attempt_at": None,
        "result": result,
    }
    if error_message is not None:
        update.update(last_error_type=error_type or None, last_error_message=error_message)
    return update
