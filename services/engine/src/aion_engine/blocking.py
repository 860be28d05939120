"""Blocked runs: code that cannot go on waits for a fix instead of failing its run for good.

A run is blocked when its code cannot be run faithfully: its version does not load (its
package is not here, or does not import), its replay diverges from its history, it does I/O
the sandbox refuses, or it breaks with a defect of the code (a ``NameError``,
``AttributeError``, ``TypeError``…) before its first decision. Ordinary exceptions its logic
raises still fail the run. A blocked run stays open: commands still append their input
events, so nothing is lost while it waits; it goes on when a ``MoveWorkflow`` moves it to a
version whose code replays its history (an operator's ``aion run move``, or a new route or a
package arriving, which the service turns into moves).
"""

from __future__ import annotations

from typing import Final

from aion_common.domain import (
    NonDeterminism,
    WorkflowBlocked,
    WorkflowError,
    WorkflowMoved,
    derive_id,
)
from aion_engine._state import RunState
from aion_engine._work import Work
from aion_engine.versions import Missing

__all__ = ["CODE_DEFECTS", "Problem", "block", "blocks_run", "move_command_id", "moved"]

CODE_DEFECTS: Final = frozenset(
    {
        "NameError",
        "UnboundLocalError",
        "AttributeError",
        "TypeError",
        "ImportError",
        "ModuleNotFoundError",
        "SyntaxError",
        "NotImplementedError",
    }
)
"""Exceptions that say the code is wrong, not the input: before a run's first decision they
block it (a fix can resume it) rather than fail it."""

Problem = Missing | NonDeterminism | WorkflowError


def blocks_run(error: WorkflowError, *, first_decision: bool) -> bool:
    """Whether a failure the code produced blocks its run instead of failing it."""
    if error.error_type == "SandboxViolation":
        return True
    return first_decision and error.error_type in CODE_DEFECTS


def block(work: Work, run: RunState, problem: Problem) -> None:
    """Record that the run's code cannot go on (once: a blocked run is not blocked again)."""
    if run.blocked is not None:
        return
    match problem:
        case Missing(reason=reason, error_type=error_type):
            error = WorkflowError(message=f"{error_type}: {reason}", error_type=error_type)
        case NonDeterminism():
            reason = f"its replay diverged from its history: {problem.detail}"
            error = WorkflowError(message=str(problem), error_type="NonDeterminism")
        case WorkflowError():
            reason = f"its code failed: {problem.message}"
            error = problem
    work.append(WorkflowBlocked(**work.envelope(run.run_id), reason=reason, error=error))


def moved(work: Work, run: RunState, version: str) -> None:
    """Record that the run goes on on ``version``."""
    work.append(
        WorkflowMoved(
            **work.envelope(run.run_id), package_version=version, previous_version=run.version
        )
    )


def move_command_id(workflow_id: str, run_id: str, version: str) -> str:
    """The id of a move the engine issues itself (a route or a package arrived), the same
    from every engine that sees the same change."""
    return derive_id("auto-move", workflow_id, run_id, version)
