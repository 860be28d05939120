"""Records on a task queue's topic (``<prefix>.tasks.<queue>``), written only by the engine.

Both kinds are keyed by the workflow id, so a cancel notice lands on the same partition as the
task it cancels and reaches whichever worker holds that partition, across rebalances.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from aion_common.domain.activities import ActivityOptions
from aion_common.domain.payload import Payload

__all__ = ["ActivityTask", "CancelActivityTask", "TaskRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityTask:
    """Run attempt ``attempt`` of activity ``activity_id``.

    ``scheduled_at`` is when the activity was scheduled (its schedule-to-close clock),
    ``attempt_scheduled_at`` when this attempt was dispatched; ``heartbeat_details`` the
    last details an earlier attempt heartbeated.
    """

    workflow_id: str
    run_id: str
    workflow_type: str
    activity_id: str
    activity_type: str
    attempt: int
    input: Payload
    options: ActivityOptions
    scheduled_at: datetime
    attempt_scheduled_at: datetime
    heartbeat_details: Payload | None = None

    @property
    def schedule_to_close_deadline(self) -> datetime | None:
        """When the whole activity must have ended, if that clock is set."""
        ms = self.options.schedule_to_close_ms
        return None if ms is None else self.scheduled_at + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelActivityTask:
    """Cancel activity ``activity_id`` wherever it runs: attempt ``target_attempt``, or
    whichever attempt runs when it is 0. A notice; the worker confirms with a cancelled
    ``FailActivityAttempt``."""

    workflow_id: str
    run_id: str
    activity_id: str
    target_attempt: int
    reason: str
    issued_at: datetime


TaskRecord = ActivityTask | CancelActivityTask
