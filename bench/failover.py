"""Failover of a SIGKILLed engine among three, with standby replicas off and on.

Six partitions hold generated history (``closed`` events of parent/child pairs and ``open``
waiting workflows, written straight to the topics); three ``aion-engine`` processes
(``AION_ENGINE_SESSION_TIMEOUT_MS`` 6,000) share them. Once every partition is owned, one engine
is SIGKILLed; from then on a probe workflow (completing in its first step) is started every
100 ms on each partition it owned, and a partition's failover time is when the first probe
started after the kill completed there (a read_committed consumer sees the event) — session
timeout, rebalance, the new owner's restore and the command itself, end to end. Standbys off:
the new owner restores the partition cold (the compacted changelog, whole). Standbys on
(``AION_ENGINE_STANDBYS=1``): every engine has kept a warm store of the partitions it does not
own, so the new owner reads only the tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aion_common.codecs import Codec, encode_key
from aion_common.domain import Payload, StartWorkflow, WorkflowCompleted
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.topics import Topics, partition_for
from aion_common.settings import Settings
from bench import _history

_ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 6
SESSION_TIMEOUT_MS = 6_000
_PROBE_EVERY_S = 0.1


def _engine(settings: Settings, name: str, standbys: int, logs: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
        "AION_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "AION_TOPIC_PREFIX": settings.topic_prefix,
        "AION_PARTITIONS": str(PARTITIONS),
        "AION_INSTANCE_ID": name,
        "AION_TRANSACTIONS": "on",
        "AION_STATE_DIR": settings.state_dir,
        "AION_RETENTION": "off",
        "AION_ENGINE_STANDBYS": str(standbys),
        "AION_ENGINE_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "AION_LOG_LEVEL": "INFO",
    }
    log = (logs / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "aion_engine", "--workflows", "bench.recovery_workflows"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=_ROOT,
    )


def _owned(logs: Path, name: str) -> set[int]:
    owned: set[int] = set()
    path = logs / f"{name}.log"
    for row in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(row)
        except ValueError:
            continue
        message = record.get("message", record.get("msg"))
        if message == "partition acquired":
            owned.add(int(record["partition"]))
        elif message == "partition released":
            owned.discard(int(record["partition"]))
    return owned


def _acquisitions(logs: Path, name: str, after: float) -> list[dict[str, Any]]:
    found = []
    for row in (logs / f"{name}.log").read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(row)
            if record.get("message", record.get("msg")) == "partition acquired":
                found.append(record)
    return found[-PARTITIONS:] if after else found


async def _preload(settings: Settings, closed: int, open_: int) -> None:
    from bench.recovery import Sink, write_history, write_marker  # noqa: PLC0415 - a cycle

    topics = Topics(settings.topic_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        sink = Sink(producer)
        for partition in range(PARTITIONS):
            await write_marker(sink, topics, partition)
        steps = _history.engine_history(open_workflows=open_, prefix=f"f{uuid.uuid4().hex[:4]}")
        await write_history(
            sink,
            topics,
            steps,
            closed_events=closed,
            partition_of=lambda workflow_id: partition_for(workflow_id, PARTITIONS),
        )
    finally:
        await producer.stop()


class _Prober:
    """Starts probe workflows on chosen partitions and notes when each completes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.codec = Codec()
        self.completed: dict[str, float] = {}
        self.sent: dict[str, tuple[int, float]] = {}
        self._ids: dict[int, list[str]] = {}
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        tps = [TopicPartition(self.topics.events, p) for p in range(PARTITIONS)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()

    def ids_for(self, partition: int) -> list[str]:
        """Fresh probe ids that land on ``partition``."""
        pool = self._ids.setdefault(partition, [])
        while len(pool) < 10:
            candidate = f"probe-{uuid.uuid4().hex[:12]}"
            if partition_for(candidate, PARTITIONS) == partition:
                pool.append(candidate)
        return pool

    async def probe(self, partition: int) -> None:
        workflow_id = self.ids_for(partition).pop()
        command = StartWorkflow(
            command_id=str(uuid.uuid4()),
            issued_at=datetime.now(UTC),
            workflow_id=workflow_id,
            workflow_type="recovery.quick",
            input=Payload.from_json(partition),
        )
        self.sent[workflow_id] = (partition, time.monotonic())
        await self._producer.send(
            self.topics.commands, self.codec.encode_command(command), key=encode_key(workflow_id)
        )

    async def _watch(self) -> None:
        while True:
            fetched = await self._consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in fetched.values():
                for record in records:
                    batch = self.codec.decode_batch(record.value, trusted=True)
                    if any(isinstance(e, WorkflowCompleted) for e in batch.events):
                        self.completed.setdefault(batch.workflow_id, now)

    def first_after(self, partition: int, since: float) -> float | None:
        """When the first probe sent to ``partition`` after ``since`` completed."""
        times = [
            self.completed[w]
            for w, (p, sent) in self.sent.items()
            if p == partition and sent >= since and w in self.completed
        ]
        return min(times) if times else None


async def _shared(scratch: Path, names: list[str]) -> dict[str, set[int]]:
    """Wait until the engines own every partition between them."""
    deadline = time.monotonic() + 300
    while True:
        owned = {name: _owned(scratch, name) for name in names}
        every = [p for parts in owned.values() for p in parts]
        if sorted(every) == list(range(PARTITIONS)) and all(owned.values()):
            return owned
        if time.monotonic() > deadline:
            raise TimeoutError(f"engines did not share the partitions: {owned}")
        await asyncio.sleep(0.2)


async def _served(prober: _Prober, orphaned: list[int], killed_at: float) -> dict[int, float]:
    """Probe each orphaned partition until one probe completes there; seconds since the kill."""
    times: dict[int, float] = {}
    while len(times) < len(orphaned) and time.monotonic() - killed_at < 120:
        for partition in orphaned:
            if partition not in times:
                await prober.probe(partition)
        await asyncio.sleep(_PROBE_EVERY_S)
        for partition in orphaned:
            done = prober.first_after(partition, killed_at)
            if done is not None and partition not in times:
                times[partition] = done - killed_at
    return times


async def _failover(
    bootstrap: str, standbys: int, closed: int, open_: int, settle_s: float
) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="aion-bench-failover-"))
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"fo{uuid.uuid4().hex[:6]}",
        partitions=PARTITIONS,
        transactions="on",
        state_dir=str(scratch / "state"),
    )
    await ensure_topics(settings, Topics(settings.topic_prefix))
    await _preload(settings, closed, open_)
    names = ["fo-engine-1", "fo-engine-2", "fo-engine-3"]
    engines = {name: _engine(settings, name, standbys, scratch) for name in names}
    prober = _Prober(settings)
    await prober.start()
    try:
        owned = await _shared(scratch, names)
        # Standbys catch up with what they follow (a small history needs far less than 8 s).
        await asyncio.sleep(settle_s if standbys else min(2.0, settle_s))
        victim = names[0]
        orphaned = sorted(owned[victim])
        killed_at = time.monotonic()
        engines[victim].send_signal(signal.SIGKILL)
        engines[victim].wait()
        times = await _served(prober, orphaned, killed_at)
        survivors = [n for n in names if n != victim]
        acquired = [
            r
            for name in survivors
            for r in _acquisitions(scratch, name, 0)
            if int(r["partition"]) in orphaned
        ]
    finally:
        await prober.stop()
        for process in engines.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in engines.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    restores = [r.get("restore") or {} for r in acquired[-len(orphaned) :]]
    return {
        "failover_s": round(max(times.values()), 3) if len(times) == len(orphaned) else None,
        "per_partition_s": {str(p): round(t, 3) for p, t in sorted(times.items())},
        "orphaned_partitions": orphaned,
        "new_owner_rebuild_s": [r.get("rebuild_s") for r in acquired[-len(orphaned) :]],
        "new_owner_restore": restores,
    }


async def run(
    bootstrap: str,
    closed: int,
    open_: int,
    line: Callable[..., None],
    *,
    settle_s: float = 8.0,
) -> dict[int, dict[str, Any]]:
    """Failover with standbys off, then on; one line each. Once every partition is owned the
    engines get ``settle_s`` (standbys on; 2 s, or less, off) before the kill."""
    results = {}
    for standbys in (0, 1):
        result = await _failover(bootstrap, standbys, closed, open_, settle_s)
        results[standbys] = result
        line(
            f"engine_failover_s_standbys_{'on' if standbys else 'off'}",
            result["failover_s"],
            "s",
            session_timeout_s=SESSION_TIMEOUT_MS / 1000,
            closed_history_events=closed,
            open_workflows=open_,
            **{k: v for k, v in result.items() if k != "failover_s"},
            note="SIGKILL of 1 engine of 3 to the first command served on each of its partitions",
        )
    return results
