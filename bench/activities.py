"""Activities benchmark: ``python -m bench.activities`` (also run by ``python -m bench``).

Runs the stack ``make dev`` runs (``aion_dev.Stack``, with a worker) with
:mod:`bench.fanout_workflows` and :mod:`bench.activity_workflows` loaded, and measures, in one
run on one stack, so the ratios compare like with like on a noisy machine:

- **activities/s**: ``--workflows`` (200) workflows each start ``--activities`` (10) activities
  that return at once, all workflows started at once; activities completed / time from the
  first start request to the last workflow's completion seen by a read_committed consumer;
- **child workflows/s**: ``bench.fanout``'s fan-out of the same shape (parents x children);
- **one activity's round trip** (``activity_round_trip_*``): from the record that scheduled it
  (the engine's transaction carrying ``ActivityScheduled`` and its task) to the record that
  applied its result (``ActivityCompleted``), over ``--singles`` (100) workflows of one activity
  each run one after another; and those workflows end to end, like the single-child parents
  of ``bench.fanout`` measured right before them.

The ratios the target reads (``ratio_*``) are printed with both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aion import AionClient
from aion_common.domain import ActivityCompleted, ActivityScheduled
from aion_common.testing import percentile
from aion_dev import Stack, StackConfig
from bench.fanout import Watcher, _check, _cpu, _cpu_lines, _cpu_since, _fanout, _singles

_ROOT = Path(__file__).resolve().parents[1]


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "activities", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class ActivityWatcher(Watcher):
    """The fan-out benchmark's completion watcher, also timing each activity's round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scheduled: dict[str, float] = {}
        self.round_trips: dict[str, float] = {}
        self.activities_completed = 0

    def _on_event(self, event: Any, appended: float, received: float) -> None:
        if isinstance(event, ActivityScheduled):
            self.scheduled[event.activity_id] = appended
        elif isinstance(event, ActivityCompleted):
            self.activities_completed += 1
            began = self.scheduled.pop(event.activity_id, None)
            if began is not None:
                self.round_trips[event.activity_id] = (appended - began) * 1000
        super()._on_event(event, appended, received)


async def _activity_fan(
    stack: Stack,
    client: AionClient,
    watcher: ActivityWatcher,
    *,
    workflows: int,
    activities: int,
    concurrency: int,
    report: bool,
) -> float:
    run = uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(concurrency)

    async def start(index: int) -> Any:
        async with gate:
            workflow_id = f"afan-{run}-{index}"
            parent = watcher.expect(workflow_id)
            await client.start("bench.activities.fan", activities, id=workflow_id)
            return parent

    cpu_before = _cpu(stack)
    before = watcher.activities_completed
    began = time.time()
    started = await asyncio.gather(*(start(i) for i in range(workflows)))
    await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in started)), 600)
    _check(started)
    elapsed = max(p.received_wall for p in started) - began
    cpu_used = _cpu_since(stack, cpu_before)
    for index in range(workflows):  # settle: the views catch up before the next phase
        await client.result(f"afan-{run}-{index}", wait=60)
    rate = workflows * activities / elapsed
    if report:
        shape = {"shape": f"{workflows}x{activities}", "seconds": round(elapsed, 3)}
        seen = watcher.activities_completed - before
        _line("activities_per_s", round(rate, 1), "activities/s", activities_seen=seen, **shape)
        _cpu_lines(cpu_used, elapsed, shape)
    return rate


async def _activity_singles(
    client: AionClient, watcher: ActivityWatcher, *, count: int, report: bool
) -> tuple[float, float]:
    run = uuid.uuid4().hex[:6]
    watcher.round_trips.clear()
    done = []
    for index in range(count):
        workflow_id = f"asingle-{run}-{index}"
        parent = watcher.expect(workflow_id)
        await client.start("bench.activities.single", index, id=workflow_id)
        await asyncio.wait_for(parent.done.wait(), 60)
        done.append(parent)
    _check(done)
    trips = list(watcher.round_trips.values())
    ends = [(p.received_wall - p.sent_wall) * 1000 for p in done]
    if report:
        shape = {"shape": f"{count} sequential single-activity workflows"}
        for q, name in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
            _line(f"activity_round_trip_{name}_ms", round(percentile(trips, q), 2), "ms", **shape)
            _line(
                f"single_activity_workflow_{name}_ms", round(percentile(ends, q), 2), "ms", **shape
            )
    return percentile(trips, 0.5), percentile(ends, 0.5)


def _ratio(metric: str, sides: dict[str, float]) -> None:
    """``left / right`` with both sides printed (the first item over the second)."""
    (left_name, left), (right_name, right) = sides.items()
    value = round(left / right, 3) if right else float("inf")
    _line(metric, value, "ratio", **{left_name: round(left, 2), right_name: round(right, 2)})


async def _run(
    stack: Stack, client: AionClient, watcher: ActivityWatcher, args: argparse.Namespace
) -> None:
    fan = {"concurrency": args.concurrency}
    # a short pass of every measured path first (the JIT of a broker started seconds ago)
    await _activity_singles(client, watcher, count=10, report=False)
    await _activity_fan(stack, client, watcher, workflows=10, activities=args.activities,
                        report=False, **fan)  # fmt: skip
    await _fanout(stack, client, watcher, parents=10, children=args.activities,
                  report=False, **fan)  # fmt: skip
    await _singles(stack, client, watcher, count=10, report=False)
    activities_per_s = await _activity_fan(
        stack, client, watcher, workflows=args.workflows, activities=args.activities,
        report=True, **fan,
    )  # fmt: skip
    children_per_s = await _fanout(
        stack, client, watcher, parents=args.workflows, children=args.activities,
        report=True, **fan,
    )  # fmt: skip
    trip_p50, activity_workflow_p50 = await _activity_singles(
        client, watcher, count=args.singles, report=True
    )
    single_child_p50 = await _singles(stack, client, watcher, count=args.singles, report=True)
    _ratio(
        "ratio_activities_to_child_workflows_per_s",
        {"activities_per_s": activities_per_s, "child_workflows_per_s": children_per_s},
    )
    _ratio(
        "ratio_activity_round_trip_to_single_child_parent_p50",
        {"activity_round_trip_p50_ms": trip_p50, "single_child_parent_p50_ms": single_child_p50},
    )
    _ratio(
        "ratio_single_activity_workflow_to_single_child_parent_p50",
        {
            "single_activity_workflow_p50_ms": activity_workflow_p50,
            "single_child_parent_p50_ms": single_child_p50,
        },
    )


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aion-bench-activities-") as home:
        config = StackConfig(
            home=Path(home),
            kafka_bootstrap=args.kafka,
            workflows=("bench.fanout_workflows", "bench.activity_workflows"),
            topic_prefix=f"activities-{uuid.uuid4().hex[:8]}",
            partitions=args.partitions,
            pythonpath=(str(_ROOT),),
        )
        began = time.monotonic()
        async with Stack(config) as stack:
            _line("stack_ready_s", round(time.monotonic() - began, 2), "s")
            watcher = ActivityWatcher(stack.settings)
            await watcher.start()
            try:
                async with stack.client(timeout=60) as client:
                    await _run(stack, client, watcher, args)
            finally:
                await watcher.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.activities", description=__doc__)
    parser.add_argument("--kafka", default=os.environ.get("AION_BENCH_KAFKA") or None)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--activities", type=int, default=10)
    parser.add_argument("--singles", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32, help="start requests in flight")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
