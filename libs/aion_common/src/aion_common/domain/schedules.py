"""Schedules: workflow runs started on a cron or interval, with deterministic ids per fire.

A schedule's definition (:class:`ScheduleRecord`) lives on the compacted
``<prefix>.schedules`` topic under its id, written by the API; what the scheduler has done
with it (:class:`ScheduleState`) on the compacted ``<prefix>.schedule-state`` topic, written
by the scheduler in the same transaction as the starts it sends. A fire's nominal time names
its run: workflow id ``<schedule>-<nominal time>`` and a command id derived from both
(:func:`fire_ids`), so a fire processed twice (a crash between the start and the state write,
a zombie scheduler) is one start the engine applies once, and its ``REJECT_DUPLICATE`` policy
refuses it even after the first run closed.

:func:`due_fires` is the pure rule: which nominal times are due at ``now`` after the last one
handled, which fell outside the catch-up window, and when the next is.
"""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aion_common.domain.cron import CronSpec
from aion_common.domain.errors import InvalidInput
from aion_common.domain.ids import derive_id, validate_id
from aion_common.domain.payload import Payload

__all__ = [
    "DEFAULT_CATCHUP_WINDOW_MS",
    "MAX_FIRES_PER_STEP",
    "DueFires",
    "OverlapPolicy",
    "ScheduleRecord",
    "ScheduleState",
    "ScheduleTrigger",
    "ScheduledRun",
    "due_fires",
    "fire_ids",
    "fire_jitter",
    "trigger_key",
    "validate_schedule_id",
]

DEFAULT_CATCHUP_WINDOW_MS = 60_000
MAX_FIRES_PER_STEP = 100
"""Due fires handled in one step; the rest wait for the next (a long catch-up stays bounded)."""
_MAX_SCHEDULE_ID = 200  # leaves room for "-<nominal time>" within a workflow id's 255
_MISSED_SCAN = 100_000  # fires counted one by one before a long outage is estimated


class OverlapPolicy(enum.Enum):
    """What a fire does while the schedule's previous run is still open."""

    SKIP = "SKIP"
    """Skip the fire (counted)."""
    BUFFER_ONE = "BUFFER_ONE"
    """Keep one fire and start it when the open run closes; skip any more."""
    ALLOW_ALL = "ALLOW_ALL"
    """Start it anyway: runs overlap."""


def validate_schedule_id(value: object) -> str:
    """A usable schedule id: a workflow id of at most 200 characters."""
    text = validate_id(value, what="schedule id")
    if len(text) > _MAX_SCHEDULE_ID:
        raise InvalidInput(f"schedule id is {len(text)} characters; the limit is 200")
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRecord:
    """A schedule's definition (``<prefix>.schedules``, key: the schedule id).

    Exactly one of ``cron`` (five fields, UTC) and ``every_ms`` (an interval, aligned to the
    Unix epoch plus ``offset_ms``) says when it fires. Fires before ``not_before`` (its
    creation, or when it was last resumed) are never started.
    """

    schedule_id: str
    workflow_type: str
    input: Payload
    cron: str = ""
    every_ms: int | None = None
    offset_ms: int = 0
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    jitter_ms: int = 0
    catchup_window_ms: int = DEFAULT_CATCHUP_WINDOW_MS
    paused: bool = False
    note: str = ""
    execution_timeout_ms: int | None = None
    not_before: datetime
    updated_at: datetime

    def __post_init__(self) -> None:
        validate_schedule_id(self.schedule_id)
        if bool(self.cron) == (self.every_ms is not None):
            raise InvalidInput("a schedule needs exactly one of a cron expression and an interval")
        if self.cron:
            _cron(self.cron)
        if self.every_ms is not None and self.every_ms < 1000:  # noqa: PLR2004 - one second
            raise InvalidInput(f"interval {self.every_ms} ms: the shortest is 1 s")
        if self.every_ms is not None and not 0 <= self.offset_ms < self.every_ms:
            raise InvalidInput("the interval's offset must be at least 0 and below the interval")
        if self.jitter_ms < 0 or self.catchup_window_ms < 0:
            raise InvalidInput("jitter and catch-up window must not be negative")

    def next_after(self, after: datetime) -> datetime | None:
        """The first nominal fire time strictly after ``after``."""
        if self.cron:
            return _cron(self.cron).next_after(after)
        assert self.every_ms is not None
        epoch_ms = _ms(after) - self.offset_ms
        k = epoch_ms // self.every_ms + 1
        return _at(k * self.every_ms + self.offset_ms)

    @property
    def spec(self) -> str:
        """``cron <expr>`` or ``every <interval>``, for people."""
        if self.cron:
            return f"cron {self.cron}"
        assert self.every_ms is not None
        offset = f" +{self.offset_ms} ms" if self.offset_ms else ""
        return f"every {self.every_ms / 1000:g}s{offset}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleTrigger:
    """A request to fire a schedule now (``<prefix>.schedules``, key :func:`trigger_key`, on
    the schedule's partition); the scheduler deletes it in the transaction that handles it."""

    schedule_id: str
    request_id: str
    requested_at: datetime


def trigger_key(schedule_id: str, request_id: str) -> str:
    """The key of a trigger request (never a valid schedule id: it holds a ``\\x1f``)."""
    return f"{schedule_id}\x1ftrigger\x1f{request_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledRun:
    """A run the scheduler started and watches until it ends (overlap policies need it):
    its terminal is looked for in its events partition from ``events_offset``, and a refusal
    of its start in its replies partition from ``replies_offset``."""

    workflow_id: str
    command_id: str
    nominal_at: datetime
    events_offset: int
    replies_offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleState:
    """What the scheduler did with a schedule (``<prefix>.schedule-state``, key: its id)."""

    schedule_id: str
    last_fire: datetime | None = None
    """The nominal time of the latest fire handled (started, skipped or buffered)."""
    next_fire: datetime | None = None
    started: int = 0
    skipped: int = 0
    missed: int = 0
    """Fires outside the catch-up window after an outage (never started)."""
    buffered: datetime | None = None
    running: tuple[ScheduledRun, ...] = ()
    last_started: str = ""
    """The workflow id of the latest run started."""
    updated_at: datetime


def fire_ids(schedule_id: str, nominal: datetime) -> tuple[str, str]:
    """(workflow id, command id) of the run a fire at ``nominal`` starts."""
    stamp = nominal.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{schedule_id}-{stamp}", derive_id("schedule-fire", schedule_id, stamp)


def fire_jitter(schedule_id: str, nominal: datetime, jitter_ms: int) -> timedelta:
    """A fire's delay in ``[0, jitter_ms)``: spread but deterministic, so a fire recomputed
    after a restart is due at the same moment."""
    if jitter_ms <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_id}\x1f{_ms(nominal)}".encode()).digest()
    return timedelta(milliseconds=int.from_bytes(digest[:8], "big") % jitter_ms)


@dataclass(frozen=True, slots=True)
class DueFires:
    """The outcome of :func:`due_fires`."""

    due: tuple[datetime, ...]
    """Nominal times to handle now, oldest first (at most :data:`MAX_FIRES_PER_STEP`)."""
    missed: int
    """Fires older than the catch-up window, never to be started."""
    missed_until: datetime | None
    """The newest missed nominal time (the next handled fire comes after it)."""
    next_fire: datetime | None
    """The first nominal time not yet due."""


def due_fires(record: ScheduleRecord, last_fire: datetime | None, now: datetime) -> DueFires:
    """Which fires of ``record`` are due at ``now`` after ``last_fire`` (see the class)."""
    anchor = record.not_before - timedelta(microseconds=1)
    if last_fire is not None and last_fire > anchor:
        anchor = last_fire
    window_start = now - timedelta(milliseconds=record.catchup_window_ms)
    missed, missed_until = 0, None
    candidate = record.next_after(anchor)
    while candidate is not None and candidate < window_start and missed < _MISSED_SCAN:
        missed, missed_until = missed + 1, candidate
        candidate = record.next_after(candidate)
    if candidate is not None and candidate < window_start:  # an outage of very many fires
        missed_until = window_start
        candidate = record.next_after(window_start)
    due: list[datetime] = []
    while (
        candidate is not None
        and len(due) < MAX_FIRES_PER_STEP
        and candidate + fire_jitter(record.schedule_id, candidate, record.jitter_ms) <= now
    ):
        due.append(candidate)
        candidate = record.next_after(candidate)
    return DueFires(tuple(due), missed, missed_until, candidate)


@functools.lru_cache(maxsize=1024)
def _cron(text: str) -> CronSpec:
    return CronSpec.parse(text)


def _ms(when: datetime) -> int:
    delta = when.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return delta // timedelta(milliseconds=1)


def _at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
