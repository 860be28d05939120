"""The watcher's part of ``bench.recovery``: taking a partition on as history grows.

On the topics :func:`bench.recovery.engine_growth` wrote (one partition; ``--open`` waiting
workflows, then closed parent/child pairs), at each size: the group's offset is set to the
log's end and the changelog marked unbuilt, so a watcher run in this process builds the
changelog from the event log (the upgrade path: ``build_s``), then three fresh watcher
processes (spawned) take the partition on,
with the group's offset at the log's end: **cold** (no local store: ``watcher-state`` read
whole — open work — and the partition serves; ``watcher-closed``, one record per closed
workflow within retention, loads in the background: ``closed_complete_s``), **warm** (the
stores the cold run left: only the tails), and **replay** (no changelog: the event log folded
from offset 0, as before). Time is from assignment to ready (serving); RSS as for the engine
(``rss_after_closed_mb`` once the closed load ended).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import shutil
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalGenerationError, UnknownMemberIdError

from aion_common.kafka.options import client_options
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings

__all__ = ["catch_up_watcher", "watcher_acquire"]


async def _commit_end(settings: Settings, patience_s: float = 60.0) -> int:
    """Set the watcher group's offset to the events partition's end (nothing left to issue).

    The broker takes an offset from outside the group only once the group is empty: a
    watcher of the previous size that has not left yet (its session still open) makes the
    commit fail, so it is retried until that member is gone."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await _commit_end_once(settings)
        except (CommitFailedError, UnknownMemberIdError, IllegalGenerationError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _commit_end_once(settings: Settings) -> int:
    topics = Topics(settings.topic_prefix)
    tp = TopicPartition(topics.events, 0)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=f"{settings.topic_prefix}.watcher",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        end: int = (await consumer.end_offsets([tp]))[tp]
        consumer.assign([tp])
        await consumer.commit({tp: end})
    finally:
        await consumer.stop()
    return end


async def _unbuild(settings: Settings) -> None:
    """Mark the watcher's changelog as never built: the next watcher rebuilds it whole."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from aion_common.kafka.changelog import MARKER_KEY, Marker  # noqa: PLC0415

    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            Topics(settings.topic_prefix).watcher_state,
            Marker("building", -1).encode(),
            key=MARKER_KEY,
            partition=0,
        )
    finally:
        await producer.stop()


async def catch_up_watcher(settings: Settings) -> float:
    """Run a watcher until it folded (and logged) everything; seconds it took."""
    from aion_watcher.config import WatcherConfig  # noqa: PLC0415 - the watcher's part only
    from aion_watcher.service import WatcherService  # noqa: PLC0415

    topics = Topics(settings.topic_prefix)
    tp = TopicPartition(topics.events, 0)
    began = time.perf_counter()
    service = WatcherService(settings, WatcherConfig(session_timeout=6.0))
    await service.start()
    runner = asyncio.create_task(service.run())
    probe = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await probe.start()
    try:
        end: int = (await probe.end_offsets([tp]))[tp]
        while 0 not in service.restores or service.rebuilding():
            if runner.done():
                await runner
            await asyncio.sleep(0.2)
        assert end >= 0
    finally:
        await probe.stop()
        await service.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return time.perf_counter() - began


def _rss_mb() -> tuple[float, float]:
    fields = {}
    for row in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = row.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(rest.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def _process(options: dict[str, Any], changelog: bool, conn: Connection) -> None:
    try:
        conn.send(asyncio.run(_acquire(Settings(**options), changelog)))
    except BaseException as err:
        conn.send({"error": repr(err)})
        raise


async def _acquire(settings: Settings, changelog: bool) -> dict[str, Any]:
    from aion_watcher.config import WatcherConfig  # noqa: PLC0415
    from aion_watcher.service import WatcherService  # noqa: PLC0415

    gc.collect()
    before, _ = _rss_mb()
    service = WatcherService(settings, WatcherConfig(changelog=changelog, session_timeout=6.0))
    await service.start()
    runner = asyncio.create_task(service.run())
    try:
        while 0 not in service.restores or service.rebuilding():
            if runner.done():
                await runner
            await asyncio.sleep(0.02)
        gc.collect()
        rss, hwm = _rss_mb()
        report = dict(service.restores[0])
        report.pop("closed_loaded_s", None)  # a warm load may be done already
        report.pop("closed_records_read", None)
        if changelog:  # serving open work now; closed workflows still loading: wait for them
            while "closed_loaded_s" not in service.restores[0]:
                if runner.done():
                    await runner
                await asyncio.sleep(0.02)
            loaded = service.restores[0]
            report["closed_complete_s"] = loaded["closed_loaded_s"]
            report["closed_records_read"] = loaded["closed_records_read"]
            gc.collect()
            report["rss_after_closed_mb"] = round(_rss_mb()[0], 1)
    finally:
        await service.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return {
        **report,
        "rss_mb": round(rss, 1),
        "rss_added_mb": round(rss - before, 1),
        "hwm_mb": round(hwm, 1),
    }


def in_spawned_process(
    target: Callable[..., None], settings: Settings, *, changelog: bool, what: str
) -> dict[str, Any]:
    """Run ``target(options, changelog, pipe)`` in a fresh spawned process (the engine's or the
    watcher's acquisition, measured alone); the figures it sends back through the pipe."""
    options = {
        "bootstrap_servers": settings.bootstrap_servers,
        "topic_prefix": settings.topic_prefix,
        "partitions": settings.partitions,
        "transactions": "on",
        "instance_id": settings.instance_id,
        "state_dir": settings.state_dir,
        "retention_ms": None,
    }
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=target, args=(options, changelog, child), daemon=True
    )
    process.start()
    try:
        if not parent.poll(1800):
            raise TimeoutError(f"the {what} process did not report")
        result: dict[str, Any] = parent.recv()
    finally:
        process.join(60)
        if process.is_alive():
            process.kill()
            process.join()
    if "error" in result:
        raise RuntimeError(f"{what} process failed: {result['error']}")
    return result


async def watcher_acquire(settings: Settings) -> dict[str, dict[str, Any]]:
    """Catch the changelog up, then cold, warm and replay acquisitions (fresh processes)."""
    watcher = Settings(
        bootstrap_servers=settings.bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        partitions=settings.partitions,
        transactions="on",
        instance_id="bench-watcher",
        state_dir=str(Path(settings.state_dir).with_name("watcher-state")),
        retention_ms=None,
    )
    await _commit_end(watcher)
    await _unbuild(watcher)
    shutil.rmtree(watcher.state_dir, ignore_errors=True)
    caught = await catch_up_watcher(watcher)
    shutil.rmtree(watcher.state_dir, ignore_errors=True)
    runs = {
        "cold": in_spawned_process(_process, watcher, changelog=True, what="watcher"),
        "warm": in_spawned_process(_process, watcher, changelog=True, what="watcher"),
        "replay": in_spawned_process(_process, watcher, changelog=False, what="watcher"),
    }
    runs["cold"]["build_s"] = round(caught, 3)
    return runs
