"""Malformed records: every kind raises exactly DecodeError, naming the problem and the place."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aion_common.codecs import MARKER, Codec, decode_key
from aion_common.domain import (
    CancelWorkflow,
    CommandRefused,
    DecodeError,
    EventBatch,
    Payload,
    RefusalCode,
    SignalWorkflow,
    TimerFired,
)

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
MICROS = 1_735_787_045_000_000
WHERE: dict[str, Any] = {"topic": "aion.events", "partition": 3, "offset": 1234}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def _long(n: int) -> bytes:
    """Avro zig-zag varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return _long(len(raw)) + raw


def raw(codec: Codec, full_name: str, body: bytes | dict[str, Any]) -> bytes:
    """A record with a real header whose body bypasses the codec's checks."""
    info = codec.registry.current(full_name)
    if isinstance(body, dict):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, info.parsed, body)
        body = buf.getvalue()
    return info.header + body


def batch_dict(*events: tuple[str, dict[str, Any]], workflow_id: str = "wf") -> dict[str, Any]:
    return {"workflow_id": workflow_id, "command_id": "c", "writer": "e", "events": list(events)}


def fired(seq: int, workflow_id: str = "wf", run_id: str = "r") -> tuple[str, dict[str, Any]]:
    return (
        "aion.v1.TimerFired",
        {
            "workflow_id": workflow_id,
            "run_id": run_id,
            "seq": seq,
            "recorded_at": AT,
            "command_id": "c",
            "timer_id": "t",
        },
    )


def good_batch(codec: Codec) -> bytes:
    event = TimerFired(
        workflow_id="wf", run_id="r", seq=1, recorded_at=AT, command_id="c", timer_id="t"
    )
    return codec.encode_batch(
        EventBatch(workflow_id="wf", command_id="c", writer="e", events=(event,))
    )


def signal_dict(payload: bytes) -> dict[str, Any]:
    return {
        "command_id": "c",
        "issued_at": AT,
        "workflow_id": "wf",
        "name": "n",
        "payload": {"json": payload},
    }


Case = tuple[str, Callable[[Codec], bytes | None], str]
CASES: list[Case] = [
    ("null value", lambda c: None, "no value"),
    ("empty value", lambda c: b"", "empty value"),
    ("short header", lambda c: MARKER + b"\x01\x02", "truncated header"),
    ("wrong marker", lambda c: b"\x00\x01" + good_batch(c)[2:], "wrong marker 0001"),
    ("plain JSON", lambda c: b'{"workflow_id": "wf", "events": []}', "wrong marker"),
    ("unknown fingerprint", lambda c: MARKER + b"\xde\xad\xbe\xef" * 2 + b"\x00", "unknown schema"),
    ("truncated body", lambda c: good_batch(c)[:-3], "truncated or corrupt"),
    ("trailing garbage", lambda c: good_batch(c) + b"\x00\x01", "2 bytes of trailing garbage"),
    (
        "a command where a batch belongs",
        lambda c: c.encode_command(
            CancelWorkflow(command_id="c", issued_at=AT, workflow_id="w", reason="r")
        ),
        "expected aion.v1.EventBatch, got aion.v1.CancelWorkflow",
    ),
    (
        "an inner record's fingerprint",
        lambda c: raw(c, "aion.v1.Payload", {"json": b"1"}),
        "expected aion.v1.EventBatch, got aion.v1.Payload",
    ),
    (
        "zero seq",
        lambda c: raw(c, "aion.v1.EventBatch", batch_dict(fired(0))),
        "seq must be at least 1",
    ),
    ("negative seq", lambda c: raw(c, "aion.v1.EventBatch", batch_dict(fired(-5))), "got -5"),
    (
        "non-contiguous seqs",
        lambda c: raw(c, "aion.v1.EventBatch", batch_dict(fired(1), fired(3))),
        "seqs not contiguous: 1, 3",
    ),
    (
        "events of another workflow",
        lambda c: raw(c, "aion.v1.EventBatch", batch_dict(fired(1), fired(2, workflow_id="other"))),
        "events of one workflow only",
    ),
    ("empty batch", lambda c: raw(c, "aion.v1.EventBatch", batch_dict()), "at least one event"),
    (
        "empty id",
        lambda c: raw(c, "aion.v1.EventBatch", batch_dict(fired(1, run_id=""))),
        "TimerFired.run_id must not be empty",
    ),
    (
        "id with control characters",
        lambda c: raw(
            c, "aion.v1.EventBatch", batch_dict(fired(1, workflow_id="w\x00"), workflow_id="w\x00")
        ),
        "control characters",
    ),
    (
        "string that is not UTF-8",
        lambda c: raw(
            c,
            "aion.v1.FireTimer",
            _str("c") + _long(MICROS) + _str(b"\xff\xfe") + _str("r") + _str("t"),
        ),
        "not UTF-8",
    ),
    (
        "garbage timestamp",
        lambda c: raw(
            c, "aion.v1.FireTimer", _str("c") + _long(2**62) + _str("w") + _str("r") + _str("t")
        ),
        "aion.v1.FireTimer body does not decode",
    ),
    (
        "unknown enum symbol",
        lambda c: raw(
            c,
            "aion.v1.CommandRefused",
            _str("c") + _str("w") + _str("StartWorkflow") + _long(42) + _str("r") + _long(MICROS),
        ),
        "aion.v1.CommandRefused",
    ),
    (
        "unknown union branch",
        lambda c: raw(
            c,
            "aion.v1.RecordChildTerminal",
            _str("c") + _long(MICROS) + _str("w") + _str("p") + _str("k") + _str("kr") + _long(9),
        ),
        "aion.v1.RecordChildTerminal",
    ),
    (
        "payload that is not UTF-8",
        lambda c: raw(c, "aion.v1.SignalWorkflow", signal_dict(b'"\xff"')),
        "payload is not valid UTF-8",
    ),
    (
        "payload that is not JSON",
        lambda c: raw(c, "aion.v1.SignalWorkflow", signal_dict(b"{not json")),
        "payload is not valid JSON",
    ),
    (
        "negative string length",
        lambda c: raw(c, "aion.v1.FireTimer", _long(-7) + b"x" * 30),
        "aion.v1.FireTimer",
    ),
]


# cases whose bytes are a command or a refusal; the rest are (broken) event batches
_KIND_OF = {
    "string that is not UTF-8": "command",
    "garbage timestamp": "command",
    "unknown union branch": "command",
    "payload that is not UTF-8": "command",
    "payload that is not JSON": "command",
    "negative string length": "command",
    "unknown enum symbol": "refusal",
}


@pytest.mark.parametrize(("kind", "make", "problem"), CASES, ids=[c[0] for c in CASES])
def test_malformed_value_raises_decode_error(
    codec: Codec, kind: str, make: Callable[[Codec], bytes | None], problem: str
) -> None:
    data = make(codec)
    decode = getattr(codec, f"decode_{_KIND_OF.get(kind, 'batch')}")
    with pytest.raises(DecodeError) as caught:
        decode(data)
    assert type(caught.value) is DecodeError
    assert problem in caught.value.problem, caught.value.problem
    assert caught.value.topic is None

    with pytest.raises(DecodeError) as located:
        decode(data, **WHERE)
    message = str(located.value)
    assert "aion.events[3]@1234" in message, message
    assert problem in message
    assert (located.value.topic, located.value.partition, located.value.offset) == (
        "aion.events",
        3,
        1234,
    )


def test_at_least_twelve_kinds() -> None:
    assert len(CASES) >= 12


def test_oversized_payload_is_refused_on_decode(codec: Codec) -> None:
    signal = SignalWorkflow(
        command_id="c",
        issued_at=AT,
        workflow_id="w",
        name="n",
        payload=Payload.from_json("x" * 100),
    )
    data = codec.encode_command(signal)
    with pytest.raises(DecodeError, match=r"exceeds the limit of 32 bytes") as caught:
        Codec(payload_limit=32).decode_command(data, **WHERE)
    assert "aion.events[3]@1234" in str(caught.value)


@pytest.mark.parametrize(
    ("method", "expected"),
    [("decode_command", "a command"), ("decode_refusal", "aion.v1.CommandRefused")],
)
def test_a_batch_where_another_value_belongs(codec: Codec, method: str, expected: str) -> None:
    with pytest.raises(DecodeError, match=f"expected {expected}, got aion.v1.EventBatch"):
        getattr(codec, method)(good_batch(codec))


def test_a_refusal_decodes_only_as_a_refusal(codec: Codec) -> None:
    refusal = CommandRefused(
        command_id="c",
        workflow_id="w",
        command_type="StartWorkflow",
        code=RefusalCode.ALREADY_RUNNING,
        reason="r",
        refused_at=AT,
    )
    with pytest.raises(DecodeError, match=r"got aion\.v1\.CommandRefused"):
        codec.decode_command(codec.encode_refusal(refusal))


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (None, "no key"),
        (b"", "no key"),
        (b"\xff\xfe", "not UTF-8"),
        (b" padded", "surrounding spaces"),
        (b"a\nb", "control characters"),
        (b"x" * 300, "the limit is 255"),
    ],
)
def test_malformed_keys(key: bytes | None, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem) as caught:
        decode_key(key, **WHERE)
    assert "aion.events[3]@1234" in str(caught.value)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_bodies_raise_only_decode_error(codec: Codec, data: st.DataObject) -> None:
    valid = good_batch(codec)
    header, body = valid[:10], valid[10:]
    mutated = data.draw(
        st.one_of(
            st.binary(max_size=64),
            st.builds(
                lambda i, b: body[:i] + bytes([b]) + body[i + 1 :],
                st.integers(0, len(body) - 1),
                st.integers(0, 255),
            ),
            st.builds(lambda n: body[:n], st.integers(0, len(body))),
        )
    )
    # anything but DecodeError (or success, for a harmless mutation) fails the test
    with contextlib.suppress(DecodeError):
        codec.decode_batch(header + mutated)
