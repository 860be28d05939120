"""How soon a client has a result: ``python -m bench.results`` (also run by ``python -m bench``).

A user starts a workflow and awaits ``handle.result()`` — ``GET .../result``, long-polled. This
benchmark runs the stack ``make dev`` runs (``aion_dev.Stack``) and times, for each workflow
started one after another, both ends of that wait in the same run:

- ``*_result_*``: from the start request until ``client.result`` returns (what the user sees);
- ``*_on_log_*``: from the start request until this process's read_committed consumer of the
  events topic has the run's ``WorkflowCompleted`` (what ``bench.fanout`` and
  ``make bench-peers`` call done);
- ``*_result_over_log_p50``: the ratio: what the API's wait adds on top of the engine
  (decision 60: the API wakes when the run's ending is on the log instead of at its next poll
  of the views, 0.1 s doubling to 1 s).

Workloads: ``steps`` (``bench.steps.local``, 10 local steps) and ``single`` (a parent awaiting
one child, ``bench.fanout.single``), ``--n`` (40) each; then ``--at-once`` (100) ``steps``
workflows started and awaited together (``at_once_wall_ms``, and the API's CPU seconds for them,
``at_once_api_cpu_s``).
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
from aion_common.testing import percentile
from aion_dev import Stack, StackConfig
from bench.fanout import _cpu, _cpu_since
from bench.peers.aion_side import Driver, HopWatcher

_ROOT = Path(__file__).resolve().parents[1]
_WORKLOADS = (("steps", "bench.steps.local", 10), ("single", "bench.fanout.single", 1))


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "results", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def _one_by_one(
    driver: Driver, workflow_type: str, value: int, n: int
) -> tuple[list[float], list[float]]:
    """Start → ``client.result`` and start → completion on the log, ms, of the same workflows."""
    ids = await driver.one_by_one(workflow_type, value, n, via_result=True)
    return driver.e2e_ms(ids, via_result=True), driver.e2e_ms(ids)


async def _at_once(client: AionClient, count: int) -> float:
    async def one() -> None:
        workflow_id = f"results-{uuid.uuid4().hex[:10]}"
        await client.start("bench.steps.local", 10, id=workflow_id)
        outcome = await client.result(workflow_id, wait=60)
        if outcome.status != "COMPLETED":
            raise RuntimeError(f"{workflow_id}: {outcome.status} {outcome.error_message}")

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return (time.perf_counter() - began) * 1000


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aion-bench-results-") as home:
        config = StackConfig(
            home=Path(home),
            kafka_bootstrap=args.kafka,
            workflows=("bench.fanout_workflows", "bench.activity_workflows"),
            topic_prefix=f"results-{uuid.uuid4().hex[:8]}",
            partitions=args.partitions,
            pythonpath=(str(_ROOT),),
        )
        async with Stack(config) as stack:
            watcher = HopWatcher(stack.settings)
            await watcher.start()
            try:
                async with stack.client(timeout=60) as client:
                    driver = Driver(client, watcher)
                    for _, workflow_type, value in _WORKLOADS:  # warm-up, discarded
                        await _one_by_one(driver, workflow_type, value, 5)
                    for name, workflow_type, value in _WORKLOADS:
                        via_result, on_log = await _one_by_one(driver, workflow_type, value, args.n)
                        for label, q in (("p50", 0.5), ("p99", 0.99)):
                            for side, took in (("result", via_result), ("on_log", on_log)):
                                ms = round(percentile(took, q), 2)
                                _line(f"{name}_{side}_{label}_ms", ms, "ms", n=args.n)
                        ratio = percentile(via_result, 0.5) / percentile(on_log, 0.5)
                        _line(f"{name}_result_over_log_p50", round(ratio, 2), "x")
                    before = _cpu(stack)
                    wall = await _at_once(client, args.at_once)
                    used = _cpu_since(stack, before)
                    _line("at_once_wall_ms", round(wall, 1), "ms", workflows=args.at_once)
                    _line("at_once_api_cpu_s", round(used.get("api", 0.0), 3), "s")
            finally:
                await watcher.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.results", description=__doc__)
    parser.add_argument("--kafka", default=os.environ.get("AION_BENCH_KAFKA") or None)
    parser.add_argument("--n", type=int, default=40, help="workflows of each kind, in turn")
    parser.add_argument("--at-once", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
