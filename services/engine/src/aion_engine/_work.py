"""One command's unit of work: the events, outgoing commands and timers it produces."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aion_common.domain import Command, Event, EventBatch, FireTimer, TimerScheduled, derive_id
from aion_engine._state import WorkflowState
from aion_engine.decision import Decision, TimerRequest

__all__ = ["Work", "fire_timer_command"]


def fire_timer_command(timer: TimerScheduled) -> FireTimer:
    """The ``FireTimer`` the engine sends itself for ``timer``; its id is derived, so a timer
    re-armed after a restart fires with the same id and a second firing is a no-op."""
    return FireTimer(
        command_id=derive_id("fire-timer", timer.workflow_id, timer.run_id, timer.timer_id),
        issued_at=timer.fire_at,
        workflow_id=timer.workflow_id,
        run_id=timer.run_id,
        timer_id=timer.timer_id,
    )


class Work:
    """Collects what one command produces; every event is applied to the state as appended."""

    __slots__ = ("command_id", "continues", "events", "now", "outgoing", "state", "timers")

    def __init__(self, state: WorkflowState, command_id: str, now: datetime) -> None:
        self.state = state
        self.command_id = command_id
        self.now = now
        self.events: list[Event] = []
        self.outgoing: list[Command] = []
        self.timers: list[TimerRequest] = []
        self.continues = 0

    def envelope(self, run_id: str) -> dict[str, Any]:
        """The envelope fields of the next event of run ``run_id``."""
        return {
            "workflow_id": self.state.workflow_id,
            "run_id": run_id,
            "seq": self.state.last_seq + 1,
            "recorded_at": self.now,
            "command_id": self.command_id,
        }

    def append(self, event: Event) -> None:
        """Apply ``event`` to the workflow's state and add it to the batch."""
        self.state.apply(event)
        self.events.append(event)

    def schedule_timer(self, event: TimerScheduled) -> None:
        """Append a ``TimerScheduled`` and ask the service to fire it when due."""
        self.append(event)
        self.timers.append(TimerRequest(fire_at=event.fire_at, command=fire_timer_command(event)))

    def decision(self, writer: str) -> Decision:
        """The finished unit of work."""
        batch = None
        if self.events:
            batch = EventBatch(
                workflow_id=self.state.workflow_id,
                command_id=self.command_id,
                writer=writer,
                events=tuple(self.events),
            )
        return Decision(batch=batch, outgoing=tuple(self.outgoing), timers=tuple(self.timers))
