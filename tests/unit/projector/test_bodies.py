"""The history view's event bodies: every event type survives ``encode_body``/``decode_event``
(a held event is rebuilt from its body when its gap fills)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_codec import one_of_each_event

from aion_common.codecs.event_json import decode_event, encode_body
from aion_common.domain import Event, Payload, SignalReceived


@pytest.mark.parametrize("event", one_of_each_event(), ids=lambda e: type(e).__name__)
def test_every_event_body_round_trips(event: Event) -> None:
    body = encode_body(event)
    assert isinstance(orjson.loads(body), dict)
    rebuilt = decode_event(
        type(event).__name__,
        workflow_id=event.workflow_id,
        run_id=event.run_id,
        seq=event.seq,
        recorded_at=event.recorded_at,
        command_id=event.command_id,
        body=body,
    )
    assert rebuilt == event


def test_a_null_payload_round_trips_as_a_payload() -> None:
    # a signal sent with no payload: its body holds JSON null, which is the Payload's value
    # (the history the API sends for a closed run's query must encode again)
    event = SignalReceived(
        workflow_id="w",
        run_id="r",
        seq=3,
        recorded_at=datetime(2026, 1, 1, tzinfo=UTC),
        command_id="c",
        name="add",
        payload=Payload.from_json(None),
    )
    body = encode_body(event)
    assert orjson.loads(body)["payload"] is None
    rebuilt = decode_event(
        "SignalReceived",
        workflow_id="w",
        run_id="r",
        seq=3,
        recorded_at=event.recorded_at,
        command_id="c",
        body=body,
    )
    assert rebuilt == event
