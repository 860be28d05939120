"""Pure helpers behind the web UI: prefix bounds, engine member names, dead-letter rows."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from aiokafka.structs import ConsumerRecord

from aion_projector.api._cluster import member_name
from aion_projector.api._session import safe_next
from aion_projector.dead_letters import PREVIEW_BYTES, dead_letter_row
from aion_projector.queries import prefix_bound

MAX = chr(sys.maxunicode)


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [("abc", "abd"), ("order-", "order."), (f"a{MAX}", "b"), (MAX * 2, None), ("é", "ê")],
)
def test_prefix_bound_is_just_above_every_extension(prefix: str, bound: str | None) -> None:
    assert prefix_bound(prefix) == bound
    if bound is not None:
        assert prefix < prefix + MAX * 3 < bound


def test_engine_member_names() -> None:
    uid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert member_name(f"aion.engine.engine-1-{uid}", "aion.engine") == "engine-1"
    assert member_name(f"aiokafka-0.14.0-{uid}", "aion.engine") == "aiokafka-0.14.0"


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/registry?x=1", "/registry?x=1"), ("//evil.example", "/"), ("https://x", "/"),
     ("/\\evil", "/"), ("", "/")],
)  # fmt: skip
def test_sign_in_returns_only_to_this_site(target: str, safe: str) -> None:
    assert safe_next(target) == safe


def _record(
    headers: list[tuple[str, bytes]], *, key: bytes | None = b"wf", value: bytes = b"v"
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="aion.dead-letter",
        partition=2,
        offset=9,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=headers,
    )


def _dlq(**overrides: bytes) -> list[tuple[str, bytes]]:
    headers = {
        "aion.dlq.reason": b"bad",
        "aion.dlq.error": b"DecodeError",
        "aion.dlq.source.topic": b"aion.events",
        "aion.dlq.source.partition": b"2",
        "aion.dlq.source.offset": b"41",
        "aion.dlq.at": b"2026-01-01T00:00:00+00:00",
    }
    headers.update({f"aion.dlq.{k.replace('_', '.')}": v for k, v in overrides.items()})
    return list(headers.items())


def test_an_aion_dead_letter_keeps_its_source_and_why() -> None:
    row = dead_letter_row(_record(_dlq()))
    assert row["source_topic"] == "aion.events"
    assert (row["source_partition"], row["source_offset"]) == (2, 41)
    assert row["reason"] == "bad"
    assert row["dead_lettered_at"] == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "headers",
    [[], _dlq(source_offset=b"x"), _dlq(at=b"yesterday"), [("aion.dlq.reason", b"\xff")]],
    ids=["none", "bad-offset", "bad-time", "not-utf8"],
)
def test_any_record_at_all_gives_a_row(headers: list[tuple[str, bytes]]) -> None:
    row = dead_letter_row(_record(headers, key=None, value=b"\x00" * 2000))
    assert row["reason"].startswith("not an aion dead letter")
    assert row["source_topic"] is None
    assert row["workflow_id"] is None
    assert row["value_size"] == 2000
    assert "\x00" not in row["preview"]  # PostgreSQL text cannot hold NUL
    assert row["preview"].startswith("\\x00")
    assert len(row["preview"]) <= 4 * PREVIEW_BYTES + 1


def test_long_and_odd_text_is_cut_and_escaped() -> None:
    row = dead_letter_row(
        _record(_dlq(reason=b"r\x00" * 5000, error=b"E" * 500), key=b"k\x01" + b"x" * 400)
    )
    assert len(row["reason"]) <= 4000
    assert "\x00" not in row["reason"]
    assert len(row["error"]) <= 128
    assert len(row["workflow_id"]) <= 255
    assert row["workflow_id"].startswith("k\\x01")
