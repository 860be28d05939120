"""Watcher benchmark: ``python -m aion_watcher.bench`` prints one JSON object per line.

Starts its own Apache Kafka broker unless ``AION_BENCH_KAFKA=host:port`` names one.

- *latency* (see ``_latency``): a real engine and a real watcher run as subprocesses; children
  complete at a steady ``--rate`` per second, and for each the bench reports the time from the
  child's terminal event being appended to ``aion.events`` to the parent's
  ``ChildWorkflowCompleted`` for it being appended (record timestamps; p50, p99), and the same
  as seen by a read_committed consumer (``_visible``). Needs the repository checkout: the
  engine loads ``tests/e2e/watcher/workflows.py``.
- *throughput*: the watcher alone (in-process, no engine, so it issues each child's record
  itself: ``engine_reports_terminals`` off): ``--terminals`` children (start + terminal
  batches, 10 per parent) are on the topic before it starts; terminals/s is measured from its
  first record issued to its last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aion_common.codecs import Codec
from aion_common.domain import (
    ChildWorkflowCompleted,
    EventBatch,
    ParentLink,
    Payload,
    RecordChildTerminal,
    SignalWorkflow,
    StartWorkflow,
    WorkflowCompleted,
    WorkflowStarted,
)
from aion_common.kafka import KeyedProducer, Topics, ensure_topics
from aion_common.settings import Settings
from aion_common.testing import percentile
from aion_common.testing._support import find_repo_root
from aion_watcher.config import WatcherConfig
from aion_watcher.service import WatcherService

_INPUT = Payload.from_json({"n": 1})
_CHILDREN_PER_PARENT = 10
# The latency run's engine loads these (``wx.parent`` / ``wx.child`` kind ``signal``) from the
# repository checkout: the watcher package must not import the engine.
_WORKFLOWS = "tests.e2e.watcher.workflows"


def _emit(metric: str, value: float, unit: str, **extra: object) -> None:
    line = {"bench": "watcher", "metric": metric, "value": round(value, 3), "unit": unit, **extra}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _start(workflow_id: str, parent: ParentLink | None) -> EventBatch:
    run = f"{workflow_id}-r1"
    started = WorkflowStarted(
        workflow_id=workflow_id,
        run_id=run,
        seq=1,
        recorded_at=datetime.now(UTC),
        command_id=str(uuid.uuid4()),
        workflow_type="bench",
        input=_INPUT,
        first_run_id=run,
        parent=parent,
    )
    return EventBatch(workflow_id=workflow_id, command_id="c", writer="bench", events=(started,))


def _complete(workflow_id: str) -> EventBatch:
    done = WorkflowCompleted(
        workflow_id=workflow_id,
        run_id=f"{workflow_id}-r1",
        seq=2,
        recorded_at=datetime.now(UTC),
        command_id=str(uuid.uuid4()),
        result=_INPUT,
    )
    return EventBatch(workflow_id=workflow_id, command_id="c", writer="bench", events=(done,))


class _Bench:
    def __init__(self, bootstrap: str, partitions: int) -> None:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        self.settings = Settings(
            bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions
        )
        self.topics = Topics(prefix)
        self.codec = Codec()
        self.producer = KeyedProducer(self.settings)

    async def publish(self, batches: list[EventBatch]) -> None:
        sends = [
            self.producer.send(self.topics.events, b.workflow_id, self.codec.encode_batch(b))
            for b in batches
        ]
        for chunk in range(0, len(sends), 2000):
            await asyncio.gather(*sends[chunk : chunk + 2000])

    def family(self, parents: int) -> tuple[list[EventBatch], list[str]]:
        starts: list[EventBatch] = []
        children: list[str] = []
        for p in range(parents):
            parent_id = f"p-{p}-{uuid.uuid4().hex[:6]}"
            starts.append(_start(parent_id, None))
            link = ParentLink(workflow_id=parent_id, run_id=f"{parent_id}-r1")
            for c in range(_CHILDREN_PER_PARENT):
                child_id = f"{parent_id}-c{c}"
                starts.append(_start(child_id, link))
                children.append(child_id)
        return starts, children

    async def watcher(self) -> tuple[WatcherService, asyncio.Task[None]]:
        # No engine here reports the terminals (decision 44), so the watcher issues each record
        # itself on reading the terminal, as it does for engines that do not. With the default
        # (engine_reports_terminals on) it issued none until the sweep re-issued them all
        # grace_period (60 s) later: the figure was the sweep's, after a minute's wait.
        config = WatcherConfig(grace_period=60, sweep_interval=5, engine_reports_terminals=False)
        service = WatcherService(self.settings, config)
        await service.start()
        task = asyncio.create_task(service.run())
        while len(service.state.owned) < self.settings.partitions:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        return service, task


def _command_bytes(codec: Codec, command: StartWorkflow | SignalWorkflow) -> bytes:
    return codec.encode_command(command)


def _service_env(bench: _Bench) -> dict[str, str]:
    root = find_repo_root()
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p
        ),
        "AION_KAFKA_BOOTSTRAP": bench.settings.bootstrap_servers,
        "AION_TOPIC_PREFIX": bench.settings.topic_prefix,
        "AION_PARTITIONS": str(bench.settings.partitions),
        "AION_LOG_LEVEL": "WARNING",
    }


async def _latency(bootstrap: str, partitions: int, rate: float, seconds: float) -> None:
    """Child terminal appended -> parent's ChildWorkflowCompleted appended, real engine.

    An engine (``python -m aion_engine``, transactional) and a watcher (``python -m
    aion_watcher``) run as subprocesses. Parents start 10 children each that wait for signal
    ``go``; once every child runs, the bench signals ``rate`` children per second. For each child
    it takes the ``aion.events`` record of the child's ``WorkflowCompleted`` and the record of the
    parent's ``ChildWorkflowCompleted`` for it, and reports the difference of their append
    times (record timestamps, set by the engine's producer: ms resolution) and of the times a
    read_committed consumer in this process saw them (``_visible``), and the split at the
    watcher's ``RecordChildTerminal`` (``terminal_to_command``, ``command_to_recorded``).
    """
    bench = _Bench(bootstrap, partitions)
    await ensure_topics(bench.settings, bench.topics)
    count = max(_CHILDREN_PER_PARENT, int(rate * seconds))
    parents = [f"lat-{p:04d}-{uuid.uuid4().hex[:4]}" for p in range(count // _CHILDREN_PER_PARENT)]
    children = [f"{p}-c{c}" for c in range(_CHILDREN_PER_PARENT) for p in parents]
    with tempfile.TemporaryDirectory(prefix="aion-bench-watcher-") as logs:
        services = _spawn_services(bench, Path(logs))
        try:
            await _drive(bench, parents, children, rate)
        finally:
            _stop_services(services)


def _spawn_services(bench: _Bench, logs: Path) -> list[subprocess.Popen[bytes]]:
    """An engine (this bench's workflows) and a watcher, logging into ``logs``."""
    root = find_repo_root()
    env = _service_env(bench)
    argvs = {
        "engine": [sys.executable, "-m", "aion_engine", "--workflows", _WORKFLOWS],
        "watcher": [sys.executable, "-m", "aion_watcher"],
    }
    processes = []
    for name, argv in argvs.items():
        with (logs / f"{name}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(  # noqa: S603 - argv is built here
                    argv,
                    cwd=root,
                    env={**env, "AION_INSTANCE_ID": f"bench-{name}"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return processes


def _stop_services(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _drive(bench: _Bench, parents: list[str], children: list[str], rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bench.settings.bootstrap_servers)
    reader = AIOKafkaConsumer(
        bootstrap_servers=bench.settings.bootstrap_servers,
        isolation_level="read_committed",
        fetch_max_wait_ms=5,
    )
    await producer.start()
    await reader.start()
    parts = [
        TopicPartition(topic, p)
        for topic in (bench.topics.events, bench.topics.commands)
        for p in range(bench.settings.partitions)
    ]
    reader.assign(parts)
    await reader.seek_to_beginning(*parts)
    started: set[str] = set()
    terminal: dict[str, tuple[int, float]] = {}  # child -> (record ms, seen at)
    recorded: dict[str, tuple[int, float]] = {}
    issued: dict[str, int] = {}  # child -> the watcher's first record command's append time

    async def read() -> None:
        while len(recorded) < len(children):
            for records in (await reader.getmany(timeout_ms=50)).values():
                seen = time.perf_counter()
                for record in records:
                    if record.topic == bench.topics.commands:
                        command = bench.codec.decode_command(record.value)
                        if isinstance(command, RecordChildTerminal):
                            issued.setdefault(command.child_workflow_id, record.timestamp)
                        continue
                    batch = bench.codec.decode_batch(record.value)
                    for event in batch.events:
                        if isinstance(event, WorkflowStarted) and event.parent is not None:
                            started.add(event.workflow_id)
                        elif isinstance(event, WorkflowCompleted) and "-c" in event.workflow_id:
                            terminal[event.workflow_id] = (record.timestamp, seen)
                        elif isinstance(event, ChildWorkflowCompleted):
                            recorded[event.child_workflow_id] = (record.timestamp, seen)

    async def send(command: StartWorkflow | SignalWorkflow) -> None:
        await producer.send(
            bench.topics.commands,
            _command_bytes(bench.codec, command),
            key=command.workflow_id.encode(),
        )

    reading = asyncio.create_task(read())
    try:
        for parent in parents:
            spec = {
                "children": [
                    {"id": f"{parent}-c{c}", "kind": "signal", "value": c, "hops": 0}
                    for c in range(_CHILDREN_PER_PARENT)
                ]
            }
            await send(
                StartWorkflow(
                    command_id=str(uuid.uuid4()),
                    issued_at=datetime.now(UTC),
                    workflow_id=parent,
                    workflow_type="wx.parent",
                    input=Payload.from_json(spec),
                )
            )
        await producer.flush()
        async with asyncio.timeout(300):
            while len(started) < len(children):  # noqa: ASYNC110 - the reader fills it
                await asyncio.sleep(0.05)
        begin = time.perf_counter()
        for index, child in enumerate(children):
            await asyncio.sleep(max(0.0, begin + index / rate - time.perf_counter()))
            await send(
                SignalWorkflow(
                    command_id=str(uuid.uuid4()),
                    issued_at=datetime.now(UTC),
                    workflow_id=child,
                    name="go",
                    payload=Payload.from_json(None),
                )
            )
        await asyncio.wait_for(reading, 120)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await reader.stop()
        await producer.stop()
    _report(children, rate, terminal, recorded, issued)


def _report(
    children: list[str],
    rate: float,
    terminal: dict[str, tuple[int, float]],
    recorded: dict[str, tuple[int, float]],
    issued: dict[str, int],
) -> None:
    # The first second warms the clients and the engine's caches up; it is reported apart.
    warm = int(rate)
    for name, sample in (("", children[warm:]), ("warmup_", children[:warm])):
        appended = sorted(float(recorded[c][0] - terminal[c][0]) for c in sample)
        visible = sorted((recorded[c][1] - terminal[c][1]) * 1000 for c in sample)
        # The split: terminal -> the watcher's command appended (this includes the engine's
        # commit of the child's transaction: the watcher reads read_committed), then the rest.
        watcher = sorted(float(issued[c] - terminal[c][0]) for c in sample)
        engine = sorted(float(recorded[c][0] - issued[c]) for c in sample)
        for label, values in (
            ("terminal_to_recorded", appended),
            ("terminal_to_recorded_visible", visible),
            ("terminal_to_command", watcher),
            ("command_to_recorded", engine),
        ):
            quantiles = [(f"p{q}", percentile(values, q / 100)) for q in (50, 99)]
            for suffix, value in [*quantiles, ("max", values[-1])]:
                _emit(f"{name}{label}_{suffix}", value, "ms", rate=rate, samples=len(sample))


async def _throughput(bootstrap: str, partitions: int, terminals: int) -> None:
    bench = _Bench(bootstrap, partitions)
    await ensure_topics(bench.settings, bench.topics)
    await bench.producer.start()
    starts, children = bench.family(max(1, terminals // _CHILDREN_PER_PARENT))
    await bench.publish(starts)
    await bench.publish([_complete(c) for c in children])
    service, task = await bench.watcher()
    issued = "aion_watcher_records_issued_total"
    while service.metrics.value(issued) == 0:  # noqa: ASYNC110 - sampling a counter
        await asyncio.sleep(0.001)
    first = time.perf_counter()
    while service.metrics.value(issued) < len(children):  # noqa: ASYNC110 - sampling a counter
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - first
    _emit("terminals_per_second", len(children) / elapsed, "1/s", terminals=len(children))
    await service.stop()
    await task
    await bench.producer.stop()


async def run(bootstrap: str, args: argparse.Namespace) -> None:
    """Both measurements against ``bootstrap``."""
    await _latency(bootstrap, args.partitions, args.rate, args.seconds)
    await _throughput(bootstrap, args.partitions, args.terminals)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, find or start a broker, run."""
    parser = argparse.ArgumentParser(prog="python -m aion_watcher.bench", description=__doc__)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, default=100.0, help="children completed per s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--terminals", type=int, default=20_000)
    args = parser.parse_args(argv)
    external = os.environ.get("AION_BENCH_KAFKA")
    if external:
        asyncio.run(run(external, args))
        return 0
    from aion_common.testing.broker import KafkaBroker  # noqa: PLC0415 - only when needed

    with tempfile.TemporaryDirectory(prefix="aion-bench-kafka-") as data_dir:
        broker = KafkaBroker(Path(data_dir), die_with_parent=True, heap="1g")
        broker.start()
        try:
            asyncio.run(run(broker.bootstrap_servers, args))
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
