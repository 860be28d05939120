"""Recovery from a broker outage: ``python -m bench.outage`` (also run by ``python -m bench``).

Runs the stack ``make dev`` runs (``aion_dev.Stack``) on an embedded broker of its own — it has
to stop it, so ``AION_BENCH_KAFKA`` is not used — with :mod:`bench.fanout_workflows`, warms it
up, then, for each shape:

- ``stop``: the broker is stopped cleanly and held down ``--outage`` seconds (10);
- ``kill``: the broker is SIGKILLed and the supervisor restarts it at once (0.5 s backoff);

while it is away ``--commands`` (20) clients each start a single-child parent through the
API; their ``AionClient`` re-sends the start (one request id) until the API can queue it. The
figures, all measured from the moment the broker answers again (its ``start`` is the broker's
own start-up time, from launch to answering a metadata request, printed beside them):

- ``return_to_first_applied_s``: until the engine appended the first of those parents'
  ``WorkflowStarted`` (the event batch's record timestamp);
- ``return_to_all_applied_s``: until the last one's;
- ``return_to_views_caught_up_s``: until the API's views show every one of those parents
  completed (child run, watcher, parent resumed, projector applied).

A client waits between re-sends (``Retry-After`` 2 s while the API knows Kafka is away, capped
jittered backoff otherwise), so part of the first figures is the clients' own wait; the
services themselves notice the return within half a second (their probe's period while down).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aion_common.codecs import Codec
from aion_common.domain import WorkflowStarted
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.topics import Topics
from aion_dev import Stack, StackConfig

_ROOT = Path(__file__).resolve().parents[1]


def _line(metric: str, value: float, unit: str, **extra: Any) -> None:
    record = {"bench": "outage", "metric": metric, "value": value, "unit": unit, **extra}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def _singles(stack: Stack, ids: list[str], *, retry_for: float) -> None:
    async with stack.client(timeout=10, retry_for=retry_for) as client:
        await asyncio.gather(
            *(
                client.start("bench.fanout.single", i, id=workflow_id, request_id=workflow_id)
                for i, workflow_id in enumerate(ids)
            )
        )


async def _views_caught_up(stack: Stack, ids: list[str]) -> None:
    async with stack.client(timeout=30) as client:
        for workflow_id in ids:
            outcome = await client.result(workflow_id, wait=120)
            if outcome.status != "COMPLETED":
                raise RuntimeError(f"{workflow_id} ended {outcome.status}")


async def _first_and_last_applied(stack: Stack, ids: set[str]) -> tuple[float, float]:
    """Record timestamps (s) of the first and last batch starting one of ``ids``."""
    codec = Codec()
    settings = stack.settings
    topic = Topics(settings.topic_prefix).events
    stamps: list[float] = []
    for partition in range(settings.partitions):
        async for record in read_partition_to_end(settings, topic, partition):
            batch = codec.decode_batch(record.value)
            if batch.workflow_id in ids and any(
                isinstance(e, WorkflowStarted) for e in batch.events
            ):
                stamps.append(record.timestamp / 1000)
    if len(stamps) != len(ids):
        raise RuntimeError(f"{len(stamps)} of {len(ids)} parents started, expected each once")
    return min(stamps), max(stamps)


async def _outage(stack: Stack, shape: str, *, commands: int, outage_s: float) -> None:
    run = uuid.uuid4().hex[:6]
    ids = [f"outage-{shape}-{run}-{i}" for i in range(commands)]
    kafka = stack.processes["kafka"]
    restarts = kafka.restarts
    if shape == "stop":
        await kafka.hold()
    else:
        assert kafka.pid is not None
        os.kill(kafka.pid, signal.SIGKILL)
    sending = asyncio.create_task(_singles(stack, ids, retry_for=outage_s + 300))
    if shape == "stop":
        await asyncio.sleep(outage_s)
        await kafka.release()
    else:
        while kafka.restarts == restarts or kafka.pid is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the supervisor restarts it; pid once it answers
    back = time.time()
    broker_start_s = kafka.launch_s
    await sending
    await _views_caught_up(stack, ids)
    views = time.time()
    first, last = await _first_and_last_applied(stack, set(ids))
    shape_fields = {"shape": shape, "commands": commands}
    if shape == "stop":
        shape_fields["outage_s"] = outage_s
    _line("broker_start_s", round(broker_start_s, 2), "s", **shape_fields)
    _line("return_to_first_applied_s", round(first - back, 2), "s", **shape_fields)
    _line("return_to_all_applied_s", round(last - back, 2), "s", **shape_fields)
    _line("return_to_views_caught_up_s", round(views - back, 2), "s", **shape_fields)


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aion-bench-outage-") as home:
        config = StackConfig(
            home=Path(home),
            workflows=("bench.fanout_workflows",),
            pythonpath=(str(_ROOT),),
            partitions=args.partitions,
        )
        async with Stack(config) as stack:
            warm = [f"warm-{i}" for i in range(args.commands)]
            await _singles(stack, warm, retry_for=60)
            await _views_caught_up(stack, warm)
            for shape in ("stop", "kill"):
                await _outage(stack, shape, commands=args.commands, outage_s=args.outage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__)
    parser.add_argument("--commands", type=int, default=20, help="starts sent during an outage")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the broker is held")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
