"""ctx.publish: a record per call in the step's decision, never again on replay; checked values;
a topic that cannot be written blocks the run until it is moved."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from engine_harness import World
from fastavro import parse_schema, schemaless_reader

from aion.workflow import AvroSchema, WorkflowContext
from aion_common.domain import (
    InvalidInput,
    MoveWorkflow,
    RecordPublished,
    WorkflowBlocked,
    WorkflowCompleted,
)
from aion_engine import EngineCore
from aion_engine.registry import WorkflowRegistry

SHIPPED = {
    "type": "record",
    "name": "Shipped",
    "fields": [{"name": "order", "type": "string"}, {"name": "parcels", "type": "int"}],
}
SHIPPED_SCHEMA = AvroSchema(SHIPPED)


def _registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("announce")
    async def announce(ctx: WorkflowContext, order: str) -> str:
        await ctx.publish("orders.events", {"order": order, "step": "paid"}, key=order)
        await ctx.sleep(5)
        await ctx.publish(
            "orders.events", {"order": order, "step": "shipped"}, key=order, headers={"v": "1"}
        )
        return order

    @registry.defn("careless")
    async def careless(ctx: WorkflowContext, _: object) -> list[str]:
        problems = []
        for value, kwargs in (
            ({1, 2}, {}),
            ({"order": 1}, {"schema": SHIPPED_SCHEMA}),
            ("x", {"key": 7}),
            ("x", {"headers": {"aion.publish.id": "mine"}}),
        ):
            try:
                await ctx.publish("t", value, **kwargs)
            except InvalidInput as err:
                problems.append(str(err))
        await ctx.publish("t", {"order": "o", "parcels": 2}, schema=SHIPPED_SCHEMA)
        return problems

    return registry


def _published(world: World) -> list[Any]:
    return [record for _, decision in world.decisions for record in decision.published]


def test_each_call_publishes_one_record_with_its_event() -> None:
    world = World(_registry())
    world.start("o-1", "announce", "o-1")
    (first,) = _published(world)
    assert first.topic == "orders.events"
    assert first.key == b"o-1"
    assert json.loads(first.value) == {"order": "o-1", "step": "paid"}
    events = [e for e in world.history("o-1") if isinstance(e, RecordPublished)]
    assert [e.value.to_json() for e in events] == [{"order": "o-1", "step": "paid"}]
    assert dict(first.headers)["aion.publish.id"] == events[0].publish_id.encode()
    world.fire_all("o-1")
    assert world.result("o-1") == "o-1"
    second = _published(world)[1]
    assert dict(second.headers)["v"] == b"1"
    assert second.headers[0][0] == "aion.publish.id"


def test_a_replayed_run_does_not_publish_again() -> None:
    world = World(_registry())
    world.start("o-2", "announce", "o-2")
    restarted = EngineCore(_registry(), max_resident=0)  # every command replays the run
    for batch in world.batches:
        restarted.apply_batch(batch)
    (timer,) = world.timers.values()
    decision = restarted.handle(timer.command, now=timer.fire_at)
    assert [json.loads(r.value)["step"] for r in decision.published] == ["shipped"]
    assert decision.batch is not None
    assert isinstance(decision.batch.events[-1], WorkflowCompleted)


def test_bad_values_raise_in_the_code_and_avro_is_checked_and_encoded() -> None:
    world = World(_registry())
    world.start("c", "careless", None)
    problems = world.result("c")
    assert len(problems) == 4
    assert "not JSON-serialisable" in problems[0]
    assert "does not match the Avro schema" in problems[1]
    assert "key must be a str" in problems[2]
    assert "names starting with 'aion.' are aion's" in problems[3]
    (record,) = _published(world)
    assert record.value[:2] == b"\xc3\x01"
    body = io.BytesIO(record.value[10:])
    assert schemaless_reader(body, parse_schema(SHIPPED), None) == {"order": "o", "parcels": 2}
    (event,) = [e for e in world.history("c") if isinstance(e, RecordPublished)]
    assert event.value_format == "avro/single-object"


def test_a_topic_that_cannot_be_written_blocks_the_run_until_it_is_moved() -> None:
    missing = {"orders.events"}
    world = World(_registry())
    world.core = EngineCore(
        _registry(),
        writer="test",
        topics=lambda topic: "it does not exist" if topic in missing else None,
    )
    world.start("o-3", "announce", "o-3")
    blocked = world.history("o-3")[-1]
    assert isinstance(blocked, WorkflowBlocked)
    assert "publish to topic 'orders.events' refused: it does not exist" in blocked.reason
    assert not _published(world)
    missing.clear()
    moved = world.send(
        MoveWorkflow(
            command_id="move-1",
            issued_at=world.now,
            workflow_id="o-3",
            run_id=blocked.run_id,
            package_version="",
        )
    )
    assert [r.topic for r in moved.published] == ["orders.events"]


def test_schemas_are_checked_where_they_are_made(tmp_path: Any) -> None:
    with pytest.raises(InvalidInput, match="invalid"):
        AvroSchema({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]})
    with pytest.raises(InvalidInput, match="wire format"):
        AvroSchema(SHIPPED, wire="protobuf")
    path = tmp_path / "s.avsc"
    path.write_text(json.dumps(SHIPPED))
    confluent = AvroSchema.from_file(path, wire="confluent", schema_id=9)
    assert confluent.format.encode({"order": "o", "parcels": 1})[:5] == b"\x00\x00\x00\x00\x09"
