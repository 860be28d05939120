"""The dead-letter topic into the ``dead_letters`` view: what was refused, and why.

Any consumer may write the dead-letter topic (the engine, the projector itself, a user's
tool), so nothing about a record there is trusted: :func:`dead_letter_row` never raises. It
reads the ``aion.dlq.*`` headers when they are valid and otherwise keeps the record with those
fields empty and the reason saying what was wrong; text is cut to its column's size. The value
is not decoded (it may be exactly what failed to decode): its size and an escaped preview are
kept. A dead letter is never dead-lettered again, whatever happens (that would loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from aion_common.domain import DecodeError
from aion_common.kafka import Record, parse_dead_letter
from aion_projector.schema import ID, NAME, DeadLetterRow

__all__ = ["PREVIEW_BYTES", "dead_letter_row", "record_dead_letters"]

PREVIEW_BYTES = 512
_REASON_MAX = 4000
_TABLE: Table = DeadLetterRow.__table__  # type: ignore[assignment]  # declarative tables are Tables


# C0 controls but tab and newline, and DEL: PostgreSQL text cannot hold NUL at all, and none
# of them is readable on a page.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0B, 0x20), 0x7F)}


def _cut(text: str | None, size: int) -> str | None:
    """``text`` with control characters escaped, cut to ``size`` characters."""
    if text is None:
        return None
    text = text.translate(_CONTROLS)
    return text if len(text) <= size else text[: size - 1] + "…"


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "backslashreplace")


def _preview(value: bytes | None) -> str:
    if not value:
        return ""
    head = value[:PREVIEW_BYTES].decode("utf-8", "backslashreplace").translate(_CONTROLS)
    return head + ("…" if len(value) > PREVIEW_BYTES else "")


def _timestamp(record: Record) -> datetime:
    stamp = record.timestamp if isinstance(record.timestamp, int) and record.timestamp > 0 else 0
    return datetime.fromtimestamp(stamp / 1000, UTC)


def dead_letter_row(record: Record) -> dict[str, Any]:
    """The view row of dead-letter ``record``; any record at all gives one (never raises)."""
    row: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "workflow_id": _cut(_text(record.key), ID),
        "value_size": len(record.value or b""),
        "preview": _preview(record.value),
    }
    try:
        letter = parse_dead_letter(record)
    except DecodeError as err:
        row.update(
            dead_lettered_at=_timestamp(record),
            source_topic=None,
            source_partition=None,
            source_offset=None,
            error=None,
            reason=_cut(f"not an aion dead letter (its aion.dlq headers: {err})", _REASON_MAX),
        )
        return row
    at = letter.at if letter.at.tzinfo is not None else letter.at.replace(tzinfo=UTC)
    row.update(
        dead_lettered_at=at,
        source_topic=_cut(letter.source_topic, ID),
        source_partition=_int32(letter.source_partition),
        source_offset=letter.source_offset if 0 <= letter.source_offset < 2**63 else None,
        error=_cut(letter.error, NAME),
        reason=_cut(letter.reason, _REASON_MAX) or "",
    )
    return row


def _int32(value: int) -> int | None:
    return value if 0 <= value < 2**31 else None


async def record_dead_letters(session: AsyncSession, records: Sequence[Record]) -> int:
    """Insert the dead letters not stored yet (by topic, partition and offset); return how many
    were offered. The caller's transaction also stores the topic's offsets."""
    rows = [dead_letter_row(r) for r in records]
    if not rows:
        return 0
    builder: Any = (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    statement = builder(_TABLE).on_conflict_do_nothing(
        index_elements=["topic", "partition", "offset"]
    )
    await session.execute(statement, rows)
    return len(rows)
