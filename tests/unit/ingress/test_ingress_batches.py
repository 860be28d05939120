"""A batch is each offset from the partition's next one on, once and in order."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from aion_ingress.service import _past


def _record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=b"{}",
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=2,
        headers=(),
    )


def test_records_before_the_next_offset_and_repeats_are_dropped() -> None:
    fetched = [_record(o) for o in (3, 4, 5, 6, 4, 5, 7)]  # a fetch across a seek, again
    assert [r.offset for r in _past(fetched, 4)] == [4, 5, 6, 7]
    assert _past(fetched, 8) == []
