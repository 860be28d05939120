"""Replay checks: does this code replay that history? (``aion replay``, ``aion.testing``).

A workflow's history (every run of it, as the API serves it or as saved to a file) is split
into runs, and each run is replayed against the code of its type in a package, exactly as an
engine rebuilding the run would: the same decisions in the same order, or the first divergence
with its event seq, what the history holds, what the code did, and the line of the code that
did it. A run that is blocked (waiting for a fix) may go further than its history: the new
code's extra decisions are what moving it would record, not a divergence.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from aion_common.codecs.event_json import decode_event
from aion_common.domain import (
    Event,
    Failed,
    InvalidInput,
    NonDeterminism,
    WorkflowBlocked,
    WorkflowMoved,
    WorkflowStarted,
)
from aion_common.packages import Package, PackageLoader
from aion_engine import _sandbox
from aion_engine._executor import Finish
from aion_engine._replay import replay_run
from aion_engine.blocking import blocks_run
from aion_engine.registry import WorkflowFn, WorkflowRegistry

__all__ = [
    "RunReplay",
    "WorkflowReplay",
    "events_from_json",
    "load_package",
    "replay_history",
]

Lookup = Callable[[str], WorkflowFn | None]


@dataclass(frozen=True, slots=True)
class RunReplay:
    """The outcome of replaying one run."""

    run_id: str
    workflow_type: str
    events: int
    divergence: NonDeterminism | None = None
    problem: str | None = None
    """Why the run could not be replayed at all (the package lacks its type, its code raised
    before any decision could be compared)."""

    @property
    def ok(self) -> bool:
        """Whether the code replays the run."""
        return self.divergence is None and self.problem is None

    def describe(self) -> str:
        """One line: ``matches``, or where and how it diverges."""
        if self.problem is not None:
            return self.problem
        if self.divergence is not None:
            return f"diverges at seq {self.divergence.seq}: {self.divergence.detail}"
        return f"matches ({self.events} events)"


@dataclass(frozen=True, slots=True)
class WorkflowReplay:
    """The outcome of replaying every run of one workflow."""

    workflow_id: str
    runs: tuple[RunReplay, ...]

    @property
    def ok(self) -> bool:
        """Whether every run replays."""
        return all(run.ok for run in self.runs)

    @property
    def first_failure(self) -> RunReplay | None:
        """The first run that does not replay."""
        return next((run for run in self.runs if not run.ok), None)


def events_from_json(document: Any) -> list[Event]:
    """Events from the API's history JSON: a page (``{"workflow_id", "events": [...]}``, what
    ``aion history --json`` prints and a test may save to a file) or a list of pages' events.
    Raises :class:`InvalidInput` naming the entry that is not an event."""
    if isinstance(document, dict):
        workflow_id = document.get("workflow_id")
        entries = document.get("events")
    else:
        workflow_id, entries = None, document
    if not isinstance(entries, list):
        raise InvalidInput("a history is a JSON object with an 'events' list (aion history --json)")
    events: list[Event] = []
    for index, entry in enumerate(entries):
        try:
            events.append(
                decode_event(
                    entry["event_type"],
                    workflow_id=entry.get("workflow_id", workflow_id),
                    run_id=entry["run_id"],
                    seq=int(entry["seq"]),
                    recorded_at=datetime.fromisoformat(entry["recorded_at"]),
                    command_id=entry.get("command_id", ""),
                    body=orjson.dumps(entry.get("fields", {})).decode(),
                )
            )
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as err:
            raise InvalidInput(f"history entry {index} is not an aion event: {err!r}") from err
    return events


def load_package(package: Package, directory: Path | None = None) -> dict[str, WorkflowFn]:
    """The workflows a package defines, loaded in a namespace of their own (as an engine loads
    it). ``directory`` holds the unpacked files (default: a new temporary directory)."""
    _sandbox.install()
    where = directory or Path(tempfile.mkdtemp(prefix="aion-replay-"))
    registry = WorkflowRegistry()
    for module in PackageLoader(where).load(package):
        registry.add_module(module)
    return {t: fn for t in registry.types() if (fn := registry.get(t)) is not None}


def replay_history(
    events: Sequence[Event], workflows: Mapping[str, WorkflowFn] | Lookup
) -> WorkflowReplay:
    """Replay every run in ``events`` (one workflow's history, in seq order) against
    ``workflows`` (type -> code)."""
    _sandbox.install()
    lookup: Lookup = workflows.get if isinstance(workflows, Mapping) else workflows
    runs = _runs(events)
    if not runs:
        raise InvalidInput("the history holds no run (no WorkflowStarted event)")
    return WorkflowReplay(
        workflow_id=runs[0][0].workflow_id,
        runs=tuple(_replay_one(segment, lookup) for segment in runs),
    )


def _runs(events: Iterable[Event]) -> list[list[Event]]:
    runs: list[list[Event]] = []
    for event in sorted(events, key=lambda e: e.seq):
        if isinstance(event, WorkflowStarted):
            runs.append([event])
        elif runs:
            runs[-1].append(event)
    return runs


def _replay_one(segment: list[Event], lookup: Lookup) -> RunReplay:
    started = segment[0]
    if not isinstance(started, WorkflowStarted):  # _runs opens every segment with one
        raise InvalidInput("a run's history starts with WorkflowStarted")
    run = RunReplay(started.run_id, started.workflow_type, len(segment))
    fn = lookup(started.workflow_type)
    if fn is None:
        return RunReplay(
            run.run_id,
            run.workflow_type,
            run.events,
            problem=f"the code defines no workflow type {started.workflow_type!r}",
        )
    try:
        executor = replay_run(fn, segment, pending_ok=_blocked_at_end(segment), trace=True)
    except NonDeterminism as err:
        return RunReplay(run.run_id, run.workflow_type, run.events, divergence=err)
    problem = None
    while (decision := executor.take_decision()) is not None:
        # decisions past the end of a blocked run's history: what moving it would do next
        if isinstance(decision, Finish) and isinstance(decision.outcome, Failed):
            error = decision.outcome.error
            if blocks_run(error, first_decision=executor.decisions_taken == 1):
                problem = f"the code would block the run again: {error.message}"
            break
    executor.close()
    if problem is not None:
        return RunReplay(run.run_id, run.workflow_type, run.events, problem=problem)
    return run


def _blocked_at_end(segment: Sequence[Event]) -> bool:
    """Whether the run's last word is that it is blocked (not moved on since)."""
    for event in reversed(segment):
        if isinstance(event, WorkflowMoved):
            return False
        if isinstance(event, WorkflowBlocked):
            return True
    return False
