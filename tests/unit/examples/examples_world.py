"""The engine's broker-free test world, driven on a clock for the example workflows.

``World`` (from ``tests/unit/engine/engine_harness.py``) runs :class:`EngineCore` in memory and
plays the watcher; :func:`run` adds a clock: scheduled steps (signals, cancellations) and the
timers the workflows set are applied in time order until nothing is left to do.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve()
sys.path.insert(0, str(_HERE.parents[1] / "engine"))  # the engine's test harness
if str(_HERE.parents[3]) not in sys.path:
    sys.path.insert(0, str(_HERE.parents[3]))  # the repository root, home of `examples`

import examples  # noqa: E402
from engine_harness import T0, World  # noqa: E402
from examples.order import OUTBOX_ENV  # noqa: E402

from aion_common.domain import (  # noqa: E402
    ActivityTask,
    Event,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTimedOut,
)
from aion_engine import WorkflowRegistry, load_modules  # noqa: E402
from aion_worker.attempt import Attempt  # noqa: E402
from aion_worker.registry import ActivityRegistry  # noqa: E402
from aion_worker.registry import load_modules as load_activities  # noqa: E402

_ACTIVITIES = ActivityRegistry()
load_activities([examples.__name__], _ACTIVITIES)
# the order example writes invoices: into a directory of this test session's own
os.environ.setdefault(OUTBOX_ENV, tempfile.mkdtemp(prefix="aion-outbox-"))

__all__ = ["T0", "At", "World", "children", "new_world", "outcome", "run"]


def new_world(max_resident: int = 10_000) -> World:
    """A world whose engine has every example loaded."""
    registry = WorkflowRegistry()
    load_modules([examples.__name__], registry)
    return World(registry, max_resident=max_resident)


@dataclass(frozen=True)
class At:
    """A step ``after_s`` seconds after the start: ``signal`` (name, payload) or ``cancel``."""

    after_s: float
    kind: str
    name: str | None = None
    payload: Any = None
    reason: str | None = None


def run_activities(world: World, done: set[int]) -> None:
    """Play ``aion worker``: run every activity task not run yet (the real functions, against
    the example shop), and report each outcome to the core at the world's time."""
    with ThreadPoolExecutor(4) as threads:
        while pending := [
            (i, t)
            for i, (_, t) in enumerate(world.tasks)
            if i not in done and isinstance(t, ActivityTask)
        ]:
            for index, task in pending:
                done.add(index)
                attempt = Attempt(
                    task,
                    _ACTIVITIES.get(task.activity_type),
                    known=_ACTIVITIES.names(),
                    worker="examples-world",
                    threads=threads,
                    payload_limit=1 << 20,
                    on_heartbeat=lambda _details: None,
                )
                outcome = asyncio.run(attempt.run())
                if not outcome.abandoned:
                    world.send(outcome.report(task))


def run(
    world: World, workflow_id: str, workflow_type: str, value: Any, steps: tuple[Any, ...] = ()
) -> None:
    """Start the workflow, then run its activities, apply steps and fire timers in time order
    until quiescent."""
    world.start(workflow_id, workflow_type, value)
    pending = sorted(steps, key=lambda s: s.after_s)
    fired: set[str] = set()
    ran: set[int] = set()
    while True:
        run_activities(world, ran)
        timers = sorted(
            (r for key, r in world.timers.items() if key not in fired),
            key=lambda r: (r.fire_at, r.command.command_id),
        )
        step_at = T0 + timedelta(seconds=pending[0].after_s) if pending else None
        if timers and (step_at is None or timers[0].fire_at <= step_at):
            fired.add(timers[0].command.command_id)
            world.fire(timers[0])
        elif pending:
            step = pending.pop(0)
            world.now = max(world.now, T0 + timedelta(seconds=step.after_s))
            if step.kind == "signal":
                world.signal(workflow_id, step.name, step.payload)
            else:
                world.cancel(workflow_id, step.reason or "")
        else:
            return


def outcome(world: World, workflow_id: str) -> tuple[str, Any]:
    """``(status, result or error message)`` of the workflow's last run, as the demo sees it."""
    last: Event = world.history(workflow_id)[-1]
    match last:
        case WorkflowCompleted(result=result):
            return "completed", result.to_json()
        case WorkflowFailed(error=error):
            return "failed", error.message
        case WorkflowCancelled(reason=reason):
            return "cancelled", reason
        case WorkflowTimedOut(timeout=timeout):
            return "timed_out", timeout
        case _:
            return "running", type(last).__name__


def children(world: World, workflow_id: str) -> list[str]:
    """Ids of every workflow whose (first) run names ``workflow_id`` as its parent."""
    found = []
    for child_id, history in world.histories.items():
        started = history[0]
        parent = started.parent if isinstance(started, WorkflowStarted) else None
        if parent is not None and parent.workflow_id == workflow_id:
            found.append(child_id)
    return sorted(found)
