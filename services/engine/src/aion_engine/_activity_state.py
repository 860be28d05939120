"""An open activity's state inside its run, built only by applying its events.

Live processing and a rebuild apply the same events through :func:`index_activity_event`, so
both arrive at the same state and the same clocks: :attr:`ActivityState.timers` derives every
timer the activity needs right now (its id and when it fires) from that state alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from aion_common.domain import (
    ActivityAttemptFailed,
    ActivityAttemptScheduled,
    ActivityCancelled,
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeatRecorded,
    ActivityOptions,
    ActivityScheduled,
    ActivityStarted,
    ActivityTimedOut,
    Event,
    Payload,
    TimeoutKind,
    WorkflowError,
    derive_id,
)

__all__ = [
    "ACTIVITY_EVENTS",
    "HEARTBEAT",
    "RETRY",
    "SCHEDULE_TO_CLOSE",
    "SCHEDULE_TO_START",
    "START_TO_CLOSE",
    "ActivityState",
    "index_activity_event",
]

SCHEDULE_TO_CLOSE: Final = "schedule-to-close"
SCHEDULE_TO_START: Final = "schedule-to-start"
START_TO_CLOSE: Final = "start-to-close"
HEARTBEAT: Final = "heartbeat"
RETRY: Final = "retry"

ACTIVITY_EVENTS: Final = (
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


def _after(at: datetime, ms: int) -> datetime:
    return at + timedelta(milliseconds=ms)


@dataclass(slots=True)
class ActivityState:
    """One open activity: its current attempt, and where that attempt stands.

    An attempt is *queued* (dispatched, no worker has reported starting it), *started*, or
    the activity is *backing off* (``retry_at`` set: the last attempt failed, the next one
    is due then).
    """

    scheduled: ActivityScheduled
    attempt: int
    attempt_scheduled_at: datetime
    started_at: datetime | None = None
    worker: str = ""
    last_heartbeat_at: datetime | None = None
    heartbeat_seq: int = 0
    heartbeat_details: Payload | None = None
    retry_at: datetime | None = None
    last_error: WorkflowError | None = None
    last_timeout: TimeoutKind | None = None
    cancel_requested: bool = False
    cancel_reason: str = ""
    timers: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    """Timer id -> (kind, fire time): every clock of the activity that is running now."""

    @property
    def activity_id(self) -> str:
        """The activity's id."""
        return self.scheduled.activity_id

    @property
    def activity_type(self) -> str:
        """The activity's registered name."""
        return self.scheduled.activity_type

    @property
    def options(self) -> ActivityOptions:
        """Its options as scheduled."""
        return self.scheduled.options

    @property
    def status(self) -> str:
        """``queued``, ``started`` or ``backing-off``."""
        if self.retry_at is not None:
            return "backing-off"
        return "queued" if self.started_at is None else "started"

    @property
    def schedule_to_close_deadline(self) -> datetime | None:
        """When the whole activity times out, if that clock is set."""
        ms = self.options.schedule_to_close_ms
        return None if ms is None else _after(self.scheduled.recorded_at, ms)

    def attempt_deadline(self, started_at: datetime) -> datetime | None:
        """When an attempt started at ``started_at`` times out (the sooner clock)."""
        candidates = [
            d
            for d in (
                None
                if self.options.start_to_close_ms is None
                else _after(started_at, self.options.start_to_close_ms),
                self.schedule_to_close_deadline,
            )
            if d is not None
        ]
        return min(candidates) if candidates else None

    def refresh_timers(self) -> None:
        """Recompute :attr:`timers` from the state (after every event of the activity)."""
        options = self.options
        wanted: list[tuple[str, datetime]] = []
        deadline = self.schedule_to_close_deadline
        if deadline is not None:
            wanted.append((SCHEDULE_TO_CLOSE, deadline))
        if self.retry_at is not None:
            wanted.append((RETRY, self.retry_at))
        elif self.started_at is None:
            if options.schedule_to_start_ms is not None:
                wanted.append(
                    (
                        SCHEDULE_TO_START,
                        _after(self.attempt_scheduled_at, options.schedule_to_start_ms),
                    )
                )
        else:
            if options.start_to_close_ms is not None:
                wanted.append((START_TO_CLOSE, _after(self.started_at, options.start_to_close_ms)))
            if options.heartbeat_timeout_ms is not None:
                last = self.last_heartbeat_at or self.started_at
                wanted.append((HEARTBEAT, _after(last, options.heartbeat_timeout_ms)))
        scheduled = self.scheduled
        timers: dict[str, tuple[str, datetime]] = {}
        for kind, at in wanted:
            # the heartbeat clock restarts at every heartbeat: a new timer each time
            extra = str(self.heartbeat_seq) if kind == HEARTBEAT else ""
            timer_id = derive_id(
                "activity-timer",
                scheduled.workflow_id,
                scheduled.run_id,
                self.activity_id,
                str(self.attempt),
                kind,
                extra,
            )
            timers[timer_id] = (kind, at)
        self.timers = timers


def index_activity_event(
    activities: dict[str, ActivityState],
    timer_index: dict[str, str],
    closed: set[str],
    event: Event,
) -> None:
    """Apply one activity event to its run's open activities and the run's timer index
    (timer id -> activity id); an activity that ends moves to ``closed``."""
    if isinstance(event, ActivityScheduled):
        state = ActivityState(scheduled=event, attempt=1, attempt_scheduled_at=event.recorded_at)
        activities[event.activity_id] = state
    else:
        found = activities.get(getattr(event, "activity_id", ""))
        if found is None:
            return  # an event of an activity that ended already: nothing to track
        state = found
        if _apply(state, event, activities, closed):
            for timer_id in state.timers:
                timer_index.pop(timer_id, None)
            return
    for timer_id in state.timers:
        timer_index.pop(timer_id, None)
    state.refresh_timers()
    for timer_id in state.timers:
        timer_index[timer_id] = state.activity_id


def _apply(
    state: ActivityState,
    event: Event,
    activities: dict[str, ActivityState],
    closed: set[str],
) -> bool:
    """Apply ``event`` to ``state``; True when it ended the activity."""
    match event:
        case ActivityStarted(attempt=attempt, worker=worker):
            if attempt == state.attempt and state.retry_at is None:
                state.started_at = event.recorded_at
                state.worker = worker
        case ActivityHeartbeatRecorded(attempt=attempt, details=details):
            if attempt == state.attempt and state.retry_at is None:
                if state.started_at is None:
                    state.started_at = event.recorded_at
                state.last_heartbeat_at = event.recorded_at
                state.heartbeat_seq = event.seq
                if details is not None:
                    state.heartbeat_details = details
        case ActivityAttemptFailed(error=error, next_attempt_at=at, timeout=timeout):
            state.retry_at = at
            state.started_at = None
            state.last_heartbeat_at = None
            state.worker = ""
            state.last_error = error
            state.last_timeout = timeout
        case ActivityAttemptScheduled(attempt=attempt):
            state.attempt = attempt
            state.attempt_scheduled_at = event.recorded_at
            state.retry_at = None
        case ActivityCancelRequested(reason=reason):
            state.cancel_requested = True
            state.cancel_reason = reason
        case ActivityCompleted() | ActivityFailed() | ActivityTimedOut() | ActivityCancelled():
            del activities[state.activity_id]
            closed.add(state.activity_id)
            return True
        case _:
            pass
    return False
