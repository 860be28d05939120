"""How a workflow's engine state is written to the engine's changelog, and read back.

A workflow's state (:class:`~aion_engine._state.WorkflowState`) is two kinds of records:

- its **head** (key: the workflow id): everything except the open run's events — the seq
  before the open run began (or the last seq, when no run is open), the bounded window of
  earlier command ids, the ids that started chains, and the kept closed runs' start and
  terminal (the latest :data:`~aion_engine._state.CLOSED_RUNS_KEPT` before the latest run).
  It changes only when a run starts or closes, so it is written only then;
- the open run's **run records** (key: workflow id, NUL, the first seq of the record, 12
  digits so keys sort by seq): the events each batch added to the open run, as the event
  batch the engine wrote (trusted-encoded). They are tombstoned when the run closes.

Restoring is the head, then the open run's events applied through the one
:meth:`WorkflowState.apply` path, which rebuilds every index (applied ids, timers, children,
activities) exactly as live processing built them.

Adding a field to ``WorkflowState`` means one entry in :data:`_FIELDS` (how it is written as
JSON and read back), or one in :data:`_DERIVED` when the open run's events rebuild it;
``tests/unit/engine/test_engine_snapshot.py`` fails on a field that is in neither.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any, Final

from aion_common.codecs import Codec
from aion_common.domain import AionError, Event, EventBatch, WorkflowStarted
from aion_engine._state import RunState, WorkflowState

__all__ = [
    "RUN_SEPARATOR",
    "SnapshotError",
    "decode_head",
    "decode_run",
    "encode_head",
    "encode_run",
    "head_key",
    "observable",
    "run_key",
    "workflow_of_key",
]

RUN_SEPARATOR: Final = b"\x00"
_HEAD_TAG: Final = b"AH\x01"
_LEN = struct.Struct(">I")
_WRITER: Final = "snapshot"


class SnapshotError(AionError):
    """A changelog value that is not a snapshot this engine can read."""


_FIELDS: Final[
    dict[str, tuple[Callable[[WorkflowState], Any], Callable[[WorkflowState, Any], None]]]
] = {
    "recent": (
        lambda state: list(state.recent),
        lambda state, value: setattr(state, "recent", dict.fromkeys(value)),
    ),
    "chain_starts": (
        lambda state: sorted(state.chain_starts),
        lambda state, value: setattr(state, "chain_starts", set(value)),
    ),
}
"""Fields kept as JSON in the head: name -> (read it from a state, set it on a state)."""

_STRUCTURAL: Final = frozenset({"workflow_id", "last_seq", "run", "closed_runs"})
"""Fields the head encodes itself: the key, the base seq, and the closed runs as events."""

_DERIVED: Final = frozenset({"applied"})
"""Fields rebuilt by applying the open run's events (empty whenever no run is open)."""


def unknown_fields() -> set[str]:
    """``WorkflowState`` fields the snapshot does not know how to keep (must be empty)."""
    names = {f.name for f in fields(WorkflowState)}
    return names - set(_FIELDS) - _STRUCTURAL - _DERIVED


def observable(state: WorkflowState) -> dict[str, Any]:
    """Everything a later command can observe of ``state``, in comparable form: what a
    restore must reproduce exactly. A closed run keeps only its start and terminal (its open
    children, activities and cancel flag were used by the closing command and never again);
    the order of the id window matters."""
    out: dict[str, Any] = {}
    for field in fields(state):
        value = getattr(state, field.name)
        if field.name in ("applied", "recent"):
            value = list(value)
        elif field.name == "closed_runs":
            value = list(value.items())
        elif isinstance(value, RunState):
            if value.terminal is not None:
                value = ("closed", value.started, value.terminal, value.events)
            else:
                value = ("open", value)
        out[field.name] = value
    return out


def head_key(workflow_id: str) -> bytes:
    """The head record's key."""
    return workflow_id.encode()


def run_key(workflow_id: str, first_seq: int) -> bytes:
    """A run record's key: sorts after the head and by seq among the workflow's records."""
    return b"%b%b%012d" % (workflow_id.encode(), RUN_SEPARATOR, first_seq)


def workflow_of_key(key: bytes) -> str:
    """The workflow id a head or run record key belongs to."""
    return key.split(RUN_SEPARATOR, 1)[0].decode()


def encode_head(codec: Codec, state: WorkflowState) -> bytes:
    """The head of ``state``: everything but the open run's events."""
    run = state.run
    pairs: list[tuple[WorkflowStarted, Event]] = list(state.closed_runs.values())
    if run is not None and run.terminal is not None:
        pairs.append((run.started, run.terminal))
        base_seq = state.last_seq
    elif run is not None:
        base_seq = run.started.seq - 1
    else:
        base_seq = state.last_seq
    header: dict[str, Any] = {name: read(state) for name, (read, _) in _FIELDS.items()}
    header["last_seq"] = base_seq
    header["runs"] = len(pairs)
    parts = [_HEAD_TAG, _json(header)]
    for started, terminal in pairs:
        parts.append(_event(codec, started))
        parts.append(_event(codec, terminal))
    return b"".join(parts)


def decode_head(codec: Codec, workflow_id: str, value: bytes) -> WorkflowState:
    """The state a head holds (its latest run closed, or none: apply the open run's events
    next). Raises :class:`SnapshotError` on anything else."""
    if not value.startswith(_HEAD_TAG):
        raise SnapshotError(f"not an engine snapshot head (starts {value[:4]!r})")
    try:
        header, position = _read_json(value, len(_HEAD_TAG))
        state = WorkflowState(workflow_id, last_seq=int(header["last_seq"]))
        for name, (_, write) in _FIELDS.items():
            write(state, header[name])
        events: list[Event] = []
        for _ in range(2 * int(header["runs"])):
            event, position = _read_event(codec, value, position)
            events.append(event)
    except (KeyError, TypeError, ValueError, struct.error) as err:
        raise SnapshotError(f"malformed engine snapshot head: {err!r}") from err
    if position != len(value):
        raise SnapshotError(f"{len(value) - position} stray bytes after the snapshot head")
    pairs: list[tuple[WorkflowStarted, Event]] = []
    for first, terminal in zip(events[::2], events[1::2], strict=True):
        if not isinstance(first, WorkflowStarted):
            raise SnapshotError(f"a closed run's first event is a {type(first).__name__}")
        pairs.append((first, terminal))
    # A head written before closed runs were bounded may hold more: keep_closed keeps the
    # latest, as applying the events would have.
    for started, terminal in pairs[:-1]:
        state.keep_closed(started, terminal)
    if pairs:
        started, terminal = pairs[-1]
        state.run = RunState(started=started, events=[started, terminal], terminal=terminal)
    return state


def encode_run(codec: Codec, batch: EventBatch) -> bytes:
    """A run record: events of the open run, as one trusted-encoded event batch."""
    return codec.encode_batch(batch, trusted=True)


def decode_run(codec: Codec, value: bytes) -> EventBatch:
    """The events of a run record; :class:`SnapshotError` if it holds none."""
    try:
        return codec.decode_batch(value, trusted=True)
    except AionError as err:
        raise SnapshotError(f"undecodable run record: {err}") from err


def open_run_batches(
    workflow_id: str, writer: str, events: Iterable[Event], *, limit_bytes: int, codec: Codec
) -> list[EventBatch]:
    """The open run's events cut into batches of at most ``limit_bytes`` encoded (the build
    writes a whole open run at once; a record must stay under the topic's size limit)."""
    batches: list[EventBatch] = []
    current: list[Event] = []
    size = 0
    for event in events:
        cost = len(_event(codec, event))
        if current and size + cost > limit_bytes:
            batches.append(_batch(workflow_id, writer, current))
            current, size = [], 0
        current.append(event)
        size += cost
    if current:
        batches.append(_batch(workflow_id, writer, current))
    return batches


def _batch(workflow_id: str, writer: str, events: list[Event]) -> EventBatch:
    return EventBatch(
        workflow_id=workflow_id,
        command_id=events[0].command_id,
        writer=writer,
        events=tuple(events),
    )


def _json(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(raw)) + raw


def _read_json(value: bytes, position: int) -> tuple[dict[str, Any], int]:
    (length,) = _LEN.unpack_from(value, position)
    position += _LEN.size
    header = json.loads(value[position : position + length])
    if not isinstance(header, dict):
        raise TypeError("snapshot header is not an object")
    return header, position + length


def _event(codec: Codec, event: Event) -> bytes:
    # One event is always a valid batch: skip the dataclass's checks (this runs per head).
    batch = object.__new__(EventBatch)
    for name, value in (
        ("workflow_id", event.workflow_id),
        ("command_id", event.command_id),
        ("writer", _WRITER),
        ("events", (event,)),
    ):
        object.__setattr__(batch, name, value)
    raw = codec.encode_batch(batch, trusted=True)
    return _LEN.pack(len(raw)) + raw


def _read_event(codec: Codec, value: bytes, position: int) -> tuple[Event, int]:
    (length,) = _LEN.unpack_from(value, position)
    position += _LEN.size
    if position + length > len(value):
        raise ValueError("truncated event in snapshot head")
    try:
        batch = codec.decode_batch(value[position : position + length], trusted=True)
    except AionError as err:
        raise SnapshotError(f"undecodable event in snapshot head: {err}") from err
    return batch.events[0], position + length
