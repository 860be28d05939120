"""aion on the peers' workloads: ``python -m bench.peers.aion_side`` (``python -m bench.peers``).

The same phases, flags and JSON lines as ``dbos/bench_dbos.py`` and ``restate/bench_restate.py``
(one line per phase, appended to ``--out``), so one summary reads all three:

- ``latency``: ``--latency-n`` single-child parents one after another (``bench.fanout.single``);
- ``latency:result`` and ``steps:local:result``: the same as ``latency`` and ``steps:local``,
  each workflow done when ``client.result`` returns — what a user awaiting ``handle.result()``
  sees, as the peers' scripts await their results (the others: when the events topic has it);
- ``latency:3 engines``: the same on a second stack with three engine instances
  (``--engines-beside``);
- ``steps``: ``--steps-n`` workflows of ``--steps-k`` steps one after another, each step an
  activity (``bench.steps.activities``) — aion's steps today;
- ``steps_tp:WxK``: W such workflows at once (steps/s);
- ``steps:local`` and ``steps_tp:WxK:local``: the same with local steps (``ctx.run``,
  ``bench.steps.local``);
- ``tp:PxK``: P parents at once, K children each (``bench.fanout.parent``).

The stack is ``make dev``'s (``aion_dev.Stack``: engine, watcher, projector, API and a worker as
processes, SQLite) against ``--kafka``, driven over its HTTP API. A workflow is done when this
process's read_committed consumer of the events topic has its ``WorkflowCompleted`` (when a client
watching for it could know; ``bench.fanout``'s definition, the one the issue's figures use) — or,
in the ``:result`` phases, when ``client.result`` returns it, as the peers' scripts count theirs
(their figures are each client's ``get_result``/HTTP response; the table's targets sit on those).
Percentiles interpolate between ranks, as the peers' scripts do. ``resources`` holds the CPU
seconds of every process (the broker's too, with ``AION_BENCH_BROKER_PID``) and each one's peak
RSS; the latency phase also carries ``hops``: the p50 of each leg of a parent's path, from the
record timestamps of its batches (see :class:`HopWatcher`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aion import AionClient
from aion_common.domain import (
    ActivityCompleted,
    ActivityScheduled,
    ChildWorkflowScheduled,
    WorkflowCompleted,
    WorkflowStarted,
)
from aion_dev import Stack, StackConfig
from bench.fanout import Watcher, _check, _cpu, _cpu_since, _Parent

_ROOT = Path(__file__).resolve().parents[2]
_WORKFLOWS = ("bench.fanout_workflows", "bench.activity_workflows")


def pct(values: Sequence[float], p: float) -> float:
    """The peers' percentile: linear interpolation between closest ranks."""
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def summ(values_ms: Sequence[float]) -> dict[str, float]:
    """The peers' latency summary."""
    return {
        "n": len(values_ms),
        "p50_ms": round(pct(values_ms, 50), 2),
        "p95_ms": round(pct(values_ms, 95), 2),
        "p99_ms": round(pct(values_ms, 99), 2),
        "mean_ms": round(statistics.fmean(values_ms), 2),
        "max_ms": round(max(values_ms), 2),
    }


@dataclass
class _Hops:
    parent_started: float = 0.0
    child_id: str = ""
    child_started: float = 0.0
    child_completed: float = 0.0


class HopWatcher(Watcher):
    """The fan-out benchmark's completion watcher, also keeping, per watched parent, the record
    timestamps (the producing engine's clock at send) of its first batch, its child's batches and
    its last, so a single-child parent's time splits into legs:

    - ``request_to_parent_appended``: API request, ``StartWorkflow`` produced, the engine's first
      step of the parent (its batch sent, not yet committed);
    - ``parent_to_child_appended``: that transaction's commit, the child's ``StartWorkflow`` read
      by the engine, the child's step (it completes at once);
    - ``child_to_parent_appended``: the child's commit, the watcher's ``RecordChildTerminal``, the
      engine's last step of the parent;
    - ``parent_appended_to_visible``: that commit, until this read_committed consumer has it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hops: dict[str, _Hops] = {}
        self._children: dict[str, _Hops] = {}
        self._scheduled: dict[tuple[str, str], float] = {}
        self.steps: dict[str, list[tuple[float, float]]] = {}

    def _on_step(self, event: Any, appended: float) -> None:
        """An activity's legs: from the batch that scheduled it (sent) to the worker's report
        (the report command's record timestamp, which the engine stamps on ``ActivityCompleted``
        as its ``recorded_at``), and from that report to the engine's next batch (sent)."""
        if isinstance(event, ActivityScheduled):
            self._scheduled[(event.workflow_id, event.activity_id)] = appended
            return
        scheduled = self._scheduled.pop((event.workflow_id, event.activity_id), None)
        if scheduled is not None:
            reported = event.recorded_at.timestamp()
            self.steps.setdefault(event.workflow_id, []).append(
                (reported - scheduled, appended - reported)
            )

    def step_legs(self, workflow_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """The p50/p99 of each activity leg over ``workflow_ids``' steps."""
        legs = [leg for i in workflow_ids for leg in self.steps.get(i, ())]
        if not legs:
            return {}
        names = ("scheduled_appended_to_reported", "reported_to_next_appended")
        return {
            name: {
                "p50_ms": round(pct([leg[n] for leg in legs], 50) * 1000, 2),
                "p99_ms": round(pct([leg[n] for leg in legs], 99) * 1000, 2),
            }
            for n, name in enumerate(names)
        }

    def _on_event(self, event: Any, appended: float, received: float) -> None:
        if isinstance(event, ActivityScheduled | ActivityCompleted):
            self._on_step(event, appended)
        if isinstance(event, WorkflowStarted):
            if event.workflow_id in self.parents:
                self.hops.setdefault(event.workflow_id, _Hops()).parent_started = appended
            elif (hops := self._children.get(event.workflow_id)) is not None:
                hops.child_started = appended
        elif isinstance(event, ChildWorkflowScheduled) and event.workflow_id in self.hops:
            hops = self.hops[event.workflow_id]
            hops.child_id = event.child_workflow_id
            self._children[event.child_workflow_id] = hops
        elif isinstance(event, WorkflowCompleted) and event.workflow_id in self._children:
            self._children.pop(event.workflow_id).child_completed = appended
        super()._on_event(event, appended, received)

    def legs(self, workflow_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """The p50/p99 of each leg over ``workflow_ids`` (those with every timestamp)."""
        rows: dict[str, list[float]] = {
            "request_to_parent_appended": [],
            "parent_to_child_appended": [],
            "child_to_parent_appended": [],
            "parent_appended_to_visible": [],
        }
        for workflow_id in workflow_ids:
            hops, parent = self.hops.get(workflow_id), self.parents[workflow_id]
            if hops is None or not hops.child_completed:
                continue
            rows["request_to_parent_appended"].append(hops.parent_started - parent.sent_wall)
            rows["parent_to_child_appended"].append(hops.child_started - hops.parent_started)
            rows["child_to_parent_appended"].append(parent.appended_wall - hops.child_completed)
            rows["parent_appended_to_visible"].append(parent.received_wall - parent.appended_wall)
        return {
            name: {"p50_ms": round(pct(xs, 50) * 1000, 2), "p99_ms": round(pct(xs, 99) * 1000, 2)}
            for name, xs in rows.items()
            if xs
        }


def _peak_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class Resources:
    """CPU seconds per process between start and stop (``bench.fanout``'s accounting), in the
    peers' ``resources`` shape; peak RSS is each process's high-water mark so far."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._before = _cpu(stack)
        self._began = time.perf_counter()

    def stop(self) -> dict[str, dict[str, float | None]]:
        used = _cpu_since(self._stack, self._before)
        wall = time.perf_counter() - self._began
        pids = {name: process.pid for name, process in self._stack.processes.items()}
        broker = os.environ.get("AION_BENCH_BROKER_PID")
        pids["kafka"] = int(broker) if broker else None
        pids["driver"] = os.getpid()
        return {
            name: {
                "peak_rss_mb": _peak_rss_mb(pids.get(name)),
                "cpu_s": round(seconds, 2),
                "cpu_pct_of_one_core": round(100 * seconds / wall, 1),
            }
            for name, seconds in used.items()
        }


Phase = Callable[[], Awaitable[dict[str, Any]]]


class Driver:
    """One stack's phases; each returns the peers' JSON fields for that phase."""

    def __init__(
        self, client: AionClient, watcher: HopWatcher, *, in_flight: int | None = None
    ) -> None:
        self.client = client
        self.watcher = watcher
        self.in_flight = in_flight
        self._run = uuid.uuid4().hex[:6]
        self._count = 0
        self.answered: dict[str, float] = {}
        """When ``client.result`` returned, by workflow id (the ``via_result`` phases)."""

    def _id(self, kind: str) -> str:
        self._count += 1
        return f"{kind}-{self._run}-{self._count}"

    async def _start(self, workflow_type: str, value: int, kind: str) -> tuple[str, _Parent]:
        workflow_id = self._id(kind)
        parent = self.watcher.expect(workflow_id)
        await self.client.start(workflow_type, value, id=workflow_id)
        return workflow_id, parent

    async def one_by_one(
        self, workflow_type: str, value: int, count: int, *, via_result: bool = False
    ) -> list[str]:
        """``count`` workflows, each started once the previous one is done; ``via_result``:
        done when ``client.result`` returns (what a user awaiting ``handle.result()`` sees,
        as the peers' scripts await theirs), else when the events topic has it."""
        ids = []
        for _ in range(count):
            workflow_id, parent = await self._start(workflow_type, value, "seq")
            if via_result:
                outcome = await self.client.result(workflow_id, wait=60)
                self.answered[workflow_id] = time.time()
                if outcome.status != "COMPLETED":
                    raise RuntimeError(f"{workflow_id}: {outcome.status} {outcome.error_message}")
            await asyncio.wait_for(parent.done.wait(), 60)
            _check([parent])
            ids.append(workflow_id)
        return ids

    async def at_once(self, workflow_type: str, value: int, count: int) -> tuple[float, float]:
        """``count`` workflows started together: every start request sent at once, as the peers'
        scripts send theirs (``in_flight`` caps them, e.g. 32 as ``bench.fanout``); returns
        (seconds from the first start to the last completion, seconds to start all).
        Waits until the views hold them all closed (untimed) so the next phase starts calm."""
        gate = asyncio.Semaphore(self.in_flight or count)

        async def start() -> tuple[str, _Parent]:
            async with gate:
                return await self._start(workflow_type, value, "tp")

        began = time.time()
        started = await asyncio.gather(*(start() for _ in range(count)))
        all_started = time.time() - began
        parents = [parent for _, parent in started]
        await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in parents)), 600)
        _check(parents)
        elapsed = max(p.received_wall for p in parents) - began
        for workflow_id, _ in started:
            await self.client.result(workflow_id, wait=60)
        return elapsed, all_started

    def e2e_ms(self, ids: Sequence[str], *, via_result: bool = False) -> list[float]:
        parents = [(i, self.watcher.parents[i]) for i in ids]
        if via_result:
            return [(self.answered[i] - p.sent_wall) * 1000 for i, p in parents]
        return [(p.received_wall - p.sent_wall) * 1000 for _, p in parents]

    async def latency(self, n: int, *, via_result: bool = False) -> dict[str, Any]:
        ids = await self.one_by_one("bench.fanout.single", 1, n, via_result=via_result)
        e2e = self.e2e_ms(ids, via_result=via_result)
        return {"client_e2e": summ(e2e), "hops": self.watcher.legs(ids)}

    async def steps(
        self, workflow_type: str, n: int, k: int, *, via_result: bool = False
    ) -> dict[str, Any]:
        ids = await self.one_by_one(workflow_type, k, n, via_result=via_result)
        e2e = self.e2e_ms(ids, via_result=via_result)
        return {
            "workflows": n,
            "steps_per_workflow": k,
            "workflow_e2e": summ(e2e),
            "per_step_ms": summ([x / k for x in e2e]),
            "step_legs": self.watcher.step_legs(ids),
        }

    async def steps_tp(self, workflow_type: str, w: int, k: int) -> dict[str, Any]:
        wall, started = await self.at_once(workflow_type, k, w)
        return {
            "workflows": w,
            "steps_per_workflow": k,
            "wall_s": round(wall, 3),
            "start_all_s": round(started, 3),
            "steps_per_s": round(w * k / wall, 1),
        }

    async def tp(self, p: int, k: int) -> dict[str, Any]:
        wall, started = await self.at_once("bench.fanout.parent", k, p)
        return {
            "parents": p,
            "children_per_parent": k,
            "wall_s": round(wall, 3),
            "start_all_s": round(started, 3),
            "child_wf_per_s": round(p * k / wall, 1),
            "parent_wf_per_s": round(p / wall, 1),
            "all_wf_per_s": round(p * (k + 1) / wall, 1),
        }


def _version() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


class Emitter:
    """Prints and appends one JSON line per finished phase, as the peers' scripts do."""

    def __init__(self, args: argparse.Namespace, **head: Any) -> None:
        self._out = args.out
        self._head = {"peer": "aion", "version": _version(), "label": args.label, **head}

    def __call__(self, phase: str, fields: dict[str, Any]) -> None:
        line = json.dumps({**self._head, "phase": phase, **fields})
        print(line, flush=True)
        if self._out:
            with Path(self._out).open("a") as out:
                out.write(line + "\n")


async def _measured(stack: Stack, emit: Emitter, phase: str, work: Phase) -> None:
    resources = Resources(stack)
    fields = await work()
    fields["resources"] = resources.stop()
    emit(phase, fields)


async def _with_stack(
    args: argparse.Namespace, engines: int, body: Callable[[Stack, Driver], Awaitable[None]]
) -> None:
    home = tempfile.mkdtemp(prefix="aion-peers-")
    try:
        config = StackConfig(
            home=Path(home),
            kafka_bootstrap=args.kafka,
            workflows=_WORKFLOWS,
            topic_prefix=f"peers-{uuid.uuid4().hex[:8]}",
            partitions=args.partitions,
            engines=engines,
            pythonpath=(str(_ROOT),),
        )
        async with Stack(config) as stack:
            watcher = HopWatcher(stack.settings)
            await watcher.start()
            try:
                async with stack.client(timeout=60) as client:
                    driver = Driver(client, watcher, in_flight=args.in_flight)
                    # warm-up, as the peers' scripts do: 10 single-child parents (and one of
                    # every other shape, so each code path has run once in these processes)
                    await driver.one_by_one("bench.fanout.single", 1, 10)
                    await driver.one_by_one("bench.steps.activities", args.steps_k, 2)
                    await driver.one_by_one("bench.steps.local", args.steps_k, 2)
                    await driver.at_once("bench.fanout.parent", 10, 10)
                    await body(stack, driver)
            finally:
                await watcher.stop()
    except BaseException:
        # kept: the services' logs say why (a phase's error alone rarely does)
        print(f"aion_side: the failed stack's logs are kept in {home}/logs", file=sys.stderr)
        raise
    shutil.rmtree(home, ignore_errors=True)


async def _main(args: argparse.Namespace) -> None:
    emit = Emitter(args, engines=1, partitions=args.partitions)

    async def phases(stack: Stack, driver: Driver) -> None:
        if args.latency_n:
            await _measured(stack, emit, "latency", lambda: driver.latency(args.latency_n))
            await _measured(
                stack, emit, "latency:result",
                lambda: driver.latency(args.latency_n, via_result=True),
            )  # fmt: skip
        if args.steps_n:
            await _measured(
                stack, emit, "steps",
                lambda: driver.steps("bench.steps.activities", args.steps_n, args.steps_k),
            )  # fmt: skip
        if args.steps_n:
            await _measured(
                stack, emit, "steps:local",
                lambda: driver.steps("bench.steps.local", args.steps_n, args.steps_k),
            )  # fmt: skip
            await _measured(
                stack, emit, "steps:local:result",
                lambda: driver.steps(
                    "bench.steps.local", args.steps_n, args.steps_k, via_result=True
                ),
            )  # fmt: skip
        if args.steps_tp:
            w, k = (int(x) for x in args.steps_tp.split("x"))
            await _measured(
                stack, emit, f"steps_tp:{args.steps_tp}",
                lambda: driver.steps_tp("bench.steps.activities", w, k),
            )  # fmt: skip
            await _measured(
                stack, emit, f"steps_tp:{args.steps_tp}:local",
                lambda: driver.steps_tp("bench.steps.local", w, k),
            )  # fmt: skip
        for spec in [s for s in args.tp.split(",") if s]:
            parents, children = (int(x) for x in spec.split("x"))
            await _measured(stack, emit, f"tp:{spec}", partial(driver.tp, parents, children))

    await _with_stack(args, 1, phases)
    if args.engines_beside > 1 and args.latency_n:
        beside = Emitter(args, engines=args.engines_beside, partitions=args.partitions)

        async def latency_only(stack: Stack, driver: Driver) -> None:
            phase = f"latency:{args.engines_beside} engines"
            await _measured(stack, beside, phase, lambda: driver.latency(args.latency_n))

        await _with_stack(args, args.engines_beside, latency_only)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.aion_side", description=__doc__)
    parser.add_argument("--kafka", default=os.environ.get("AION_BENCH_KAFKA") or None)
    parser.add_argument("--label", default="aion")
    parser.add_argument("--latency-n", type=int, default=100)
    parser.add_argument("--steps-n", type=int, default=100)
    parser.add_argument("--steps-k", type=int, default=10)
    parser.add_argument("--steps-tp", default="100x10")
    parser.add_argument("--tp", default="100x10,500x10")
    parser.add_argument("--engines-beside", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--in-flight", type=int, default=None,
        help="cap on start requests in flight in the at-once phases (default: all at once, as "
        "the peers' scripts)",
    )  # fmt: skip
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
