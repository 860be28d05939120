"""Avro binary writers generated per record schema, straight from domain objects.

The codec's trusted path (the engine's output) writes with these instead of converting a
domain object to fastavro's dicts and walking the schema at run time: each record becomes one
generated Python function that appends its fields' Avro encoding to a ``bytearray``. The bytes
are exactly fastavro's (``tests/unit/test_codec_trusted.py`` checks every type both ways).

Field values are not checked here (that is what "trusted" means): the caller guarantees the
domain invariants. Only the shapes aion's schemas use are supported — string, bytes (only as
``aion.v1.Payload``), boolean, int, long, double,
timestamp-micros, enums, records, arrays, ``["null", T]`` and
unions of records — and anything else fails at compile time, not on the wire.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aion_common.domain.errors import CodecError, PayloadTooLarge

__all__ = ["Writer", "compile_writers"]

Writer = Callable[[Any, bytearray], None]
"""Appends one value's Avro binary encoding to the buffer."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SMALL = tuple(bytes([n << 1]) for n in range(64))  # zigzag varints of 0..63: one byte


def _long(n: int) -> bytes:
    """Avro long: zigzag, then a little-endian base-128 varint."""
    if 0 <= n < 64:  # noqa: PLR2004 - one-byte varints
        return _SMALL[n]
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:  # noqa: PLR2004
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def compile_writers(
    definitions: Mapping[str, dict[str, Any]],
    record_types: Mapping[str, type],
    enum_types: Mapping[str, type[enum.Enum]],
    payload: str,
    payload_limit: int,
) -> dict[str, Writer]:
    """A writer for every record in ``definitions`` (full name -> fastavro parsed schema).

    ``payload`` names the record written from :class:`Payload` objects; a payload over
    ``payload_limit`` bytes raises :class:`PayloadTooLarge`.
    """
    return _Generator(definitions, record_types, enum_types, payload, payload_limit).all()


class _Generator:
    def __init__(
        self,
        definitions: Mapping[str, dict[str, Any]],
        record_types: Mapping[str, type],
        enum_types: Mapping[str, type[enum.Enum]],
        payload: str,
        payload_limit: int,
    ) -> None:
        self._definitions = definitions
        self._records = record_types
        self._enums = enum_types
        self._payload = payload
        self._namespace: dict[str, Any] = {
            "L": _long,
            "EPOCH": _EPOCH,
            "CodecError": CodecError,
            "PayloadTooLarge": PayloadTooLarge,
            "LIMIT": payload_limit,
            "DOUBLE": struct.Struct("<d").pack,
        }
        self._counter = 0
        self._unions: list[str] = []

    def all(self) -> dict[str, Writer]:
        sources: list[str] = []
        names: dict[str, str] = {}
        for full_name, schema in self._definitions.items():
            if schema["type"] == "record" and full_name != self._payload:
                names[full_name] = self._function_name(full_name)
        self._names = names
        for full_name, function in names.items():
            sources.append(self._record(function, full_name, self._definitions[full_name]))
        code = "\n\n".join(sources)
        exec(compile(code, "<aion avro writers>", "exec"), self._namespace)  # noqa: S102 - generated here
        for table in self._unions:
            entries = self._namespace[table]
            for cls, (index, function) in list(entries.items()):
                entries[cls] = (index, self._namespace[function])
        return {full_name: self._namespace[function] for full_name, function in names.items()}

    @staticmethod
    def _function_name(full_name: str) -> str:
        return "w_" + full_name.replace(".", "_")

    def _local(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def _constant(self, prefix: str, value: object) -> str:
        name = self._local(prefix)
        self._namespace[name] = value
        return name

    def _record(self, function: str, full_name: str, schema: dict[str, Any]) -> str:
        if full_name not in self._records:
            raise CodecError(f"record {full_name} has no domain type")
        lines = [f"def {function}(v, out):"]
        for field in schema["fields"]:
            lines.extend(self._value(f"v.{field['name']}", field["type"], indent="    "))
        return "\n".join(lines)

    def _value(self, expr: str, node: Any, indent: str) -> list[str]:  # noqa: PLR0911, PLR0912 - per type
        """Statements appending the encoding of ``expr`` (a domain value of type ``node``)."""
        if isinstance(node, list):
            return self._union(expr, node, indent)
        if isinstance(node, dict):
            kind = node["type"]
            if node.get("logicalType") == "timestamp-micros" and kind == "long":
                d = self._local("d")
                return [
                    f"{indent}{d} = {expr} - EPOCH",
                    f"{indent}out += L(({d}.days * 86400 + {d}.seconds) * 1000000"
                    f" + {d}.microseconds)",
                ]
            if kind == "array":
                return self._array(expr, node["items"], indent)
            if kind in {"record", "enum"}:
                return self._value(expr, node["name"], indent)
            if "logicalType" not in node and isinstance(kind, str):
                return self._value(expr, kind, indent)
            raise CodecError(f"unsupported Avro type {node!r}")
        if node == "string":
            s = self._local("s")
            return [
                f"{indent}{s} = {expr}.encode()",
                f"{indent}out += L(len({s}))",
                f"{indent}out += {s}",
            ]
        if node in {"long", "int"}:
            return [f"{indent}out += L({expr})"]
        if node == "bytes":
            b = self._local("b")
            return [f"{indent}{b} = {expr}", f"{indent}out += L(len({b}))", f"{indent}out += {b}"]
        if node == "boolean":
            return [f"{indent}out += b'\\x01' if {expr} else b'\\x00'"]
        if node == "double":
            return [f"{indent}out += DOUBLE({expr})"]
        if node == self._payload:
            s = self._local("s")
            return [
                f"{indent}{s} = {expr}.data",
                f"{indent}if len({s}) > LIMIT:",
                f"{indent}    raise PayloadTooLarge(len({s}), LIMIT)",
                f"{indent}out += L(len({s}))",
                f"{indent}out += {s}",
            ]
        if node in self._names:
            return [f"{indent}{self._names[node]}({expr}, out)"]
        definition = self._definitions.get(node)
        if definition is not None and definition["type"] == "enum":
            cls = self._enums.get(node)
            if cls is None or {m.value for m in cls} != set(definition["symbols"]):
                raise CodecError(f"enum {node} does not match its domain enum")
            index = {member: _long(definition["symbols"].index(member.value)) for member in cls}
            table = self._constant("enum", index)
            return [f"{indent}out += {table}[{expr}]"]
        raise CodecError(f"unsupported Avro type {node!r}")

    def _array(self, expr: str, items: Any, indent: str) -> list[str]:
        seq, item = self._local("a"), self._local("i")
        return [
            f"{indent}{seq} = {expr}",
            f"{indent}if {seq}:",
            f"{indent}    out += L(len({seq}))",
            f"{indent}    for {item} in {seq}:",
            *self._value(item, items, indent + "        "),
            f"{indent}out += b'\\x00'",
        ]

    def _union(self, expr: str, branches: list[Any], indent: str) -> list[str]:
        others = [b for b in branches if b != "null"]
        if len(others) == 1 and len(branches) == 2:  # noqa: PLR2004 - ["null", T]
            x = self._local("x")
            null_first = branches[0] == "null"
            none_index, value_index = (b"\x00", b"\x02") if null_first else (b"\x02", b"\x00")
            return [
                f"{indent}{x} = {expr}",
                f"{indent}if {x} is None:",
                f"{indent}    out += {none_index!r}",
                f"{indent}else:",
                f"{indent}    out += {value_index!r}",
                *self._value(x, others[0], indent + "    "),
            ]
        if len(others) != len(branches):
            raise CodecError("unions of several records may not hold null")
        dispatch: dict[type, tuple[bytes, str]] = {}
        for index, branch in enumerate(branches):
            name = branch if isinstance(branch, str) else branch.get("name")
            cls = self._records.get(name) if isinstance(name, str) else None
            if cls is None or name not in self._names:
                raise CodecError(f"union branch {name} is not a domain record")
            dispatch[cls] = (_long(index), self._names[name])
        table = self._constant("union", dispatch)
        self._unions.append(table)  # function names become functions once they exist
        x, entry = self._local("x"), self._local("e")
        return [
            f"{indent}{x} = {expr}",
            f"{indent}{entry} = {table}.get(type({x}))",
            f"{indent}if {entry} is None:",
            f"{indent}    raise CodecError(f'{{type({x}).__name__}} is not in this union')",
            f"{indent}out += {entry}[0]",
            f"{indent}{entry}[1]({x}, out)",
        ]
