"""The user's own record formats: JSON, or Avro with a schema file the user names.

aion's own topics are Avro with aion's schemas; *user* topics (what ``aion ingress`` reads and
``ctx.publish`` writes) hold whatever the user's systems speak. A :class:`UserFormat` turns
such a record value into a JSON value and back:

- ``json`` — UTF-8 JSON (the default);
- ``avro`` with ``wire="single-object"`` — Avro's single-object encoding (marker ``C3 01``, the
  schema's 8-byte CRC-64-AVRO fingerprint, the body), the fingerprint checked on read;
- ``avro`` with ``wire="confluent"`` — the Confluent Schema Registry wire format (magic ``0``,
  a 4-byte big-endian schema id, the body); aion talks to no registry, so the user names the
  id (``schema_id``) that is written, and on read a record with another id is refused unless
  no id was named.

Avro values become JSON by Avro's own JSON mapping where it has one (bytes and fixed as
ISO-8859-1 strings) and ISO-8601 strings for the logical types fastavro returns as objects
(timestamps, dates, times, UUIDs, decimals as strings). Writing takes the same forms back
(fastavro accepts ISO strings for none of the time types, so they must be numbers or the
native objects fastavro takes). Every failure is a :class:`~aion_common.domain.InvalidInput`
whose message says what is wrong with which value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import math
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import SchemaParseException, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from aion_common.codecs._registry import crc64_avro
from aion_common.domain.errors import InvalidInput

__all__ = [
    "AvroFormat",
    "JsonFormat",
    "UserFormat",
    "Wire",
    "load_avro_schema",
    "user_format",
    "validate_topic",
]

Wire = Literal["single-object", "confluent"]
_SINGLE_OBJECT_MARKER = b"\xc3\x01"
_CONFLUENT_MAGIC = b"\x00"
_AVRO_READ_ERRORS = (EOFError, IndexError, KeyError, ValueError, OverflowError, TypeError)
_MAX_SCHEMA_ID = 2**31 - 1
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_TOPIC_MAX = 249


def validate_topic(value: object) -> str:
    """``value`` if it is a Kafka topic name (1-249 of letters, digits, ``.``, ``_``, ``-``)."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= _TOPIC_MAX
        or any(c not in _TOPIC_CHARS for c in value)
        or value in (".", "..")
    ):
        raise InvalidInput(
            f"{value!r} is not a Kafka topic name (1-249 letters, digits, '.', '_' or '-')"
        )
    return value


class UserFormat(Protocol):
    """Decodes a user record value into a JSON value, and encodes one."""

    @property
    def name(self) -> str:
        """``json``, ``avro/single-object`` or ``avro/confluent``."""

    def decode(self, data: bytes | None) -> object:
        """The JSON value of ``data``; :class:`InvalidInput` saying why it cannot be read."""

    def encode(self, value: object) -> bytes:
        """``value`` written in this format; :class:`InvalidInput` when it does not fit."""


@dataclass(frozen=True, slots=True)
class JsonFormat:
    """UTF-8 JSON values (``null`` for a record without a value)."""

    @property
    def name(self) -> str:
        """``json``."""
        return "json"

    def decode(self, data: bytes | None) -> object:
        """Parse ``data`` as one UTF-8 JSON document."""
        if data is None:
            return None
        try:
            return json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InvalidInput(f"value is not UTF-8: {err}") from err
        except ValueError as err:
            raise InvalidInput(f"value is not JSON: {err}") from err

    def encode(self, value: object) -> bytes:
        """``value`` as compact UTF-8 JSON."""
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"value is not JSON-serialisable: {err}") from err
        return text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class AvroFormat:
    """Avro with one schema, in the single-object or the Confluent wire format."""

    schema: dict[str, Any] = field(repr=False)
    """fastavro's parsed form of the user's schema."""
    wire: Wire = "single-object"
    schema_id: int | None = None
    """Confluent: the id written (and, when set, required on read)."""
    source: str = ""
    """Where the schema came from, for messages."""
    fingerprint: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.wire not in ("single-object", "confluent"):
            raise InvalidInput(
                f"Avro wire format {self.wire!r}: expected single-object or confluent"
            )
        if self.schema_id is not None and not 0 <= self.schema_id <= _MAX_SCHEMA_ID:
            raise InvalidInput(f"Confluent schema id {self.schema_id} is out of range")
        canonical = to_parsing_canonical_form(self.schema)
        object.__setattr__(self, "fingerprint", crc64_avro(canonical.encode("utf-8")))

    @property
    def name(self) -> str:
        """``avro/<wire>``."""
        return f"avro/{self.wire}"

    def decode(self, data: bytes | None) -> object:
        """Check the header, read the body with the schema, map it to JSON."""
        if data is None:
            raise InvalidInput("record has no value (a tombstone) where Avro was expected")
        body = self._body(data)
        try:
            value = schemaless_reader(io.BytesIO(body), self.schema, None)
        except _AVRO_READ_ERRORS as err:
            raise InvalidInput(
                f"value does not decode with the Avro schema {self._what}: "
                f"{type(err).__name__}: {err}"
            ) from err
        return to_json_value(value)

    def encode(self, value: object) -> bytes:
        """Validate ``value`` against the schema and write it with the wire's header."""
        try:
            validate(value, self.schema, raise_errors=True)
        except ValidationError as err:
            raise InvalidInput(f"value does not match the Avro schema {self._what}: {err}") from err
        buffer = io.BytesIO()
        if self.wire == "single-object":
            buffer.write(_SINGLE_OBJECT_MARKER + self.fingerprint)
        else:
            buffer.write(_CONFLUENT_MAGIC + struct.pack(">I", self.schema_id or 0))
        try:
            schemaless_writer(buffer, self.schema, value)
        except (ValueError, TypeError, OverflowError, AttributeError, KeyError) as err:
            raise InvalidInput(f"value does not fit the Avro schema {self._what}: {err}") from err
        return buffer.getvalue()

    @property
    def _what(self) -> str:
        return self.source or str(self.schema.get("name", "?"))

    def _body(self, data: bytes) -> bytes:
        if self.wire == "single-object":
            header = _SINGLE_OBJECT_MARKER + self.fingerprint
            if data[:2] != _SINGLE_OBJECT_MARKER:
                raise InvalidInput(
                    "value is not Avro single-object encoded (no C3 01 marker): "
                    f"starts {data[:4].hex() or 'empty'}"
                )
            if data[: len(header)] != header:
                raise InvalidInput(
                    f"value was written with schema fingerprint {data[2:10].hex()}, not the "
                    f"configured schema's {self.fingerprint.hex()} ({self._what})"
                )
            return data[len(header) :]
        if len(data) < 5 or data[:1] != _CONFLUENT_MAGIC:  # noqa: PLR2004 - magic + 4-byte id
            raise InvalidInput(
                "value is not in the Confluent wire format (magic byte 0, 4-byte schema id): "
                f"starts {data[:5].hex() or 'empty'}"
            )
        (schema_id,) = struct.unpack(">I", data[1:5])
        if self.schema_id is not None and schema_id != self.schema_id:
            raise InvalidInput(
                f"value was written with Confluent schema id {schema_id}, "
                f"not the configured {self.schema_id}"
            )
        return data[5:]


def to_json_value(value: object) -> object:  # noqa: PLR0911 - one case per Avro value kind
    """A decoded Avro value in JSON form (see the module docstring)."""
    match value:
        case None | bool() | int() | str():
            return value
        case float():
            return value if math.isfinite(value) else str(value)
        case bytes():
            return value.decode("latin-1")
        case Mapping():
            return {str(k): to_json_value(v) for k, v in value.items()}
        case list() | tuple():
            return [to_json_value(v) for v in value]
        case dt.datetime() | dt.date() | dt.time():
            return value.isoformat()
        case uuid.UUID() | decimal.Decimal():
            return str(value)
        case _:
            return str(value)


def load_avro_schema(path: Path) -> dict[str, Any]:
    """Parse the Avro schema file ``path`` (JSON); :class:`InvalidInput` saying why not."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidInput(f"Avro schema {path}: cannot read it: {err}") from err
    except ValueError as err:
        raise InvalidInput(f"Avro schema {path}: not JSON: {err}") from err
    try:
        parsed = parse_schema(raw)
    except (SchemaParseException, ValueError, TypeError, KeyError) as err:
        raise InvalidInput(f"Avro schema {path}: invalid: {err}") from err
    if not isinstance(parsed, dict):
        raise InvalidInput(f"Avro schema {path}: expected a named schema (a record), got {raw!r}")
    return parsed


def user_format(
    kind: str,
    *,
    schema: Path | None = None,
    wire: str = "single-object",
    schema_id: int | None = None,
) -> UserFormat:
    """The format ``kind`` (``json`` or ``avro``); Avro needs the ``schema`` file."""
    if kind == "json":
        if schema is not None:
            raise InvalidInput("a schema file is for format avro; format json takes none")
        return JsonFormat()
    if kind == "avro":
        if schema is None:
            raise InvalidInput("format avro needs a schema file (schema: path/to/file.avsc)")
        if wire not in ("single-object", "confluent"):
            raise InvalidInput(f"Avro wire format {wire!r}: expected single-object or confluent")
        return AvroFormat(
            load_avro_schema(schema),
            wire=wire,  # type: ignore[arg-type]  # checked just above
            schema_id=schema_id,
            source=str(schema),
        )
    raise InvalidInput(f"format {kind!r}: expected json or avro")
