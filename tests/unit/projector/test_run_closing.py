"""How a terminal event closes its run's row: one mapping for the projector and the API's
result answers (decision 64)."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

import pytest

from aion_common.domain import (
    TERMINAL_EVENT_TYPES,
    Payload,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowTimedOut,
)
from aion_projector.changes import ClosingEvent, run_closing

T = datetime(2026, 12, 6, tzinfo=UTC)
_COMMON = {"workflow_id": "w", "run_id": "r", "seq": 3, "recorded_at": T, "command_id": "c"}


def test_every_terminal_event_type_is_a_closing_event() -> None:
    assert set(typing.get_args(ClosingEvent)) == set(TERMINAL_EVENT_TYPES)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            WorkflowCompleted(**_COMMON, result=Payload.from_json({"n": 1})),
            {"status": "COMPLETED", "result": '{"n":1}'},
        ),
        (
            WorkflowFailed(
                **_COMMON,
                error=WorkflowError(message="boom", error_type="ValueError", traceback="tb"),
            ),
            {
                "status": "FAILED",
                "error_message": "boom",
                "error_type": "ValueError",
                "error_traceback": "tb",
            },
        ),
        (
            WorkflowCancelled(**_COMMON, reason="not needed"),
            {"status": "CANCELLED", "error_message": "not needed"},
        ),
        (
            WorkflowTimedOut(**_COMMON, timeout="run_timeout"),
            {"status": "TIMED_OUT", "error_message": "run_timeout"},
        ),
        (
            WorkflowContinuedAsNew(
                **_COMMON, next_run_id="r2", workflow_type="t", input=Payload.from_json(1)
            ),
            {"status": "CONTINUED_AS_NEW", "next_run_id": "r2"},
        ),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__),
)
def test_run_closing_sets_the_rows_columns(event: ClosingEvent, expected: dict[str, str]) -> None:
    columns = run_closing(event).columns()
    assert columns["closed_at"] == T
    for name in ("result", "error_message", "error_type", "error_traceback", "next_run_id"):
        assert columns[name] == expected.get(name), name
    assert columns["status"] == expected["status"]
