"""One command's unit of work: the events, outgoing commands and timers it produces."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aion_common.domain import (
    Command,
    Event,
    EventBatch,
    FireTimer,
    TaskRecord,
    TimerScheduled,
    derive_id,
)
from aion_engine._state import WorkflowState
from aion_engine.decision import Decision, PublishedRecord, TimerRequest

__all__ = ["Work", "fire_timer_command", "timer_request"]


def timer_request(workflow_id: str, run_id: str, timer_id: str, fire_at: datetime) -> TimerRequest:
    """The ``FireTimer`` the engine sends itself for a timer, due at ``fire_at``; its id is
    derived, so a timer re-armed after a restart fires with the same id and a second firing
    is a no-op."""
    command = FireTimer(
        command_id=derive_id("fire-timer", workflow_id, run_id, timer_id),
        issued_at=fire_at,
        workflow_id=workflow_id,
        run_id=run_id,
        timer_id=timer_id,
    )
    return TimerRequest(fire_at=fire_at, command=command)


def fire_timer_command(timer: TimerScheduled) -> FireTimer:
    """The ``FireTimer`` of a workflow timer (see :func:`timer_request`)."""
    return timer_request(timer.workflow_id, timer.run_id, timer.timer_id, timer.fire_at).command


class Work:
    """Collects what one command produces; every event is applied to the state as appended."""

    __slots__ = (
        "command_id",
        "continues",
        "disarm",
        "events",
        "now",
        "outgoing",
        "published",
        "state",
        "tasks",
        "timers",
    )

    def __init__(self, state: WorkflowState, command_id: str, now: datetime) -> None:
        self.state = state
        self.command_id = command_id
        self.now = now
        self.events: list[Event] = []
        self.outgoing: list[Command] = []
        self.timers: list[TimerRequest] = []
        self.tasks: list[tuple[str, TaskRecord]] = []
        self.disarm: list[str] = []
        self.published: list[PublishedRecord] = []
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
        self.timers.append(
            timer_request(event.workflow_id, event.run_id, event.timer_id, event.fire_at)
        )

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
        return Decision(
            batch=batch,
            outgoing=tuple(self.outgoing),
            timers=tuple(self.timers),
            tasks=tuple(self.tasks),
            disarm=tuple(self.disarm),
            published=tuple(self.published),
        )
