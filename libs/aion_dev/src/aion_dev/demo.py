"""``aion dev --demo``: run every demo case against the stack, show progress, sum up.

The cases come from a module (default ``examples.demo``) with ``cases(run_tag) -> list[DemoCase]``;
a case names the workflow to start, steps to take while it runs (signals, a cancellation), the
status it must end with, a check of its result (or error message) and how many children it
must have recorded. Every case starts at once; each result is awaited with the API's long poll.
On a terminal the progress is a live table; otherwise one line per finished case.
"""

from __future__ import annotations

import asyncio
import importlib
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from rich.console import Console
from rich.live import Live
from rich.table import Table

from aion import AionApiError, AionClient, AionClientError, AionUnavailable, WorkflowResult
from aion_dev.stack import Stack

__all__ = ["CaseOutcome", "DemoCaseLike", "Summary", "load_cases", "run_cases", "run_demo"]

CASE_TIMEOUT_S = 180.0
_POLL_S = 20.0
_UNAVAILABLE_RETRY_S = 0.5
T = TypeVar("T")


class StepLike(Protocol):
    """What the demo needs of ``examples.demo.Step``."""

    @property
    def after_s(self) -> float: ...
    @property
    def kind(self) -> Literal["signal", "cancel"]: ...
    @property
    def name(self) -> str | None: ...
    @property
    def payload(self) -> Any: ...
    @property
    def reason(self) -> str | None: ...


class DemoCaseLike(Protocol):
    """What the demo needs of ``examples.demo.DemoCase``."""

    @property
    def name(self) -> str: ...
    @property
    def workflow_type(self) -> str: ...
    @property
    def workflow_id(self) -> str: ...
    @property
    def input(self) -> Any: ...
    @property
    def expect_status(self) -> str: ...
    @property
    def check(self) -> Callable[[Any], str | None]: ...
    @property
    def expect_children(self) -> int: ...
    @property
    def steps(self) -> Sequence[StepLike]: ...


@dataclass(slots=True)
class CaseOutcome:
    """Where one case stands: ``state`` is pending, running, ok or mismatch."""

    case: DemoCaseLike
    state: str = "pending"
    status: str = ""
    children: int = 0
    activities: int = 0
    problem: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The case ended as expected."""
        return self.state == "ok"


@dataclass(frozen=True, slots=True)
class Summary:
    """What the demo prints at the end."""

    started: int
    completed: int
    failed_as_expected: int
    children: int
    children_expected: int
    activities: int
    wall_s: float
    mismatches: tuple[CaseOutcome, ...]

    def lines(self) -> list[str]:
        """The summary as printed."""
        verdict = (
            f"all {self.started} cases ended as expected"
            if not self.mismatches
            else f"{len(self.mismatches)} of {self.started} cases did not end as expected"
        )
        return [
            "demo summary",
            f"  workflows started:  {self.started}",
            f"  completed:          {self.completed}",
            f"  failed as expected: {self.failed_as_expected}",
            f"  children recorded:  {self.children} (expected {self.children_expected})",
            f"  activities done:    {self.activities}",
            f"  wall time:          {self.wall_s:.1f} s",
            verdict,
            *(f"  MISMATCH {o.case.name}: {o.problem}" for o in self.mismatches),
        ]


def load_cases(module_name: str, run_tag: str, search: Sequence[str] = ()) -> list[DemoCaseLike]:
    """Import ``module_name`` (the working directory and ``search`` on the path); its cases."""
    for entry in reversed([str(Path.cwd()), *search]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    module = importlib.import_module(module_name)
    found: list[DemoCaseLike] = list(module.cases(run_tag))
    return found


async def run_demo(stack: Stack, cases_module: str, *, console: Console | None = None) -> int:
    """Run the cases of ``cases_module`` on ``stack``; print progress and a summary; 0 if all ok."""
    out = console or Console(file=sys.stdout, highlight=False)
    run_tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(2)
    cases = load_cases(cases_module, run_tag, stack.config.pythonpath)
    out.print(
        f"aion demo: {len(cases)} cases from {cases_module} (run {run_tag}) on {stack.api_url}"
    )
    async with stack.client(timeout=30) as client:
        summary = await run_cases(client, cases, out)
    for line in summary.lines():
        out.print(line, markup=False, soft_wrap=True)
    return 0 if not summary.mismatches else 1


async def run_cases(client: AionClient, cases: Sequence[DemoCaseLike], out: Console) -> Summary:
    """Start every case at once and wait for each; progress on ``out``; the summary."""
    began = time.monotonic()
    outcomes = [CaseOutcome(case) for case in cases]
    work = asyncio.gather(*(_run_case(client, o, out) for o in outcomes))
    if out.is_terminal:
        with Live(_table(outcomes), console=out, refresh_per_second=4) as live:
            while not work.done():
                live.update(_table(outcomes))
                await asyncio.wait({work}, timeout=0.25)
            live.update(_table(outcomes))
    await work
    return Summary(
        started=len(outcomes),
        completed=sum(o.status == "completed" for o in outcomes),
        failed_as_expected=sum(o.ok and o.case.expect_status != "completed" for o in outcomes),
        children=sum(o.children for o in outcomes),
        children_expected=sum(o.case.expect_children for o in outcomes),
        activities=sum(o.activities for o in outcomes),
        wall_s=time.monotonic() - began,
        mismatches=tuple(o for o in outcomes if not o.ok),
    )


async def _run_case(client: AionClient, outcome: CaseOutcome, out: Console) -> None:
    case = outcome.case
    began = time.monotonic()
    try:
        outcome.problem = await _drive(client, outcome)
    except (AionClientError, TimeoutError) as err:
        outcome.problem = f"{type(err).__name__}: {err}"
    outcome.seconds = time.monotonic() - began
    outcome.state = "ok" if outcome.problem is None else "mismatch"
    if not out.is_terminal:
        mark = "ok" if outcome.ok else "MISMATCH"
        detail = f": {outcome.problem}" if outcome.problem else ""
        out.print(
            f"[{mark}] {case.name} ({outcome.status or 'no status'}, {outcome.children} children, "
            f"{outcome.activities} activities, {outcome.seconds:.1f} s){detail}",
            markup=False,
            soft_wrap=True,
        )


async def _drive(client: AionClient, outcome: CaseOutcome) -> str | None:
    case = outcome.case
    deadline = time.monotonic() + CASE_TIMEOUT_S
    # request_id makes a retried start (the API was restarting) start nothing new.
    await _retrying(
        lambda: client.start(
            case.workflow_type, case.input, id=case.workflow_id, request_id=case.workflow_id
        ),
        deadline,
    )
    outcome.state = "running"
    steps = [asyncio.create_task(_step(client, case.workflow_id, s)) for s in case.steps]
    try:
        result = await _closed(client, case.workflow_id, deadline)
    finally:
        for task in steps:
            if not task.done():
                task.cancel()
    step_problems = [p for p in await asyncio.gather(*steps, return_exceptions=True) if p]
    outcome.status = result.status.lower()
    described = await _retrying(lambda: client.describe(case.workflow_id), deadline)
    outcome.children = len(described.children)
    history = await _retrying(lambda: client.history(case.workflow_id, limit=1000), deadline)
    outcome.activities = sum(e.event_type == "ActivityCompleted" for e in history.events)
    expect_activities = getattr(case, "expect_activities", None)
    if result.status.lower() != case.expect_status.lower():
        return f"ended {outcome.status} ({result.error_message}), expected {case.expect_status}"
    value = result.result if outcome.status == "completed" else result.error_message
    problem = case.check(value)
    if problem is None and outcome.children != case.expect_children:
        problem = f"recorded {outcome.children} children, expected {case.expect_children}"
    if problem is None and expect_activities not in (None, outcome.activities):
        problem = f"completed {outcome.activities} activities, expected {expect_activities}"
    if problem is None and step_problems:
        problem = "; ".join(str(p) for p in step_problems)
    return problem


async def _step(client: AionClient, workflow_id: str, step: StepLike) -> str | None:
    await asyncio.sleep(step.after_s)
    deadline = time.monotonic() + CASE_TIMEOUT_S
    request_id = f"{workflow_id}/{step.kind}/{step.name}/{step.after_s}"
    try:
        if step.kind == "signal":
            name = step.name or ""
            await _retrying(
                lambda: client.signal(workflow_id, name, step.payload, request_id=request_id),
                deadline,
            )
        else:
            reason = step.reason or ""
            await _retrying(
                lambda: client.cancel(workflow_id, reason, request_id=request_id), deadline
            )
    except AionClientError as err:
        return f"{step.kind} step failed: {err}"
    return None


async def _closed(client: AionClient, workflow_id: str, deadline: float) -> WorkflowResult:
    """Long-poll until the workflow closes; not-found just means the views lag the start."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{workflow_id} did not close within {CASE_TIMEOUT_S:.0f} s")
        try:
            result = await client.result(workflow_id, wait=min(_POLL_S, remaining))
        except AionUnavailable:  # the API is restarting: its supervisor brings it back
            await asyncio.sleep(_UNAVAILABLE_RETRY_S)
            continue
        except AionApiError as err:
            if err.status != 404:  # noqa: PLR2004
                raise
            await asyncio.sleep(0.1)
            continue
        if result.closed:
            return result


async def _retrying(call: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``call()``, again while the API is unreachable (restarting), until ``deadline``."""
    while True:
        try:
            return await call()
        except AionUnavailable:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(_UNAVAILABLE_RETRY_S)


def _table(outcomes: Sequence[CaseOutcome]) -> Table:
    table = Table(title="aion demo", expand=False)
    for column in ("case", "workflow", "state", "status", "children", "s"):
        table.add_column(column)
    styles = {"ok": "green", "mismatch": "bold red", "running": "yellow", "pending": "dim"}
    for o in outcomes:
        table.add_row(
            o.case.name,
            o.case.workflow_type,
            f"[{styles[o.state]}]{o.state}[/]",
            o.status,
            f"{o.children}/{o.case.expect_children}",
            f"{o.seconds:.1f}" if o.seconds else "",
        )
    return table
