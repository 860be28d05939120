"""``KafkaQueryDesk`` on the real broker: a query goes out on ``<prefix>.commands`` and its
answer comes back from ``<prefix>.replies``, with an engine played by a small loop here that
answers each query (or stays silent); other records on the replies topic are stepped over."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from aion_common.codecs import Codec
from aion_common.domain import (
    CommandRefused,
    Payload,
    QueryAnswer,
    QueryStatus,
    QueryWorkflow,
    RefusalCode,
)
from aion_common.kafka import KeyedProducer, Topics, ensure_topics
from aion_common.settings import Settings
from aion_projector.api import KafkaCommandSink, KafkaQueryDesk

pytestmark = [pytest.mark.kafka]


def query(workflow_id: str, name: str = "status") -> QueryWorkflow:
    now = datetime.now(UTC)
    return QueryWorkflow(
        command_id=str(uuid.uuid4()),
        issued_at=now,
        workflow_id=workflow_id,
        name=name,
        args=Payload.from_json([]),
        deadline=now + timedelta(seconds=30),
    )


async def play_engine(settings: Settings, started: asyncio.Event) -> None:
    """Answer each query (unless its name is ``silent``), after a refusal and some garbage."""
    topics, codec = Topics(settings.topic_prefix), Codec()
    consumer = AIOKafkaConsumer(
        topics.commands, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    started.set()
    try:
        async with KeyedProducer(settings, idempotent=True) as producer:
            async for record in consumer:
                asked = codec.decode_command(record.value)
                assert isinstance(asked, QueryWorkflow)
                if asked.name == "silent":
                    continue
                noise = CommandRefused(
                    command_id=asked.command_id,
                    workflow_id=asked.workflow_id,
                    command_type="SignalWorkflow",
                    code=RefusalCode.WORKFLOW_CLOSED,
                    reason="not an answer",
                    refused_at=datetime.now(UTC),
                )
                key = asked.workflow_id
                await producer.send(topics.replies, key, codec.encode_refusal(noise))
                await producer.send(topics.replies, key, b"\x00 not avro")
                answer = QueryAnswer(
                    command_id=asked.command_id,
                    workflow_id=asked.workflow_id,
                    name=asked.name,
                    status=QueryStatus.ANSWERED,
                    message="",
                    answered_at=datetime.now(UTC),
                    run_id="run-1",
                    result=Payload.from_json({"asked": asked.name}),
                )
                await producer.send(topics.replies, key, codec.encode_query_answer(answer))
    finally:
        await consumer.stop()


@pytest.fixture
async def desk(aion_settings: Settings) -> AsyncIterator[KafkaQueryDesk]:
    await ensure_topics(aion_settings, Topics(aion_settings.topic_prefix))
    started = asyncio.Event()
    engine = asyncio.create_task(play_engine(aion_settings, started))
    await asyncio.wait_for(started.wait(), 30)
    async with KafkaCommandSink(aion_settings) as sink, KafkaQueryDesk(aion_settings, sink) as desk:
        yield desk
    engine.cancel()
    await asyncio.gather(engine, return_exceptions=True)


async def test_answers_come_back_to_whoever_asked(desk: KafkaQueryDesk) -> None:
    asked = [query(f"wf-{i}") for i in range(5)]
    answers = await asyncio.gather(*(desk.ask(q, 30) for q in asked))
    for q, answer in zip(asked, answers, strict=True):
        assert answer is not None
        assert (answer.command_id, answer.workflow_id) == (q.command_id, q.workflow_id)
        assert answer.result is not None
        assert answer.result.to_json() == {"asked": "status"}


async def test_no_answer_within_the_time_is_none(desk: KafkaQueryDesk) -> None:
    assert await desk.ask(query("wf-quiet", "silent"), 1.0) is None
    answer = await desk.ask(query("wf-after"), 30)  # the desk still works after a silence
    assert answer is not None
