"""Every event and command type through a real broker, Avro-encoded, on the right partition.

One sample of each value type goes out with the codec and :class:`KeyedProducer` and comes back
through :func:`read_partition_to_end` equal to what was sent; and one workflow id lands on the
same partition number in every aion topic, the number :func:`partition_for` computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aion_common.codecs import Codec, decode_key, encode_key
from aion_common.domain import (
    COMMAND_TYPES,
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
    ActivityTimedOut,
    Cancelled,
    CancelRequested,
    CancelWorkflow,
    CarriedChild,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    Command,
    CommandRefused,
    CompleteActivity,
    Completed,
    ContinuedAsNew,
    Event,
    EventBatch,
    FailActivityAttempt,
    Failed,
    FireTimer,
    IdReusePolicy,
    MoveWorkflow,
    OverlapPolicy,
    ParentClosePolicy,
    ParentLink,
    Payload,
    PublishHeader,
    PurgeWorkflow,
    QueryAnswer,
    QueryStatus,
    QueryWorkflow,
    RecordActivityHeartbeat,
    RecordActivityStarted,
    RecordChildTerminal,
    RecordPublished,
    RefusalCode,
    RetryOptions,
    ScheduledRun,
    ScheduleRecord,
    ScheduleState,
    ScheduleTrigger,
    SignalReceived,
    SignalWithStartWorkflow,
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
from aion_common.kafka import KeyedProducer, Topics, ensure_topics, partition_for
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.schedules import ensure_schedule_topics
from aion_common.settings import Settings

WORKFLOW = "order-2026-0042"
RUN = "5b0c9f61-7a34-4f0e-9a51-3c2d9e1f0a01"
NEXT_RUN = "5b0c9f61-7a34-4f0e-9a51-3c2d9e1f0a02"
COMMAND = "c0ffee00-0000-4000-8000-000000000001"
AT = datetime(2026, 11, 28, 7, 30, 15, 123456, tzinfo=UTC)  # Avro keeps microseconds
PARENT = ParentLink(workflow_id="parent-1", run_id=RUN, close_policy=ParentClosePolicy.ABANDON)
INPUT = Payload.from_json({"amount": 42, "currency": "EUR", "lines": ["ä", "ß", None]})
ERROR = WorkflowError(message="card declined", details=Payload.from_json({"code": 51}))


def _events() -> list[Event]:
    """One sample of every event type, optional fields set, seq 1…28."""
    e: dict[str, Any] = {
        "workflow_id": WORKFLOW,
        "run_id": RUN,
        "recorded_at": AT,
        "command_id": COMMAND,
    }
    later = AT + timedelta(hours=1)
    samples: list[Event] = [
        WorkflowStarted(
            **e, seq=1, workflow_type="Checkout", input=INPUT, first_run_id=RUN,
            previous_run_id=NEXT_RUN, parent=PARENT, package_version="shop==1.2.3",
            execution_timeout_ms=60_000, attempt=2,
            carried_children=(
                CarriedChild(
                    child_workflow_id="child-0", child_workflow_type="Charge",
                    parent_close_policy=ParentClosePolicy.TERMINATE, origin_run_id=NEXT_RUN,
                ),
            ),
        ),
        ChildWorkflowScheduled(
            **e, seq=2, child_workflow_id="child-1", child_workflow_type="Charge", input=INPUT,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            start_command_id="c0ffee00-0000-4000-8000-000000000002", execution_timeout_ms=5_000,
        ),
        ChildWorkflowCompleted(**e, seq=3, child_workflow_id="child-1", result=INPUT),
        ChildWorkflowFailed(**e, seq=4, child_workflow_id="child-2", error=ERROR),
        SignalReceived(**e, seq=5, name="approve", payload=Payload.from_json(True)),
        TimerScheduled(**e, seq=6, timer_id="timer-1", fire_at=later),
        TimerFired(**e, seq=7, timer_id="timer-1"),
        CancelRequested(**e, seq=8, reason="customer asked"),
        WorkflowCompleted(**e, seq=9, result=Payload.from_json({"ok": True})),
        WorkflowFailed(**e, seq=10, error=WorkflowError(message="boom")),
        WorkflowCancelled(**e, seq=11, reason="customer asked"),
        WorkflowTimedOut(**e, seq=12, timeout="60s"),
        WorkflowContinuedAsNew(
            **e, seq=13, input=INPUT, workflow_type="CheckoutV2", next_run_id=NEXT_RUN
        ),
    ]  # fmt: skip
    activity: dict[str, Any] = {**e, "activity_id": "act-1"}
    samples += [
        ActivityScheduled(
            **activity, seq=14, activity_type="charge", input=INPUT,
            options=ActivityOptions(
                task_queue="payments", start_to_close_ms=10_000, heartbeat_timeout_ms=1_000,
                retry=RetryOptions(maximum_attempts=5, non_retryable_errors=("Declined",)),
            ),
        ),
        ActivityStarted(**activity, seq=15, attempt=1, worker="worker-1"),
        ActivityHeartbeatRecorded(**activity, seq=16, attempt=1, details=INPUT),
        ActivityAttemptFailed(
            **activity, seq=17, attempt=1, error=ERROR, next_attempt_at=later,
            timeout=TimeoutKind.HEARTBEAT,
        ),
        ActivityAttemptScheduled(**activity, seq=18, attempt=2),
        ActivityCompleted(**activity, seq=19, attempt=2, result=INPUT),
        ActivityFailed(**activity, seq=20, attempt=2, error=ERROR, non_retryable=True),
        ActivityTimedOut(
            **activity, seq=21, attempt=2, timeout=TimeoutKind.START_TO_CLOSE, last_error=ERROR
        ),
        ActivityCancelRequested(**activity, seq=22, reason="stop", by_workflow_code=True),
        ActivityCancelled(**activity, seq=23, attempt=2, reason="stop"),
        WorkflowBlocked(**e, seq=24, reason="replay diverged at seq 3", error=ERROR),
        WorkflowMoved(**e, seq=25, package_version="b" * 64, previous_version="a" * 64),
        WorkflowPurged(**e, seq=26, reason="retention of 7 days ran out"),
        RecordPublished(
            **e, seq=27, publish_id="pub-1", topic="order-shipped", value=INPUT,
        ),
        RecordPublished(
            **e, seq=28, publish_id="pub-2", topic="order-shipped", key="order-7", value=INPUT,
            value_format="avro/confluent",
            headers=(PublishHeader(name="trace", value="t-1"), PublishHeader(name="ä", value="")),
        ),
    ]  # fmt: skip
    return samples


def _commands() -> list[Command]:
    """One sample of every command type, every terminal outcome for RecordChildTerminal."""
    c: dict[str, Any] = {"issued_at": AT, "workflow_id": WORKFLOW}
    outcomes: list[TerminalOutcome] = [
        Completed(result=INPUT),
        Failed(error=ERROR),
        Cancelled(reason="parent closed"),
        TimedOut(timeout="30s"),
        ContinuedAsNew(input=INPUT, workflow_type=None, next_run_id=NEXT_RUN),
    ]
    samples: list[Command] = [
        StartWorkflow(
            **c, command_id="cmd-start", workflow_type="Checkout", input=INPUT, parent=PARENT,
            execution_timeout_ms=60_000, id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
        ),
        StartWorkflow(**c, command_id="cmd-start-minimal", workflow_type="Checkout", input=INPUT),
        SignalWorkflow(**c, command_id="cmd-signal", name="approve", payload=INPUT),
        SignalWithStartWorkflow(
            **c, command_id="cmd-signal-start", workflow_type="Checkout", input=INPUT,
            signal_name="approve", signal_payload=INPUT,
            id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
        ),
        CancelWorkflow(**c, command_id="cmd-cancel", reason="customer asked"),
        TerminateWorkflow(**c, command_id="cmd-terminate", reason="operator"),
        FireTimer(**c, command_id="cmd-timer", run_id=RUN, timer_id="timer-1"),
        *(
            RecordChildTerminal(
                **c, command_id=f"cmd-record-{i}", parent_run_id=RUN,
                child_workflow_id="child-1", child_run_id=NEXT_RUN, outcome=outcome,
            )
            for i, outcome in enumerate(outcomes)
        ),
        RecordActivityStarted(
            **c, command_id="cmd-a1", run_id=RUN, activity_id="act-1", attempt=1, worker="w-1"
        ),
        RecordActivityHeartbeat(
            **c, command_id="cmd-a2", run_id=RUN, activity_id="act-1", attempt=1, details=INPUT
        ),
        CompleteActivity(
            **c, command_id="cmd-a3", run_id=RUN, activity_id="act-1", attempt=1, result=INPUT
        ),
        FailActivityAttempt(
            **c, command_id="cmd-a4", run_id=RUN, activity_id="act-1", attempt=1, error=ERROR,
            non_retryable=True,
        ),
        MoveWorkflow(**c, command_id="cmd-move", run_id=RUN, package_version="c" * 64),
        PurgeWorkflow(**c, command_id="cmd-purge", last_seq=26),
        QueryWorkflow(
            **c, command_id="cmd-query", name="status", args=Payload.from_json([1]), deadline=AT,
            run_id=RUN,
            history=EventBatch(
                workflow_id=WORKFLOW, command_id="cmd-query", writer="api",
                events=tuple(_events()[:1]),
            ),
        ),
    ]  # fmt: skip
    return samples


def _refusals() -> Iterator[CommandRefused]:
    for code in RefusalCode:
        yield CommandRefused(
            command_id=f"cmd-{code.value.lower()}",
            workflow_id=WORKFLOW,
            command_type="StartWorkflow",
            code=code,
            reason=f"refused: {code.value}",
            refused_at=AT,
        )


def test_the_samples_cover_every_type() -> None:
    assert {type(e) for e in _events()} == set(EVENT_TYPES)
    assert {type(c) for c in _commands()} == set(COMMAND_TYPES)


@pytest.fixture
async def topics(aion_settings: Settings) -> Topics:
    topics = Topics(aion_settings.topic_prefix)
    await ensure_topics(aion_settings, topics)
    return topics


async def test_every_event_type_round_trips_through_the_broker(
    aion_settings: Settings, topics: Topics
) -> None:
    codec = Codec()
    events = _events()
    batches = [
        EventBatch(workflow_id=WORKFLOW, command_id=COMMAND, writer="engine-1", events=(event,))
        for event in events
    ]
    batches.append(
        EventBatch(
            workflow_id=WORKFLOW, command_id=COMMAND, writer="engine-2", events=tuple(events)
        )
    )
    async with KeyedProducer(aion_settings, idempotent=True) as producer:
        for batch in batches:
            await producer.send(topics.events, WORKFLOW, codec.encode_batch(batch))
    partition = partition_for(WORKFLOW, aion_settings.partitions)
    records = [r async for r in read_partition_to_end(aion_settings, topics.events, partition)]
    decoded = [
        codec.decode_batch(r.value, topic=r.topic, partition=r.partition, offset=r.offset)
        for r in records
    ]
    assert decoded == batches
    assert {decode_key(r.key) for r in records} == {WORKFLOW}


async def test_every_command_type_refusal_and_answer_round_trips_through_the_broker(
    aion_settings: Settings, topics: Topics
) -> None:
    codec = Codec()
    commands = _commands()
    refusals: list[CommandRefused | QueryAnswer] = list(_refusals())
    refusals.append(
        QueryAnswer(
            command_id="cmd-query",
            workflow_id=WORKFLOW,
            name="status",
            status=QueryStatus.ANSWERED,
            message="",
            answered_at=AT,
            run_id=RUN,
            result=INPUT,
            known_queries=("status",),
        )
    )
    async with KeyedProducer(aion_settings, idempotent=True) as producer:
        for command in commands:
            await producer.send(topics.commands, WORKFLOW, codec.encode_command(command))
        for reply in refusals:
            value = (
                codec.encode_refusal(reply)
                if isinstance(reply, CommandRefused)
                else codec.encode_query_answer(reply)
            )
            await producer.send(topics.replies, WORKFLOW, value)
    partition = partition_for(WORKFLOW, aion_settings.partitions)
    sent_commands = [
        codec.decode_command(r.value)
        async for r in read_partition_to_end(aion_settings, topics.commands, partition)
    ]
    sent_refusals = [
        codec.decode_reply(r.value)
        async for r in read_partition_to_end(aion_settings, topics.replies, partition)
    ]
    assert sent_commands == commands
    assert sent_refusals == refusals


async def test_schedule_records_round_trip_through_the_broker(aion_settings: Settings) -> None:
    """Schedule definitions, trigger requests (one topic) and states (another), keyed by the
    schedule id, come back as sent."""
    codec = Codec()
    topics = Topics(aion_settings.topic_prefix)
    await ensure_schedule_topics(aion_settings, topics)
    definitions: list[ScheduleRecord | ScheduleTrigger] = [
        ScheduleRecord(
            schedule_id="nightly", workflow_type="Checkout", input=INPUT, cron="0 3 * * *",
            overlap=OverlapPolicy.BUFFER_ONE, jitter_ms=5_000, catchup_window_ms=120_000,
            note="the nightly run", not_before=AT, updated_at=AT,
        ),
        ScheduleTrigger(schedule_id="nightly", request_id="req-1", requested_at=AT),
    ]  # fmt: skip
    state = ScheduleState(
        schedule_id="nightly", last_fire=AT, next_fire=AT, started=3, skipped=1, missed=2,
        buffered=AT, last_started="nightly-1", updated_at=AT,
        running=(
            ScheduledRun(
                workflow_id="nightly-1", command_id=COMMAND, nominal_at=AT, events_offset=41,
                replies_offset=7,
            ),
        ),
    )  # fmt: skip
    async with KeyedProducer(aion_settings, idempotent=True) as producer:
        for record in definitions:
            await producer.send(topics.schedules, "nightly", codec.encode_schedule(record))
        await producer.send(topics.schedule_state, "nightly", codec.encode_schedule_state(state))
    partition = partition_for("nightly", aion_settings.partitions)
    got = [
        codec.decode_schedule(r.value)
        async for r in read_partition_to_end(aion_settings, topics.schedules, partition)
    ]
    states = [
        codec.decode_schedule_state(r.value)
        async for r in read_partition_to_end(aion_settings, topics.schedule_state, partition)
    ]
    assert got == definitions
    assert states == [state]


@pytest.mark.parametrize("workflow_id", [WORKFLOW, "a", "ünïcødé-☃", "x" * 255, "wf 17"])
async def test_a_workflow_has_one_partition_number_in_every_topic(
    aion_settings: Settings, topics: Topics, workflow_id: str
) -> None:
    expected = partition_for(workflow_id, aion_settings.partitions)
    assert encode_key(workflow_id) == workflow_id.encode("utf-8")  # the bytes partition_for hashes
    async with KeyedProducer(aion_settings, idempotent=True) as producer:
        landed = {
            topic: (await producer.send(topic, workflow_id, b"probe")).partition
            for topic in topics.all()
        }
    assert landed == dict.fromkeys(topics.all(), expected)
