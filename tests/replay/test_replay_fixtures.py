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
    Cancelled,
    CancelRequested,
    CancelWorkflow,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    CommandRefused,
    Completed,
    ContinuedAsNew,
    EventBatch,
    Failed,
    FireTimer,
    IdReusePolicy,
    ParentClosePolicy,
    ParentLink,
    Payload,
    RecordChildTerminal,
    RefusalCode,
    SignalReceived,
    SignalWorkflow,
    StartWorkflow,
    TerminateWorkflow,
    TimedOut,
    TimerFired,
    TimerScheduled,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
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


def test_every_release_covers_every_kafka_value_type() -> None:
    top_level = {
        "EventBatch",
        "StartWorkflow",
        "SignalWorkflow",
        "CancelWorkflow",
        "TerminateWorkflow",
        "RecordChildTerminal",
        "FireTimer",
        "CommandRefused",
    }
    for release, fixtures in EXPECTED.items():
        assert top_level <= set(fixtures), release


def test_fixtures_name_the_release_they_were_written_with(codec: Codec) -> None:
    for release, name, _, _ in CASES:
        data = read_fixture(FIXTURES / release / f"{name}.hex")
        info = codec.registry.by_fingerprint(data[2:10])
        assert info is not None
        assert info.version == release


def test_old_fixtures_resolve_against_a_newer_release(tmp_path: Path) -> None:
    """A v2 whose schemas differ (int attempt promoted to long) still reads v1 records."""
    from aion_common.codecs import SchemaRegistry, locate_schemas_dir

    source = locate_schemas_dir()
    for release in ("v1", "v2"):
        (tmp_path / release).mkdir()
        for avsc in (source / "v1").glob("*.avsc"):
            text = avsc.read_text(encoding="utf-8")
            if release == "v2":
                text = text.replace(
                    '"name": "attempt", "type": "int"', '"name": "attempt", "type": "long"'
                )
            (tmp_path / release / avsc.name).write_text(text, encoding="utf-8")
    registry = SchemaRegistry.load(tmp_path)
    batch = registry.current("aion.v1.EventBatch")
    assert batch.version == "v2"
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
