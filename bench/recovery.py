"""Recovery benchmark: ``python -m bench.recovery`` (also run by ``python -m bench``).

What a partition's acquisition costs as history grows, with changelogs and without:

- **acquire time and RSS** after ``--sizes`` events (100,000, 1,000,000, 3,000,000) of closed
  history (parent/child pairs run to completion) with the same ``--open`` (10,000) open
  workflows (each waiting for a signal, with a durable timer armed): the history is made by the
  engine's core and codec and written straight to one partition's ``aion.events``,
  ``engine-state`` and ``engine-closed`` topics (:mod:`bench._history`) — as compaction leaves
  the changelogs (``--uncompacted``: every record the engine wrote) — growing in place from one
  size to the next. At each size a fresh engine process (spawned, one partition) acquires the
  partition three ways, each beside the others: **cold** (no local store: the compacted
  ``engine-state`` is read whole, O(open work), and the partition serves; ``engine-closed``,
  one head per closed workflow within retention, loads in the background:
  ``closed_complete_s``), **warm** (the stores the cold run left: only the changelogs' tails
  are read), and **replay** (``changelog=False``: the event log read from offset 0, as before
  changelogs). Time is the acquisition itself (producer start to ready: serving open work);
  RSS is the process's resident memory after it (``rss_added_mb``: above the process before
  the engine started; ``rss_after_closed_mb`` once the closed load ended), ``hwm_mb`` its peak;
- **changelog bytes per event byte**: key + value bytes the engine wrote to its changelog over
  those it wrote to ``aion.events``, in the throughput runs below (and, for the generated
  history, ``generated_ratio``);
- **sustained commands/s with changelogs and without**, in the same run: ``bench.engine``'s
  throughput run (parent + child + the watcher's record per parent), alternating off, on, off,
  on, each on topics of its own;
- **failover** (:mod:`bench.failover`): three engine processes, one SIGKILLed; the time until
  each of its partitions answers a command again, with standby replicas off and on, beside the
  group's session timeout.

The watcher's figures (:mod:`bench.recovery_watcher`) come from the same topics at each size.
Ratios are printed with both sides; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.changelog import MARKER_KEY, Marker
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from bench import _history
from bench._kafka import bench_kafka
from bench.recovery_watcher import in_spawned_process, watcher_acquire

BENCH = "recovery"


def line(metric: str, value: float, unit: str, **extra: Any) -> None:
    """One JSON line of this benchmark."""
    record = {"bench": BENCH, "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _say(text: str) -> None:
    sys.stderr.write(f"recovery: {text}\n")
    sys.stderr.flush()


# -- writing history straight to the topics ------------------------------------------------------


class Sink:
    """Writes records to fixed partitions in whole batches (far faster than ``send``)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._batches: dict[tuple[str, int], Any] = {}
        self._futures: list[asyncio.Future[Any]] = []
        self.bytes: dict[str, int] = {}

    async def add(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.count(topic, key, value)
        where = (topic, partition)
        batch = self._batches.get(where)
        if batch is None:
            batch = self._batches[where] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
            await self._send(where)
            batch = self._batches[where] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers or [])
        if len(self._futures) > 200:
            await asyncio.gather(*self._futures)
            self._futures.clear()

    def count(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Count a record's key and value bytes as written to ``topic``."""
        self.bytes[topic] = self.bytes.get(topic, 0) + len(key) + len(value or b"")

    async def _send(self, where: tuple[str, int]) -> None:
        batch = self._batches.pop(where)
        topic, partition = where
        self._futures.append(await self._producer.send_batch(batch, topic, partition=partition))

    async def flush(self) -> None:
        for where in list(self._batches):
            await self._send(where)
        await asyncio.gather(*self._futures)
        self._futures.clear()


async def write_history(
    sink: Sink,
    topics: Topics,
    steps: Any,
    *,
    closed_events: int,
    partition_of: Any = None,
    compacted: bool = True,
) -> tuple[int, int]:
    """Write steps until ``closed_events`` events of closed pairs were written (after the open
    workflows the generator yields first); returns (events, closed events) written.

    ``compacted``: the changelogs as compaction leaves them once their tombstones' time ran
    out (an hour on engine-state): a closed pair's engine-state records — its runs' records
    and their tombstones, all superseded when the pair closed — are counted in the bytes but
    not written; engine-closed gets its heads either way."""
    events = closed = 0
    for step in steps:
        partition = 0 if partition_of is None else partition_of(step.key.decode())
        await sink.add(topics.events, partition, step.key, step.value)
        superseded = compacted and b"-open-" not in step.key
        for change in step.changes:
            topic = topics.engine_closed if change.closed_log else topics.engine_state
            if superseded and not change.closed_log:
                sink.count(topic, change.key, change.value)
                continue
            await sink.add(topic, partition, change.key, change.value, change.headers())
        events += step.events
        if b"-open-" not in step.key:
            closed += step.events
        if step.closed_pair and closed >= closed_events:
            break
    await sink.flush()
    return events, closed


async def write_marker(sink: Sink, topics: Topics, partition: int) -> None:
    """The changelogs' build markers, first: complete since offset 0 (nothing is stale), in
    the current layout."""
    from aion_engine._changelog import FORMAT  # noqa: PLC0415 - the engine's, not common

    marker = Marker("complete", 0, FORMAT)
    for topic in (topics.engine_state, topics.engine_closed):
        await sink.add(topic, partition, MARKER_KEY, marker.encode())
    await sink.flush()


# -- one acquisition in a fresh process ----------------------------------------------------------


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process, in MB."""
    fields = {}
    for row in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = row.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(rest.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def _acquire_process(options: dict[str, Any], changelog: bool, conn: Connection) -> None:
    try:
        conn.send(asyncio.run(_acquire(Settings(**options), changelog)))
    except BaseException as err:
        conn.send({"error": repr(err)})
        raise


async def _acquire(settings: Settings, changelog: bool) -> dict[str, Any]:
    from aion_engine.service import EngineService  # noqa: PLC0415 - the child process's import

    registry = _history.registry()
    gc.collect()
    before, _ = _rss_mb()
    engine = EngineService(settings, registry, changelog=changelog)
    began = time.perf_counter()
    await engine.start()
    runner = asyncio.create_task(engine.run())
    try:
        while engine.owned_partitions != [0]:
            if runner.done():
                await runner
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - began
        gc.collect()
        rss, hwm = _rss_mb()
        report = dict(engine.acquisitions()[0])
        if changelog:  # serving open work now; closed workflows still loading: wait for them
            while engine.acquisitions()[0].get("closed_complete_s") is None:
                if runner.done():
                    await runner
                await asyncio.sleep(0.02)
            loaded = engine.acquisitions()[0]
            report["closed_complete_s"] = loaded["closed_complete_s"]
            report["closed_records_read"] = loaded["closed_records_read"]
            report["rss_after_closed_mb"] = round(_rss_mb()[0], 1)
    finally:
        await engine.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return {
        **report,
        "wall_s": round(wall, 3),
        "rss_mb": round(rss, 1),
        "rss_added_mb": round(rss - before, 1),
        "hwm_mb": round(hwm, 1),
    }


def acquire_in_process(settings: Settings, *, changelog: bool) -> dict[str, Any]:
    """Acquire partition 0 in a fresh spawned engine process; its figures."""
    return in_spawned_process(_acquire_process, settings, changelog=changelog, what="engine")


# -- the engine's acquisitions as history grows --------------------------------------------------


async def engine_growth(
    bootstrap: str,
    sizes: list[int],
    open_workflows: int,
    *,
    watcher: bool = True,
    engine: bool = True,
    compacted: bool = True,
) -> None:
    """Acquire time and RSS after each size of closed history (see the module docstring);
    ``engine`` False: the watcher's figures only (same history)."""
    scratch = Path(tempfile.mkdtemp(prefix="aion-bench-recovery-"))
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"rec{uuid.uuid4().hex[:6]}",
        partitions=1,
        transactions="on",
        instance_id="bench-recovery",
        state_dir=str(scratch / "state"),
        retention_ms=None,
    )
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, acks="all"
    )
    await producer.start()
    sink = Sink(producer)
    steps = _history.engine_history(open_workflows=open_workflows)
    figures: dict[int, dict[str, dict[str, Any]]] = {}
    watcher_figures: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        await write_marker(sink, topics, 0)
        closed = 0
        for size in sorted(sizes):
            began = time.perf_counter()
            _, more = await write_history(
                sink, topics, steps, closed_events=size - closed, compacted=compacted
            )
            closed += more
            _say(f"history at {closed:,} closed events in {time.perf_counter() - began:.1f} s")
            shutil.rmtree(settings.state_dir, ignore_errors=True)
            runs = (
                {
                    "cold": acquire_in_process(settings, changelog=True),
                    "warm": acquire_in_process(settings, changelog=True),
                    "replay": acquire_in_process(settings, changelog=False),
                }
                if engine
                else {}
            )
            if runs:
                figures[size] = runs
            for kind, run in runs.items():
                if run.get("closed_complete_s") is not None:
                    line(
                        f"engine_closed_complete_s_{kind}",
                        run["closed_complete_s"],
                        "s",
                        closed_history_events=closed,
                        closed_records_read=run.get("closed_records_read"),
                        note="from the restore's start until every closed workflow is in the "
                        "store (the partition serves open work from engine_acquire_s on)",
                    )
                line(
                    f"engine_acquire_s_{kind}",
                    run["seconds"],
                    "s",
                    closed_history_events=closed,
                    open_workflows=open_workflows,
                    **{
                        ("restored_" + k if k == "open_workflows" else k): v
                        for k, v in run.items()
                        if k != "seconds"
                    },
                )
            if watcher:
                watched = await watcher_acquire(settings)
                watcher_figures[size] = watched
                for kind, run in watched.items():
                    if run.get("closed_complete_s") is not None:
                        line(
                            f"watcher_closed_complete_s_{kind}",
                            run["closed_complete_s"],
                            "s",
                            closed_history_events=closed,
                            closed_records_read=run.get("closed_records_read"),
                            note="from assignment until every closed workflow is in the store "
                            "(the partition serves open work from watcher_acquire_s on)",
                        )
                    line(
                        f"watcher_acquire_s_{kind}",
                        run["seconds"],
                        "s",
                        closed_history_events=closed,
                        open_workflows=open_workflows,
                        **{
                            ("restored_" + k if k == "open_workflows" else k): v
                            for k, v in run.items()
                            if k != "seconds"
                        },
                    )
    finally:
        await producer.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    changelog_bytes = sink.bytes.get(topics.engine_state, 0) + sink.bytes.get(
        topics.engine_closed, 0
    )
    line(
        "engine_generated_changelog_bytes_per_event_byte",
        round(changelog_bytes / max(1, sink.bytes[topics.events]), 3),
        "ratio",
        changelog_bytes=changelog_bytes,
        closed_changelog_bytes=sink.bytes.get(topics.engine_closed, 0),
        event_bytes=sink.bytes[topics.events],
    )
    if figures:
        _ratios("engine", figures)
    if watcher_figures:
        _ratios("watcher", watcher_figures)


def _ratios(service: str, figures: dict[int, dict[str, dict[str, Any]]]) -> None:
    small, large = min(figures), max(figures)
    if small == large:
        return
    for kind in figures[small]:
        a, b = figures[small][kind], figures[large][kind]
        line(
            f"{service}_acquire_ratio_{kind}",
            round(b["seconds"] / max(a["seconds"], 1e-3), 2),
            "ratio",
            large_events=large,
            large_s=b["seconds"],
            small_events=small,
            small_s=a["seconds"],
            note=f"acquire({large:,}) / acquire({small:,}), until open work is served; "
            "target <= 1.5",
        )
        if a.get("closed_complete_s") is not None:
            line(
                f"{service}_closed_complete_ratio_{kind}",
                round(b["closed_complete_s"] / max(a["closed_complete_s"], 1e-3), 2),
                "ratio",
                large_events=large,
                large_s=b["closed_complete_s"],
                small_events=small,
                small_s=a["closed_complete_s"],
                note="until every closed workflow is loaded (in the background, after serving "
                "began): grows with the closed history within retention",
            )
        line(
            f"{service}_rss_ratio_{kind}",
            round(b["rss_mb"] / max(a["rss_mb"], 1e-3), 2),
            "ratio",
            large_rss_mb=b["rss_mb"],
            small_rss_mb=a["rss_mb"],
            note=f"RSS after acquire({large:,}) / ({small:,}); target <= 1.5 (warm)",
        )


# -- throughput with and without changelogs ------------------------------------------------------


async def throughput(
    bootstrap: str,
    parents: int,
    rounds: int,
    broker_pid: int | None = None,
    profile_dir: str | None = None,
) -> None:
    """bench.engine's throughput run, changelog off and on, alternating, in one run.

    With ``profile_dir`` each measured run's engine is under cProfile, its stats written to
    ``tp-<round>-<on|off>.prof`` there (the rates are then the profiled engine's).
    """
    from bench import engine as engine_bench  # noqa: PLC0415 - only this part needs it

    scratch = Path(tempfile.mkdtemp(prefix="aion-bench-recovery-tp-"))
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpu_us: dict[str, dict[bool, list[float]]] = {
        "engine": {False: [], True: []},
        "broker": {False: [], True: []},
    }
    bytes_on: list[tuple[int, int]] = []
    try:
        for round_ in range(rounds):
            for changelog in (False, True):
                settings = Settings(
                    bootstrap_servers=bootstrap,
                    topic_prefix=f"rtp{uuid.uuid4().hex[:6]}",
                    partitions=6,
                    transactions="on",
                    instance_id="bench-engine",
                    state_dir=str(scratch / f"state-{round_}-{changelog}"),
                    retention_ms=None,
                )
                await ensure_topics(settings, Topics(settings.topic_prefix))
                engine = engine_bench.EngineProcess(settings, 10_000, {"changelog": changelog})
                driver = engine_bench.Driver(settings)
                try:
                    await driver.start()
                    await engine.start()
                    await engine_bench._throughput(driver, engine, 300, None, emit=_quiet)
                    profile = None
                    if profile_dir is not None:
                        name = f"tp-{round_}-{'on' if changelog else 'off'}.prof"
                        profile = str(Path(profile_dir) / name)
                    figures: dict[str, dict[str, Any]] = {}
                    rate = await engine_bench._throughput(
                        driver, engine, parents, profile, broker_pid, emit=_keep(figures)
                    )
                finally:
                    await driver.stop()
                    await engine.stop()
                rates[changelog].append(rate)
                cpu = figures["engine_cpu_per_command_us"]
                cpu_us["engine"][changelog].append(cpu["value"])
                if cpu.get("broker_cpu_per_command_us") is not None:
                    cpu_us["broker"][changelog].append(cpu["broker_cpu_per_command_us"])
                _say(
                    f"throughput changelog={changelog}: {rate:,.0f} commands/s, "
                    f"engine {cpu['value']} us/command, "
                    f"broker {cpu.get('broker_cpu_per_command_us')} us/command, "
                    f"engine collector: {cpu.get('engine_gc')}"
                )
                if changelog:
                    bytes_on.append(await _topic_bytes(settings))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    off, on = (sum(rates[k]) / len(rates[k]) for k in (False, True))
    line(
        "commands_per_s_changelog_on_over_off",
        round(on / off, 3),
        "ratio",
        with_changelog=[round(r, 1) for r in rates[True]],
        without_changelog=[round(r, 1) for r in rates[False]],
        parents_per_run=parents,
        note="mean sustained commands/s with changelogs / without, alternating runs; target >= 0.8",
    )
    for process, pairs in cpu_us.items():
        if not pairs[True] or not pairs[False]:
            continue
        on_cpu, off_cpu = (sum(pairs[k]) / len(pairs[k]) for k in (True, False))
        line(
            f"{process}_cpu_per_command_changelog_on_over_off",
            round(on_cpu / off_cpu, 3),
            "ratio",
            with_changelog_us=pairs[True],
            without_changelog_us=pairs[False],
            note=f"{process} process CPU per command with changelogs / without, same runs",
        )
    changelog_bytes = sum(c for c, _ in bytes_on)
    event_bytes = sum(e for _, e in bytes_on)
    line(
        "changelog_bytes_per_event_byte",
        round(changelog_bytes / max(1, event_bytes), 3),
        "ratio",
        changelog_bytes=changelog_bytes,
        event_bytes=event_bytes,
        note="key+value bytes on <prefix>.engine-state and .engine-closed over <prefix>.events; "
        "target <= 2",
    )


def _quiet(metric: str, value: float, unit: str, **extra: Any) -> None:
    """Drop bench.engine's own lines (its figures are printed by bench.engine itself)."""


def _keep(figures: dict[str, dict[str, Any]]) -> Any:
    """An ``emit`` for bench.engine that keeps each line's value and fields in ``figures``."""

    def emit(metric: str, value: float, unit: str, **extra: Any) -> None:
        figures[metric] = {"value": value, "unit": unit, **extra}

    return emit


async def _topic_bytes(settings: Settings) -> tuple[int, int]:
    topics = Topics(settings.topic_prefix)
    totals = []
    for topic in (topics.engine_state, topics.engine_closed, topics.events):
        total = 0
        for partition in range(settings.partitions):
            async for record in read_partition_to_end(
                settings, topic, partition, isolation_level="read_uncommitted"
            ):
                total += len(record.key or b"") + len(record.value or b"")
        totals.append(total)
    return totals[0] + totals[1], totals[2]


# -- main ----------------------------------------------------------------------------------------


async def run(bootstrap: str, args: argparse.Namespace, broker_pid: int | None) -> None:
    """Every part, in turn."""
    if args.parts & {"engine", "watcher"}:
        await engine_growth(
            bootstrap,
            args.sizes,
            args.open,
            watcher="watcher" in args.parts,
            engine="engine" in args.parts,
            compacted=not args.uncompacted,
        )
    if "throughput" in args.parts:
        await throughput(bootstrap, args.parents, args.rounds, broker_pid, args.profile)
    if "failover" in args.parts:
        from bench import failover  # noqa: PLC0415

        await failover.run(
            bootstrap, args.failover_closed, args.failover_open, line, settle_s=args.failover_settle
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[100_000, 1_000_000, 3_000_000],
        help="closed-history sizes in events, comma-separated",
    )
    parser.add_argument("--open", type=int, default=10_000, help="open workflows")
    parser.add_argument("--parents", type=int, default=5_000, help="parents per throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="off/on throughput pairs")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run each throughput run's engine under cProfile; stats written to DIR",
    )
    parser.add_argument("--failover-closed", type=int, default=200_000)
    parser.add_argument("--failover-open", type=int, default=6_000)
    parser.add_argument(
        "--failover-settle",
        type=float,
        default=8.0,
        help="seconds the standbys get to catch up before the kill (a small history needs less)",
    )
    parser.add_argument(
        "--uncompacted",
        action="store_true",
        help="write every changelog record the engine wrote (as before compaction ran), not "
        "what compaction leaves",
    )
    parser.add_argument(
        "--parts",
        type=lambda text: set(text.split(",")),
        default={"engine", "watcher", "throughput", "failover"},
    )
    args = parser.parse_args(argv)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    with bench_kafka() as kafka:
        asyncio.run(run(kafka.bootstrap, args, kafka.pid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
