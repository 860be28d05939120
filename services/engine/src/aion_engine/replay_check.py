"""Replay checks: does this code replay that history? (``aion replay``, ``aion.testing``).

A workflow's history (every run of it, as the API serves it or as saved to a file) is split
into runs, and each run is replayed against the code of its type in a package, exactly as an
engine rebuilding the run would: the same decisions in the same order, or the first divergence
with its event seq, what the history holds, what the code did, and the line of the code that
did it. A run that is blocked (waiting for a fix) may go further than its history: the new
code's extra decisions are what moving it would record, not a divergence.
"""

from __future__ import annotations

import argparse
import json
import sys
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
from aion_common.packages import Package, PackageLoader, build_package
from aion_engine import _sandbox
from aion_engine._executor import Finish
from aion_engine._replay import replay_run
from aion_engine.blocking import blocks_run
from aion_engine.registry import WorkflowFn, WorkflowRegistry, load_modules

__all__ = [
    "RunReplay",
    "WorkflowReplay",
    "events_from_json",
    "load_package",
    "main",
    "outcome_json",
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


def outcome_json(outcome: WorkflowReplay) -> dict[str, Any]:
    """An outcome as the JSON ``python -m aion_engine.replay_check --json`` prints."""
    return {
        "workflow_id": outcome.workflow_id,
        "ok": outcome.ok,
        "runs": [
            {
                "run_id": r.run_id,
                "workflow_type": r.workflow_type,
                "events": r.events,
                "ok": r.ok,
                "seq": None if r.divergence is None else r.divergence.seq,
                "detail": None if r.divergence is None else r.divergence.detail,
                "source": None if r.divergence is None else r.divergence.source,
                "problem": r.problem,
                "describe": r.describe(),
            }
            for r in outcome.runs
        ],
    }


def _code(args: argparse.Namespace, scratch: Path) -> dict[str, WorkflowFn]:
    if args.package is not None:
        data = Path(args.package).read_bytes()
        return load_package(Package.from_archive(data, limit=len(data)), scratch)
    if args.path is not None:
        return load_package(build_package(Path(args.path)), scratch)
    registry = WorkflowRegistry()
    load_modules(args.workflows, registry)
    return {t: fn for t in registry.types() if (fn := registry.get(t)) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aion_engine.replay_check --history FILE… (--package ZIP | --path PATH |
    --workflows MODULE…) [--json]``: replay saved histories against code; exit 0 when every
    run replays, 1 when one does not, 2 when the input is unusable. ``aion replay`` and
    ``aion.testing.replay`` run it (the ``aion`` distribution does not import the engine)."""
    parser = argparse.ArgumentParser(prog="python -m aion_engine.replay_check")
    parser.add_argument("--history", action="append", required=True, metavar="FILE")
    code = parser.add_mutually_exclusive_group(required=True)
    code.add_argument("--package", metavar="ZIP", help="a package archive")
    code.add_argument("--path", help="a module file, package or project directory")
    code.add_argument("--workflows", action="append", metavar="MODULE", help="importable")
    parser.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="aion-replay-") as scratch:
            workflows = _code(args, Path(scratch))
            outcomes = [
                replay_history(
                    events_from_json(json.loads(Path(f).read_text(encoding="utf-8"))), workflows
                )
                for f in args.history
            ]
    except (InvalidInput, OSError, ValueError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps([outcome_json(o) for o in outcomes]) + "\n")
    else:
        for outcome in outcomes:
            for run in outcome.runs:
                mark = "ok  " if run.ok else "FAIL"
                sys.stdout.write(
                    f"{mark} {outcome.workflow_id} run {run.run_id} ({run.workflow_type}): "
                    f"{run.describe()}\n"
                )
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
