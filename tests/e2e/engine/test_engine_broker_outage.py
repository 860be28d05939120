"""The engine rides out broker outages: idle, mid-load and during a partition rebuild.

The test runs on a broker of its own (it stops it). The engine is a subprocess (as deployed)
in each delivery mode; test code plays the watcher in-process and keeps starting parents
before, during and after each outage. The broker is stopped for 5-9 s (seeded:
``AION_OUTAGE_SEED``) three times:

1. idle: every workflow so far closed, nothing in flight;
2. mid-load: parents arriving, children and timers in flight;
3. during acquisition: the engine is SIGKILLed and restarted, and the broker goes down as soon
   as the new process logs that it started, while it fences, rebuilds and rewinds its
   partitions (the log line "rebuild, k/4 partitions acquired" says how many it had).

The broker reloads the group with fresh sessions when it comes back, so an outage as such does
not force a rejoin; the third case is the one that broke before: partitions acquired (fenced,
rebuilt, rewound) while the broker goes away. Afterwards every parent has its result
and ``<prefix>.events`` read end to end holds every (workflow_id, seq) exactly once in
transactional mode, and with no gap (copies identical) at-least-once. The engine must converge
on its own: an exit is tolerated (a supervisor restarts it, as a deployment would) but counted
and printed; if a wait times out, the engine's Python stacks (py-spy) go into the failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_common.testing.broker import KafkaBroker

from .harness import EngineProcess, Watcher, count_records, read_all_events, stacks_of, until
from .test_engine_crash import check_log

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.timeout(900)]

FEED_PER_S = 20  # parents started per second while feeding
CLOSE_TIMEOUT_S = 150.0


class _Run:
    """The engine (supervised), the watcher, the parents started so far, and a time line."""

    def __init__(self, engine: EngineProcess, watcher: Watcher, rng: random.Random) -> None:
        self.engine, self.watcher, self.rng = engine, watcher, rng
        self.parents: dict[str, dict[str, Any]] = {}
        self.exits: list[int | None] = []
        self.notes: list[str] = []
        self._began = time.monotonic()
        self._supervising = True

    def note(self, what: str) -> None:
        self.notes.append(f"{time.monotonic() - self._began:6.1f}s {what}")
        print(self.notes[-1])

    async def supervise(self) -> None:
        """Restart the engine whenever it exits on its own (a deployment's supervisor)."""
        while True:
            await asyncio.sleep(0.2)
            if self._supervising and not self.engine.alive():
                self.exits.append(self.engine.exit_code())
                self.note(f"engine exited on its own ({self.exits[-1]}); restarting")
                self.engine.start()

    async def feed(self, count: int) -> None:
        """Start ``count`` more parents, paced at FEED_PER_S, through the outages too.

        Each start goes through the test watcher's guarded send (bounded and retried as the
        same command, its id derived from the workflow id), so a send cut off by an outage
        neither ends the feed nor starts a parent twice; the flush waits until every start
        is acknowledged.
        """
        for _ in range(count):
            index = len(self.parents)
            workflow_id = f"o-{index:05d}"
            spec = {
                "base": index,
                "children": self.rng.randint(1, 3),
                "sleep_parent": self.rng.random() < 0.3,
                "sleep_child": self.rng.random() < 0.3,
            }
            self.parents[workflow_id] = spec
            await self.watcher.send_start("e2e.parent", spec, workflow_id)
            await asyncio.sleep(1 / FEED_PER_S)
        await self.watcher.flush()

    async def all_closed(self, what: str) -> None:
        try:
            await self.watcher.wait_closed(set(self.parents), timeout=CLOSE_TIMEOUT_S)
        except AssertionError as err:
            raise AssertionError(
                f"{what}: {err}\n" + "\n".join(self.notes) + "\n" + stacks_of(self.engine)
            ) from err
        self.note(f"{what}: all {len(self.parents)} parents closed")

    async def outage(self, down_for: float, what: str) -> None:
        in_flight = len(self.parents) - sum(1 for p in self.parents if p in self.watcher.closed)
        self.note(f"broker down for {down_for:.1f} s ({what}; {in_flight} parents open)")
        # In a thread: the watcher and the feeder go on (and fail, and retry) meanwhile.
        await asyncio.to_thread(self.broker.restart, down_for)
        self.note("broker back")

    broker: KafkaBroker


def _started(engine: EngineProcess, start: int) -> bool:
    return any(r.get("msg") == "engine started" for r in engine.log_records(start))


@pytest.mark.parametrize("transactions", ["on", "off"])
async def test_engine_converges_after_broker_outages(
    own_broker: KafkaBroker, tmp_path: Path, transactions: str
) -> None:
    seed = int(os.environ.get("AION_OUTAGE_SEED", random.randrange(2**32)))
    print(f"outage test seed={seed} (rerun with AION_OUTAGE_SEED={seed})")
    rng, timing = random.Random(seed), random.Random(seed + 1)  # workload, outages
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers, topic_prefix="outage", partitions=4
    )
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    engine = EngineProcess(settings, tmp_path, transactions=transactions, instance_id="engine-1")
    watcher = Watcher(settings)
    run = _Run(engine, watcher, rng)
    run.broker = own_broker
    await watcher.start()
    engine.start()
    supervising = asyncio.create_task(run.supervise())
    try:
        await until(engine.acquired, 60, "the engine's partitions")
        await run.feed(40)
        await run.all_closed("before any outage")

        # 1. Idle: nothing in flight.
        await run.outage(timing.uniform(5, 9), "idle")
        await run.feed(20)
        await run.all_closed("after the idle outage")

        # 2. Mid-load: parents keep arriving through the outage.
        feeding = asyncio.create_task(run.feed(300))
        await asyncio.sleep(timing.uniform(3, 6))
        await run.outage(timing.uniform(5, 9), "mid-load")
        await feeding
        await run.all_closed("after the mid-load outage")

        # 3. During acquisition: a fresh instance, the broker gone as it acquires.
        feeding = asyncio.create_task(run.feed(100))
        await asyncio.sleep(1.0)
        engine.kill()
        engine.start()
        start = engine.starts
        # Static membership gives it its partitions at once; they are acquired in parallel in
        # a fraction of a second, so the broker goes as soon as the process says it started.
        await until(lambda: _started(engine, start), 60, "the restarted engine's start")
        acquired = len(engine.acquired(start))
        await run.outage(timing.uniform(5, 9), f"rebuild, {acquired}/4 partitions acquired")
        await feeding
        await run.feed(20)
        await run.all_closed("after the rebuild outage")
    finally:
        supervising.cancel()
        await asyncio.gather(supervising, return_exceptions=True)
        engine.stop()
        await watcher.stop()

    figures = check_log(
        await read_all_events(settings), run.parents, exactly_once=transactions == "on"
    )
    dead = await count_records(settings, topics.dead_letter)
    print(f"mode={transactions} engine exits={run.exits} dead_letters={dead} {figures}")
    print("\n".join(run.notes))
    assert dead == 0, "no command may be dead-lettered in this workload"
    # A partition with events has committed offsets: an acquisition that rewound it to the
    # start read "coordinator still loading" as "nothing committed" (see aion_engine._offsets).
    rewound = [
        r
        for start in range(1, engine.starts + 1)
        for r in engine.log_records(start)
        if r.get("msg") == "partition acquired" and r["events_replayed"] and not r["position"]
    ]
    assert not rewound, f"partitions rewound to offset 0: {rewound}"
