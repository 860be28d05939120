"""Topic names and the workflow-id partitioner (Kafka's murmur2, as the Java client)."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2

from aion_common.kafka.topics import Topics, partition_for

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (apache/kafka, clients/src/test).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def _signed(value: int) -> int:
    """A 32-bit value as Java's signed int."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def test_topic_names_follow_the_prefix() -> None:
    topics = Topics("acme")
    assert topics.commands == "acme.commands"
    assert topics.events == "acme.events"
    assert topics.replies == "acme.replies"
    assert topics.dead_letter == "acme.dead-letter"
    assert topics.engine_state == "acme.engine-state"
    assert topics.engine_closed == "acme.engine-closed"
    assert topics.watcher_state == "acme.watcher-state"
    assert topics.watcher_closed == "acme.watcher-closed"
    assert topics.all() == (
        "acme.commands",
        "acme.events",
        "acme.replies",
        "acme.dead-letter",
        "acme.engine-state",
        "acme.engine-closed",
        "acme.watcher-state",
        "acme.watcher-closed",
    )


def test_topic_names_are_distinct() -> None:
    assert len(set(Topics("aion").all())) == 8


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2.items())
def test_murmur2_matches_the_java_client(key: bytes, expected: int) -> None:
    assert _signed(murmur2(key)) == expected


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2.items())
def test_partition_for_is_javas_to_positive_modulo(key: bytes, expected: int) -> None:
    # Java: Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions
    for partitions in (1, 3, 6, 12, 50):
        assert partition_for(key.decode(), partitions) == (expected & 0x7FFFFFFF) % partitions


def test_partition_for_agrees_with_aiokafkas_default_partitioner() -> None:
    partitions = list(range(7))
    for i in range(200):
        workflow_id = f"order-{i}"
        chosen = DefaultPartitioner()(workflow_id.encode(), partitions, partitions)
        assert partition_for(workflow_id, 7) == chosen


def test_partition_for_is_deterministic_and_in_range() -> None:
    ids = [f"wf-{i}" for i in range(500)] + ["", "ünïcødé-id", "x" * 300]
    for partitions in (1, 2, 6, 64):
        first = [partition_for(i, partitions) for i in ids]
        assert first == [partition_for(i, partitions) for i in ids]
        assert all(0 <= p < partitions for p in first)
    assert len({partition_for(i, 6) for i in ids}) == 6  # spreads over every partition


def test_partition_for_hashes_utf8_bytes() -> None:
    workflow_id = "überweisung-7"
    expected = (murmur2(workflow_id.encode("utf-8")) & 0x7FFFFFFF) % 5
    assert partition_for(workflow_id, 5) == expected


def test_partition_for_refuses_zero_partitions() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition_for("wf", 0)
