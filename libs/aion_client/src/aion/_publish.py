"""What ``ctx.publish`` writes with: JSON by default, or Avro with a schema the user names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aion_common.codecs.user_formats import AvroFormat, load_avro_schema
from aion_common.domain import InvalidInput

__all__ = ["AvroSchema"]


class AvroSchema:
    """Publish with an Avro schema: ``AvroSchema.from_file("order_shipped.avsc")`` or
    ``AvroSchema({...})``, in the single-object encoding (the default) or the Confluent wire
    format (``wire="confluent"``, with the ``schema_id`` your schema registry gave it).

    Make it when the module is imported (a module-level constant): workflow code may not read
    files. A value that does not fit the schema raises :class:`InvalidInput` at
    ``ctx.publish``, where the code can see it.
    """

    __slots__ = ("format",)

    def __init__(
        self,
        schema: Mapping[str, Any],
        *,
        wire: str = "single-object",
        schema_id: int | None = None,
        name: str = "",
    ) -> None:
        from fastavro import parse_schema  # noqa: PLC0415 - only Avro users pay for it
        from fastavro.schema import SchemaParseException  # noqa: PLC0415

        source = name or str(schema.get("name", "(inline)"))
        try:
            parsed = parse_schema(dict(schema))
        except (SchemaParseException, ValueError, TypeError, KeyError) as err:
            raise InvalidInput(f"Avro schema {source}: invalid: {err}") from err
        if not isinstance(parsed, dict):
            raise InvalidInput(f"Avro schema {source}: expected a named schema (a record)")
        self.format = _format(parsed, wire, schema_id, source)

    @classmethod
    def from_file(
        cls, path: str | Path, *, wire: str = "single-object", schema_id: int | None = None
    ) -> AvroSchema:
        """The schema in the ``.avsc`` file ``path``."""
        made = cls.__new__(cls)
        made.format = _format(load_avro_schema(Path(path)), wire, schema_id, str(path))
        return made

    def __repr__(self) -> str:
        return f"AvroSchema({self.format.source}, {self.format.name})"


def _format(parsed: dict[str, Any], wire: str, schema_id: int | None, source: str) -> AvroFormat:
    if wire not in ("single-object", "confluent"):
        raise InvalidInput(f"Avro wire format {wire!r}: expected single-object or confluent")
    return AvroFormat(parsed, wire=wire, schema_id=schema_id, source=source)  # type: ignore[arg-type]  # checked
