"""Versions benchmark: ``python -m bench.versions`` (also run by ``python -m bench``).

Three figures, each beside what it is compared with in the same run:

- **loading a version** (``version_load_*``): on a stack whose engine has no workflow modules
  of its own (every version comes from the packages topic), a new version of a one-step
  workflow is uploaded and routed, and one run started on it; the time from the upload request
  to that run's completion (read_committed), over ``--loads`` fresh versions, beside a run of a
  version the engine has already loaded, started the same way right after;
- **fan-out with two versions live** (``ratio_two_versions_to_one``): ``--parents`` parents of
  ``--children`` children (``bench.fanout``'s shape), all on one version; then half the parents
  pinned to one version and half to another, children on a third route; alternated
  ``--rounds`` times, child workflows/s compared (target: two versions within 10% of one);
- **replaying** (``replay_*``): ``--replays`` runs of ``--replay-events`` events each (a
  workflow of timers), replayed in process by the replay check (``aion replay``: a package
  loaded in its own namespace, every decision's source line traced) beside the engine's own
  rebuild of the same histories (no tracing).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aion import AionClient
from aion_common.domain import Event, FireTimer, Payload, StartWorkflow
from aion_common.packages import Package, build_package
from aion_common.testing import percentile
from aion_dev import Stack, StackConfig
from aion_engine._replay import replay_run
from aion_engine.core import EngineCore
from aion_engine.registry import WorkflowRegistry
from aion_engine.replay_check import load_package, replay_history
from bench.fanout import Watcher, _check, _fanout, _Parent

_FLOWS = '''"""bench.versions' workflows ({tag})."""

from aion import workflow


@workflow.defn("bench.fanout.parent")
async def fanout_parent(ctx, children):
    handles = [await ctx.start_child("bench.fanout.child", i) for i in range(children)]
    return sum([int(await handle.result()) for handle in handles])


@workflow.defn("bench.fanout.child")
async def child(ctx, value):
    return value


@workflow.defn("bench.versions.sleeper")
async def sleeper(ctx, steps):
    for _ in range(steps):
        await ctx.sleep(1)
    return steps
'''


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "versions", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _ratio(metric: str, sides: dict[str, float]) -> None:
    (left_name, left), (right_name, right) = sides.items()
    value = round(left / right, 3) if right else float("inf")
    _line(metric, value, "ratio", **{left_name: round(left, 2), right_name: round(right, 2)})


def _package(scratch: Path, tag: str) -> Package:
    root = scratch / tag
    root.mkdir(parents=True, exist_ok=True)
    (root / "bench_versions_flows.py").write_text(_FLOWS.format(tag=tag), encoding="utf-8")
    return build_package(root / "bench_versions_flows.py")


async def _one_run(
    client: AionClient, watcher: Watcher, workflow_id: str, version: str | None = None
) -> _Parent:
    parent = watcher.expect(workflow_id)
    await client.start("bench.fanout.child", 1, id=workflow_id, package_version=version)
    await asyncio.wait_for(parent.done.wait(), 120)
    _check([parent])
    return parent


async def _loads(client: AionClient, watcher: Watcher, scratch: Path, count: int) -> None:
    loads: list[float] = []
    warm: list[float] = []
    uploads: list[float] = []
    for index in range(count):
        package = _package(scratch, f"load-{index}-{uuid.uuid4().hex[:6]}")
        began = time.time()
        await client.deploy(package.archive(), route=True)
        uploads.append((time.time() - began) * 1000)
        cold = await _one_run(client, watcher, f"load-{uuid.uuid4().hex[:8]}")
        loads.append((cold.received_wall - began) * 1000)
        hot = await _one_run(client, watcher, f"warm-{uuid.uuid4().hex[:8]}")
        warm.append((hot.received_wall - hot.sent_wall) * 1000)
    shape = {"shape": f"{count} fresh versions"}
    for q, name in ((0.5, "p50"), (1.0, "max")):
        _line(f"version_upload_{name}_ms", round(percentile(uploads, q), 2), "ms", **shape)
        _line(f"version_load_{name}_ms", round(percentile(loads, q), 2), "ms", **shape)
        _line(f"loaded_version_run_{name}_ms", round(percentile(warm, q), 2), "ms", **shape)
    _ratio(
        "ratio_new_version_first_run_to_loaded_version_run_p50",
        {
            "version_load_p50_ms": percentile(loads, 0.5),
            "loaded_version_run_p50_ms": percentile(warm, 0.5),
        },
    )


async def _two_versions(
    stack: Stack, client: AionClient, watcher: Watcher, scratch: Path, args: argparse.Namespace
) -> None:
    one, two, children_route = (_package(scratch, tag) for tag in ("fan-a", "fan-b", "fan-c"))
    for package in (one, two, children_route):
        await client.deploy(package.archive())
    await client.route("bench.fanout.child", children_route.version)
    shape = {"parents": args.parents, "children": args.children}
    fan = {"children": args.children, "concurrency": args.concurrency}
    for warm in (one.version, two.version):  # both versions loaded before anything is timed
        await _fanout(stack, client, watcher, parents=10, report=False, versions=(warm,), **fan)
    single: list[float] = []
    double: list[float] = []
    for _ in range(args.rounds):
        for versions, rates in (((one.version,), single), ((one.version, two.version), double)):
            rates.append(
                await _fanout(
                    stack,
                    client,
                    watcher,
                    parents=args.parents,
                    report=False,
                    versions=versions,
                    **fan,
                )
            )
    one_rate, two_rate = sum(single) / len(single), sum(double) / len(double)
    _line("one_version_child_workflows_per_s", round(one_rate, 1), "workflows/s", **shape)
    _line("two_versions_child_workflows_per_s", round(two_rate, 1), "workflows/s", **shape)
    _ratio(
        "ratio_two_versions_to_one_child_workflows_per_s",
        {"two_versions_per_s": two_rate, "one_version_per_s": one_rate},
    )


def _histories(code: Any, runs: int, events: int) -> list[list[Event]]:
    """``runs`` histories of ``events`` events each: a workflow of (events - 2) / 2 timers."""
    registry = WorkflowRegistry()
    registry.register("bench.versions.sleeper", code)
    core = EngineCore(registry, writer="bench", max_resident=100)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    steps = (events - 2) // 2
    histories: list[list[Event]] = []
    for index in range(runs):
        workflow_id = f"replay-{index}"
        decision = core.handle(
            StartWorkflow(
                command_id=f"start-{index}",
                issued_at=now,
                workflow_id=workflow_id,
                workflow_type="bench.versions.sleeper",
                input=Payload.from_json(steps),
            ),
            now=now,
        )
        history = list(decision.batch.events if decision.batch else ())
        while decision.timers:
            command: FireTimer = decision.timers[0].command
            decision = core.handle(command, now=decision.timers[0].fire_at)
            history.extend(decision.batch.events if decision.batch else ())
        histories.append(history)
    return histories


def _replays(scratch: Path, runs: int, events: int) -> None:
    code = load_package(_package(scratch, "replay"), scratch / "unpacked")
    began = time.perf_counter()
    histories = _histories(code["bench.versions.sleeper"], runs, events)
    generated = time.perf_counter() - began
    total = sum(len(h) for h in histories)
    began = time.perf_counter()
    checked = [replay_history(h, code) for h in histories]
    checking = time.perf_counter() - began
    if not all(outcome.ok for outcome in checked):
        raise RuntimeError("a generated history did not replay on its own code")
    began = time.perf_counter()
    for history in histories:
        replay_run(code["bench.versions.sleeper"], history).close()
    rebuilding = time.perf_counter() - began
    shape = {"shape": f"{runs} runs x {total // runs} events"}
    _line("replay_check_s", round(checking, 3), "s", events=total, **shape)
    _line("replay_check_runs_per_s", round(runs / checking, 1), "runs/s", **shape)
    _line("replay_check_events_per_s", round(total / checking), "events/s", **shape)
    _line("engine_rebuild_s", round(rebuilding, 3), "s", **shape)
    _line("history_generation_s", round(generated, 3), "s", note="engine core, not timed", **shape)
    _ratio(
        "ratio_replay_check_to_engine_rebuild_s",
        {"replay_check_s": checking, "engine_rebuild_s": rebuilding},
    )


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aion-bench-versions-") as home:
        scratch = Path(home) / "packages"
        _replays(scratch, args.replays, args.replay_events)
        config = StackConfig(
            home=Path(home) / "stack",
            kafka_bootstrap=args.kafka,
            workflows=(),  # every version from the packages topic
            topic_prefix=f"versions-{uuid.uuid4().hex[:8]}",
            partitions=args.partitions,
        )
        began = time.monotonic()
        async with Stack(config) as stack:
            _line("stack_ready_s", round(time.monotonic() - began, 2), "s")
            watcher = Watcher(stack.settings)
            await watcher.start()
            try:
                async with stack.client(timeout=60) as client:
                    await _loads(client, watcher, scratch, args.loads)
                    await _two_versions(stack, client, watcher, scratch, args)
            finally:
                await watcher.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.versions", description=__doc__)
    parser.add_argument("--kafka", default=os.environ.get("AION_BENCH_KAFKA") or None)
    parser.add_argument("--loads", type=int, default=10, help="fresh versions loaded")
    parser.add_argument("--parents", type=int, default=100)
    parser.add_argument("--children", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="one/two-version alternations")
    parser.add_argument("--concurrency", type=int, default=32, help="start requests in flight")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--replays", type=int, default=1000)
    parser.add_argument("--replay-events", type=int, default=50)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
