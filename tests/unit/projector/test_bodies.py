"""The history view's event bodies: every event type survives ``encode_body``/``decode_event``
(a held event is rebuilt from its body when its gap fills)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_codec import one_of_each_event

from aion_common.codecs.event_json import decode_event, encode_body
from aion_common.domain import Event


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
