"""End-to-end fan-out benchmark: ``python -m bench.fanout`` (also run by ``python -m bench``).

Runs the stack ``make dev`` runs (``aion_dev.Stack``: embedded Apache Kafka — or
``AION_BENCH_KAFKA=host:port`` / ``--kafka`` — SQLite, engine, watcher, projector and API as
separate processes) with :mod:`bench.fanout_workflows` loaded, and drives it through the HTTP
API like a user would. Completion is observed on the events topic (read_committed).

Two shapes, each after a short warm-up (``--short-warm-up``, 10 parents of its shape):

- **fan-out**: ``--parents`` (200) parents each start ``--children`` (10) children that return
  at once; every parent is started at once (``--concurrency`` requests in flight). Prints
  ``child_workflows_per_s`` (children completed / time from the first start request to the
  last parent's ``WorkflowCompleted``) and the parents' end-to-end ``p50``/``p99``.
- **single**: ``--singles`` (100) parents with one child each, started one after another (the
  next once the previous completed): ``p50``/``p99`` of one parent's end to end. They start once
  the views (the projector) have caught up with the fan-out, so they measure their own work.

End to end is from just before the start request is sent until this script's read_committed
consumer has the parent's ``WorkflowCompleted`` — when a client watching for it could know (the
engine's transaction committed). ``appended_*`` figures stop earlier, at the timestamp of the
record carrying it (the engine wrote it; its transaction still to commit): a lower bound. Every
path a real parent takes is in it: API → ``aion.commands`` → engine → ``aion.events`` → watcher
→ ``RecordChildTerminal`` → engine. (Until 2026-11-28 the headline stopped at the event's
``recorded_at``, which is the watcher's ``RecordChildTerminal`` record timestamp — decision 9 —
and so left the parent's last engine step out.) The CPU seconds each process used during the
fan-out phase are printed too (``cpu_s``), which shows where the time goes, and
``cpu_s_per_1000_workflows`` per process, counted until the views hold every parent closed
(the projector is still applying the burst when the last parent completes).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from aion import AionClient
from aion_common.codecs import Codec
from aion_common.domain import WorkflowCompleted, WorkflowFailed
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_common.testing import percentile
from aion_dev import Stack, StackConfig

_ROOT = Path(__file__).resolve().parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "fanout", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


@dataclass
class _Parent:
    sent_wall: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    appended_wall: float = 0.0  # the completing batch's record timestamp (written, uncommitted)
    received_wall: float = 0.0  # when this script's read_committed consumer got it
    failed: str | None = None


class Watcher:
    """Reads the events topic (read_committed) and marks parents and children done."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).events
        self._codec = Codec()
        self.parents: dict[str, _Parent] = {}
        self.children_completed = 0
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            # The broker answers a waiting read_committed fetch as soon as a commit marker moves
            # the partition's stable offset (bench.kafka_txn: visible 0.4 ms after the commit
            # with this wait), so a long wait costs no latency; the 5 ms it was until
            # 2026-12-02 made ~200 empty fetches/s on the broker the measured stack shares.
            fetch_max_wait_ms=500,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [TopicPartition(self._topic, p) for p in range(self._settings.partitions)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def expect(self, workflow_id: str) -> _Parent:
        parent = _Parent(sent_wall=time.time())
        self.parents[workflow_id] = parent
        return parent

    async def _run(self) -> None:
        while True:
            fetched = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            received = time.time()
            for records in fetched.values():
                for record in records:
                    appended = record.timestamp / 1000
                    for event in self._codec.decode_batch(record.value).events:
                        self._on_event(event, appended, received)

    def _on_event(self, event: Any, appended: float, received: float) -> None:
        if not isinstance(event, WorkflowCompleted | WorkflowFailed):
            return
        parent = self.parents.get(event.workflow_id)
        if parent is None:
            if isinstance(event, WorkflowCompleted):
                self.children_completed += 1
            return
        parent.appended_wall = appended
        parent.received_wall = received
        if isinstance(event, WorkflowFailed):
            parent.failed = event.error.message
        parent.done.set()


def _cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds of ``pid`` and its reaped children (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[11..14] are utime, stime, cutime, cstime (stat fields 14-17).
    return sum(int(v) for v in fields[11:15]) / _CLOCK_TICKS


def _cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of every stack process, of the broker when its pid is known, and of
    this script (``driver``: the HTTP client and the completion consumer)."""
    used = {name: _cpu_seconds(process.pid) for name, process in stack.processes.items()}
    broker_pid = os.environ.get("AION_BENCH_BROKER_PID")
    if broker_pid and "kafka" not in used:
        used["kafka"] = _cpu_seconds(int(broker_pid))
    used["driver"] = _cpu_seconds(os.getpid())
    return used


def _cpu_since(stack: Stack, before: dict[str, float]) -> dict[str, float]:
    return {name: seconds - before.get(name, 0.0) for name, seconds in _cpu(stack).items()}


def _cpu_lines(used: dict[str, float], elapsed: float, shape: dict[str, Any]) -> None:
    for name, seconds in used.items():
        share = round(seconds / elapsed, 2)
        _line("cpu_s", round(seconds, 2), "s", process=name, share=share, **shape)


async def _start_parent(
    client: AionClient,
    watcher: Watcher,
    workflow_type: str,
    workflow_id: str,
    value: int,
    *,
    version: str | None = None,
) -> _Parent:
    parent = watcher.expect(workflow_id)
    await client.start(workflow_type, value, id=workflow_id, package_version=version)
    return parent


def _check(parents: list[_Parent]) -> None:
    failed = [p.failed for p in parents if p.failed is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} bench parents failed, e.g. {failed[0]}")


async def _fanout(
    stack: Stack,
    client: AionClient,
    watcher: Watcher,
    *,
    parents: int,
    children: int,
    concurrency: int,
    report: bool,
    versions: tuple[str, ...] = (),
) -> float:
    """Run the fan-out; returns child workflows/s (end to end). With ``versions``, the parents
    are pinned to them in turn (``bench.versions``)."""
    run = uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(concurrency)

    async def start(index: int) -> _Parent:
        async with gate:
            version = versions[index % len(versions)] if versions else None
            return await _start_parent(
                client,
                watcher,
                "bench.fanout.parent",
                f"fan-{run}-{index}",
                children,
                version=version,
            )

    cpu_before = _cpu(stack)
    children_before = watcher.children_completed
    began = time.time()
    started = await asyncio.gather(*(start(i) for i in range(parents)))
    requests_s = time.time() - began
    await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in started)), 600)
    _check(started)
    elapsed = max(p.received_wall for p in started) - began
    cpu_used = _cpu_since(stack, cpu_before)
    # Settle: the projector is still applying the burst's events (a second or so of both
    # cores). What follows should measure its own work, not this one's tail: wait until the
    # views hold every parent closed.
    for index in range(parents):
        await client.result(f"fan-{run}-{index}", wait=60)
    settled_s = time.time() - began
    cpu_settled = _cpu_since(stack, cpu_before)
    total_children = parents * children
    if not report:
        return total_children / elapsed
    counted = watcher.children_completed - children_before
    shape = {"shape": f"{parents}x{children}", "seconds": round(elapsed, 3)}
    _line(
        "child_workflows_per_s",
        round(total_children / elapsed, 1),
        "workflows/s",
        children_seen=counted,
        **shape,
    )
    _line(
        "workflows_per_s",
        round((total_children + parents) / elapsed, 1),
        "workflows/s",
        note="parents and children",
        **shape,
    )
    _latencies("fanout_parent", started, shape)
    _line(
        "fanout_start_requests_s",
        round(requests_s, 3),
        "s",
        note="time to get every start request accepted by the API",
        **shape,
    )
    _cpu_lines(cpu_used, elapsed, shape)
    # Per 1,000 workflows (parents and children), up to the views holding every parent closed:
    # the projector's share of a burst is mostly spent after the last parent completed.
    thousands = (total_children + parents) / 1000
    for name, seconds in cpu_settled.items():
        _line(
            "cpu_s_per_1000_workflows",
            round(seconds / thousands, 3),
            "s",
            process=name,
            note="from the first start until the views hold every parent closed",
            settled_s=round(settled_s, 3),
            **shape,
        )
    return total_children / elapsed


def _latencies(prefix: str, parents: list[_Parent], shape: dict[str, Any]) -> None:
    visible = [(p.received_wall - p.sent_wall) * 1000 for p in parents]
    appended = [(p.appended_wall - p.sent_wall) * 1000 for p in parents]
    for q, name in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
        _line(f"{prefix}_{name}_ms", round(percentile(visible, q), 2), "ms", **shape)
        _line(f"{prefix}_appended_{name}_ms", round(percentile(appended, q), 2), "ms", **shape)


async def _singles(
    stack: Stack, client: AionClient, watcher: Watcher, *, count: int, report: bool
) -> float:
    """Single-child parents one after another; returns their end-to-end p50 (ms)."""
    run = uuid.uuid4().hex[:6]
    done: list[_Parent] = []
    cpu_before = _cpu(stack)
    began = time.time()
    for index in range(count):
        parent = await _start_parent(
            client, watcher, "bench.fanout.single", f"single-{run}-{index}", index
        )
        await asyncio.wait_for(parent.done.wait(), 60)
        done.append(parent)
    elapsed = time.time() - began
    cpu_used = _cpu_since(stack, cpu_before)
    _check(done)
    p50 = percentile([(p.received_wall - p.sent_wall) * 1000 for p in done], 0.5)
    if not report:
        return p50
    shape = {"shape": f"{count} sequential single-child parents"}
    _latencies("single_parent", done, shape)
    _cpu_lines(cpu_used, elapsed, shape)
    return p50


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aion-bench-fanout-") as home:
        config = StackConfig(
            home=Path(home),
            kafka_bootstrap=args.kafka,
            workflows=("bench.fanout_workflows",),
            topic_prefix=f"fanout-{uuid.uuid4().hex[:8]}",
            partitions=args.partitions,
            engines=args.engines,
            brokers=args.brokers,
            pythonpath=(str(_ROOT),),
        )
        began = time.monotonic()
        async with Stack(config) as stack:
            _line("stack_ready_s", round(time.monotonic() - began, 2), "s")
            watcher = Watcher(stack.settings)
            await watcher.start()
            try:
                async with stack.client(timeout=60) as client:
                    if args.warm_up:  # a fresh broker runs interpreted for a while
                        await _fanout(
                            stack, client, watcher, parents=args.warm_up,
                            children=args.children, concurrency=args.concurrency, report=False,
                        )  # fmt: skip
                        await _singles(stack, client, watcher, count=args.warm_up, report=False)
                    short = args.short_warm_up
                    await _singles(stack, client, watcher, count=short, report=False)
                    await _fanout(
                        stack, client, watcher, parents=short, children=args.children,
                        concurrency=args.concurrency, report=False,
                    )  # fmt: skip
                    await _fanout(
                        stack, client, watcher, parents=args.parents, children=args.children,
                        concurrency=args.concurrency, report=True,
                    )  # fmt: skip
                    await _singles(stack, client, watcher, count=args.singles, report=True)
            finally:
                await watcher.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--kafka", default=os.environ.get("AION_BENCH_KAFKA") or None)
    parser.add_argument("--parents", type=int, default=200)
    parser.add_argument("--children", type=int, default=10)
    parser.add_argument("--singles", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32, help="start requests in flight")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--engines", type=int, default=1)
    parser.add_argument(
        "--brokers", type=int, default=1, help="embedded Kafka nodes (3: a cluster, RF 3)"
    )
    parser.add_argument(
        "--warm-up", type=int, default=0, help="first run this many parents and singles"
    )
    parser.add_argument(
        "--short-warm-up",
        type=int,
        default=10,
        help="then this many singles and fan-out parents, unreported (at least 1)",
    )
    args = parser.parse_args(argv)
    if args.short_warm_up < 1:
        parser.error("--short-warm-up must be at least 1")
    if args.brokers > 1:
        args.kafka = None  # a cluster of its own, never the shared broker
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
