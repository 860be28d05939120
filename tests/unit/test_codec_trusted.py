"""The codec's trusted path (the engine's hot path): same bytes, fewer checks, same safety net.

``trusted=True`` skips the per-field checks for values whose fields were already checked; the
bytes must be exactly those of the checking path, a checking decoder must accept them, and the
payload size limit must still hold.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_codec import COMMANDS, one_of_each_event, renumber  # pytest puts tests/unit on sys.path

from aion_common.codecs import Codec
from aion_common.domain import (
    CommandRefused,
    DecodeError,
    EventBatch,
    InvalidInput,
    Payload,
    PayloadTooLarge,
    RefusalCode,
    StartWorkflow,
    WorkflowStarted,
    derive_id,
    validate_id,
)

AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def _batch() -> EventBatch:
    return EventBatch(
        workflow_id="order-42",
        command_id="cmd-1",
        writer="engine-1",
        events=renumber(one_of_each_event()),
    )


def test_trusted_encoding_is_byte_identical_and_decodes_either_way(codec: Codec) -> None:
    batch = _batch()
    data = codec.encode_batch(batch, trusted=True)
    assert data == codec.encode_batch(batch)
    assert codec.decode_batch(data) == batch
    assert codec.decode_batch(data, trusted=True) == batch


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_trusted_command_encoding_is_byte_identical(codec: Codec, command: StartWorkflow) -> None:
    data = codec.encode_command(command, trusted=True)
    assert data == codec.encode_command(command)
    assert codec.decode_command(data) == command


def test_trusted_refusal_encoding_is_byte_identical(codec: Codec) -> None:
    refusal = CommandRefused(
        command_id="c",
        workflow_id="w",
        command_type="SignalWorkflow",
        code=RefusalCode.UNKNOWN_WORKFLOW,
        reason="no such workflow",
        refused_at=AT,
    )
    assert codec.encode_refusal(refusal, trusted=True) == codec.encode_refusal(refusal)


def test_trusted_encoding_still_enforces_the_payload_limit() -> None:
    small = Codec(payload_limit=16)
    command = StartWorkflow(
        command_id="c",
        issued_at=AT,
        workflow_id="w",
        workflow_type="t",
        input=Payload.from_json("x" * 40),
    )
    with pytest.raises(PayloadTooLarge):
        small.encode_command(command, trusted=True)


def test_trusted_skips_field_checks_but_the_checking_decoder_still_refuses(codec: Codec) -> None:
    # A value the trusted path must never be given: an id with a control character. The
    # strict encoder refuses it; the trusted one writes it, and strict decoding catches it.
    bad = StartWorkflow(
        command_id="c",
        issued_at=AT,
        workflow_id="bad\nid",
        workflow_type="t",
        input=Payload.from_json(1),
    )
    with pytest.raises(InvalidInput):
        codec.encode_command(bad)
    data = codec.encode_command(bad, trusted=True)
    with pytest.raises(DecodeError, match="control characters"):
        codec.decode_command(data)


def test_trusted_decoding_still_raises_on_corrupt_avro(codec: Codec) -> None:
    event = WorkflowStarted(
        workflow_id="w",
        run_id="r",
        seq=1,
        recorded_at=AT,
        command_id="c",
        workflow_type="t",
        input=Payload.from_json(1),
        first_run_id="r",
    )
    data = codec.encode_batch(
        EventBatch(workflow_id="w", command_id="c", writer="e", events=(event,))
    )
    with pytest.raises(DecodeError):
        codec.decode_batch(data[:-3], trusted=True)


@pytest.mark.parametrize(
    "value",
    ["a", " a", "a ", " ", "a\u00a0", "\u2028x", "x\ty", "ü-1", "a" * 255, "a" * 256, "", "\x00"],
)
def test_validate_id_fast_path_agrees_with_the_rules(value: str) -> None:
    expected_ok = (
        0 < len(value) <= 255 and value.isprintable() and value == value.strip()  # the rules
    )
    if expected_ok:
        assert validate_id(value) == value
    else:
        with pytest.raises(InvalidInput):
            validate_id(value)


def test_space_is_the_only_printable_whitespace() -> None:
    # The fast path relies on it: for a printable string, value == value.strip() iff neither
    # end is U+0020.
    printable_spaces = [
        c for c in map(chr, range(sys.maxunicode + 1)) if c.isprintable() and c.isspace()
    ]
    assert printable_spaces == [" "]


@given(st.text(), st.lists(st.text(), max_size=4))
def test_derive_id_is_exactly_uuid5(kind: str, parts: list[str]) -> None:
    # derive_id skips the UUID objects for speed; ids already in logs must not change
    name = "\x1f".join((kind, *parts))
    expected = str(uuid.uuid5(uuid.UUID("6f1c2a7e-5d0b-4c1e-9a53-a10e0c0de001"), name))
    assert derive_id(kind, *parts) == expected


def test_derive_id_is_pinned() -> None:
    assert derive_id("run", "order-42", "cmd-1") == str(
        uuid.uuid5(uuid.UUID("6f1c2a7e-5d0b-4c1e-9a53-a10e0c0de001"), "run\x1forder-42\x1fcmd-1")
    )
