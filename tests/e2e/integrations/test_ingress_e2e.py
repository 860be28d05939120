"""The ingress in a whole stack: records to workflows exactly once through kills; signal-with-
start order; bad records to the dead-letter topic while the rest goes on."""

from __future__ import annotations

import asyncio
import collections
import json
import time

import pytest
from aiokafka import AIOKafkaProducer

from aion import AionClient
from aion.testing import AionStack, wait_for_workflow
from aion_common.codecs import Codec
from aion_common.domain import DecodeError, WorkflowStarted
from aion_common.kafka import Topics, read_dead_letters, read_partition_to_end
from aion_common.settings import Settings

from .conftest import PAYLOAD_LIMIT

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ORDERS = 2000


async def produce(settings: Settings, topic: str, records: list[tuple[str | None, object]]) -> None:
    """The user's own producer: JSON values (bytes as given), keys as text."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            await producer.send(topic, raw, key=None if key is None else key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def starts_per_workflow(settings: Settings) -> collections.Counter[str]:
    """``WorkflowStarted`` events per workflow id on the events topic (read_committed)."""
    codec = Codec()
    found: collections.Counter[str] = collections.Counter()
    for partition in range(settings.partitions):
        async for record in read_partition_to_end(
            settings, Topics(settings.topic_prefix).events, partition
        ):
            try:
                batch = codec.decode_batch(record.value)
            except DecodeError:
                continue
            found.update(e.workflow_id for e in batch.events if isinstance(e, WorkflowStarted))
    return found


async def published_ids(settings: Settings, topic: str) -> collections.Counter[int]:
    """How often each order id was published to ``topic`` (read_committed)."""
    found: collections.Counter[int] = collections.Counter()
    for partition in range(settings.partitions):
        async for record in read_partition_to_end(settings, topic, partition):
            found[json.loads(record.value)["id"]] += 1
    return found


async def completed_count(client: AionClient, workflow_type: str) -> int:
    count, cursor = 0, None
    while True:
        page = await client.list(
            workflow_type=workflow_type, status="COMPLETED", limit=500, cursor=cursor
        )
        count += len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return count


async def test_records_start_workflows_exactly_once_through_kills(
    client: AionClient, integration_stack: AionStack
) -> None:
    settings = integration_stack.settings
    topic = f"{settings.topic_prefix}-orders"
    deadline = time.monotonic() + 180
    out = f"{settings.topic_prefix}-shipped"
    producing = asyncio.create_task(
        produce(settings, topic, [(f"k{n}", {"id": n, "out": out}) for n in range(ORDERS)])
    )
    killed = []
    for fraction, victim in ((0.2, "ingress"), (0.45, "engine-1"), (0.7, "ingress")):
        while await completed_count(client, "e2e.ingested") < fraction * ORDERS:
            assert time.monotonic() < deadline, f"no progress past {fraction:.0%}"
            await asyncio.sleep(0.2)
        killed.append((victim, integration_stack.kill(victim)))
    await producing
    while (done := await completed_count(client, "e2e.ingested")) < ORDERS:
        assert time.monotonic() < deadline, f"{done} of {ORDERS} completed"
        await asyncio.sleep(0.5)
    starts = await starts_per_workflow(settings)
    ingested = {w: n for w, n in starts.items() if w.startswith("order-")}
    assert len(ingested) == ORDERS, "every record started its workflow"
    assert set(ingested.values()) == {1}, "no workflow started twice"
    refusals = await client.refusals("order-0")
    assert not refusals
    outputs = await published_ids(settings, out)
    assert len(outputs) == ORDERS, f"{len(outputs)} records published for {ORDERS} workflows"
    assert set(outputs.values()) == {1}, "no record published twice (replays publish nothing)"
    print(
        f"\n{ORDERS} records -> {len(ingested)} workflows, each started once, one record "
        f"published each; killed {killed}"
    )


async def test_signal_with_start_delivers_each_id_its_records_in_order(
    client: AionClient, integration_stack: AionStack
) -> None:
    settings = integration_stack.settings
    ids = [f"collect-{i}" for i in range(10)]
    records = [(ids[n % 10], {"n": n, "expected": 10}) for n in range(100)]
    await asyncio.gather(
        produce(settings, f"{settings.topic_prefix}-events", records[:50]),
        produce(settings, f"{settings.topic_prefix}-events", records[50:]),
    )
    in_topic: dict[str, list[int]] = collections.defaultdict(list)  # per key, in offset order
    for partition in range(settings.partitions):
        source = f"{settings.topic_prefix}-events"
        async for record in read_partition_to_end(settings, source, partition):
            in_topic[record.key.decode()].append(json.loads(record.value)["n"])
    for workflow_id in ids:
        run = await wait_for_workflow(client, workflow_id, timeout=60)
        assert run.status == "COMPLETED", run.error
        assert run.result == in_topic[workflow_id], "the signals arrived in topic order"
        starts = [e for e in run.history if e.event_type == "WorkflowStarted"]
        assert len(starts) == 1


async def test_bad_records_are_dead_lettered_and_the_rest_goes_on(
    client: AionClient, integration_stack: AionStack
) -> None:
    settings = integration_stack.settings
    big = "x" * PAYLOAD_LIMIT
    bad: list[tuple[str | None, object]] = [
        (None, b"{not json"),
        (None, {"kind": "e2e.nope", "id": 1}),
        (None, {"kind": "e2e.ingested", "id": 2, "pad": big}),
        (None, {"id": 3}),
    ]
    await produce(
        settings,
        f"{settings.topic_prefix}-typed",
        [*bad, (None, {"kind": "e2e.ingested", "id": 4})],
    )
    run = await wait_for_workflow(client, "typed-4", timeout=60)
    assert run.status == "COMPLETED"
    letters = []
    deadline = time.monotonic() + 30
    while len(letters) < len(bad):
        assert time.monotonic() < deadline, letters
        letters = [
            d
            async for d in read_dead_letters(settings, Topics(settings.topic_prefix).dead_letter)
            if d.source_topic.endswith("-typed")
        ]
        await asyncio.sleep(0.5)
    # the records went to any of the topic's partitions: each letter is known by its value,
    # kept as the record had it
    reasons = {d.value: (d.error, d.reason) for d in letters}
    assert len(reasons) == len(letters) == len(bad), "each bad record dead-lettered once"
    raw = [v if isinstance(v, bytes) else json.dumps(v).encode() for _, v in bad]
    assert reasons[raw[0]][0] == "UndecodableValue"
    assert reasons[raw[1]][0] == "UnknownWorkflowType"
    assert "'e2e.nope' is not known" in reasons[raw[1]][1]
    assert reasons[raw[2]][0] == "PayloadTooLarge"
    assert "field value.kind is missing" in reasons[raw[3]][1]
