"""Where the schedule routes read and write: a port, in memory, and on Kafka.

:class:`KafkaSchedules` tails the schedule topics into a view (answered as last read while
Kafka is away or the view is read again; decision 62) and writes through them. A write is
refused at once while Kafka is known to be away, and otherwise answered within
:data:`WRITE_ANSWER_S`: written and read back, or :class:`ScheduleUnavailable` saying whether
the change was not written, may still be written (Kafka did not acknowledge it in time:
aiokafka keeps the record and sends it on Kafka's return) or was written but not yet read
back — never a request held until the client's own timeout, which tells the user only that
the API did not answer (decision 66).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aion_common.codecs import Codec
from aion_common.domain import InfrastructureError, ScheduleRecord, ScheduleTrigger
from aion_common.kafka.link import BrokerLink
from aion_common.kafka.schedules import ScheduleEntry, ScheduleView, ScheduleWriter
from aion_common.settings import Settings
from aion_projector.api._sink import DEFAULT_PRODUCE_TIMEOUT_S
from aion_projector.api._writer import WRITE_ANSWER_S, WriterConnection, WriteUnavailable

__all__ = [
    "WRITE_ANSWER_S",
    "KafkaSchedules",
    "MemorySchedules",
    "ScheduleStore",
    "ScheduleUnavailable",
]

_CATCH_UP_S = 30.0


class ScheduleUnavailable(WriteUnavailable):
    """A schedule write that was not carried out, or not confirmed: the message says which and
    what to do; the API answers it 503 with ``Retry-After: retry_after_s``."""


@dataclass(frozen=True, slots=True)
class _Change:
    """One schedule write (``what`` names it) in the words of its answers: a
    :class:`~aion_projector.api._writer.WriteWords`."""

    what: str

    def not_written(self, why: str) -> str:
        return f"{why}: {self.what} was not written; retry once Kafka answers"

    def unacknowledged(self, where: str, timeout_s: float) -> str:
        return (
            f"{where} did not acknowledge {self.what} within {timeout_s:g} s; it may still be "
            "written when Kafka answers: look before you retry (GET the schedule)"
        )

    def refused(self, where: str, error: InfrastructureError) -> str:
        return f"{where} refused {self.what} ({error}); retry"

    def not_read_back(self, within_s: float) -> str:
        return (
            f"{self.what} was written to Kafka, but this API has not read it back within "
            f"{within_s:g} s; it takes effect as written: GET the schedule to see it once "
            "read (a retry writes it again)"
        )


class ScheduleStore(Protocol):
    """What the schedule routes read and write."""

    @property
    def loaded(self) -> bool:
        """Whether the schedules were read at least once (before that, reads mean nothing)."""

    def stale_reason(self) -> str | None:
        """Why the schedules as read may be out of date, or None while they are current."""

    def get(self, schedule_id: str) -> ScheduleEntry | None:
        """One schedule, or None."""

    def all(self) -> list[ScheduleEntry]:
        """Every schedule, by id."""

    async def put(self, record: ScheduleRecord) -> None:
        """Write a definition; return once it is read back (else :class:`ScheduleUnavailable`)."""

    async def delete(self, schedule_id: str) -> None:
        """Delete a schedule; return once read back (else :class:`ScheduleUnavailable`)."""

    async def trigger(self, trigger: ScheduleTrigger) -> None:
        """Ask for a fire now (:class:`ScheduleUnavailable` if it could not be asked)."""


class MemorySchedules:
    """Schedules in memory (tests of the routes)."""

    def __init__(self) -> None:
        self.entries: dict[str, ScheduleEntry] = {}
        self.triggers: list[ScheduleTrigger] = []
        self.loaded = True
        self.stale: str | None = None

    def stale_reason(self) -> str | None:
        """What a test set in :attr:`stale`."""
        return self.stale

    def get(self, schedule_id: str) -> ScheduleEntry | None:
        """One schedule."""
        return self.entries.get(schedule_id)

    def all(self) -> list[ScheduleEntry]:
        """Every schedule."""
        return [self.entries[k] for k in sorted(self.entries)]

    async def put(self, record: ScheduleRecord) -> None:
        """Store it."""
        previous = self.entries.get(record.schedule_id)
        self.entries[record.schedule_id] = ScheduleEntry(
            record, None if previous is None else previous.state
        )

    async def delete(self, schedule_id: str) -> None:
        """Forget it."""
        self.entries.pop(schedule_id, None)

    async def trigger(self, trigger: ScheduleTrigger) -> None:
        """Keep it."""
        self.triggers.append(trigger)


class KafkaSchedules:
    """The schedule topics, tailed in the background; writes wait to be read back.

    Like the version catalog, it starts without Kafka (issue 19): the writer connects in the
    background through the API's :class:`~aion_common.kafka.link.BrokerLink`, and a write
    before then, or while the link knows Kafka is away, is refused at once
    (:class:`ScheduleUnavailable`; the API answers 503). A send waits at most
    ``produce_timeout_s`` for Kafka's acknowledgement (aiokafka's own would wait for the
    broker's return however long it takes)."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        link: BrokerLink | None = None,
        produce_timeout_s: float = DEFAULT_PRODUCE_TIMEOUT_S,
    ) -> None:
        codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._view = ScheduleView(settings, codec=codec)
        self._writer = ScheduleWriter(settings, codec=codec)
        self._link = link
        self._send_timeout_s = min(produce_timeout_s, WRITE_ANSWER_S)
        self._connection = WriterConnection(
            self._writer,
            link,
            what="the schedule writer",
            refused="schedule changes are refused",
            task_name="api.schedules.connect",
        )

    async def start(self) -> None:
        """Start tailing, connect the writer, and wait (bounded) for what is there; without
        Kafka (or a ``link`` that knows it is away) the writer goes on connecting in the
        background and this returns at once."""
        await self._view.start()  # retries by itself while the broker is away
        if await self._connection.start():
            await self._view.caught_up(_CATCH_UP_S)

    async def stop(self) -> None:
        """Stop tailing and disconnect; idempotent."""
        await self._view.stop()
        await self._connection.stop()

    async def _write(
        self, what: str, send: Callable[[], Awaitable[None]], read: Callable[[], bool] | None
    ) -> None:
        """Send ``what`` (bounded) and wait until ``read()`` holds (bounded)."""
        await self._connection.write(
            send,
            _Change(what),
            timeout_s=self._send_timeout_s,
            read=read,
            unavailable=ScheduleUnavailable,
        )

    @property
    def loaded(self) -> bool:
        """The topics were read to their ends at least once."""
        return self._view.loaded

    @property
    def view_loads(self) -> int:
        """How often the view read the topics to their ends (again after each lost broker)."""
        return self._view.loads

    def stale_reason(self) -> str | None:
        """Kafka is known to be away, or the view is being read again since it was lost."""
        link = self._link
        if link is not None and link.known_down:
            return f"Kafka at {link.bootstrap} is unreachable"
        since = self._view.stale_since
        if since is not None:
            at = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
            return f"the schedules are being read again after Kafka was lost at {at}"
        return None

    def get(self, schedule_id: str) -> ScheduleEntry | None:
        """One schedule as last read."""
        return self._view.get(schedule_id)

    def all(self) -> list[ScheduleEntry]:
        """Every schedule as last read."""
        return self._view.all()

    async def put(self, record: ScheduleRecord) -> None:
        """Write the definition; wait until read back."""
        await self._write(
            f"the definition of schedule {record.schedule_id!r}",
            lambda: self._writer.put(record),
            lambda: _record_of(self._view.get(record.schedule_id)) == record,
        )

    async def delete(self, schedule_id: str) -> None:
        """Tombstone the definition; wait until read back."""
        await self._write(
            f"the deletion of schedule {schedule_id!r}",
            lambda: self._writer.delete(schedule_id),
            lambda: self._view.get(schedule_id) is None,
        )

    async def trigger(self, trigger: ScheduleTrigger) -> None:
        """Write the trigger request (the scheduler deletes it once handled)."""
        await self._write(
            f"the trigger of schedule {trigger.schedule_id!r}",
            lambda: self._writer.trigger(trigger),
            None,
        )


def _record_of(entry: ScheduleEntry | None) -> ScheduleRecord | None:
    return None if entry is None else entry.record
