"""The codec: domain values <-> Avro single-object encoded Kafka records and keys."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, NoReturn, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro._read_common import SchemaResolutionError

from aion_common.codecs._convert import (
    ENUM_TYPES,
    NAMESPACE,
    PAYLOAD,
    RECORD_TYPES,
    Convert,
    compile_schemas,
)
from aion_common.codecs._registry import SchemaRegistry
from aion_common.codecs._writer import compile_writers
from aion_common.domain.commands import COMMAND_TYPES, Command, CommandRefused
from aion_common.domain.errors import CodecError, DecodeError, InvalidInput, PayloadTooLarge
from aion_common.domain.events import EventBatch
from aion_common.domain.ids import validate_id
from aion_common.domain.payload import DEFAULT_PAYLOAD_LIMIT
from aion_common.domain.queries import QueryAnswer
from aion_common.domain.schedules import ScheduleRecord, ScheduleState, ScheduleTrigger
from aion_common.domain.tasks import ActivityTask, CancelActivityTask, TaskRecord
from aion_common.domain.versions import PackageRecord, RouteRecord

__all__ = ["MARKER", "Codec", "decode_key", "encode_key"]

MARKER = b"\xc3\x01"
_HEADER = len(MARKER) + 8
_BATCH = f"{NAMESPACE}.EventBatch"
_REFUSAL = f"{NAMESPACE}.CommandRefused"
_ANSWER = f"{NAMESPACE}.QueryAnswer"
_COMMANDS = frozenset(f"{NAMESPACE}.{cls.__name__}" for cls in COMMAND_TYPES)
_TASKS = frozenset(f"{NAMESPACE}.{cls.__name__}" for cls in (ActivityTask, CancelActivityTask))
_PACKAGE = f"{NAMESPACE}.PackageRecord"
_ROUTE = f"{NAMESPACE}.RouteRecord"
_SCHEDULES = frozenset({f"{NAMESPACE}.ScheduleRecord", f"{NAMESPACE}.ScheduleTrigger"})
_SCHEDULE_STATE = f"{NAMESPACE}.ScheduleState"
_VALUE_TYPES = frozenset(
    {_BATCH, _REFUSAL, _ANSWER, *_COMMANDS, *_TASKS, _PACKAGE, _ROUTE, *_SCHEDULES, _SCHEDULE_STATE}
)

# What fastavro raises on bytes that do not match the writer schema, found by fuzzing:
# short reads (EOFError, IndexError), bad varints/lengths/indexes, bad UTF-8, out-of-range
# timestamps (ValueError, OverflowError), unresolvable enum symbols or union branches.
_AVRO_READ_ERRORS = (
    EOFError,
    IndexError,
    KeyError,
    ValueError,
    OverflowError,
    TypeError,
    MemoryError,
    SchemaResolutionError,
)
_AVRO_WRITE_ERRORS = (ValueError, TypeError, OverflowError, AttributeError, KeyError)


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    full_name: str
    writer: dict[str, Any]
    reader: dict[str, Any] | None  # None when the writer schema is the current one
    convert: Convert


class Codec:
    """Encodes and decodes aion's Kafka values (Avro single-object encoding).

    Decoding finds the writer schema by fingerprint and reads it into the current (newest)
    schema of the same full name, so every released version stays readable. Every malformed
    input raises :class:`DecodeError` naming the problem and, when given, where the record was.
    Encoding raises :class:`PayloadTooLarge` for a payload over ``payload_limit``,
    :class:`InvalidInput` for a value decoding would refuse (bad id, naive datetime, seq < 1),
    and :class:`CodecError` for a value the schema cannot represent.
    """

    def __init__(
        self,
        registry: SchemaRegistry | None = None,
        *,
        payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
    ) -> None:
        """Compile converters for every value type; ``registry`` defaults to ``schemas/``."""
        self._registry = SchemaRegistry.load() if registry is None else registry
        self.payload_limit = payload_limit
        current = {name: self._registry.current(name) for name in _VALUE_TYPES}
        compiled = compile_schemas(
            {name: info.parsed for name, info in current.items()}, payload_limit=payload_limit
        )
        trusted = compile_schemas(
            {name: info.parsed for name, info in current.items()},
            payload_limit=payload_limit,
            trusted=True,
        )
        self._writers = {
            name: (info.header, info.parsed, compiled[name].encode)
            for name, info in current.items()
        }
        definitions: dict[str, dict[str, Any]] = {}
        for info in current.values():
            definitions.update(info.parsed["__named_schemas"])
        direct = compile_writers(
            definitions, RECORD_TYPES, ENUM_TYPES, PAYLOAD, payload_limit=payload_limit
        )
        self._direct_writers = {name: (info.header, direct[name]) for name, info in current.items()}
        self._plans: dict[bytes, _ReadPlan] = {}
        self._trusted_plans: dict[bytes, _ReadPlan] = {}
        for fp, info in self._registry.fingerprints().items():
            if info.full_name in _VALUE_TYPES:
                reader = current[info.full_name]
                for plans, converters in ((self._plans, compiled), (self._trusted_plans, trusted)):
                    plans[fp] = _ReadPlan(
                        info.full_name,
                        info.parsed,
                        None if reader.fingerprint == fp else reader.parsed,
                        converters[info.full_name].decode,
                    )

    @property
    def registry(self) -> SchemaRegistry:
        """The schemas this codec reads and writes."""
        return self._registry

    def encode_batch(self, batch: EventBatch, *, trusted: bool = False) -> bytes:
        """One ``aion.events`` record value.

        ``trusted=True`` skips the field checks (ids, names, seqs, aware datetimes, payload
        JSON): only for values whose every field was already checked — decoded by this codec,
        derived by ``derive_id``, or made by ``Payload.from_json`` — as the engine's output is.
        Payload sizes are still checked.
        """
        return self._encode(_BATCH, batch, trusted)

    def decode_batch(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        trusted: bool = False,
    ) -> EventBatch:
        """Decode an ``aion.events`` value; :class:`DecodeError` if it is not one.

        ``trusted=True`` skips the field checks (Avro errors are still raised): for the engine
        reading back the log only it writes, every value of which passed them when written.
        """
        return cast(
            "EventBatch", self._decode(data, _BATCH_ONLY, topic, partition, offset, trusted=trusted)
        )

    def encode_command(self, command: Command, *, trusted: bool = False) -> bytes:
        """One ``aion.commands`` record value (``trusted`` as for :meth:`encode_batch`)."""
        return self._encode(f"{NAMESPACE}.{type(command).__name__}", command, trusted)

    def decode_command(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Command:
        """Decode an ``aion.commands`` value; :class:`DecodeError` if it is not a command."""
        return cast("Command", self._decode(data, _COMMANDS, topic, partition, offset))

    def encode_refusal(self, refusal: CommandRefused, *, trusted: bool = False) -> bytes:
        """One replies-topic record value (``trusted`` as for :meth:`encode_batch`)."""
        return self._encode(_REFUSAL, refusal, trusted)

    def decode_refusal(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> CommandRefused:
        """Decode a replies-topic value; :class:`DecodeError` if it is not a refusal."""
        return cast("CommandRefused", self._decode(data, _REFUSAL_ONLY, topic, partition, offset))

    def encode_query_answer(self, answer: QueryAnswer, *, trusted: bool = False) -> bytes:
        """One replies-topic record value answering a query (``trusted`` as for
        :meth:`encode_batch`)."""
        return self._encode(_ANSWER, answer, trusted)

    def decode_query_answer(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> QueryAnswer:
        """Decode a query answer; :class:`DecodeError` if it is not one."""
        return cast("QueryAnswer", self._decode(data, _ANSWER_ONLY, topic, partition, offset))

    def decode_reply(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> CommandRefused | QueryAnswer:
        """Decode any replies-topic value: a refusal or a query answer."""
        found = self._decode(data, _REPLIES, topic, partition, offset)
        return cast("CommandRefused | QueryAnswer", found)

    def encode_task(self, task: TaskRecord, *, trusted: bool = False) -> bytes:
        """One task-queue record value (``trusted`` as for :meth:`encode_batch`)."""
        return self._encode(f"{NAMESPACE}.{type(task).__name__}", task, trusted)

    def decode_task(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> TaskRecord:
        """Decode a task-queue value; :class:`DecodeError` if it is not a task record."""
        return cast("TaskRecord", self._decode(data, _TASKS, topic, partition, offset))

    def encode_package(self, record: PackageRecord) -> bytes:
        """One packages-topic record value."""
        return self._encode(_PACKAGE, record)

    def decode_package(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> PackageRecord:
        """Decode a packages-topic value; :class:`DecodeError` if it is not one."""
        found = self._decode(data, frozenset({_PACKAGE}), topic, partition, offset)
        return cast("PackageRecord", found)

    def encode_route(self, record: RouteRecord) -> bytes:
        """One routes-topic record value."""
        return self._encode(_ROUTE, record)

    def decode_route(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> RouteRecord:
        """Decode a routes-topic value; :class:`DecodeError` if it is not one."""
        return cast(
            "RouteRecord", self._decode(data, frozenset({_ROUTE}), topic, partition, offset)
        )

    def encode_schedule(self, record: ScheduleRecord | ScheduleTrigger | ScheduleState) -> bytes:
        """One ``<prefix>.schedules`` (a definition or a trigger) or ``schedule-state`` value."""
        return self._encode(f"{NAMESPACE}.{type(record).__name__}", record)

    def decode_schedule(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> ScheduleRecord | ScheduleTrigger:
        """Decode a schedules-topic value; :class:`DecodeError` if it is not one."""
        found = self._decode(data, _SCHEDULES, topic, partition, offset)
        return cast("ScheduleRecord | ScheduleTrigger", found)

    def encode_schedule_state(self, state: ScheduleState) -> bytes:
        """One ``<prefix>.schedule-state`` value (as :meth:`encode_schedule`)."""
        return self.encode_schedule(state)

    def decode_schedule_state(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> ScheduleState:
        """Decode a schedule-state value; :class:`DecodeError` if it is not one."""
        found = self._decode(data, frozenset({_SCHEDULE_STATE}), topic, partition, offset)
        return cast("ScheduleState", found)

    def _encode(self, full_name: str, value: Any, trusted: bool = False) -> bytes:
        if trusted:
            return self._encode_direct(full_name, value)
        writer = self._writers.get(full_name)
        if writer is None or type(value) is not RECORD_TYPES.get(full_name):
            raise CodecError(f"cannot encode {type(value).__name__} as a Kafka value")
        header, schema, convert = writer
        record = convert(value)
        buf = io.BytesIO()
        buf.write(header)
        try:
            schemaless_writer(buf, schema, record)
        except _AVRO_WRITE_ERRORS as err:
            raise CodecError(f"cannot encode {full_name}: {err}") from err
        return buf.getvalue()

    def _encode_direct(self, full_name: str, value: Any) -> bytes:
        # the generated writer: no dicts, no schema walk (see _writer); same bytes
        entry = self._direct_writers.get(full_name)
        if entry is None or type(value) is not RECORD_TYPES.get(full_name):
            raise CodecError(f"cannot encode {type(value).__name__} as a Kafka value")
        header, write = entry
        out = bytearray(header)
        try:
            write(value, out)
        except PayloadTooLarge:
            raise
        except _AVRO_WRITE_ERRORS as err:
            raise CodecError(f"cannot encode {full_name}: {err!r}") from err
        return bytes(out)

    def _decode(
        self,
        data: bytes | None,
        expected: frozenset[str],
        topic: str | None,
        partition: int | None,
        offset: int | None,
        *,
        trusted: bool = False,
    ) -> Any:
        try:
            return self._decode_value(data, expected, trusted)
        except DecodeError as err:
            if topic is None and partition is None and offset is None:
                raise
            located = DecodeError(err.problem, topic=topic, partition=partition, offset=offset)
            raise located from err.__cause__

    def _decode_value(
        self, data: bytes | None, expected: frozenset[str], trusted: bool = False
    ) -> Any:
        if not data:
            raise DecodeError("empty value" if data is not None else "no value (null)")
        if len(data) < _HEADER:
            raise DecodeError(f"truncated header: {len(data)} bytes, need at least {_HEADER}")
        if data[:2] != MARKER:
            raise DecodeError(f"wrong marker {bytes(data[:2]).hex()}, expected c301 (Avro)")
        fp = bytes(data[2:_HEADER])
        plan = (self._trusted_plans if trusted else self._plans).get(fp)
        if plan is None:
            known = self._registry.by_fingerprint(fp)
            if known is None:
                raise DecodeError(f"unknown schema fingerprint {fp.hex()}")
            raise DecodeError(f"expected {_describe(expected)}, got {known.full_name}")
        if plan.full_name not in expected:
            raise DecodeError(f"expected {_describe(expected)}, got {plan.full_name}")
        buf = io.BytesIO(data)
        buf.seek(_HEADER)
        try:
            record = schemaless_reader(
                buf,
                plan.writer,
                plan.reader,
                return_record_name=True,
                return_record_name_override=True,
            )
        except _AVRO_READ_ERRORS as err:
            _body_error(plan.full_name, err)
        if buf.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buf.tell()} bytes of trailing garbage after {plan.full_name}"
            )
        try:
            return plan.convert(record)
        except InvalidInput as err:
            raise DecodeError(f"invalid {plan.full_name}: {err}") from err
        except (ValueError, TypeError, KeyError) as err:
            raise DecodeError(f"invalid {plan.full_name}: {err!r}") from err


_BATCH_ONLY = frozenset({_BATCH})
_REFUSAL_ONLY = frozenset({_REFUSAL})
_ANSWER_ONLY = frozenset({_ANSWER})
_REPLIES = frozenset({_REFUSAL, _ANSWER})


def _describe(expected: frozenset[str]) -> str:
    if len(expected) == 1:
        return next(iter(expected))
    if expected == _SCHEDULES:
        return "a schedule record"
    return "a task record" if expected == _TASKS else "a command"


def _body_error(full_name: str, err: BaseException) -> NoReturn:
    if isinstance(err, EOFError | IndexError):
        raise DecodeError(f"truncated or corrupt {full_name} body ({err!r})") from err
    if isinstance(err, UnicodeDecodeError):
        raise DecodeError(f"{full_name} body holds a string that is not UTF-8") from err
    raise DecodeError(f"{full_name} body does not decode: {err!r}") from err


def encode_key(workflow_id: str) -> bytes:
    """The Kafka key of every aion record: the UTF-8 workflow id."""
    return validate_id(workflow_id).encode("utf-8")


def decode_key(
    key: bytes | None,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> str:
    """The workflow id in a Kafka key; :class:`DecodeError` if it is not a valid UTF-8 id."""
    problem: str
    cause: Exception | None = None
    if not key:
        problem = "record has no key (workflow id)"
    else:
        try:
            return validate_id(bytes(key).decode("utf-8"))
        except UnicodeDecodeError as err:
            problem, cause = f"key is not UTF-8: {err}", err
        except InvalidInput as err:
            problem, cause = f"key is not a workflow id: {err}", err
    raise DecodeError(problem, topic=topic, partition=partition, offset=offset) from cause
