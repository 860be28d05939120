"""Micro-benchmark of the engine's pure core (no Kafka): ``python -m aion_engine.core_bench``.

Each workflow is a parent that executes one child: StartWorkflow(parent) → child scheduled;
StartWorkflow(child) → child completes; RecordChildTerminal(parent) → parent completes.
Prints one JSON object per line: ``{"bench", "metric", "value", "unit"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from aion.workflow import WorkflowContext
from aion_common.domain import (
    Command,
    EventBatch,
    Payload,
    RecordChildTerminal,
    StartWorkflow,
    WorkflowStarted,
    outcome_of,
)
from aion_engine.core import EngineCore
from aion_engine.registry import WorkflowRegistry

__all__ = ["main"]

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()

    @registry.defn("bench.parent")
    async def parent(ctx: WorkflowContext, value: Any) -> Any:
        return await ctx.execute_child("bench.child", value)

    @registry.defn("bench.child")
    async def child(ctx: WorkflowContext, value: Any) -> Any:
        return value

    return registry


def _drive(core: EngineCore, workflows: int) -> tuple[int, int, list[EventBatch]]:
    """Run every workflow to completion; returns (commands, events, batches)."""
    commands = events = 0
    batches: list[EventBatch] = []
    value = Payload.from_json({"n": 1})
    for index in range(workflows):
        queue: list[Command] = [
            StartWorkflow(
                command_id=f"start-{index}",
                issued_at=_NOW,
                workflow_id=f"wf-{index}",
                workflow_type="bench.parent",
                input=value,
            )
        ]
        while queue:
            decision = core.handle(queue.pop(), now=_NOW)
            commands += 1
            queue.extend(decision.outgoing)
            batch = decision.batch
            if batch is None:
                continue
            batches.append(batch)
            events += len(batch.events)
            record = _watch(batch)
            if record is not None:
                queue.append(record)
    return commands, events, batches


def _watch(batch: EventBatch) -> RecordChildTerminal | None:
    started = batch.events[0]
    last = batch.events[-1]
    outcome = outcome_of(last)
    if not isinstance(started, WorkflowStarted) or started.parent is None or outcome is None:
        return None
    parent = started.parent
    return RecordChildTerminal.of(
        parent.workflow_id,
        parent.run_id,
        child_workflow_id=batch.workflow_id,
        child_run_id=started.run_id,
        outcome=outcome,
        issued_at=_NOW,
    )


def _emit(bench: str, metric: str, value: float, unit: str) -> None:
    line = {"bench": bench, "metric": metric, "value": round(value, 1), "unit": unit}
    sys.stdout.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workflows", type=int, default=20_000)
    args = parser.parse_args(argv)
    registry = _registry()
    batches: list[EventBatch] = []
    for label, max_resident in (("resident", 10_000), ("evicted", 0)):
        core = EngineCore(registry, max_resident=max_resident)
        started = time.perf_counter()
        commands, events, batches = _drive(core, args.workflows)
        elapsed = time.perf_counter() - started
        _emit(f"engine.core.{label}", "commands_per_s", commands / elapsed, "commands/s")
        _emit(f"engine.core.{label}", "events_per_s", events / elapsed, "events/s")
    total = sum(len(batch.events) for batch in batches)
    core = EngineCore(registry)
    started = time.perf_counter()
    for batch in batches:
        core.apply_batch(batch)
    elapsed = time.perf_counter() - started
    _emit("engine.core.rebuild", "events", total, "events")
    _emit("engine.core.rebuild", "events_per_s", total / elapsed, "events/s")
    _emit("engine.core.rebuild", "per_100k_events_s", elapsed * 100_000 / total, "s")


if __name__ == "__main__":
    main()
