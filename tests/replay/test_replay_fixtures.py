"""Golden records: every release's fixtures must decode, with today's code, to these objects.

A fixture is a Kafka value written by the release it sits under (``fixtures/v<N>/``), stored as
hex. Fixtures are never rewritten; ``write_fixtures.py`` adds those of a new release only.
When a later release adds a field, the expected object of an old fixture carries its default.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aion_common.codecs import Codec
from aion_common.domain import (
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
    CarriedChild,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    CommandRefused,
    CompleteActivity,
    Completed,
    ContinuedAsNew,
    EventBatch,
    FailActivityAttempt,
    Failed,
    FireTimer,
    IdReusePolicy,
    MoveWorkflow,
    OverlapPolicy,
    PackageRecord,
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
    RouteRecord,
    ScheduledRun,
    ScheduleRecord,
    ScheduleState,
    ScheduleTrigger,
    SignalReceived,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
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

FIXTURES = Path(__file__).parent / "fixtures"
AT = datetime(2025, 6, 7, 8, 9, 10, 111213, tzinfo=UTC)
DOC = Payload.from_json({"order": 42, "lines": [{"sku": "ä-1", "qty": 2.5}], "gift": None})
ERR = WorkflowError(message="ValueError: no stock", details=Payload.from_json({"sku": "ä-1"}))
WF, RUN, CMD = "order-42", "7b0d8e1c-run-2", "cmd-0001"
ENV: dict[str, Any] = {"workflow_id": WF, "run_id": RUN, "recorded_at": AT, "command_id": CMD}
CENV: dict[str, Any] = {"command_id": CMD, "issued_at": AT, "workflow_id": WF}
PARENT = ParentLink(workflow_id="parent-1", run_id="prun-1", close_policy=ParentClosePolicy.ABANDON)

_EVENTS = (
    WorkflowStarted(
        **ENV,
        seq=1,
        workflow_type="OrderWorkflow",
        input=DOC,
        first_run_id="7b0d8e1c-run-1",
        previous_run_id="7b0d8e1c-run-1",
        parent=PARENT,
        package_version="shop==1.4.0",
        execution_timeout_ms=86_400_000,
        attempt=2,
    ),
    ChildWorkflowScheduled(
        **ENV,
        seq=2,
        child_workflow_id="order-42/ship",
        child_workflow_type="ShipWorkflow",
        input=DOC,
        parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        start_command_id="cmd-start-ship",
        execution_timeout_ms=3_600_000,
    ),
    ChildWorkflowCompleted(**ENV, seq=3, child_workflow_id="order-42/ship", result=DOC),
    ChildWorkflowFailed(**ENV, seq=4, child_workflow_id="order-42/bill", error=ERR),
    SignalReceived(**ENV, seq=5, name="approve", payload=DOC),
    TimerScheduled(**ENV, seq=6, timer_id="timer-1", fire_at=datetime(2030, 1, 1, tzinfo=UTC)),
    TimerFired(**ENV, seq=7, timer_id="timer-1"),
    CancelRequested(**ENV, seq=8, reason="customer asked"),
    WorkflowCompleted(**ENV, seq=9, result=DOC),
    WorkflowFailed(**ENV, seq=10, error=ERR),
    WorkflowCancelled(**ENV, seq=11, reason="customer asked"),
    WorkflowTimedOut(**ENV, seq=12, timeout="24h"),
    WorkflowContinuedAsNew(
        **ENV, seq=13, input=DOC, workflow_type="OrderWorkflowV2", next_run_id="7b0d8e1c-run-3"
    ),
)


ERR2 = WorkflowError(
    message="CardDeclined: insufficient funds",
    details=Payload.from_json({"code": 51}),
    error_type="CardDeclined",
    traceback='Traceback (most recent call last):\n  File "pay.py", line 9\nCardDeclined\n',
)
OPTIONS = ActivityOptions(
    task_queue="payments",
    start_to_close_ms=10_000,
    schedule_to_close_ms=120_000,
    schedule_to_start_ms=30_000,
    heartbeat_timeout_ms=2_000,
    retry=RetryOptions(
        initial_interval_ms=500,
        backoff_coefficient=1.5,
        maximum_interval_ms=8_000,
        maximum_attempts=5,
        non_retryable_errors=("CardDeclined",),
    ),
)
ACT: dict[str, Any] = {"activity_id": "act-1"}
_ACTIVITY_EVENTS = (
    _EVENTS[0],
    ActivityScheduled(**ENV, **ACT, seq=2, activity_type="charge", input=DOC, options=OPTIONS),
    ActivityStarted(**ENV, **ACT, seq=3, attempt=1, worker="worker-1@host:42"),
    ActivityHeartbeatRecorded(**ENV, **ACT, seq=4, attempt=1, details=DOC),
    ActivityAttemptFailed(
        **ENV,
        **ACT,
        seq=5,
        attempt=1,
        error=ERR2,
        next_attempt_at=datetime(2030, 1, 1, tzinfo=UTC),
        timeout=TimeoutKind.HEARTBEAT,
    ),
    ActivityAttemptScheduled(**ENV, **ACT, seq=6, attempt=2),
    ActivityCompleted(**ENV, **ACT, seq=7, attempt=2, result=DOC),
    ActivityFailed(**ENV, **ACT, seq=8, attempt=5, error=ERR2, non_retryable=True),
    ActivityTimedOut(
        **ENV, **ACT, seq=9, attempt=3, timeout=TimeoutKind.SCHEDULE_TO_CLOSE, last_error=ERR2
    ),
    ActivityCancelRequested(**ENV, **ACT, seq=10, reason="customer asked", by_workflow_code=False),
    ActivityCancelled(**ENV, **ACT, seq=11, attempt=1, reason="customer asked"),
    WorkflowFailed(**ENV, seq=12, error=ERR2),
)
ACMD: dict[str, Any] = {**CENV, "run_id": RUN, "activity_id": "act-1"}


def _record(name: str, outcome: object) -> RecordChildTerminal:
    return RecordChildTerminal(
        **CENV,
        parent_run_id="prun-1",
        child_workflow_id=f"order-42/{name}",
        child_run_id="crun-1",
        outcome=outcome,  # type: ignore[arg-type]
    )


# release -> fixture name -> (codec method suffix, expected object)
EXPECTED: dict[str, dict[str, tuple[str, object]]] = {
    "v1": {
        "EventBatch": (
            "batch",
            EventBatch(workflow_id=WF, command_id=CMD, writer="engine-7", events=_EVENTS),
        ),
        "StartWorkflow": (
            "command",
            StartWorkflow(
                **CENV,
                workflow_type="OrderWorkflow",
                input=DOC,
                parent=PARENT,
                execution_timeout_ms=60_000,
                id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            ),
        ),
        "SignalWorkflow": ("command", SignalWorkflow(**CENV, name="approve", payload=DOC)),
        "CancelWorkflow": ("command", CancelWorkflow(**CENV, reason="customer asked")),
        "TerminateWorkflow": ("command", TerminateWorkflow(**CENV, reason="stuck")),
        "RecordChildTerminal": ("command", _record("bill", Failed(error=ERR))),
        "RecordChildTerminal-Completed": ("command", _record("ship", Completed(result=DOC))),
        "RecordChildTerminal-Cancelled": ("command", _record("a", Cancelled(reason="r"))),
        "RecordChildTerminal-TimedOut": ("command", _record("b", TimedOut(timeout="30s"))),
        "RecordChildTerminal-ContinuedAsNew": (
            "command",
            _record("c", ContinuedAsNew(input=DOC, workflow_type="T2", next_run_id="crun-2")),
        ),
        "FireTimer": ("command", FireTimer(**CENV, run_id=RUN, timer_id="timer-1")),
        "CommandRefused": (
            "refusal",
            CommandRefused(
                command_id=CMD,
                workflow_id=WF,
                command_type="StartWorkflow",
                code=RefusalCode.ID_REUSE_REJECTED,
                reason="workflow 'order-42' is closed and its id may not be reused",
                refused_at=AT,
            ),
        ),
    },
    "v2": {
        "EventBatch": (
            "batch",
            EventBatch(workflow_id=WF, command_id=CMD, writer="engine-7", events=_ACTIVITY_EVENTS),
        ),
        "RecordChildTerminal": ("command", _record("bill", Failed(error=ERR2))),
        "RecordActivityStarted": (
            "command",
            RecordActivityStarted(**ACMD, attempt=2, worker="worker-1@host:42"),
        ),
        "RecordActivityHeartbeat": (
            "command",
            RecordActivityHeartbeat(**ACMD, attempt=2, details=DOC),
        ),
        "CompleteActivity": ("command", CompleteActivity(**ACMD, attempt=2, result=DOC)),
        "FailActivityAttempt": (
            "command",
            FailActivityAttempt(**ACMD, attempt=2, error=ERR2, non_retryable=True),
        ),
        "CommandRefused": (
            "refusal",
            CommandRefused(
                command_id=CMD,
                workflow_id=WF,
                command_type="CompleteActivity",
                code=RefusalCode.STALE_ACTIVITY_REPORT,
                reason="attempt 1 of activity 'act-1' is not the current attempt",
                refused_at=AT,
            ),
        ),
        "ActivityTask": (
            "task",
            ActivityTask(
                workflow_id=WF,
                run_id=RUN,
                workflow_type="Order",
                activity_id="act-1",
                activity_type="charge",
                attempt=2,
                input=DOC,
                options=OPTIONS,
                scheduled_at=AT,
                attempt_scheduled_at=datetime(2030, 1, 1, tzinfo=UTC),
                heartbeat_details=DOC,
            ),
        ),
        "CancelActivityTask": (
            "task",
            CancelActivityTask(
                workflow_id=WF,
                run_id=RUN,
                activity_id="act-1",
                target_attempt=2,
                reason="customer asked",
                issued_at=AT,
            ),
        ),
    },
    "v3": {
        "EventBatch": (
            "batch",
            EventBatch(
                workflow_id=WF,
                command_id=CMD,
                writer="engine-7",
                events=(
                    _EVENTS[0],
                    WorkflowBlocked(**ENV, seq=2, reason="replay diverged at seq 2", error=ERR2),
                    WorkflowMoved(
                        **ENV, seq=3, package_version="b" * 64, previous_version="a" * 64
                    ),
                ),
            ),
        ),
        "StartWorkflow": (
            "command",
            StartWorkflow(**CENV, workflow_type="Order", input=DOC, package_version="c" * 64),
        ),
        "MoveWorkflow": ("command", MoveWorkflow(**CENV, run_id=RUN, package_version="d" * 64)),
        "CommandRefused": (
            "refusal",
            CommandRefused(
                command_id=CMD,
                workflow_id=WF,
                command_type="MoveWorkflow",
                code=RefusalCode.MOVE_REFUSED,
                reason="the run's history does not replay on version dddd…",
                refused_at=AT,
            ),
        ),
        "PackageRecord": (
            "package",
            PackageRecord(
                workflow_type="Order",
                version="e" * 64,
                workflow_types=("Order", "Ship"),
                top_level=("shop",),
                archive=b"PK\x05\x06" + bytes(18),
                uploaded_at=AT,
            ),
        ),
        "RouteRecord": (
            "route",
            RouteRecord(workflow_type="Order", version="e" * 64, routed_at=AT),
        ),
    },
    "v4": {
        "StartWorkflow": (
            "command",
            StartWorkflow(
                **CENV,
                workflow_type="OrderWorkflow",
                input=DOC,
                id_reuse_policy=IdReusePolicy.TERMINATE_IF_RUNNING,
            ),
        ),
    },
    "v5": {
        "QueryWorkflow": (
            "command",
            QueryWorkflow(
                **CENV,
                name="status",
                args=Payload.from_json(["verbose", 2]),
                deadline=AT,
                run_id=RUN,
                history=EventBatch(
                    workflow_id=WF, command_id=CMD, writer="api", events=tuple(_EVENTS[:2])
                ),
            ),
        ),
        "QueryWorkflow-open": (
            "command",
            QueryWorkflow(**CENV, name="__waiting_on", args=Payload.from_json([]), deadline=AT),
        ),
        "QueryAnswer": (
            "query_answer",
            QueryAnswer(
                command_id=CMD,
                workflow_id=WF,
                name="status",
                status=QueryStatus.ANSWERED,
                message="",
                answered_at=AT,
                run_id=RUN,
                result=DOC,
                known_queries=("status", "lines"),
                replayed=True,
                last_seq=7,
            ),
        ),
        "QueryAnswer-unknown": (
            "query_answer",
            QueryAnswer(
                command_id=CMD,
                workflow_id=WF,
                name="stats",
                status=QueryStatus.UNKNOWN_QUERY,
                message="no query 'stats'",
                answered_at=AT,
                known_queries=("status",),
            ),
        ),
    },
    "v6": {
        "EventBatch": (
            "batch",
            EventBatch(
                workflow_id=WF,
                command_id=CMD,
                writer="engine-7",
                events=(WorkflowPurged(**ENV, seq=13, reason="retention 7d"),),
            ),
        ),
        "PurgeWorkflow": ("command", PurgeWorkflow(**CENV, last_seq=12)),
        # its history is an EventBatch, whose event union v6 extended
        "QueryWorkflow": (
            "command",
            QueryWorkflow(
                **CENV,
                name="status",
                args=Payload.from_json([]),
                deadline=AT,
                run_id=RUN,
                history=EventBatch(
                    workflow_id=WF, command_id=CMD, writer="api", events=tuple(_EVENTS[:2])
                ),
            ),
        ),
    },
    "v7": {
        "QueryWorkflow": (  # its history is an EventBatch, whose events changed
            "command",
            QueryWorkflow(
                **CENV,
                name="status",
                args=Payload.from_json([]),
                deadline=AT,
                run_id=RUN,
                history=EventBatch(
                    workflow_id=WF,
                    command_id=CMD,
                    writer="api",
                    events=(
                        RecordPublished(
                            **ENV,
                            seq=2,
                            publish_id="pub-1",
                            topic="order-shipped",
                            key=None,
                            value=DOC,
                            value_format="json",
                        ),
                    ),
                ),
            ),
        ),
        "EventBatch": (
            "batch",
            EventBatch(
                workflow_id=WF,
                command_id=CMD,
                writer="engine-7",
                events=(
                    WorkflowStarted(
                        **ENV,
                        seq=1,
                        workflow_type="Order",
                        input=DOC,
                        first_run_id="run-0",
                        previous_run_id="run-0",
                        carried_children=(
                            CarriedChild(
                                child_workflow_id="child-1",
                                child_workflow_type="Ship",
                                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                                origin_run_id="run-0",
                            ),
                        ),
                    ),
                    RecordPublished(
                        **ENV,
                        seq=2,
                        publish_id="pub-1",
                        topic="order-shipped",
                        key="order-7",
                        value=DOC,
                        value_format="avro/confluent",
                        headers=(PublishHeader(name="trace", value="t-1"),),
                    ),
                ),
            ),
        ),
        "SignalWithStartWorkflow": (
            "command",
            SignalWithStartWorkflow(
                **CENV,
                workflow_type="Order",
                input=DOC,
                signal_name="paid",
                signal_payload=Payload.from_json({"amount": 10}),
                id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
            ),
        ),
        "ScheduleRecord": (
            "schedule",
            ScheduleRecord(
                schedule_id="nightly",
                workflow_type="Order",
                input=DOC,
                cron="0 3 * * *",
                overlap=OverlapPolicy.BUFFER_ONE,
                jitter_ms=5000,
                catchup_window_ms=120_000,
                note="the nightly run",
                not_before=AT,
                updated_at=AT,
            ),
        ),
        "ScheduleTrigger": (
            "schedule",
            ScheduleTrigger(schedule_id="nightly", request_id="req-1", requested_at=AT),
        ),
        "ScheduleState": (
            "schedule_state",
            ScheduleState(
                schedule_id="nightly",
                last_fire=AT,
                next_fire=AT,
                started=3,
                skipped=1,
                missed=2,
                buffered=AT,
                running=(
                    ScheduledRun(
                        workflow_id="nightly-2026-01-01T03:00:00Z",
                        command_id=CMD,
                        nominal_at=AT,
                        events_offset=41,
                        replies_offset=7,
                    ),
                ),
                last_started="nightly-2026-01-01T03:00:00Z",
                updated_at=AT,
            ),
        ),
    },
}


def read_fixture(path: Path) -> bytes:
    """A fixture's bytes (hex, whitespace ignored)."""
    return bytes.fromhex("".join(path.read_text(encoding="ascii").split()))


CASES = [
    (release, name, method, expected)
    for release, fixtures in EXPECTED.items()
    for name, (method, expected) in fixtures.items()
]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


@pytest.mark.parametrize(
    ("release", "name", "method", "expected"), CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES]
)
def test_fixture_decodes_to_expected(
    codec: Codec, release: str, name: str, method: str, expected: object
) -> None:
    data = read_fixture(FIXTURES / release / f"{name}.hex")
    decoded = getattr(codec, f"decode_{method}")(data)
    assert decoded == expected
    assert type(decoded) is type(expected)


def test_every_fixture_file_is_expected() -> None:
    on_disk = {(p.parent.name, p.stem) for p in FIXTURES.glob("v*/*.hex")}
    assert on_disk == {(release, name) for release, name, _, _ in CASES}


def test_every_release_covers_every_kafka_value_type_it_changed(codec: Codec) -> None:
    """A release has a fixture for each Kafka value type whose schema it introduced or
    changed (an unchanged schema keeps its fingerprint: its older fixture covers it)."""
    top_level = {
        "EventBatch",
        "StartWorkflow",
        "SignalWorkflow",
        "CancelWorkflow",
        "TerminateWorkflow",
        "RecordChildTerminal",
        "FireTimer",
        "CommandRefused",
        "RecordActivityStarted",
        "RecordActivityHeartbeat",
        "CompleteActivity",
        "FailActivityAttempt",
        "ActivityTask",
        "CancelActivityTask",
        "MoveWorkflow",
        "PackageRecord",
        "RouteRecord",
        "QueryWorkflow",
        "QueryAnswer",
        "PurgeWorkflow",
        "SignalWithStartWorkflow",
        "ScheduleRecord",
        "ScheduleTrigger",
        "ScheduleState",
    }
    introduced = {
        (info.version, info.full_name.rsplit(".", 1)[-1])
        for info in codec.registry.fingerprints().values()
    }
    for release, fixtures in EXPECTED.items():
        new_here = {name for version, name in introduced if version == release} & top_level
        assert new_here <= {name.split("-")[0] for name in fixtures}, release
    assert {name for _, name in introduced} >= top_level


def test_fixtures_name_the_release_they_were_written_with(codec: Codec) -> None:
    for release, name, _, _ in CASES:
        data = read_fixture(FIXTURES / release / f"{name}.hex")
        info = codec.registry.by_fingerprint(data[2:10])
        assert info is not None
        assert info.version == release


def test_old_fixtures_resolve_against_a_newer_release(tmp_path: Path) -> None:
    """A next release whose schemas differ (int attempt promoted to long) still reads every
    released record."""
    from aion_common.codecs import SchemaRegistry, locate_schemas_dir

    source = locate_schemas_dir()
    releases = sorted((p for p in source.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    newest = releases[-1]
    following = f"v{int(newest.name[1:]) + 1}"
    for release in releases:
        (tmp_path / release.name).mkdir()
        for avsc in release.glob("*.avsc"):
            (tmp_path / release.name / avsc.name).write_bytes(avsc.read_bytes())
    (tmp_path / following).mkdir()
    for avsc in newest.glob("*.avsc"):
        text = avsc.read_text(encoding="utf-8").replace(
            '"name": "attempt", "type": "int"', '"name": "attempt", "type": "long"'
        )
        (tmp_path / following / avsc.name).write_text(text, encoding="utf-8")
    registry = SchemaRegistry.load(tmp_path)
    batch = registry.current("aion.v1.EventBatch")
    assert batch.version == following
    assert (
        batch.fingerprint != SchemaRegistry.load(source).current("aion.v1.EventBatch").fingerprint
    )
    newer = Codec(registry)
    for release, name, method, expected in CASES:
        data = read_fixture(FIXTURES / release / f"{name}.hex")
        assert getattr(newer, f"decode_{method}")(data) == expected
        assert (
            getattr(newer, f"decode_{method}")(getattr(newer, f"encode_{method}")(expected))
            == expected
        )
