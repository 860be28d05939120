"""Command endpoints: each request becomes one command on ``<prefix>.commands`` (real broker)."""

from __future__ import annotations

from dataclasses import replace

import httpx

from aion_common.domain import (
    CancelWorkflow,
    IdReusePolicy,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
    TerminateWorkflow,
    derive_id,
    start_run_id,
)
from aion_common.kafka import partition_for
from aion_common.settings import Settings

from .conftest import consume_commands
from .test_api_reads import assert_problem

KafkaApi = tuple[httpx.AsyncClient, Settings]


async def test_every_command_reaches_kafka(kafka_api: KafkaApi) -> None:
    api, settings = kafka_api
    started = await api.post(
        "/v1/workflows", json={"type": "order", "input": {"n": 1}, "id": "w-1", "request_id": "r1"}
    )
    assert started.status_code == 202, started.text
    start_id = derive_id("api-start", "r1")
    assert started.json() == {
        "workflow_id": "w-1",
        "command_id": start_id,
        "run_id": start_run_id("w-1", start_id),  # the run it opens once admitted
    }
    assert started.headers["location"] == "/v1/workflows/w-1"
    signalled = await api.post("/v1/workflows/w-1/signals/go", json={"payload": [1, 2]})
    cancelled = await api.post("/v1/workflows/w-1/cancel", json={"reason": "user asked"})
    terminated = await api.post("/v1/workflows/w-1/terminate")
    assert {r.status_code for r in (signalled, cancelled, terminated)} == {202}

    commands = await consume_commands(settings, 4)
    assert [type(c) for c in commands] == [
        StartWorkflow,
        SignalWorkflow,
        CancelWorkflow,
        TerminateWorkflow,
    ]
    start, signal, cancel, terminate = commands
    assert isinstance(start, StartWorkflow)
    assert (start.workflow_id, start.workflow_type, start.input.to_json()) == (
        "w-1",
        "order",
        {"n": 1},
    )
    assert start.id_reuse_policy is IdReusePolicy.ALLOW_DUPLICATE  # the default
    assert start.command_id == started.json()["command_id"]
    assert isinstance(signal, SignalWorkflow)
    assert (signal.name, signal.payload.to_json()) == ("go", [1, 2])
    assert signal.command_id == signalled.json()["command_id"]
    assert isinstance(cancel, CancelWorkflow)
    assert cancel.reason == "user asked"
    assert isinstance(terminate, TerminateWorkflow)
    assert terminate.reason == "no reason given (sent through the API)"
    assert start.issued_at.tzinfo is not None


async def test_commands_are_keyed_by_workflow_id(kafka_api: KafkaApi) -> None:
    api, settings = kafka_api
    ids = [f"keyed-{n}" for n in range(6)]
    for workflow_id in ids:
        await api.post("/v1/workflows", json={"type": "t", "id": workflow_id})
    from aiokafka import AIOKafkaConsumer

    from aion_common.kafka import Topics

    consumer = AIOKafkaConsumer(
        Topics(settings.topic_prefix).commands,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        where: dict[str, int] = {}
        while len(where) < len(ids):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    where[record.key.decode()] = tp.partition
    finally:
        await consumer.stop()
    assert where == {w: partition_for(w, settings.partitions) for w in ids}


async def test_a_retried_start_is_the_same_command(kafka_api: KafkaApi) -> None:
    api, settings = kafka_api
    body = {"type": "order", "input": None, "request_id": "retry-me"}
    first = (await api.post("/v1/workflows", json=body)).json()
    second = (await api.post("/v1/workflows", json=body)).json()
    assert first == second
    assert first["workflow_id"] == derive_id("api-start-workflow", "retry-me")
    random = [(await api.post("/v1/workflows", json={"type": "order"})).json() for _ in range(2)]
    assert random[0]["workflow_id"] != random[1]["workflow_id"]
    commands = await consume_commands(settings, 4)
    retried = [c for c in commands if c.command_id == first["command_id"]]
    assert len(retried) == 2  # both went out; the engine applies the command id once
    assert replace(retried[0], issued_at=retried[1].issued_at) == retried[1]
    signal = {"payload": 1, "request_id": "s-1"}
    a = (await api.post("/v1/workflows/w/signals/go", json=signal)).json()
    b = (await api.post("/v1/workflows/w/signals/go", json=signal)).json()
    c = (await api.post("/v1/workflows/w/signals/other", json=signal)).json()
    assert a == b
    assert a["command_id"] != c["command_id"]


async def test_invalid_commands_are_refused_and_never_sent(kafka_api: KafkaApi) -> None:
    api, settings = kafka_api
    limit = settings.payload_limit_bytes
    cases = [
        ("/v1/workflows", {"type": ""}, 422, "invalid-input"),
        ("/v1/workflows", {"type": " padded"}, 400, "invalid-input"),
        ("/v1/workflows", {"type": "t", "id": "a\nb"}, 400, "invalid-input"),
        ("/v1/workflows", {"type": "t", "id": "x" * 256}, 422, "invalid-input"),
        ("/v1/workflows", {"type": "t", "request_id": "\x00"}, 400, "invalid-input"),
        ("/v1/workflows", {"type": "t", "surprise": 1}, 422, "invalid-input"),
        ("/v1/workflows", {"input": 1}, 422, "invalid-input"),
        ("/v1/workflows", {"type": "t", "input": "x" * limit}, 413, "payload-too-large"),
        ("/v1/workflows/w/signals/%20go", {}, 400, "invalid-input"),
        ("/v1/workflows/w/signals/go", {"payload": "x" * limit}, 413, "payload-too-large"),
        ("/v1/workflows/w/cancel", {"reason": 5}, 422, "invalid-input"),
        ("/v1/workflows/%09/terminate", {}, 400, "invalid-input"),
    ]
    for path, body, status, kind in cases:
        assert_problem(await api.post(path, json=body), status, kind)
    not_json = await api.post(
        "/v1/workflows", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_problem(not_json, 422, "invalid-input")
    huge = await api.post(
        "/v1/workflows",
        content=b"[" + b"1," * (limit + 40_000) + b"1]",
        headers={"content-type": "application/json"},
    )
    assert_problem(huge, 413, "payload-too-large")
    # nothing above reached Kafka: the first command there is this one
    await api.post("/v1/workflows", json={"type": "marker", "id": "marker"})
    (first,) = await consume_commands(settings, 1)
    assert first.workflow_id == "marker"


async def test_a_signal_with_start_is_one_command(kafka_api: KafkaApi) -> None:
    api, settings = kafka_api
    body = {
        "payload": {"event": "paid"},
        "request_id": "sws-1",
        "start": {"type": "order", "input": {"n": 1}, "id_reuse_policy": "REJECT_DUPLICATE"},
    }
    answered = await api.post("/v1/workflows/o-7/signals/event", json=body)
    assert answered.status_code == 202, answered.text
    assert answered.json()["command_id"] == derive_id("api-signal-with-start:event", "o-7", "sws-1")
    bad = {"start": {"type": "order", "id_reuse_policy": "SOMETIMES"}}
    assert_problem(await api.post("/v1/workflows/o-7/signals/e", json=bad), 422, "invalid-input")
    (command,) = await consume_commands(settings, 1)
    assert isinstance(command, SignalWithStartWorkflow)
    assert (command.workflow_type, command.input.to_json()) == ("order", {"n": 1})
    assert (command.signal_name, command.signal_payload.to_json()) == ("event", {"event": "paid"})
    assert command.id_reuse_policy is IdReusePolicy.REJECT_DUPLICATE
