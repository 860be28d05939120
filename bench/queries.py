"""Queries benchmark: ``python -m bench.queries`` (also run by ``python -m bench``).

Runs the stack ``make dev`` runs (``aion_dev.Stack``) with :mod:`bench.query_workflows` and
measures a query's round trip through the client, the API, ``<prefix>.commands``, the owning
engine and ``<prefix>.replies`` back to the API (issue 16):

- **open run** (``query_open_*``): ``--queries`` (200) queries one after another to a run in
  the engine's memory;
- **waiting on** (``waiting_*``): the built-in ``__waiting_on`` through ``GET .../waiting``;
- **closed run** (``query_closed_*``): the same query to a closed run of ``--events`` (200)
  events, which the API reads from its views and the engine replays (``--queries`` / 4);
- **throughput** (``queries_per_s``): 5 x ``--queries`` queries to ``--runs`` (20) open runs,
  ``--concurrency`` (32) in flight.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aion import AionClient
from aion_common.testing import percentile
from aion_dev import Stack, StackConfig

_ROOT = Path(__file__).resolve().parents[1]


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "queries", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def _timed(ask: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    took = []
    for _ in range(count):
        began = time.perf_counter()
        await ask()
        took.append((time.perf_counter() - began) * 1000)
    return took


def _report(name: str, took: list[float], **shape: Any) -> None:
    for q, label in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
        _line(f"{name}_{label}_ms", round(percentile(took, q), 2), "ms", **shape)


async def _until(client: AionClient, workflow_id: str, expected: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if await client.query(workflow_id, "count", wait=10) == expected:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{workflow_id} never counted {expected}")


async def _run(client: AionClient, args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:6]
    open_id, closed_id = f"qopen-{run}", f"qclosed-{run}"
    await client.start("bench.queries.tally", None, id=open_id)
    await client.start("bench.queries.tally", None, id=closed_id)
    signals = max(1, args.events - 3)  # started, the signals, the last signal, completed
    for _ in range(signals):
        await client.signal(closed_id, "add", 1)
    await client.signal(closed_id, "add", None)
    await client.result(closed_id, wait=120)
    await _until(client, open_id, 0)
    await _timed(lambda: client.query(open_id, "count", wait=10), 20)  # warm the path
    took = await _timed(lambda: client.query(open_id, "count", wait=10), args.queries)
    _report("query_open", took, queries=args.queries)
    took = await _timed(lambda: client.waiting(open_id, wait=10), args.queries)
    _report("waiting", took, queries=args.queries)
    closed = max(1, args.queries // 4)
    answer = await client.query_answer(closed_id, "count", wait=30)
    if not answer["replayed"] or answer["result"] != signals:
        raise RuntimeError(f"the closed run answered {answer}")
    took = await _timed(lambda: client.query(closed_id, "count", wait=30), closed)
    _report("query_closed", took, queries=closed, events=answer["last_seq"])
    runs = [f"qmany-{run}-{i}" for i in range(args.runs)]
    for workflow_id in runs:
        await client.start("bench.queries.tally", None, id=workflow_id)
    for workflow_id in runs:
        await _until(client, workflow_id, 0)
    gate = asyncio.Semaphore(args.concurrency)
    total = args.queries * 5

    async def one(index: int) -> None:
        async with gate:
            await client.query(runs[index % len(runs)], "count", wait=30)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    elapsed = time.perf_counter() - began
    _line(
        "queries_per_s",
        round(total / elapsed, 1),
        "queries/s",
        queries=total,
        runs=args.runs,
        concurrency=args.concurrency,
    )


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aion-bench-queries-") as home:
        config = StackConfig(
            home=Path(home),
            kafka_bootstrap=args.kafka,
            workflows=("bench.query_workflows",),
            topic_prefix=f"queries-{uuid.uuid4().hex[:8]}",
            partitions=args.partitions,
            pythonpath=(str(_ROOT),),
        )
        began = time.monotonic()
        async with Stack(config) as stack:
            _line("stack_ready_s", round(time.monotonic() - began, 2), "s")
            async with stack.client(timeout=60) as client:
                try:
                    await _run(client, args)
                except Exception:
                    _api_log_tail(Path(home))
                    raise


def _api_log_tail(home: Path, lines: int = 60) -> None:
    """The end of the API's log on stderr: what a 500 from it was (the home is deleted next)."""
    for log in sorted((home / "logs").glob("api*.log")):
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        print(f"--- {log.name} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queries", description=__doc__)
    parser.add_argument("--kafka", default=os.environ.get("AION_BENCH_KAFKA") or None)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32, help="queries in flight")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
