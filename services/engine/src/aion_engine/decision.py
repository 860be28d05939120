"""What handling one command produced: the engine's unit of work, for the service loop to emit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aion_common.domain import (
    Command,
    CommandRefused,
    EventBatch,
    FireTimer,
    QueryAnswer,
    TaskRecord,
)

__all__ = ["Decision", "PublishedRecord", "TimerRequest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerRequest:
    """A durable timer: send ``command`` to ``aion.commands`` once ``fire_at`` has passed."""

    fire_at: datetime
    command: FireTimer


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishedRecord:
    """A record ``ctx.publish`` wrote: to ``topic``, in the same transaction as its event."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Everything one command produced; all of it leaves together or not at all.

    - ``batch``: every event the command produced for its target workflow (already applied to
      the in-memory state); None when it changed nothing.
    - ``outgoing``: commands for other workflows (child starts, parent-close policy, a refused
      child start reported to its parent), each addressed by workflow id.
    - ``refusal``: set when the command was refused (no events); publish it for the client.
    - ``timers``: timers the batch scheduled; fire each by sending its ``FireTimer``.
    - ``dead_letter_reason``: set when the command must never be applied (an invariant
      violation, e.g. a ContinuedAsNew reported as a child terminal); dead-letter the record.
    - ``tasks``: activity tasks and cancel notices, each with the task queue whose topic
      (``<prefix>.tasks.<queue>``) it goes to.
    - ``disarm``: command ids of timers that are no longer needed (an activity ended before
      its clock ran out); firing them would be a no-op, so the service may forget them.
    - ``answer``: a query's answer, for the replies topic (a query changes nothing else).
    - ``published``: records the code published to user topics (``ctx.publish``).
    """

    batch: EventBatch | None = None
    outgoing: tuple[Command, ...] = ()
    refusal: CommandRefused | None = None
    timers: tuple[TimerRequest, ...] = ()
    dead_letter_reason: str | None = None
    tasks: tuple[tuple[str, TaskRecord], ...] = ()
    disarm: tuple[str, ...] = ()
    answer: QueryAnswer | None = None
    published: tuple[PublishedRecord, ...] = ()

    @property
    def is_noop(self) -> bool:
        """Whether the command changed nothing and needs nothing sent."""
        return (
            self.batch is None
            and not self.outgoing
            and self.refusal is None
            and not self.timers
            and self.dead_letter_reason is None
            and not self.tasks
            and not self.disarm
            and self.answer is None
            and not self.published
        )
