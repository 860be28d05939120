"""Round trips through the codec: every event, command, outcome, refusal and key."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from hypothesis import given
from hypothesis import strategies as st

from aion_common import codecs
from aion_common.codecs import MARKER, Codec, SchemaRegistry, decode_key, encode_key
from aion_common.codecs._registry import crc64_avro, locate_schemas_dir
from aion_common.domain import (
    EVENT_TYPES,
    ActivityAttemptFailed,
    ActivityAttemptScheduled,
    ActivityCancelled,
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeatRecorded,
    ActivityOptions,
    ActivityScheduled,
    ActivityStarted,
    ActivityTask,
    ActivityTimedOut,
    CancelActivityTask,
    Cancelled,
    CancelRequested,
    CancelWorkflow,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    CodecError,
    CommandRefused,
    CompleteActivity,
    Completed,
    ContinuedAsNew,
    DecodeError,
    Event,
    EventBatch,
    FailActivityAttempt,
    Failed,
    FireTimer,
    IdReusePolicy,
    InvalidInput,
    MoveWorkflow,
    PackageRecord,
    ParentClosePolicy,
    ParentLink,
    Payload,
    PayloadTooLarge,
    PublishHeader,
    RecordActivityHeartbeat,
    RecordActivityStarted,
    RecordChildTerminal,
    RecordPublished,
    RefusalCode,
    RetryOptions,
    RouteRecord,
    SignalReceived,
    SignalWorkflow,
    StartWorkflow,
    TerminalOutcome,
    TerminateWorkflow,
    TimedOut,
    TimeoutKind,
    TimerFired,
    TimerScheduled,
    WorkflowBlocked,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowMoved,
    WorkflowPurged,
    WorkflowStarted,
    WorkflowTimedOut,
)

AT = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
WF, RUN, CMD = "order-42", "run-1", "cmd-1"
ENV: dict[str, Any] = {"workflow_id": WF, "run_id": RUN, "recorded_at": AT, "command_id": CMD}
CENV: dict[str, Any] = {"command_id": CMD, "issued_at": AT, "workflow_id": WF}
DOC = Payload.from_json({"items": [1, 2.5, "ü"], "ok": True, "none": None})
ERR = WorkflowError(
    message="ValueError: card declined", error_type="ValueError", traceback="Traceback …\n"
)
OPTIONS = ActivityOptions(start_to_close_ms=10_000)
FULL_OPTIONS = ActivityOptions(
    task_queue="payments.eu-1",
    start_to_close_ms=10_000,
    schedule_to_close_ms=60_000,
    schedule_to_start_ms=5_000,
    heartbeat_timeout_ms=2_000,
    retry=RetryOptions(
        initial_interval_ms=250,
        backoff_coefficient=1.5,
        maximum_interval_ms=4_000,
        maximum_attempts=7,
        non_retryable_errors=("ValueError", "CardDeclined"),
    ),
)
ACT: dict[str, Any] = {"activity_id": "act-1"}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def one_of_each_event() -> list[Event]:
    """Every event type, optional fields set on some and unset on others."""
    events: list[Event] = [
        WorkflowStarted(**ENV, seq=1, workflow_type="Order", input=DOC, first_run_id=RUN),
        WorkflowStarted(
            **ENV,
            seq=1,
            workflow_type="Order",
            input=DOC,
            first_run_id="run-0",
            previous_run_id="run-0b",
            parent=ParentLink(
                workflow_id="parent", run_id="p1", close_policy=ParentClosePolicy.ABANDON
            ),
            package_version="1.2.3",
            execution_timeout_ms=30_000,
            attempt=3,
            pinned=True,
        ),
        WorkflowCompleted(**ENV, seq=1, result=DOC),
        WorkflowFailed(**ENV, seq=1, error=WorkflowError(message="boom")),
        WorkflowFailed(**ENV, seq=1, error=WorkflowError(message="boom", details=DOC)),
        WorkflowCancelled(**ENV, seq=1, reason="user asked"),
        WorkflowTimedOut(**ENV, seq=1, timeout="30s"),
        WorkflowContinuedAsNew(**ENV, seq=1, input=DOC, workflow_type=None, next_run_id="r2"),
        WorkflowContinuedAsNew(**ENV, seq=1, input=DOC, workflow_type="V2", next_run_id="r2"),
        ChildWorkflowScheduled(
            **ENV,
            seq=1,
            child_workflow_id="child",
            child_workflow_type="Ship",
            input=DOC,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            start_command_id="start-child",
        ),
        ChildWorkflowScheduled(
            **ENV,
            seq=1,
            child_workflow_id="child",
            child_workflow_type="Ship",
            input=DOC,
            parent_close_policy=ParentClosePolicy.TERMINATE,
            start_command_id="start-child",
            execution_timeout_ms=0,
        ),
        ChildWorkflowCompleted(**ENV, seq=1, child_workflow_id="child", result=DOC),
        ChildWorkflowFailed(
            **ENV, seq=1, child_workflow_id="child", error=WorkflowError(message="cancelled:x")
        ),
        SignalReceived(**ENV, seq=1, name="approve", payload=DOC),
        TimerScheduled(**ENV, seq=1, timer_id="t1", fire_at=AT + timedelta(days=1)),
        TimerFired(**ENV, seq=1, timer_id="t1"),
        CancelRequested(**ENV, seq=1, reason="because"),
        ActivityScheduled(**ENV, **ACT, seq=1, activity_type="charge", input=DOC, options=OPTIONS),
        ActivityScheduled(
            **ENV, **ACT, seq=1, activity_type="charge", input=DOC, options=FULL_OPTIONS
        ),
        ActivityStarted(**ENV, **ACT, seq=1, attempt=2, worker="w-1@host:42"),
        ActivityHeartbeatRecorded(**ENV, **ACT, seq=1, attempt=1),
        ActivityHeartbeatRecorded(**ENV, **ACT, seq=1, attempt=1, details=DOC),
        ActivityAttemptFailed(**ENV, **ACT, seq=1, attempt=1, error=ERR, next_attempt_at=AT),
        ActivityAttemptFailed(
            **ENV,
            **ACT,
            seq=1,
            attempt=3,
            error=ERR,
            next_attempt_at=AT,
            timeout=TimeoutKind.HEARTBEAT,
        ),
        ActivityAttemptScheduled(**ENV, **ACT, seq=1, attempt=2),
        ActivityCompleted(**ENV, **ACT, seq=1, attempt=1, result=DOC),
        ActivityFailed(**ENV, **ACT, seq=1, attempt=4, error=ERR, non_retryable=True),
        ActivityTimedOut(**ENV, **ACT, seq=1, attempt=1, timeout=TimeoutKind.SCHEDULE_TO_START),
        ActivityTimedOut(
            **ENV, **ACT, seq=1, attempt=2, timeout=TimeoutKind.START_TO_CLOSE, last_error=ERR
        ),
        ActivityCancelRequested(**ENV, **ACT, seq=1, reason="stop", by_workflow_code=True),
        ActivityCancelled(**ENV, **ACT, seq=1, attempt=1, reason="stop"),
        WorkflowBlocked(**ENV, seq=1, reason="replay diverged", error=ERR),
        WorkflowMoved(**ENV, seq=1, package_version="b" * 64, previous_version="a" * 64),
        WorkflowPurged(**ENV, seq=1, reason="retention 7d"),
        RecordPublished(**ENV, seq=1, publish_id="pub-1", topic="order-shipped", value=DOC),
        RecordPublished(
            **ENV,
            seq=1,
            publish_id="pub-2",
            topic="order-shipped",
            key="order-7",
            value=DOC,
            value_format="avro/confluent",
            headers=(PublishHeader(name="trace", value="t-1"),),
        ),
    ]
    assert {type(e) for e in events} == set(EVENT_TYPES)
    return events


def renumber(events: list[Event], first: int = 1) -> tuple[Event, ...]:
    import dataclasses

    return tuple(dataclasses.replace(e, seq=first + i) for i, e in enumerate(events))


def test_public_names_are_pinned() -> None:
    assert sorted(codecs.__all__) == sorted(
        [
            "DEFAULT_PAYLOAD_LIMIT",
            "MARKER",
            "SCHEMAS_DIR_ENV",
            "Codec",
            "SchemaInfo",
            "SchemaRegistry",
            "decode_key",
            "encode_key",
            "locate_schemas_dir",
        ]
    )


def test_every_event_type_round_trips_in_one_batch(codec: Codec) -> None:
    batch = EventBatch(
        workflow_id=WF, command_id=CMD, writer="engine-0", events=renumber(one_of_each_event(), 7)
    )
    data = codec.encode_batch(batch)
    assert data.startswith(MARKER)
    assert codec.decode_batch(data) == batch


@pytest.mark.parametrize("event", one_of_each_event(), ids=lambda e: type(e).__name__)
def test_each_event_round_trips_alone(codec: Codec, event: Event) -> None:
    batch = EventBatch(workflow_id=WF, command_id=CMD, writer="e", events=(event,))
    decoded = codec.decode_batch(codec.encode_batch(batch))
    assert decoded == batch
    assert type(decoded.events[0]) is type(event)


def test_event_types_with_equal_fields_keep_their_identity(codec: Codec) -> None:
    # WorkflowCancelled and CancelRequested have identical Avro fields: the union index decides.
    events = renumber(
        [CancelRequested(**ENV, seq=1, reason="r"), WorkflowCancelled(**ENV, seq=1, reason="r")]
    )
    batch = EventBatch(workflow_id=WF, command_id=CMD, writer="e", events=events)
    decoded = codec.decode_batch(codec.encode_batch(batch))
    assert [type(e) for e in decoded.events] == [CancelRequested, WorkflowCancelled]


OUTCOMES: list[TerminalOutcome] = [
    Completed(result=DOC),
    Failed(error=WorkflowError(message="m")),
    Failed(error=WorkflowError(message="m", details=DOC)),
    Cancelled(reason="r"),
    TimedOut(timeout="5m"),
    ContinuedAsNew(input=DOC, workflow_type=None, next_run_id="r9"),
    ContinuedAsNew(input=DOC, workflow_type="T", next_run_id="r9"),
]

COMMANDS = [
    StartWorkflow(**CENV, workflow_type="Order", input=DOC),
    StartWorkflow(
        **CENV,
        workflow_type="Order",
        input=DOC,
        parent=ParentLink(workflow_id="p", run_id="pr"),
        execution_timeout_ms=1,
        id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
    ),
    SignalWorkflow(**CENV, name="go", payload=DOC),
    CancelWorkflow(**CENV, reason="r"),
    TerminateWorkflow(**CENV, reason="r"),
    *(
        RecordChildTerminal(
            **CENV, parent_run_id="pr", child_workflow_id="c", child_run_id="cr", outcome=outcome
        )
        for outcome in OUTCOMES
    ),
    FireTimer(**CENV, run_id=RUN, timer_id="t"),
    RecordActivityStarted(**CENV, **ACT, run_id=RUN, attempt=1, worker="w-1"),
    MoveWorkflow(**CENV, run_id=RUN, package_version="c" * 64),
    StartWorkflow(**CENV, workflow_type="Order", input=DOC, package_version="d" * 64),
    RecordActivityHeartbeat(**CENV, **ACT, run_id=RUN, attempt=1),
    RecordActivityHeartbeat(**CENV, **ACT, run_id=RUN, attempt=1, details=DOC),
    CompleteActivity(**CENV, **ACT, run_id=RUN, attempt=2, result=DOC),
    FailActivityAttempt(**CENV, **ACT, run_id=RUN, attempt=1, error=ERR),
    FailActivityAttempt(
        **CENV, **ACT, run_id=RUN, attempt=1, error=ERR, non_retryable=True, cancelled=True
    ),
]

TASKS = [
    ActivityTask(
        workflow_id=WF,
        run_id=RUN,
        workflow_type="Order",
        activity_id="act-1",
        activity_type="charge",
        attempt=1,
        input=DOC,
        options=OPTIONS,
        scheduled_at=AT,
        attempt_scheduled_at=AT,
    ),
    ActivityTask(
        workflow_id=WF,
        run_id=RUN,
        workflow_type="Order",
        activity_id="act-1",
        activity_type="charge",
        attempt=3,
        input=DOC,
        options=FULL_OPTIONS,
        scheduled_at=AT,
        attempt_scheduled_at=AT + timedelta(seconds=3),
        heartbeat_details=DOC,
    ),
    CancelActivityTask(
        workflow_id=WF, run_id=RUN, activity_id="act-1", target_attempt=0, reason="r", issued_at=AT
    ),
]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: type(t).__name__)
def test_every_task_record_round_trips(codec: Codec, task: ActivityTask) -> None:
    data = codec.encode_task(task)
    assert data == codec.encode_task(task, trusted=True)
    assert codec.decode_task(data) == task


def test_package_and_route_records_round_trip(codec: Codec) -> None:
    package = PackageRecord(
        workflow_type="greet",
        version="e" * 64,
        workflow_types=("greet", "greet-all"),
        top_level=("greetings",),
        archive=b"PK\x03\x04 any bytes",
        uploaded_at=AT,
    )
    assert codec.decode_package(codec.encode_package(package)) == package
    route = RouteRecord(workflow_type="greet", version="e" * 64, routed_at=AT)
    assert codec.decode_route(codec.encode_route(route)) == route
    with pytest.raises(DecodeError, match=r"expected aion\.v1\.RouteRecord"):
        codec.decode_route(codec.encode_package(package))
    with pytest.raises(InvalidInput, match="64 lowercase hex"):
        RouteRecord(workflow_type="greet", version="v1", routed_at=AT)


def test_a_task_topic_refuses_a_command_and_the_command_topic_a_task(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="expected a task record"):
        codec.decode_task(codec.encode_command(COMMANDS[0]))
    with pytest.raises(DecodeError, match="expected a command"):
        codec.decode_command(codec.encode_task(TASKS[0]))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(codec: Codec, command: StartWorkflow) -> None:
    decoded = codec.decode_command(codec.encode_command(command))
    assert decoded == command
    assert type(decoded) is type(command)


@pytest.mark.parametrize("code", list(RefusalCode))
def test_refusal_round_trips(codec: Codec, code: RefusalCode) -> None:
    refusal = CommandRefused(
        command_id=CMD,
        workflow_id=WF,
        command_type="StartWorkflow",
        code=code,
        reason="workflow 'order-42' is already running",
        refused_at=AT,
    )
    assert codec.decode_refusal(codec.encode_refusal(refusal)) == refusal


def test_non_utc_datetimes_come_back_as_the_same_instant_in_utc(codec: Codec) -> None:
    local = AT.astimezone(timezone(timedelta(hours=-5)))
    command = CancelWorkflow(command_id=CMD, issued_at=local, workflow_id=WF, reason="r")
    decoded = codec.decode_command(codec.encode_command(command))
    assert decoded.issued_at == local
    assert decoded.issued_at.tzinfo == UTC


def test_encode_refuses_naive_datetimes(codec: Codec) -> None:
    naive = CancelWorkflow(
        command_id=CMD, issued_at=AT.replace(tzinfo=None), workflow_id=WF, reason="r"
    )
    with pytest.raises(InvalidInput, match=r"issued_at must be a timezone-aware"):
        codec.encode_command(naive)


def test_encode_refuses_oversized_payload() -> None:
    small = Codec(payload_limit=16)
    command = SignalWorkflow(**CENV, name="n", payload=Payload.from_json("x" * 40))
    with pytest.raises(PayloadTooLarge):
        small.encode_command(command)


def test_encode_refuses_invalid_ids(codec: Codec) -> None:
    command = FireTimer(**CENV, run_id=" padded ", timer_id="t")
    with pytest.raises(InvalidInput, match=r"FireTimer\.run_id"):
        codec.encode_command(command)


def test_encode_refuses_a_value_of_the_wrong_kind(codec: Codec) -> None:
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode_command(Cancelled(reason="r"))  # type: ignore[arg-type]


def test_key_round_trip() -> None:
    assert encode_key("order-ü-42") == "order-ü-42".encode()
    assert decode_key(encode_key("order-ü-42")) == "order-ü-42"


def test_codec_accepts_an_explicit_registry() -> None:
    registry = SchemaRegistry.load()
    assert Codec(registry).registry is registry


def test_the_default_registry_is_parsed_once_per_process_and_a_given_root_each_time() -> None:
    default = SchemaRegistry.load()
    assert SchemaRegistry.load() is default
    assert Codec().registry is default
    again = SchemaRegistry.load(locate_schemas_dir())
    assert again is not default
    assert again.fingerprints().keys() == default.fingerprints().keys()


@given(st.text(max_size=300))
def test_crc64_avro_is_fastavros_fingerprint(text: str) -> None:
    expected = fastavro_fingerprint(text, "CRC-64-AVRO")  # of the UTF-8 bytes
    assert crc64_avro(text.encode("utf-8")) == bytes.fromhex(expected)


ids = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=40
).filter(lambda s: s == s.strip() and s.isprintable())
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 1),  # noqa: DTZ001 (hypothesis takes naive bounds)
    max_value=datetime(2400, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(
    workflow_id=ids,
    run_id=ids,
    command_id=ids,
    value=json_values,
    at=instants,
    name=st.text(string.ascii_letters, min_size=1, max_size=20),
    seq=st.integers(1, 2**62),
)
def test_hypothesis_round_trip(  # noqa: PLR0917 (hypothesis passes strategies by position)
    workflow_id: str, run_id: str, command_id: str, value: object, at: datetime, name: str, seq: int
) -> None:
    codec = _shared_codec()
    payload = Payload.from_json(value)
    events = (
        SignalReceived(
            workflow_id=workflow_id,
            run_id=run_id,
            seq=seq,
            recorded_at=at,
            command_id=command_id,
            name=name,
            payload=payload,
        ),
        WorkflowCompleted(
            workflow_id=workflow_id,
            run_id=run_id,
            seq=seq + 1,
            recorded_at=at,
            command_id=command_id,
            result=payload,
        ),
    )
    batch = EventBatch(workflow_id=workflow_id, command_id=command_id, writer=run_id, events=events)
    assert codec.decode_batch(codec.encode_batch(batch)) == batch
    signal = SignalWorkflow(
        command_id=command_id, issued_at=at, workflow_id=workflow_id, name=name, payload=payload
    )
    assert codec.decode_command(codec.encode_command(signal)) == signal
    assert decode_key(encode_key(workflow_id)) == workflow_id


_CODEC: list[Codec] = []


def _shared_codec() -> Codec:
    if not _CODEC:
        _CODEC.append(Codec())
    return _CODEC[0]
