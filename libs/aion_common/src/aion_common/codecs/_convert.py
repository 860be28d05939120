"""Domain objects <-> fastavro dicts, compiled once per schema; no reflection per record.

Each Avro record's fields must be exactly its dataclass's fields (same names), so a domain
field added without a new schema release fails at start-up, not silently on the wire.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aion_common.domain import (
    activities,
    commands,
    events,
    outcomes,
    queries,
    schedules,
    tasks,
    versions,
)
from aion_common.domain.errors import CodecError, InvalidInput, PayloadTooLarge
from aion_common.domain.ids import validate_id, validate_name
from aion_common.domain.payload import Payload, WorkflowError

__all__ = [
    "ENUM_TYPES",
    "FIELD_CHECKS",
    "NAMESPACE",
    "RECORD_TYPES",
    "Compiled",
    "compile_schemas",
]

NAMESPACE = "aion.v1"
PAYLOAD = f"{NAMESPACE}.Payload"

RECORD_TYPES: Mapping[str, type] = {
    f"{NAMESPACE}.{cls.__name__}": cls
    for cls in (
        *events.EVENT_TYPES,
        events.EventBatch,
        *commands.COMMAND_TYPES,
        commands.CommandRefused,
        queries.QueryAnswer,
        activities.ActivityOptions,
        activities.RetryOptions,
        tasks.ActivityTask,
        tasks.CancelActivityTask,
        versions.PackageRecord,
        versions.RouteRecord,
        schedules.ScheduleRecord,
        schedules.ScheduleTrigger,
        schedules.ScheduleState,
        schedules.ScheduledRun,
        events.PublishHeader,
        events.CarriedChild,
        outcomes.ParentLink,
        outcomes.Completed,
        outcomes.Failed,
        outcomes.Cancelled,
        outcomes.TimedOut,
        outcomes.ContinuedAsNew,
        WorkflowError,
    )
}
"""Avro full name -> domain dataclass. ``aion.v1.Payload`` is special-cased (bytes field)."""

ENUM_TYPES: Mapping[str, type[enum.Enum]] = {
    f"{NAMESPACE}.{cls.__name__}": cls
    for cls in (
        outcomes.ParentClosePolicy,
        outcomes.IdReusePolicy,
        commands.RefusalCode,
        queries.QueryStatus,
        activities.TimeoutKind,
        schedules.OverlapPolicy,
    )
}

Convert = Callable[[Any], Any]
Check = Callable[[Any, str], None]


def _id(value: Any, what: str) -> None:
    if value is not None:
        validate_id(value, what=what)


def _name(value: Any, what: str) -> None:
    if value is not None:
        validate_name(value, what=what)


def _seq(value: Any, what: str) -> None:
    if value < 1:
        raise InvalidInput(f"{what} must be at least 1, got {value}")


def _non_negative(value: Any, what: str) -> None:
    if value is not None and value < 0:
        raise InvalidInput(f"{what} must not be negative, got {value}")


def _aware(value: Any, what: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, got {value!r}")


_ID_FIELDS = (
    "workflow_id",
    "run_id",
    "command_id",
    "first_run_id",
    "previous_run_id",
    "next_run_id",
    "child_workflow_id",
    "start_command_id",
    "origin_run_id",
    "timer_id",
    "parent_run_id",
    "child_run_id",
    "writer",
    "activity_id",
)
_NAME_FIELDS = (
    "workflow_type",
    "child_workflow_type",
    "name",
    "signal_name",
    "command_type",
    "activity_type",
    "worker",
)
FIELD_CHECKS: Mapping[str, Check] = {
    **dict.fromkeys(_ID_FIELDS, _id),
    **dict.fromkeys(_NAME_FIELDS, _name),
    "seq": _seq,
    "attempt": _seq,
    "execution_timeout_ms": _non_negative,
}
"""Value checks by field name, applied on decode and on encode (be strict in what you send)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Compiled:
    """Decoder (fastavro dict -> domain) and encoder (domain -> dict) for one record."""

    decode: Convert
    encode: Convert


def compile_schemas(
    parsed: Mapping[str, dict[str, Any]], *, payload_limit: int, trusted: bool = False
) -> dict[str, Compiled]:
    """Compile converters for each full name in ``parsed`` (its reader schema).

    ``trusted`` converters skip every field check and payload re-validation: they are for
    values whose every field already passed them (decoded by a checking codec, derived with
    ``derive_id``, or built by ``Payload.from_json``) — the engine's own output and the event
    log it alone writes. Avro-level errors are still raised either way.
    """
    compiled: dict[str, Compiled] = {}
    for full_name, schema in parsed.items():
        compiler = _Compiler(payload_limit, trusted=trusted)
        compiled[full_name] = compiler.named(schema)
    return compiled


class _Compiler:
    def __init__(self, payload_limit: int, *, trusted: bool = False) -> None:
        self._limit = payload_limit
        self._trusted = trusted
        self._definitions: dict[str, dict[str, Any]] = {}
        self._done: dict[str, Compiled] = {}

    def named(self, schema: dict[str, Any]) -> Compiled:
        full_name = schema["name"]
        self._definitions[full_name] = schema
        if full_name not in self._done:
            if schema["type"] == "enum":
                self._done[full_name] = self._enum(full_name, schema)
            elif full_name == PAYLOAD:
                self._done[full_name] = self._payload()
            else:
                self._done[full_name] = self._record(full_name, schema)
        return self._done[full_name]

    def type_(self, node: Any) -> Compiled | None:
        """Converters for a field type, or None when the fastavro value is the domain value."""
        if isinstance(node, str):
            if node in self._definitions:
                return self.named(self._definitions[node])
            return None  # a primitive
        if isinstance(node, list):
            return self._union(node)
        if node["type"] in ("record", "enum"):
            return self.named(node)
        if node["type"] == "array":
            return self._array(node)
        if node.get("logicalType") == "timestamp-micros":
            return None
        raise CodecError(f"unsupported Avro type {node!r}")

    def _payload(self) -> Compiled:
        limit = self._limit
        if self._trusted:

            def encode_trusted(value: Payload) -> dict[str, bytes]:
                # JSON validity was checked where the Payload was made; its size is cheap to
                # check and must hold for every record the codec writes
                data = value.data
                if len(data) > limit:
                    raise PayloadTooLarge(len(data), limit)
                return {"json": data}

            return Compiled(_trusted_payload, encode_trusted)

        def decode(value: Any) -> Payload:
            return Payload.from_bytes(value["json"], limit=limit)

        def encode(value: Payload) -> dict[str, bytes]:
            # re-validated so a hand-built Payload cannot become a poison record
            return {"json": Payload.from_bytes(value.data, limit=limit).data}

        return Compiled(decode, encode)

    def _enum(self, full_name: str, schema: dict[str, Any]) -> Compiled:
        cls = ENUM_TYPES.get(full_name)
        if cls is None or {m.value for m in cls} != set(schema["symbols"]):
            raise CodecError(f"enum {full_name} does not match its domain enum")
        # dict lookups: Enum's call and its ``value`` property cost microseconds each
        by_symbol = {member.value: member for member in cls}
        by_member = {member: member.value for member in cls}
        return Compiled(by_symbol.__getitem__, by_member.__getitem__)

    def _array(self, node: dict[str, Any]) -> Compiled:
        items = self.type_(node["items"])
        if items is None:
            return Compiled(tuple, list)
        item_decode, item_encode = items.decode, items.encode
        return Compiled(
            lambda value: tuple([item_decode(v) for v in value]),
            lambda value: [item_encode(v) for v in value],
        )

    def _union(self, branches: list[Any]) -> Compiled | None:
        others = [b for b in branches if b != "null"]
        if len(others) == 1:  # ["null", T]: fastavro gives None or T's value
            inner = self.type_(others[0])
            if inner is None:
                return None
            inner_decode, inner_encode = inner.decode, inner.encode
            return Compiled(
                lambda v: None if v is None else inner_decode(v),
                lambda v: None if v is None else inner_encode(v),
            )
        if len(others) != len(branches):
            raise CodecError("unions of several records may not hold null")
        by_name = {}
        for branch in others:
            compiled = self.type_(branch)
            name = branch if isinstance(branch, str) else branch["name"]
            if compiled is None or name not in RECORD_TYPES:
                raise CodecError(f"union branch {name} is not a domain record")
            by_name[name] = compiled
        return _record_union(by_name)

    def _record(self, full_name: str, schema: dict[str, Any]) -> Compiled:
        cls = RECORD_TYPES.get(full_name)
        if cls is None:
            raise CodecError(f"record {full_name} has no domain type")
        avro_fields = [f["name"] for f in schema["fields"]]
        domain_fields = [f.name for f in dataclasses.fields(cls)]
        if sorted(avro_fields) != sorted(domain_fields):
            raise CodecError(
                f"{full_name} fields {avro_fields} differ from {cls.__name__} {domain_fields}"
            )
        short = full_name.rsplit(".", 1)[-1]
        plan: _Plan = []
        for f in schema["fields"]:
            name, type_ = f["name"], f["type"]
            timestamp = isinstance(type_, dict) and type_.get("logicalType") == "timestamp-micros"
            check = _aware if timestamp else FIELD_CHECKS.get(name)
            if self._trusted:
                check = None
            plan.append((name, self.type_(type_), check, f"{short}.{name}"))
        return Compiled(_record_decoder(cls, plan), _record_encoder(plan))


def _trusted_payload(value: Any) -> Payload:
    return Payload(value["json"])


_Plan = list[tuple[str, Compiled | None, Check | None, str]]


def _record_decoder(cls: type, plan: _Plan) -> Convert:
    # fastavro already yields aware UTC datetimes, so _aware is an encode-only check
    plan = [(n, conv, None if check is _aware else check, what) for n, conv, check, what in plan]
    plain = tuple(name for name, conv, check, _ in plan if conv is None and check is None)
    special = tuple(
        (name, None if conv is None else conv.decode, check, what)
        for name, conv, check, what in plan
        if conv is not None or check is not None
    )

    def decode(value: dict[str, Any]) -> Any:
        kwargs = {name: value[name] for name in plain}
        for name, conv, check, what in special:
            field = value[name]
            if check is not None:
                check(field, what)
            kwargs[name] = field if conv is None else conv(field)
        return cls(**kwargs)

    return decode


def _record_encoder(plan: _Plan) -> Convert:
    steps = tuple(
        (name, None if conv is None else conv.encode, check, what)
        for name, conv, check, what in plan
    )

    def encode(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conv, check, what in steps:
            field = getattr(obj, name)
            if check is not None:
                check(field, what)
            out[name] = field if conv is None else conv(field)
        return out

    return encode


def _record_union(by_name: Mapping[str, Compiled]) -> Compiled:
    decoders = {name: compiled.decode for name, compiled in by_name.items()}
    encoders = {RECORD_TYPES[name]: (name, compiled.encode) for name, compiled in by_name.items()}

    def decode(value: tuple[str, dict[str, Any]]) -> Any:
        name, record = value
        return decoders[name](record)

    def encode(obj: Any) -> tuple[str, dict[str, Any]]:
        entry = encoders.get(type(obj))
        if entry is None:
            raise CodecError(f"{type(obj).__name__} is not a branch of this union")
        name, encode_record = entry
        return (name, encode_record(obj))

    return Compiled(decode, encode)
