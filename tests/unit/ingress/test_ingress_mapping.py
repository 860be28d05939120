"""The ingress's pure core: configuration checks and record → command mapping."""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from aion_common.domain import (
    IdReusePolicy,
    RouteRecord,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
)
from aion_ingress.config import IngressConfigError, load_config, parse_config
from aion_ingress.mapping import SKIPPED, KnownTypes, Mapper, Unmapped, command_id


@dataclass
class Rec:
    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int = 0
    offset: int = 7
    timestamp: int = 1_767_225_600_000  # 2026-01-01
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _mapper(routes: list[dict[str, Any]], limit: int = 10_000, **top: Any) -> Mapper:
    return Mapper(parse_config({"name": "t", "routes": routes, **top}), payload_limit=limit)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


START = {
    "topic": "orders",
    "action": "start",
    "workflow_type": "order",
    "workflow_id": "order-{value.id}",
}


def test_a_start_route_builds_a_deterministic_start() -> None:
    mapper = _mapper([START])
    command = mapper.map(Rec("orders", _json({"id": 5, "total": 10})))
    assert isinstance(command, StartWorkflow)
    assert command.workflow_id == "order-5"
    assert command.workflow_type == "order"
    assert command.input.to_json() == {"id": 5, "total": 10}
    assert command.command_id == command_id("t", "orders", 0, 7)
    assert command.issued_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert command.id_reuse_policy is IdReusePolicy.REJECT_DUPLICATE
    assert mapper.map(Rec("orders", _json({"id": 5, "total": 10}))) == command
    other = mapper.map(Rec("orders", _json({"id": 5}), offset=8))
    assert isinstance(other, StartWorkflow)
    assert other.command_id != command.command_id


def test_signal_and_signal_with_start_routes_with_conditions() -> None:
    mapper = _mapper(
        [
            {
                "topic": "ev",
                "action": "signal",
                "workflow_id": "{key}",
                "signal": "cancel",
                "payload": "value.reason",
                "when": {"field": "value.kind", "equals": "cancel"},
            },
            {
                "topic": "ev",
                "action": "signal-with-start",
                "workflow_type": "order-events",
                "workflow_id": "{key}",
                "signal": "{value.kind}",
                "input": "null",
                "when": {"field": "value.kind", "in": ["paid", "shipped"]},
            },
        ],
        unmatched="skip",
    )
    cancel = mapper.map(Rec("ev", _json({"kind": "cancel", "reason": "r"}), key=b"o-1"))
    assert isinstance(cancel, SignalWorkflow)
    assert (cancel.workflow_id, cancel.name, cancel.payload.to_json()) == ("o-1", "cancel", "r")
    paid = mapper.map(Rec("ev", _json({"kind": "paid"}), key=b"o-1"))
    assert isinstance(paid, SignalWithStartWorkflow)
    assert (paid.signal_name, paid.input.to_json()) == ("paid", None)
    assert paid.id_reuse_policy is IdReusePolicy.ALLOW_DUPLICATE
    assert mapper.map(Rec("ev", _json({"kind": "other"}), key=b"o-1")) is SKIPPED


@pytest.mark.parametrize(
    ("value", "key", "reason", "error"),
    [
        (b"{not json", None, "json: value is not JSON", "UndecodableValue"),
        (b"\xff\xfe", None, "value is not UTF-8", "UndecodableValue"),
        (_json({"total": 1}), None, "field value.id is missing", "UnmappableRecord"),
        (_json([1]), None, "value is list, so value.id names nothing", "UnmappableRecord"),
        (_json({"id": {"a": 1}}), None, "{value.id} is dict", "UnmappableRecord"),
        (_json({"id": "x\n"}), None, "control characters", "UnmappableRecord"),
        (_json({"id": 1, "pad": "x" * 200}), None, "exceeds the limit of 100", "PayloadTooLarge"),
    ],
)
def test_records_that_do_not_map_say_why(
    value: bytes, key: bytes | None, reason: str, error: str
) -> None:
    unmapped = _mapper([START], limit=100).map(Rec("orders", value, key=key))
    assert isinstance(unmapped, Unmapped)
    assert reason in unmapped.reason
    assert unmapped.error == error


def test_unknown_types_are_dead_lettered_once_types_are_known() -> None:
    route = {**START, "workflow_type": "{value.kind}"}
    known = KnownTypes(frozenset({"order"}))
    mapper = Mapper(parse_config({"routes": [route]}), payload_limit=1000, known_types=known)
    assert isinstance(mapper.map(Rec("orders", _json({"id": 1, "kind": "order"}))), StartWorkflow)
    unknown = mapper.map(Rec("orders", _json({"id": 1, "kind": "nope"})))
    assert isinstance(unknown, Unmapped)
    assert unknown.error == "UnknownWorkflowType"
    assert "'nope' is not known" in unknown.reason
    known.route_set(
        RouteRecord(workflow_type="nope", version="a" * 64, routed_at=datetime.now(UTC))
    )
    assert isinstance(mapper.map(Rec("orders", _json({"id": 1, "kind": "nope"}))), StartWorkflow)
    unchecked = Mapper(parse_config({"routes": [route]}), payload_limit=1000)
    assert isinstance(unchecked.map(Rec("orders", _json({"id": 1, "kind": "x"}))), StartWorkflow)


def known_route(workflow_type: str) -> RouteRecord:
    return RouteRecord(workflow_type=workflow_type, version="b" * 64, routed_at=datetime.now(UTC))


def test_unmatched_records_are_dead_lettered_by_default() -> None:
    mapper = _mapper([{**START, "when": {"field": "value.kind", "exists": True}}])
    unmatched = mapper.map(Rec("orders", _json({"id": 1})))
    assert isinstance(unmatched, Unmapped)
    assert unmatched.error == "NoMatchingRoute"


def test_key_header_and_record_coordinates_in_templates() -> None:
    mapper = _mapper(
        [
            {
                **START,
                "workflow_id": "{topic}-{partition}-{offset}-{key}-{header.tenant}-{{x}}",
                "input": "header.tenant",
            }
        ]
    )
    command = mapper.map(Rec("orders", _json({}), key=b"k", headers=[("tenant", b"acme")]))
    assert isinstance(command, StartWorkflow)
    assert command.workflow_id == "orders-0-7-k-acme-{x}"
    assert command.input.to_json() == "acme"
    missing = mapper.map(Rec("orders", _json({}), key=b"\xff"))
    assert isinstance(missing, Unmapped)
    assert "not UTF-8" in missing.reason


def test_avro_routes_decode_single_object_and_confluent(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "Order",
        "fields": [{"name": "id", "type": "string"}, {"name": "blob", "type": "bytes"}],
    }
    (tmp_path / "order.avsc").write_text(json.dumps(schema))
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(schema), {"id": "A", "blob": b"\x00\xff"})
    for wire, header in (("confluent", b"\x00" + struct.pack(">I", 42)),):
        config = {
            "routes": [{**START, "format": "avro", "schema": "order.avsc", "wire": wire}],
        }
        (tmp_path / "c.yaml").write_text(json.dumps(config))
        mapper = Mapper(load_config(tmp_path / "c.yaml"), payload_limit=1000)
        command = mapper.map(Rec("orders", header + body.getvalue()))
        assert isinstance(command, StartWorkflow)
        assert command.input.to_json() == {"id": "A", "blob": "\x00\xff"}
        bad = mapper.map(Rec("orders", b"\x01" + body.getvalue()))
        assert isinstance(bad, Unmapped)
        assert "Confluent wire format" in bad.reason
    config = {"routes": [{**START, "format": "avro", "schema": "order.avsc"}]}
    (tmp_path / "s.json").write_text(json.dumps(config))
    mapper = Mapper(load_config(tmp_path / "s.json"), payload_limit=1000)
    fmt = mapper.config.routes[0].format
    encoded = fmt.encode({"id": "B", "blob": b""})
    command = mapper.map(Rec("orders", encoded))
    assert isinstance(command, StartWorkflow)
    assert command.workflow_id == "order-B"
    wrong = mapper.map(Rec("orders", b"\xc3\x01" + b"\x00" * 8 + body.getvalue()))
    assert isinstance(wrong, Unmapped)
    assert "fingerprint" in wrong.reason
    truncated = mapper.map(Rec("orders", encoded[:11]))
    assert isinstance(truncated, Unmapped)
    assert "does not decode" in truncated.reason


def test_every_configuration_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(IngressConfigError) as caught:
        parse_config(
            {
                "name": "bad name",
                "surprise": 1,
                "routes": [
                    {"topic": "a", "action": "start", "workflow_id": "{valu.id}"},
                    {"topic": "b b", "action": "jump", "workflow_id": "x"},
                    {
                        "topic": "c",
                        "action": "signal",
                        "workflow_id": "{key",
                        "signal": " s",
                        "input": "value",
                    },
                    {**START, "format": "avro"},
                ],
            }
        )
    problems = "\n".join(caught.value.problems)
    for expected in (
        "name: use letters",
        "unknown key 'surprise'",
        "routes[0].workflow_id {valu.id}: 'valu.id' starts with 'valu'",
        "routes[0].workflow_type: expected a string template",
        "routes[1].topic",
        "routes[1].action: expected start, signal or signal-with-start",
        "routes[2].workflow_id: unbalanced '{'",
        "routes[2].signal 's'" if False else "routes[2].signal",
        "routes[2].input: only for action start",
        "routes[3]: format avro needs a schema file",
    ):
        assert expected in problems, (expected, problems)
    (tmp_path / "c.yaml").write_text("routes: [unclosed")
    with pytest.raises(IngressConfigError, match="not valid yaml"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(IngressConfigError, match="cannot read it"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "c.toml").write_text(
        'name = "t"\n[[routes]]\ntopic = "orders"\naction = "start"\n'
        'workflow_type = "order"\nworkflow_id = "{key}"\nexecution_timeout = "1h"\n'
    )
    assert load_config(tmp_path / "c.toml").routes[0].execution_timeout_ms == 3_600_000
