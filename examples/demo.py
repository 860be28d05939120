"""The cases ``aion dev --demo`` runs: every example, with what it must end as.

Each :class:`DemoCase` names a workflow to start, the steps to take while it runs (a signal or a
cancellation, ``after_s`` seconds after the start), the status it must end with, a check of its
result (or error message) and how many children it must have recorded. Workflow time is kept
short — the whole demo needs a few seconds of timers, well under 30 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from examples.fanout import expected_result

__all__ = ["DemoCase", "Step", "cases"]

CANCEL_REASON = "demo: the customer withdrew the request"


@dataclass(frozen=True)
class Step:
    """Something the demo does to a running workflow ``after_s`` seconds after starting it."""

    after_s: float
    kind: Literal["signal", "cancel"]
    name: str | None = None
    payload: Any = None
    reason: str | None = None


@dataclass(frozen=True)
class DemoCase:
    """One workflow the demo runs and what it must produce."""

    name: str
    workflow_type: str
    workflow_id: str
    input: Any
    expect_status: str  # "completed" | "failed" | "cancelled" | "timed_out"
    check: Callable[[Any], str | None]  # result or error message -> None, else the problem
    expect_children: int
    steps: tuple[Step, ...] = ()
    expect_activities: int | None = None  # activities completed, when the case has them


def _expect(what: str, actual: Any, wanted: Any) -> str | None:
    return None if actual == wanted else f"{what}: expected {wanted!r}, got {actual!r}"


def _first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p is not None), None)


def _field(result: Any, key: str) -> Any:
    return result.get(key) if isinstance(result, dict) else None


def _order_retried(result: Any) -> str | None:
    invoice = Path(str(_field(result, "invoice") or ""))
    return _first_problem(
        _expect("status", _field(result, "status"), "shipped"),
        _expect("payment attempts", _field(result, "payment_attempts"), 2),
        None
        if str(_field(result, "tracking") or "").startswith("TRK-")
        else f"no tracking number in {result!r}",
        None if invoice.is_file() else f"no invoice written at {invoice}",
    )


def _order_declined(message: Any) -> str | None:
    if isinstance(message, str) and message.startswith("PaymentDeclined:"):
        return None
    return f"expected a PaymentDeclined error, got {message!r}"


def _fanout(result: Any) -> str | None:
    expected = expected_result()
    if result == expected:
        return None
    return _first_problem(
        _expect("succeeded", _field(result, "succeeded"), expected["succeeded"]),
        _expect("failed", _field(result, "failed"), expected["failed"]),
        _expect("total", _field(result, "total"), expected["total"]),
        f"unexpected result {result!r}",
    )


def _poller(result: Any) -> str | None:
    return _first_problem(
        _expect("polls", _field(result, "polls"), 3),
        _expect("ready", _field(result, "ready"), True),
    )


def _approved(result: Any) -> str | None:
    return _first_problem(
        _expect("status", _field(result, "status"), "approved"),
        _expect("by", _field(result, "by"), "demo-reviewer"),
    )


def _expired(result: Any) -> str | None:
    return _first_problem(
        _expect("status", _field(result, "status"), "expired"),
        _expect("outcome", _field(result, "outcome"), "rejected"),
    )


def _cancelled(message: Any) -> str | None:
    if isinstance(message, str) and CANCEL_REASON in message:
        return None
    return f"expected the cancellation reason {CANCEL_REASON!r}, got {message!r}"


def cases(run_tag: str) -> list[DemoCase]:
    """Every demo case, with workflow ids unique to ``run_tag`` (so reruns never collide)."""
    return [
        DemoCase(
            name="order: payment retried, then shipped",
            workflow_type="examples.order",
            workflow_id=f"demo-{run_tag}-order-retried",
            input={"order_id": "A-1001", "amount": 4200, "fail_payment_attempts": 1},
            expect_status="completed",
            check=_order_retried,
            expect_children=0,
            expect_activities=3,  # charge (its first attempt failed), ship, write_invoice
        ),
        DemoCase(
            name="order: payment declined on every attempt",
            workflow_type="examples.order",
            workflow_id=f"demo-{run_tag}-order-declined",
            input={
                "order_id": "A-1002",
                "amount": 990,
                "fail_payment_attempts": 9,
                "max_payment_attempts": 2,
            },
            expect_status="failed",
            check=_order_declined,
            expect_children=0,
            expect_activities=0,  # the charge failed both attempts
        ),
        DemoCase(
            name="fan-out: 50 children, mixed outcomes aggregated",
            workflow_type="examples.fanout",
            workflow_id=f"demo-{run_tag}-fanout",
            input={"items": 50, "fail_every": 7},
            expect_status="completed",
            check=_fanout,
            expect_children=50,
        ),
        DemoCase(
            name="poller: three polls, continuing as new",
            workflow_type="examples.poller",
            workflow_id=f"demo-{run_tag}-poller",
            input={"ready_after": 3, "interval": 0.3},
            expect_status="completed",
            check=_poller,
            expect_children=0,
        ),
        DemoCase(
            name="approval: approved by a signal",
            workflow_type="examples.approval",
            workflow_id=f"demo-{run_tag}-approval-approved",
            input={"request": "expense #77", "timeout": 15},
            expect_status="completed",
            check=_approved,
            expect_children=0,
            steps=(
                Step(
                    after_s=0.5,
                    kind="signal",
                    name="decision",
                    payload={"approved": True, "by": "demo-reviewer"},
                ),
            ),
        ),
        DemoCase(
            name="approval: no decision before the timeout",
            workflow_type="examples.approval",
            workflow_id=f"demo-{run_tag}-approval-expired",
            input={"request": "expense #78", "timeout": 1.5},
            expect_status="completed",
            check=_expired,
            expect_children=0,
        ),
        DemoCase(
            name="cancellation: reaches the parent and its children",
            workflow_type="examples.cancellation",
            workflow_id=f"demo-{run_tag}-cancellation",
            input={"workers": 3},
            expect_status="cancelled",
            check=_cancelled,
            expect_children=3,
            steps=(Step(after_s=1.0, kind="cancel", reason=CANCEL_REASON),),
        ),
    ]
