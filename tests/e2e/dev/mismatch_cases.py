"""Demo cases for the test of a failing demo: one ends as expected, one does not.

They use the engine's packaged examples (``aion_engine.examples``) and the real ``DemoCase``.
"""

from __future__ import annotations

from typing import Any

from examples.demo import DemoCase


def _receipt(result: Any) -> str | None:
    return None if isinstance(result, dict) and "receipt" in result else f"no receipt: {result!r}"


def cases(run_tag: str) -> list[DemoCase]:
    """A payment that completes as expected, and one expected to complete that fails."""
    return [
        DemoCase(
            name="payment that completes",
            workflow_type="example.payment",
            workflow_id=f"mismatch-{run_tag}-good",
            input={"line": 1, "amount": 5},
            expect_status="completed",
            check=_receipt,
            expect_children=0,
        ),
        DemoCase(
            name="payment wrongly expected to complete",
            workflow_type="example.payment",
            workflow_id=f"mismatch-{run_tag}-bad",
            input={"line": 2, "amount": -1},
            expect_status="completed",
            check=_receipt,
            expect_children=0,
        ),
    ]
