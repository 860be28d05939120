"""Chaos: the whole stack (``aion dev``'s, on its own embedded broker) rides through broker
outages, with no service exiting (issue 19).

1. The broker is SIGKILLed while a fan-out waits for signals and cancels, and those commands
   are sent at that moment; the supervisor restarts the broker.
2. The broker is stopped for 30 s and started again, the commands sent while it is away.

Each time: no process but the broker exits (the supervisor restarted nothing else); every
command sent during the outage is applied exactly once after it (the client re-sends it with
one request id until the API can queue it); every parent has every child's right outcome; the
event log holds each (workflow, seq) once, without gaps; ``/health/live`` of every service
never fails, ``/health/ready`` goes false while the broker is away and true again after; and
each service logs one line when it loses the broker and one when it is back.

The two tests share one stack (a module fixture): the second starts where the first ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aion_dev import Stack, StackConfig

from .harness import SERVICES, WORKFLOWS, FanOut, Health, restarts

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[3]
PARENTS = 4
OUTAGE_S = 30.0
RETRY_FOR_S = 180.0  # the commands sent during an outage are re-sent for at most this long


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = StackConfig(
        home=tmp_path_factory.mktemp("outage") / "home",
        workflows=(WORKFLOWS,),
        pythonpath=(str(REPO_ROOT),),
        partitions=4,
    )
    async with Stack(config) as running:
        yield running


def _outage_lines(stack: Stack, since: dict[str, int]) -> dict[str, list[str]]:
    """Per service, the link's log lines since ``since`` (byte offsets of their logs)."""
    found: dict[str, list[str]] = {}
    for name in SERVICES:
        log = stack.logs / f"{name}.log"
        with log.open("rb") as handle:
            handle.seek(since[name])
            lines = handle.read().decode(errors="replace").splitlines()
        found[name] = [
            json.loads(line)["msg"]
            for line in lines
            if line.startswith("{") and '"aion.kafka.link"' in line
        ]
    return found


def _log_sizes(stack: Stack) -> dict[str, int]:
    return {name: (stack.logs / f"{name}.log").stat().st_size for name in SERVICES}


def _assert_one_line_each_way(lines: dict[str, list[str]]) -> None:
    for name, messages in lines.items():
        lost = [m for m in messages if m.startswith("lost kafka")]
        back = [m for m in messages if m.startswith("kafka is back after")]
        assert (len(lost), len(back)) == (1, 1), f"{name}: {messages}"


async def test_broker_sigkilled_during_a_fanout_with_signals_and_cancels(stack: Stack) -> None:
    fanout = FanOut("kill", PARENTS)
    before = restarts(stack)
    async with stack.client(timeout=10) as client:
        await fanout.start(client)
        await fanout.until_waiting(client)
        logs = _log_sizes(stack)
        kafka = stack.processes["kafka"]
        async with Health(stack) as health:
            await asyncio.sleep(1.0)  # a few samples of the healthy stack first
            lost_at = time.monotonic()
            assert kafka.pid is not None
            os.kill(kafka.pid, signal.SIGKILL)
            async with stack.client(timeout=10, retry_for=RETRY_FOR_S) as retrying:
                sending = asyncio.create_task(fanout.send_commands(retrying))
                # The supervisor restarts it; its pid is known once the new broker answers.
                while kafka.restarts == before["kafka"] or kafka.pid is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                back_at = time.monotonic()
                sent = await sending
            await health.until_ready()
            await fanout.check_results(client)
        noticed = health.check(lost_at, back_at)
    figures = await fanout.check_log(stack.settings)
    print(f"broker back {back_at - lost_at:.1f} s after the kill; not ready after {noticed}")
    print(f"{sent} commands sent during the outage; {figures}")
    after = restarts(stack)
    assert after["kafka"] == before["kafka"] + 1
    assert {n: after[n] - before[n] for n in SERVICES} == dict.fromkeys(SERVICES, 0)
    _assert_one_line_each_way(_outage_lines(stack, logs))


async def test_broker_stopped_for_30_seconds_and_started_again(stack: Stack) -> None:
    fanout = FanOut("stop", PARENTS)
    before = restarts(stack)
    async with stack.client(timeout=10) as client:
        await fanout.start(client)
        await fanout.until_waiting(client)
        logs = _log_sizes(stack)
        kafka = stack.processes["kafka"]
        async with Health(stack) as health:
            await asyncio.sleep(1.0)
            lost_at = time.monotonic()
            await kafka.hold()
            async with stack.client(timeout=10, retry_for=RETRY_FOR_S) as retrying:
                sending = asyncio.create_task(fanout.send_commands(retrying))
                await asyncio.sleep(OUTAGE_S - (time.monotonic() - lost_at))
                assert not sending.done(), "nothing can be queued while the broker is down"
                launch_s = await kafka.release()
                back_at = time.monotonic()
                sent = await sending
            await health.until_ready()
            await fanout.check_results(client)
        noticed = health.check(lost_at, back_at)
    figures = await fanout.check_log(stack.settings)
    print(f"broker down {back_at - lost_at:.1f} s (its start {launch_s:.1f} s); not ready after")
    print(f"{noticed}; {sent} commands sent during the outage; {figures}")
    after = restarts(stack)
    assert after == before, "no process restarted (the broker was held, not crashed)"
    _assert_one_line_each_way(_outage_lines(stack, logs))
