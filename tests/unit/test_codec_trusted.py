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
from test_codec import (  # pytest puts tests/unit on sys.path
    COMMANDS,
    ids,
    instants,
    json_values,
    one_of_each_event,
    renumber,
)

from aion_common.codecs import Codec
from aion_common.domain import (
    CodecError,
    CommandRefused,
    DecodeError,
    EventBatch,
    Failed,
    FireTimer,
    InvalidInput,
    ParentClosePolicy,
    ParentLink,
    Payload,
    PayloadTooLarge,
    RecordChildTerminal,
    RefusalCode,
    StartWorkflow,
    WorkflowCompleted,
    WorkflowError,
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


@given(
    workflow_id=ids,
    run_id=ids,
    command_id=ids,
    value=json_values,
    at=instants,
    name=st.text(min_size=1, max_size=20).filter(lambda s: s.isprintable() and s == s.strip()),
    seq=st.integers(1, 2**62),
    timeout=st.one_of(st.none(), st.integers(0, 2**62)),
    attempt=st.integers(1, 2**31 - 1),
)
def test_generated_writer_matches_fastavro_byte_for_byte(  # noqa: PLR0917 - hypothesis
    workflow_id: str,
    run_id: str,
    command_id: str,
    value: object,
    at: datetime,
    name: str,
    seq: int,
    timeout: int | None,
    attempt: int,
) -> None:
    # The trusted path writes with generated code, the checking path with fastavro: any value
    # must give the same bytes either way (and so decode identically everywhere).
    codec = _codec()
    payload = Payload.from_json(value)
    started = WorkflowStarted(
        workflow_id=workflow_id,
        run_id=run_id,
        seq=seq,
        recorded_at=at,
        command_id=command_id,
        workflow_type=name,
        input=payload,
        first_run_id=run_id,
        previous_run_id=None if timeout is None else command_id,
        parent=None
        if timeout is None
        else ParentLink(
            workflow_id=command_id, run_id=run_id, close_policy=ParentClosePolicy.REQUEST_CANCEL
        ),
        package_version=name,
        execution_timeout_ms=timeout,
        attempt=attempt,
    )
    completed = WorkflowCompleted(
        workflow_id=workflow_id,
        run_id=run_id,
        seq=seq + 1,
        recorded_at=at,
        command_id=command_id,
        result=payload,
    )
    batch = EventBatch(
        workflow_id=workflow_id, command_id=command_id, writer=run_id, events=(started, completed)
    )
    assert codec.encode_batch(batch, trusted=True) == codec.encode_batch(batch)
    record = RecordChildTerminal(
        command_id=command_id,
        issued_at=at,
        workflow_id=workflow_id,
        parent_run_id=run_id,
        child_workflow_id=command_id,
        child_run_id=run_id,
        outcome=Failed(error=WorkflowError(message=name, details=payload)),
    )
    assert codec.encode_command(record, trusted=True) == codec.encode_command(record)


_CODECS: list[Codec] = []


def _codec() -> Codec:
    if not _CODECS:
        _CODECS.append(Codec())
    return _CODECS[0]


def test_timestamps_before_the_epoch_and_far_ahead_match_fastavro(codec: Codec) -> None:
    for at in (
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ):
        command = FireTimer(command_id="c", issued_at=at, workflow_id="w", run_id="r", timer_id="t")
        assert codec.encode_command(command, trusted=True) == codec.encode_command(command)
        assert codec.decode_command(codec.encode_command(command, trusted=True)) == command


def test_generated_writer_refuses_a_type_outside_the_union(codec: Codec) -> None:
    bad = RecordChildTerminal(
        command_id="c",
        issued_at=AT,
        workflow_id="w",
        parent_run_id="r",
        child_workflow_id="c",
        child_run_id="r",
        outcome="not an outcome",  # type: ignore[arg-type]
    )
    with pytest.raises(CodecError, match="not in this union"):
        codec.encode_command(bad, trusted=True)
