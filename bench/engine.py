"""Engine benchmark: ``python -m bench.engine`` (also run by ``python -m bench``).

Starts its own Apache Kafka broker (``aion_common.testing.broker.KafkaBroker``) unless
``AION_BENCH_KAFKA=host:port`` names one, runs an :class:`EngineService` (transactions on) with
``--partitions`` partitions in its own process — as ``aion-engine`` runs in production, apart
from the watcher this script plays — and drives it with generated commands: each
``bench.parent`` workflow starts one ``bench.child`` and returns its result, and this script
plays the watcher (it reads the events topic, read_committed, and sends
``RecordChildTerminal`` for each child terminal). Every parent therefore costs three commands
(its StartWorkflow, the child's StartWorkflow emitted by the engine, and the watcher's
RecordChildTerminal) and six events.

Figures, one JSON line each:

- ``commands_per_s``: sustained throughput — every parent's StartWorkflow is produced at
  once, and the rate is the commands applied (event batches seen by a read_committed
  consumer; every bench command yields exactly one) per second over the steady window between
  the 10% and 90% marks of the run; ``commands_per_s_end_to_end`` is the whole run, first send
  to last parent completed, ramp and tail included; ``events_per_s`` likewise end to end;
- ``latency_p50_ms`` / ``latency_p99_ms`` at half the sustained rate, at the issue's target
  load (2,500 commands/s) and at a light load: from just before the command is produced to
  the arrival of the event batch carrying its command id at a read_committed consumer
  (measured for the commands this script produces: parent StartWorkflow and
  RecordChildTerminal; offered open-loop, whatever the engine's progress);
- ``rebuild_s``: 100,000 events' worth of real batches (made by an offline ``EngineCore``) are
  produced to one events partition; the clock covers reading it to its end (read_committed),
  decoding and ``EngineCore.apply_batch``, and re-arming timers — the service's acquire path.

``engine_cpu_per_command_us`` is the engine process's CPU time over the throughput run per
command, and its ``ceiling_commands_per_s`` the rate one full core would give: unlike the
rates, it hardly depends on what else the machine is running.

``--profile FILE`` adds a second throughput run with the engine process under cProfile, writes
the stats to FILE and prints the top functions to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import multiprocessing
import os
import pstats
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aion.workflow import WorkflowContext
from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    Command,
    EventBatch,
    ParentLink,
    Payload,
    RecordChildTerminal,
    StartWorkflow,
    WorkflowCompleted,
    WorkflowStarted,
    outcome_of,
)
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_common.testing import percentile
from aion_engine.core import EngineCore
from aion_engine.registry import WorkflowRegistry
from aion_engine.service import EngineService
from bench._kafka import bench_kafka

REGISTRY = WorkflowRegistry()


@REGISTRY.defn("bench.parent")
async def _parent(ctx: WorkflowContext, value: int) -> int:
    return int(await ctx.execute_child("bench.child", value)) + 1


@REGISTRY.defn("bench.child")
async def _child(ctx: WorkflowContext, value: int) -> int:
    return value * 2


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "engine", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _start(workflow_id: str, value: int, command_id: str | None = None) -> StartWorkflow:
    return StartWorkflow(
        command_id=command_id or str(uuid.uuid4()),
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        workflow_type="bench.parent",
        input=Payload.from_json(value),
    )


def _terminal_for(event: Any, parent: ParentLink) -> RecordChildTerminal | None:
    outcome = outcome_of(event)
    if outcome is None:
        return None
    return RecordChildTerminal.of(
        parent.workflow_id,
        parent.run_id,
        child_workflow_id=event.workflow_id,
        child_run_id=event.run_id,
        outcome=outcome,
        issued_at=datetime.now(UTC),
    )


class Driver:
    """Produces commands, plays the watcher, and records command→event latencies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.codec = Codec()
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.completed: set[str] = set()
        self.events = 0
        self.applied_at: list[float] | None = None  # arrival time of every batch, when recording
        self._parents: dict[str, ParentLink] = {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, linger_ms=0, enable_idempotence=True
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,  # the broker answers as soon as records are visible
        )
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._target = 0

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        partitions = [
            TopicPartition(self.topics.events, p) for p in range(self.settings.partitions)
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()

    async def send(self, command: Command) -> None:
        value = self.codec.encode_command(command)
        self.sent_at[command.command_id] = time.perf_counter()
        await self._producer.send(self.topics.commands, value, key=encode_key(command.workflow_id))

    def expect(self, completed: int) -> None:
        self._target = completed
        self._done.clear()
        if len(self.completed) >= completed:
            self._done.set()

    async def wait(self, limit_s: float) -> None:
        await asyncio.wait_for(self._done.wait(), limit_s)

    async def _watch(self) -> None:
        while True:
            fetched = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for records in fetched.values():
                for record in records:
                    # trusted: the engine checked what it wrote (the real watcher checks)
                    batch = self.codec.decode_batch(record.value, trusted=True)
                    await self._on_batch(batch, now)
            if self._target and len(self.completed) >= self._target:
                self._done.set()

    async def _on_batch(self, batch: EventBatch, now: float) -> None:
        sent = self.sent_at.pop(batch.command_id, None)
        if sent is not None:
            self.latencies.append(now - sent)
        if self.applied_at is not None:
            self.applied_at.append(now)
        self.events += len(batch.events)
        for event in batch.events:
            if isinstance(event, WorkflowStarted) and event.parent is not None:
                self._parents[event.workflow_id] = event.parent
            elif isinstance(event, WorkflowCompleted):
                parent = self._parents.pop(event.workflow_id, None)
                if parent is None:
                    self.completed.add(event.workflow_id)
                    continue
                command = _terminal_for(event, parent)
                if command is not None:
                    await self.send(command)


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (0, 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, from /proc (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _print_profile(profiler: cProfile.Profile, path: str) -> None:
    profiler.dump_stats(path)
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(30)
        sys.stderr.write(
            f"--- engine profile of the throughput run, by {key} ---\n{out.getvalue()}"
        )


class EngineProcess:
    """The engine under test, in its own process (spawned), driven over a pipe.

    ``service_options`` are passed on to :class:`EngineService` (e.g. ``changelog=False``).
    """

    def __init__(
        self,
        settings: Settings,
        max_resident: int,
        service_options: dict[str, Any] | None = None,
    ) -> None:
        self._conn, child = multiprocessing.Pipe()
        options = {
            "bootstrap_servers": settings.bootstrap_servers,
            "topic_prefix": settings.topic_prefix,
            "partitions": settings.partitions,
            "transactions": settings.transactions,
            "instance_id": settings.instance_id,
            "state_dir": settings.state_dir,
            "retention_ms": settings.retention_ms,
        }
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(
            target=_engine_process,
            args=(options, max_resident, child, service_options or {}),
            daemon=True,
        )

    async def start(self) -> None:
        self._process.start()
        await self._call(None, limit_s=120)  # "ready": every partition owned

    async def profile(self, path: str | None) -> None:
        """Start profiling (``path`` None), or stop and write the stats to ``path``."""
        await self._call(("profile", path))

    async def gc_report(self) -> str:
        """The engine process's collector pauses since the last report."""
        return str(await self._call(("gc", None)))

    async def cpu_s(self) -> float:
        """The engine process's CPU time so far (user + system), in seconds."""
        value = await self._call(("cpu", None))
        assert isinstance(value, float)
        return value

    async def stop(self) -> None:
        if self._process.is_alive():
            try:
                await self._call(("stop", None), limit_s=60)
            finally:
                self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    async def _call(self, message: tuple[str, str | None] | None, limit_s: float = 30) -> object:
        if message is not None:
            self._conn.send(message)
        if not await asyncio.to_thread(self._conn.poll, limit_s):
            raise TimeoutError(f"engine process did not answer {message!r} in {limit_s} s")
        answer = self._conn.recv()
        if not isinstance(answer, tuple) or answer[0] != "ok":
            raise RuntimeError(f"engine process failed: {answer}")
        return answer[1]


def _engine_process(
    options: dict[str, Any], max_resident: int, conn: Connection, service: dict[str, Any]
) -> None:
    try:
        asyncio.run(_engine_main(Settings(**options), max_resident, conn, service))
    except BaseException as err:
        conn.send(("error", repr(err)))
        raise


class _GcPauses:
    """Collector pauses in the engine process (they stall every partition at once)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def report(self) -> str:
        pauses, self.pauses = self.pauses, []
        if not pauses:
            return "no collections"
        return (
            f"{len(pauses)} collections, total {sum(pauses) * 1000:.1f} ms, "
            f"longest {max(pauses) * 1000:.1f} ms"
        )


_gc_pauses = _GcPauses()


async def _engine_main(
    settings: Settings, max_resident: int, conn: Connection, service: dict[str, Any]
) -> None:
    gc.callbacks.append(_gc_pauses)
    engine = EngineService(settings, REGISTRY, max_resident=max_resident, **service)
    await engine.start()
    runner = asyncio.create_task(engine.run())
    profiler: cProfile.Profile | None = None
    try:
        while len(engine.owned_partitions) < settings.partitions:
            if runner.done():
                await runner
            await asyncio.sleep(0.05)
        conn.send(("ok", None))
        while True:
            receive = asyncio.ensure_future(asyncio.to_thread(conn.recv))
            await asyncio.wait({receive, runner}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                receive.cancel()
                await runner
                raise RuntimeError("engine run() returned")
            command, path = receive.result()
            if command == "stop":
                break
            if command == "cpu":
                conn.send(("ok", time.process_time()))
                continue
            if command == "gc":
                conn.send(("ok", _gc_pauses.report()))
                continue
            if path is None:
                profiler = cProfile.Profile()
                profiler.enable()
            elif profiler is not None:
                profiler.disable()
                _print_profile(profiler, path)
            conn.send(("ok", None))
    finally:
        await engine.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    conn.send(("ok", None))


async def _throughput(  # noqa: PLR0917 - one call per run
    driver: Driver,
    engine: EngineProcess,
    parents: int,
    profile: str | None,
    broker_pid: int | None = None,
    emit: Any = None,
) -> float:
    """One throughput run; its figures go to ``emit`` (``_line`` by default)."""
    emit = emit or _line
    run = uuid.uuid4().hex[:6]
    commands = [_start(f"tp-{run}-{i}", i) for i in range(parents)]
    driver.events = 0
    driver.applied_at = []
    driver.expect(len(driver.completed) + parents)
    if profile is not None:
        await engine.profile(None)
    cpu_before = await engine.cpu_s()
    await engine.gc_report()  # start afresh
    driver_before = time.process_time()
    machine_before = _machine_cpu()
    broker_before = _process_cpu(broker_pid)
    started = time.perf_counter()
    for command in commands:
        await driver.send(command)
    await driver.wait(300)
    elapsed = time.perf_counter() - started
    cpu = await engine.cpu_s() - cpu_before
    driver_cpu = time.process_time() - driver_before
    broker_cpu = _process_cpu(broker_pid) - broker_before
    busy, all_cpu = (a - b for a, b in zip(_machine_cpu(), machine_before, strict=True))
    if profile is not None:
        await engine.profile(profile)
    applied, driver.applied_at = driver.applied_at, None
    total = 3 * parents
    # the steady window: between the arrivals of the 10% and the 90% marks
    low, high = applied[total // 10], applied[total * 9 // 10]
    sustained = (total * 9 // 10 - total // 10) / (high - low)
    emit(
        "commands_per_s",
        round(sustained, 1),
        "commands/s",
        parents=parents,
        window_s=round(high - low, 3),
        note="commands applied per second between the 10% and 90% marks",
    )
    emit(
        "commands_per_s_end_to_end",
        round(total / elapsed, 1),
        "commands/s",
        seconds=round(elapsed, 3),
        note="first send to last parent completed",
    )
    emit("events_per_s", round(driver.events / elapsed, 1), "events/s", events=driver.events)
    emit(
        "engine_cpu_per_command_us",
        round(cpu / total * 1e6, 1),
        "us",
        engine_cpu_s=round(cpu, 3),
        engine_cpu_share=round(cpu / elapsed, 3),
        ceiling_commands_per_s=round(total / cpu, 1),
        driver_cpu_s=round(driver_cpu, 3),
        broker_cpu_s=round(broker_cpu, 3) if broker_pid else None,
        broker_cpu_per_command_us=round(broker_cpu / total * 1e6, 1) if broker_pid else None,
        machine_busy_share=round(busy / all_cpu, 3) if all_cpu else None,
        machine_cores=os.cpu_count(),
        profiled=profile is not None,
        engine_gc=await engine.gc_report(),
        note="engine process CPU per command; ceiling = commands/s with one full core",
    )
    emit(
        "workflows_per_s",
        round(2 * parents / elapsed, 1),
        "workflows/s",
        note="parents and children completed end to end",
    )
    return sustained


async def _latency(  # noqa: PLR0917 - one call per load
    driver: Driver,
    engine: EngineProcess,
    command_rate: float,
    seconds: float,
    load: str,
    broker_pid: int | None,
) -> None:
    parent_rate = command_rate / 3  # each parent brings two more commands
    run = uuid.uuid4().hex[:6]
    driver.latencies.clear()
    driver.sent_at.clear()
    total = int(parent_rate * seconds)
    driver.expect(len(driver.completed) + total)
    cpu_before, machine_before = await engine.cpu_s(), _machine_cpu()
    broker_before, driver_before = _process_cpu(broker_pid), time.process_time()
    await engine.gc_report()  # start afresh
    started = time.perf_counter()
    worst_lag = 0.0
    for i in range(total):
        due = started + i / parent_rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        worst_lag = max(worst_lag, -delay)
        await driver.send(_start(f"lat-{run}-{i}", i))
    await driver.wait(120)
    elapsed = time.perf_counter() - started
    cpu = await engine.cpu_s() - cpu_before
    busy, all_cpu = (a - b for a, b in zip(_machine_cpu(), machine_before, strict=True))
    broker_cpu = _process_cpu(broker_pid) - broker_before
    driver_cpu = time.process_time() - driver_before
    lat = driver.latencies
    p50, p99 = (percentile(lat, q) * 1000 for q in (0.5, 0.99))
    extra = {
        "load": load,
        "offered_commands_per_s": round(command_rate, 1),
        "applied_commands_per_s": round(3 * total / elapsed, 1),  # first send to last done
        "samples": len(lat),
        "engine_cpu_share": round(cpu / elapsed, 3),
        "broker_cpu_share": round(broker_cpu / elapsed, 3) if broker_pid else None,
        "driver_cpu_share": round(driver_cpu / elapsed, 3),
        "machine_busy_share": round(busy / all_cpu, 3) if all_cpu else None,
        "driver_worst_send_lag_ms": round(worst_lag * 1000, 1),
        "engine_gc": await engine.gc_report(),
    }
    _line("latency_p50_ms", round(p50, 2), "ms", **extra)
    _line("latency_p99_ms", round(p99, 2), "ms", **extra)
    _line("latency_mean_ms", round(statistics.fmean(lat) * 1000, 2), "ms", **extra)
    _line("latency_max_ms", round(max(lat) * 1000, 2), "ms", **extra)


def _history_batches(events: int) -> list[EventBatch]:
    """Real batches (parent+child+record cycles) from an offline core: ``events`` events."""
    core = EngineCore(REGISTRY, writer="bench")
    now = datetime.now(UTC)
    batches: list[EventBatch] = []
    count = 0
    index = 0
    while count < events:
        pending: list[Command] = [_start(f"rb-{index}", index)]
        parents: dict[str, ParentLink] = {}
        index += 1
        while pending:
            decision = core.handle(pending.pop(0), now=now)
            pending.extend(decision.outgoing)
            if decision.batch is None:
                continue
            batches.append(decision.batch)
            count += len(decision.batch.events)
            for event in decision.batch.events:
                if isinstance(event, WorkflowStarted) and event.parent is not None:
                    parents[event.workflow_id] = event.parent
                elif event.workflow_id in parents and (
                    command := _terminal_for(event, parents[event.workflow_id])
                ):
                    pending.append(command)
    return batches


async def _rebuild(settings: Settings, events: int) -> None:
    codec = Codec()
    topics = Topics(f"{settings.topic_prefix}-rb")
    rb_settings = Settings(
        bootstrap_servers=settings.bootstrap_servers,
        topic_prefix=topics.prefix,
        partitions=settings.partitions,
    )
    await ensure_topics(rb_settings, topics)
    batches = _history_batches(events)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=20,
        max_batch_size=1 << 20,
        enable_idempotence=True,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topics.events, codec.encode_batch(b), key=encode_key(b.workflow_id), partition=0
            )
            for b in batches
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    total = sum(len(b.events) for b in batches)

    core = EngineCore(REGISTRY, writer="bench")
    started = time.perf_counter()
    read_s = 0.0
    records = 0
    mark = time.perf_counter()
    async for record in read_partition_to_end(rb_settings, topics.events, 0):
        t0 = time.perf_counter()
        read_s += t0 - mark
        core.apply_batch(
            codec.decode_batch(
                record.value,
                topic=topics.events,
                partition=0,
                offset=record.offset,
                trusted=True,  # as the service's rebuild does
            )
        )
        records += 1
        mark = time.perf_counter()
    core.pending_timers()
    elapsed = time.perf_counter() - started
    _line(
        "rebuild_s",
        round(elapsed, 3),
        "s",
        events=total,
        records=records,
        workflows=len(core),
        kafka_read_s=round(read_s, 3),
        decode_apply_s=round(elapsed - read_s, 3),
    )


async def run(bootstrap: str, args: argparse.Namespace, broker_pid: int | None = None) -> None:
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}",
        partitions=args.partitions,
        transactions="on",
        instance_id="bench-engine",
    )
    await ensure_topics(settings, Topics(settings.topic_prefix))
    engine = EngineProcess(settings, args.max_resident)
    driver = Driver(settings)
    try:
        await driver.start()
        await engine.start()
        await _throughput(driver, engine, 500, None)  # warm up (connections, caches)
        rate = await _throughput(driver, engine, args.parents, None, broker_pid)
        if args.profile:  # a separate run: the profiler's overhead must not skew the figures
            await _throughput(driver, engine, args.parents, args.profile)
        await _latency(
            driver, engine, rate / 2, args.latency_seconds, "half of sustained", broker_pid
        )
        await _latency(
            driver, engine, 2500, args.latency_seconds, "target (2,500 commands/s)", broker_pid
        )
        await _latency(
            driver, engine, 150, args.latency_seconds / 2, "light (150 commands/s)", broker_pid
        )
    finally:
        await driver.stop()
        await engine.stop()
    await _rebuild(settings, args.rebuild_events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--parents", type=int, default=10_000, help="throughput run size")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--rebuild-events", type=int, default=100_000)
    parser.add_argument("--max-resident", type=int, default=10_000)
    parser.add_argument("--profile", metavar="FILE", help="cProfile the engine's throughput run")
    args = parser.parse_args(argv)
    with bench_kafka() as kafka:
        asyncio.run(run(kafka.bootstrap, args, kafka.pid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
