"""Schedule endpoints: create, list, describe, pause, resume, trigger, delete.

Definitions are written to the compacted ``<prefix>.schedules`` topic and read back before
the request is answered (so ``aion schedule create`` then ``aion schedule list`` shows it);
the scheduler fires them and writes each schedule's state, which this API tails too
(:class:`~aion_common.kafka.schedules.ScheduleView`). Every write sets the definition's
``not_before`` to now: a new, changed or resumed schedule never catches up on fires from
before it (a paused one's are skipped, not missed).

While Kafka is away, and while the view is read again after it came back, the schedules are
answered as last read, the list marked ``stale`` with the reason: a user whose schedules
vanished for the length of an outage would think them deleted. Before the topics were read
once there is nothing to answer from, and every route that reads the view answers 503 (an
empty list, or a 404, would be a wrong answer, not an old one).

A write (create, replace, pause, resume, trigger, delete) is refused at once while Kafka is
known to be away, and otherwise answered within
:data:`~aion_projector.api._schedule_store.WRITE_ANSWER_S`: a 503 with ``Retry-After`` and a
detail saying how far it got, never a request held past the client's timeout.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from aion_common.domain import (
    DEFAULT_CATCHUP_WINDOW_MS,
    InvalidInput,
    OverlapPolicy,
    Payload,
    PayloadTooLarge,
    ScheduleRecord,
    ScheduleTrigger,
    parse_duration_ms,
    trigger_key,
    validate_name,
    validate_schedule_id,
)
from aion_common.kafka.schedules import ScheduleEntry
from aion_projector.api._problems import ProblemError
from aion_projector.api._schedule_store import (
    WRITE_ANSWER_S,
    KafkaSchedules,
    MemorySchedules,
    ScheduleStore,
    ScheduleUnavailable,
)
from aion_projector.api._state import ApiState, state

__all__ = [
    "WRITE_ANSWER_S",
    "KafkaSchedules",
    "MemorySchedules",
    "ScheduleList",
    "ScheduleOut",
    "ScheduleStore",
    "ScheduleUnavailable",
    "router",
    "schedule_list",
]

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])
State = Annotated[ApiState, Depends(state)]
ScheduleId = Annotated[str, Path(min_length=1, max_length=200, description="Schedule id.")]
_NOT_LOADED_RETRY_AFTER_S = 2
_OVERLAP = {
    "skip": OverlapPolicy.SKIP,
    "buffer": OverlapPolicy.BUFFER_ONE,
    "allow": OverlapPolicy.ALLOW_ALL,
}


class ScheduleRequest(BaseModel):
    """A schedule's definition: give ``cron`` or ``every``."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=128, description="The workflow type to start.")
    input: JsonValue = Field(default=None, description="Each run's input (any JSON value).")
    cron: str | None = Field(default=None, description="Five-field cron expression, UTC.")
    every: str | int | float | None = Field(
        default=None, description="An interval: 30s, 5m, 1h30m, or seconds (epoch-aligned)."
    )
    offset: str | int | float | None = Field(
        default=None, description="Shift an interval's fires by this much (below the interval)."
    )
    overlap: Literal["skip", "buffer", "allow"] = Field(
        default="skip",
        description="While the previous run is open: skip the fire, buffer one, or allow it.",
    )
    jitter: str | int | float | None = Field(
        default=None, description="Delay each fire by a deterministic amount below this."
    )
    catchup_window: str | int | float | None = Field(
        default=None,
        description="After an outage, fires older than this are not started (default 1m).",
    )
    paused: bool = False
    note: str = Field(default="", max_length=1024)
    execution_timeout_ms: int | None = Field(default=None, ge=1, le=2**53)


class RequestBody(BaseModel):
    """An optional idempotency key for a trigger."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(default=None, min_length=1, max_length=255)


class ScheduleOut(BaseModel):
    """A schedule, its definition and what the scheduler did with it."""

    id: str
    type: str
    input: Any
    spec: str
    cron: str | None
    every_ms: int | None
    offset_ms: int
    overlap: str
    jitter_ms: int
    catchup_window_ms: int
    paused: bool
    note: str
    execution_timeout_ms: int | None
    not_before: datetime
    updated_at: datetime
    next_fire: datetime | None = Field(description="The next nominal fire (None while paused).")
    last_fire: datetime | None
    started: int
    skipped: int
    missed: int = Field(description="Fires older than the catch-up window after an outage.")
    buffered: datetime | None
    running: list[str] = Field(description="Runs it watches for its overlap policy.")
    last_started: str | None
    pending_triggers: int

    @classmethod
    def of(cls, entry: ScheduleEntry) -> ScheduleOut:
        """From what the API read."""
        r, s = entry.record, entry.state
        next_fire = None if r.paused else r.next_after(max(r.not_before, datetime.now(UTC)))
        if s is not None and not r.paused and s.next_fire is not None:
            next_fire = s.next_fire
        return cls(
            id=r.schedule_id,
            type=r.workflow_type,
            input=r.input.to_json(),
            spec=r.spec,
            cron=r.cron or None,
            every_ms=r.every_ms,
            offset_ms=r.offset_ms,
            overlap=_overlap_name(r.overlap),
            jitter_ms=r.jitter_ms,
            catchup_window_ms=r.catchup_window_ms,
            paused=r.paused,
            note=r.note,
            execution_timeout_ms=r.execution_timeout_ms,
            not_before=r.not_before,
            updated_at=r.updated_at,
            next_fire=next_fire,
            last_fire=None if s is None else s.last_fire,
            started=0 if s is None else s.started,
            skipped=0 if s is None else s.skipped,
            missed=0 if s is None else s.missed,
            buffered=None if s is None else s.buffered,
            running=[] if s is None else [run.workflow_id for run in s.running],
            last_started=(s.last_started or None) if s is not None else None,
            pending_triggers=entry.pending_triggers,
        )


class ScheduleList(BaseModel):
    """Every schedule."""

    items: list[ScheduleOut]
    stale: bool = Field(
        default=False,
        description="The schedules as last read: Kafka is away, or they are being read again.",
    )
    stale_reason: str | None = Field(default=None, description="Why the list may be old.")


class TriggerAccepted(BaseModel):
    """A trigger request was queued for the scheduler."""

    schedule_id: str
    request_id: str


def _overlap_name(policy: OverlapPolicy) -> str:
    return next(name for name, p in _OVERLAP.items() if p is policy)


def _store(st: ApiState) -> ScheduleStore:
    if st.schedules is None:
        raise ProblemError(503, "unavailable", "this API has no schedule store configured")
    return st.schedules


def _view(st: ApiState, refused: str = "") -> ScheduleStore:
    """The store, once it has something to answer from (503 before: not an empty answer);
    ``refused`` says what a write did not do."""
    store = _store(st)
    if not store.loaded:
        reason = store.stale_reason()
        why = "this API has not read them from Kafka" + (f" ({reason})" if reason else "")
        nothing = f"; {refused}" if refused else ""
        raise ProblemError(
            503,
            "unavailable",
            f"the schedules are not known yet: {why}{nothing}; retry",
            headers={"Retry-After": str(_NOT_LOADED_RETRY_AFTER_S)},
        )
    return store


def _existing(st: ApiState, schedule_id: str, refused: str = "") -> ScheduleEntry:
    validate_schedule_id(schedule_id)
    entry = _view(st, refused).get(schedule_id)
    if entry is None:
        raise ProblemError(404, "not-found", f"schedule {schedule_id!r} does not exist")
    return entry


def _ms(value: str | int | float | None, what: str, default: int) -> int:
    return default if value is None else parse_duration_ms(value, what=what)


def _record(st: ApiState, schedule_id: str, body: ScheduleRequest) -> ScheduleRecord:
    if (body.cron is None) == (body.every is None):
        raise ProblemError(
            400, "invalid-input", "give exactly one of cron (an expression) and every (an interval)"
        )
    try:
        now = datetime.now(UTC)
        return ScheduleRecord(
            schedule_id=validate_schedule_id(schedule_id),
            workflow_type=validate_name(body.type, what="workflow type"),
            input=Payload.from_json(body.input, limit=st.settings.payload_limit_bytes),
            cron=body.cron or "",
            every_ms=None if body.every is None else _ms(body.every, "every", 0),
            offset_ms=_ms(body.offset, "offset", 0),
            overlap=_OVERLAP[body.overlap],
            jitter_ms=_ms(body.jitter, "jitter", 0),
            catchup_window_ms=_ms(body.catchup_window, "catchup_window", DEFAULT_CATCHUP_WINDOW_MS),
            paused=body.paused,
            note=body.note,
            execution_timeout_ms=body.execution_timeout_ms,
            not_before=now,
            updated_at=now,
        )
    except PayloadTooLarge:
        raise  # the app answers it as 413 payload-too-large, as every other endpoint
    except InvalidInput as err:
        raise ProblemError(400, "invalid-input", str(err)) from err


def schedule_list(st: ApiState) -> ScheduleList:
    """Every schedule as last read, ``stale`` with the reason while that read may be old
    (the API's list and the UI's page); a 503 :class:`ProblemError` before the first read."""
    store = _view(st)
    items = [ScheduleOut.of(e) for e in store.all()]
    reason = store.stale_reason()
    return ScheduleList(items=items, stale=reason is not None, stale_reason=reason)


@router.get("", summary="List schedules")
async def list_route(st: State) -> ScheduleList:
    """Every schedule with its next fire and counts; ``stale`` while they are the last read."""
    return schedule_list(st)


@router.get("/{schedule_id}", summary="Describe a schedule")
async def get_route(st: State, schedule_id: ScheduleId) -> ScheduleOut:
    """One schedule; 404 if it does not exist."""
    return ScheduleOut.of(_existing(st, schedule_id))


@router.post("/{schedule_id}", status_code=201, summary="Create a schedule")
async def create_route(st: State, schedule_id: ScheduleId, body: ScheduleRequest) -> ScheduleOut:
    """Create ``schedule_id``; 409 if it exists (``PUT`` replaces)."""
    record = _record(st, schedule_id, body)
    if _view(st, f"schedule {schedule_id!r} was not created").get(schedule_id) is not None:
        raise ProblemError(
            409, "conflict", f"schedule {schedule_id!r} exists; replace it with PUT (--replace)"
        )
    await _store(st).put(record)
    return ScheduleOut.of(_existing(st, schedule_id))


@router.put("/{schedule_id}", summary="Create or replace a schedule")
async def replace_route(st: State, schedule_id: ScheduleId, body: ScheduleRequest) -> ScheduleOut:
    """Write ``schedule_id``'s definition; fires count from now."""
    record = _record(st, schedule_id, body)
    await _store(st).put(record)
    return ScheduleOut.of(_existing(st, schedule_id))


async def _set_paused(st: ApiState, schedule_id: str, paused: bool) -> ScheduleOut:
    verb = "paused" if paused else "resumed"
    entry = _existing(st, schedule_id, f"schedule {schedule_id!r} was not {verb}")
    if entry.record.paused != paused:
        now = datetime.now(UTC)
        record = entry.record
        changed = ScheduleRecord(
            **{
                **{f: getattr(record, f) for f in record.__dataclass_fields__},
                "paused": paused,
                "not_before": now,
                "updated_at": now,
            }
        )
        await _store(st).put(changed)
    return ScheduleOut.of(_existing(st, schedule_id))


@router.post("/{schedule_id}/pause", summary="Pause a schedule")
async def pause_route(st: State, schedule_id: ScheduleId) -> ScheduleOut:
    """Stop firing (triggers still start runs); idempotent."""
    return await _set_paused(st, schedule_id, True)


@router.post("/{schedule_id}/resume", summary="Resume a schedule")
async def resume_route(st: State, schedule_id: ScheduleId) -> ScheduleOut:
    """Fire again from now on (fires while paused are skipped); idempotent."""
    return await _set_paused(st, schedule_id, False)


@router.post("/{schedule_id}/trigger", status_code=202, summary="Fire a schedule now")
async def trigger_route(
    st: State, schedule_id: ScheduleId, body: RequestBody | None = None
) -> TriggerAccepted:
    """Start a run now, under the schedule's overlap policy; a retried request with the same
    ``request_id`` starts one run."""
    _existing(st, schedule_id, f"schedule {schedule_id!r} was not triggered")
    request_id = (body.request_id if body else None) or str(uuid.uuid4())
    try:
        trigger_key(schedule_id, request_id).encode("utf-8")
    except UnicodeEncodeError as err:
        raise ProblemError(400, "invalid-input", f"request id: {err}") from err
    trigger = ScheduleTrigger(
        schedule_id=schedule_id, request_id=request_id, requested_at=datetime.now(UTC)
    )
    await _store(st).trigger(trigger)
    return TriggerAccepted(schedule_id=schedule_id, request_id=request_id)


@router.delete("/{schedule_id}", status_code=204, summary="Delete a schedule")
async def delete_route(st: State, schedule_id: ScheduleId) -> None:
    """Delete ``schedule_id``: no more fires; runs it started go on."""
    _existing(st, schedule_id, f"schedule {schedule_id!r} was not deleted")
    await _store(st).delete(schedule_id)
