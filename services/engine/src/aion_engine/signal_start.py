"""Signal-with-start, and inputs recorded with a run's start.

``SignalWithStartWorkflow`` signals the workflow's open run, or, when it has none, starts one
(admitted exactly as a ``StartWorkflow`` with the same command id would be) and records the
signal *with the start*: in the same batch, right after ``WorkflowStarted`` (and its timeout
timer), under the start's command id. Signals recorded so are delivered to the run's code
before its first step, live and on replay (:func:`leading_signals`), so the code sees them
whatever it does first — the Temporal behaviour users of the order-events pattern expect.

The same place serves any input a run must hold from its first step: continue-as-new carries a
run's unconsumed signals, and the results of its children it had not awaited, into the next
run this way (``carry``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    Payload,
    SignalReceived,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
    TimerScheduled,
    WorkflowStarted,
)
from aion_engine._state import WorkflowState
from aion_engine.decision import Decision

__all__ = ["LEADING_INPUTS", "Signal", "handle", "leading_inputs"]

Signal = tuple[str, Payload]
"""A signal's name and payload."""


def handle(
    cmd: SignalWithStartWorkflow,
    state: WorkflowState | None,
    *,
    signal: Callable[[SignalWorkflow], Decision],
    start: Callable[[StartWorkflow, Sequence[Signal]], Decision],
) -> Decision:
    """Signal the open run, else start one that holds the signal from its first step."""
    if state is not None and state.open_run is not None:
        return signal(cmd.signal())
    return start(cmd.start(), ((cmd.signal_name, cmd.signal_payload),))


LEADING_INPUTS = (SignalReceived, ChildWorkflowCompleted, ChildWorkflowFailed)
"""The inputs a start may record for its run's first step."""


def leading_inputs(segment: Sequence[Event], timeout_timer: str) -> list[Event]:
    """The inputs recorded with the start of the run ``segment`` opens: the signals and child
    results that follow its ``WorkflowStarted`` (past its execution-timeout timer) under the
    start's command id. Delivered before the code's first step."""
    started = segment[0]
    assert isinstance(started, WorkflowStarted)
    found: list[Event] = []
    for event in segment[1:]:
        if isinstance(event, TimerScheduled) and event.timer_id == timeout_timer:
            continue
        if not isinstance(event, LEADING_INPUTS) or event.command_id != started.command_id:
            break
        found.append(event)
    return found
