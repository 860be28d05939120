"""The Kafka helpers against a real broker: topics, probe, producer, reader, dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from aion_common.codecs import encode_key
from aion_common.domain.errors import DecodeError, InfrastructureError
from aion_common.kafka import (
    DeadLetterPublisher,
    KeyedProducer,
    TopicMismatch,
    Topics,
    ensure_topics,
    parse_dead_letter,
    partition_for,
    probe_capabilities,
    read_dead_letters,
    read_partition_to_end,
)
from aion_common.kafka.consumer import Record
from aion_common.kafka.durability import ReplicationTooHigh
from aion_common.settings import Settings


async def _collect(settings: Settings, topic: str, partition: int) -> list[Record]:
    return [r async for r in read_partition_to_end(settings, topic, partition)]


async def test_ensure_topics_creates_then_is_idempotent(aion_settings: Settings) -> None:
    topics = Topics(aion_settings.topic_prefix)
    first = await ensure_topics(aion_settings, topics)
    assert first == dict.fromkeys(topics.all(), 3)
    # Again, and twice at once (two services starting together): no error, same answer.
    again = await asyncio.gather(
        ensure_topics(aion_settings, topics), ensure_topics(aion_settings, topics)
    )
    assert list(again) == [first, first]


async def test_concurrent_first_creation_races_are_harmless(aion_settings: Settings) -> None:
    topics = Topics(aion_settings.topic_prefix)
    results = await asyncio.gather(*(ensure_topics(aion_settings, topics) for _ in range(4)))
    assert all(r == dict.fromkeys(topics.all(), 3) for r in results)


async def test_events_topic_is_kept_forever(aion_settings: Settings) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=aion_settings.bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topics.events)]
        )
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert configs["retention.ms"] == "-1"
    assert configs["cleanup.policy"] == "delete"


async def test_a_mismatched_partition_count_is_refused_clearly(aion_settings: Settings) -> None:
    topics = Topics(aion_settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=aion_settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topics.events, 5, 1)])
    finally:
        await admin.close()
    with pytest.raises(TopicMismatch) as caught:
        await ensure_topics(aion_settings, topics)
    error = caught.value
    assert error.retriable is False
    assert error.counts[topics.events] == 5
    assert error.counts[topics.commands] == 3
    message = str(error)
    assert f"{topics.events}=5" in message
    assert f"{topics.commands}=3" in message
    assert "AION_PARTITIONS=3" in message
    assert "refuses to start" in message


async def test_settings_differing_from_existing_topics_are_refused(
    aion_settings: Settings,
) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    with pytest.raises(TopicMismatch, match="AION_PARTITIONS=4"):
        await ensure_topics(dataclasses.replace(aion_settings, partitions=4), topics)


async def test_an_unreachable_broker_is_a_retriable_infrastructure_error() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="nowhere")
    with pytest.raises(InfrastructureError) as caught:
        await ensure_topics(settings, Topics("nowhere"))
    assert caught.value.retriable is True


async def test_apache_kafka_supports_idempotence_and_transactions(
    aion_settings: Settings,
) -> None:
    started = asyncio.get_running_loop().time()
    capabilities = await probe_capabilities(aion_settings)
    elapsed = asyncio.get_running_loop().time() - started
    assert capabilities.idempotent, capabilities.idempotent_error
    assert capabilities.transactional, capabilities.transactional_error
    assert capabilities.api_versions  # ApiVersions answered
    assert 22 in capabilities.api_versions  # InitProducerId
    assert not capabilities.inconclusive
    print(f"probe took {elapsed:.2f}s")


async def test_the_probe_never_hangs_on_a_dead_broker() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1")
    started = asyncio.get_running_loop().time()
    capabilities = await probe_capabilities(settings, timeout_s=2)
    assert asyncio.get_running_loop().time() - started < 15
    assert not capabilities.idempotent
    assert not capabilities.transactional
    assert capabilities.idempotent_error
    assert capabilities.transactional_error
    # Unreachable says nothing about what the broker can do: ask again, do not conclude.
    assert capabilities.inconclusive


async def test_keyed_producer_uses_the_workflow_partition(aion_settings: Settings) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    producer = KeyedProducer(aion_settings, idempotent=True)
    await producer.start()
    try:
        for i in range(20):
            workflow_id = f"wf-{i}"
            metadata = await producer.send(
                topics.commands, workflow_id, b"v", headers=[("h", b"1")]
            )
            assert metadata.partition == partition_for(workflow_id, 3)
    finally:
        await producer.stop()
        await producer.stop()  # idempotent


async def test_producing_to_a_missing_topic_is_an_infrastructure_error(
    aion_settings: Settings,
) -> None:
    producer = KeyedProducer(aion_settings, request_timeout_ms=2_000)
    await producer.start()
    try:
        with pytest.raises(InfrastructureError, match=r"producing to .*\.missing"):
            async with asyncio.timeout(30):
                await producer.send(f"{aion_settings.topic_prefix}.missing", "wf", b"v")
    finally:
        await producer.stop()


async def test_read_partition_to_end_returns_exactly_what_was_produced(
    aion_settings: Settings,
) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    workflow_id = "reader-1"
    partition = partition_for(workflow_id, 3)
    assert await _collect(aion_settings, topics.events, partition) == []  # empty partition
    async with KeyedProducer(aion_settings, idempotent=True) as producer:
        sent = [f"value-{i}".encode() for i in range(25)]
        for value in sent:
            await producer.send(topics.events, workflow_id, value)
        records = await _collect(aion_settings, topics.events, partition)
        assert [r.value for r in records] == sent
        assert [r.offset for r in records] == list(range(25))
        assert {r.key for r in records} == {encode_key(workflow_id)}
        # The end is fixed at call time: records produced while reading are not returned.
        reader = read_partition_to_end(aion_settings, topics.events, partition)
        first = await anext(reader)
        await producer.send(topics.events, workflow_id, b"late")
        rest = [r async for r in reader]
        assert [first.value, *(r.value for r in rest)] == sent


async def test_an_aborted_transaction_is_invisible_to_read_committed(
    aion_settings: Settings,
) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    workflow_id = "txn-1"
    partition = partition_for(workflow_id, 3)
    async with KeyedProducer(aion_settings, transactional_id=f"{topics.prefix}-tx") as producer:
        async with producer.transaction():
            await producer.send(topics.events, workflow_id, b"committed-1")

        async def abandoned() -> None:
            async with producer.transaction():
                await producer.send(topics.events, workflow_id, b"aborted")
                raise RuntimeError("abandon this transaction")

        with pytest.raises(RuntimeError, match="abandon"):
            await abandoned()
        async with producer.transaction():
            await producer.send(topics.events, workflow_id, b"committed-2")
        async with producer.transaction():
            await producer.send(topics.events, workflow_id, b"aborted-at-the-end")
            await producer.send(topics.events, workflow_id, b"aborted-at-the-end-2")
            # Abort by hand: the partition now ends with an aborted batch and its marker.
            await producer._running().abort_transaction()
            await producer._running().begin_transaction()
    committed = await _collect(aion_settings, topics.events, partition)
    assert [r.value for r in committed] == [b"committed-1", b"committed-2"]
    everything = [
        r.value
        async for r in read_partition_to_end(
            aion_settings, topics.events, partition, isolation_level="read_uncommitted"
        )
    ]
    assert b"aborted" in everything


async def test_an_open_transaction_is_not_waited_for(aion_settings: Settings) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    workflow_id = "open-1"
    partition = partition_for(workflow_id, 3)
    async with KeyedProducer(aion_settings, idempotent=True) as plain:
        await plain.send(topics.events, workflow_id, b"before")
    async with KeyedProducer(aion_settings, transactional_id=f"{topics.prefix}-open") as txn:
        await txn._running().begin_transaction()
        await txn.send(topics.events, workflow_id, b"in-flight")
        started = asyncio.get_running_loop().time()
        records = await _collect(aion_settings, topics.events, partition)
        assert asyncio.get_running_loop().time() - started < 10
        assert [r.value for r in records] == [b"before"]
        await txn._running().abort_transaction()


async def test_dead_letter_round_trip_keeps_bytes_headers_and_source(
    aion_settings: Settings,
) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    workflow_id = "dlq-1"
    value = b"\x00\xffnot avro at all\x01"
    async with KeyedProducer(aion_settings, idempotent=True) as producer:
        await producer.send(topics.commands, workflow_id, value, headers=[("trace", b"abc")])
        (source,) = await _collect(aion_settings, topics.commands, partition_for(workflow_id, 3))
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        publisher = DeadLetterPublisher(producer, topics.dead_letter, clock=lambda: at)
        metadata = await publisher.publish(source, "undecodable command", DecodeError("bad marker"))
    assert metadata.partition == source.partition
    (letter,) = [d async for d in read_dead_letters(aion_settings, topics.dead_letter)]
    assert letter.key == encode_key(workflow_id)
    assert letter.value == value
    assert letter.headers == (("trace", b"abc"),)
    assert letter.reason == "undecodable command"
    assert letter.error == "DecodeError"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        topics.commands,
        source.partition,
        source.offset,
    )
    assert letter.at == at
    assert letter.partition == source.partition


async def test_a_record_without_dlq_headers_is_not_a_dead_letter(aion_settings: Settings) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    async with KeyedProducer(aion_settings) as producer:
        await producer.send(topics.dead_letter, "wf", b"x")
    (record,) = await _collect(aion_settings, topics.dead_letter, partition_for("wf", 3))
    with pytest.raises(DecodeError, match="not an aion dead letter"):
        parse_dead_letter(record)


async def test_a_raw_producer_agrees_with_partition_for(aion_settings: Settings) -> None:
    # aiokafka's own default partitioner, with no aion wrapper in between.
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    producer = AIOKafkaProducer(bootstrap_servers=aion_settings.bootstrap_servers)
    await producer.start()
    try:
        for workflow_id in ("a", "order-17", "ünïcødé"):
            metadata = await producer.send_and_wait(topics.replies, b"v", key=workflow_id.encode())
            assert metadata.partition == partition_for(workflow_id, 3)
    finally:
        await producer.stop()


async def _topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    return {entry[0]: entry[1] for entry in response.resources[0][4]}


async def test_topics_are_created_durable(aion_settings: Settings) -> None:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    for topic in topics.all():
        configs = await _topic_configs(aion_settings, topic)
        # min(2, RF) with RF 1 on this single broker; 2 at RF 3 (tests/e2e/outage, 3 nodes)
        assert configs["min.insync.replicas"] == "1", topic
        assert configs["unclean.leader.election.enable"] == "false", topic


async def test_more_replicas_than_brokers_fails_fast_naming_both(aion_settings: Settings) -> None:
    settings = dataclasses.replace(aion_settings, replication_factor=3)
    with pytest.raises(ReplicationTooHigh) as caught:
        await ensure_topics(settings, Topics(settings.topic_prefix))
    error = caught.value
    assert error.retriable is False, "a restart cannot cure it: the service exits and says why"
    assert (error.replication_factor, error.brokers) == (3, 1)
    assert "AION_REPLICATION_FACTOR=3" in str(error)
    assert "has 1 broker registered" in str(error)
    # Nothing was half-created: with RF 1 the same topics are created afterwards.
    counts = await ensure_topics(aion_settings, Topics(aion_settings.topic_prefix))
    assert set(counts) == set(Topics(aion_settings.topic_prefix).all())


async def test_a_weaker_existing_topic_is_warned_about_once(
    aion_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topics = Topics(aion_settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=aion_settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topics.events,
                    aion_settings.partitions,
                    1,
                    topic_configs={"unclean.leader.election.enable": "true"},
                )
            ]
        )
    finally:
        await admin.close()
    with caplog.at_level(logging.WARNING, logger="aion.kafka.durability"):
        await ensure_topics(aion_settings, topics)
        await ensure_topics(aion_settings, topics)
    warnings = [r for r in caplog.records if r.name == "aion.kafka.durability"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert f"{topics.events}: unclean.leader.election.enable=true" in message
    assert "kafka-configs.sh --alter" in message
    assert topics.commands not in message, "the topics aion created are as configured"
