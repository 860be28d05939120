"""Schedules in a whole stack: a schedule firing every second keeps firing, each fire once,
through an engine kill and a scheduler kill; pause, trigger and delete."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime, timedelta

import pytest

from aion import AionClient
from aion.client import AionApiError
from aion.testing import AionStack

from .test_ingress_e2e import starts_per_workflow

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def ticks(client: AionClient) -> dict[str, str]:
    """Every e2e.tick run: workflow id -> status."""
    found: dict[str, str] = {}
    cursor = None
    while True:
        page = await client.list(workflow_type="e2e.tick", limit=500, cursor=cursor)
        found.update((s.workflow_id, s.status) for s in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return found


async def test_a_schedule_fires_every_second_through_kills(
    client: AionClient, integration_stack: AionStack
) -> None:
    name = "every-second"
    created = await client.create_schedule(name, "e2e.tick", None, every="1s", overlap="allow")
    assert created.spec == "every 1s"
    await asyncio.sleep(4)
    killed = [("engine-1", integration_stack.kill("engine-1"))]
    await asyncio.sleep(4)
    killed.append(("scheduler", integration_stack.kill("scheduler")))
    await asyncio.sleep(6)
    paused = await client.pause_schedule(name)
    assert paused.paused
    deadline = time.monotonic() + 60
    while True:
        schedule = await client.schedule(name)
        runs = await ticks(client)
        if len(runs) >= schedule.started and all(s == "COMPLETED" for s in runs.values()):
            break
        assert time.monotonic() < deadline, (schedule, runs)
        await asyncio.sleep(0.5)
    stamps = sorted(
        datetime.fromisoformat(w.removeprefix(f"{name}-").replace("Z", "+00:00")) for w in runs
    )
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert set(gaps) == {timedelta(seconds=1)}, f"a fire was missed or doubled: {stamps}"
    assert len(stamps) == schedule.started
    assert schedule.missed == 0
    assert len(stamps) >= 10  # ~14 s of fires, minus the start-up
    starts = await starts_per_workflow(integration_stack.settings)
    assert {starts[w] for w in runs} == {1}, "no fire started twice"
    print(f"\n{len(stamps)} fires, one a second, none missed or doubled; killed {killed}")


async def test_pause_trigger_and_delete(client: AionClient) -> None:
    name = "hourly"
    await client.create_schedule(name, "e2e.tick", {"x": 1}, cron="0 * * * *", paused=True)
    with pytest.raises(AionApiError, match="exists"):
        await client.create_schedule(name, "e2e.tick", None, cron="0 * * * *")
    listed = {s.id: s for s in await client.schedules()}
    assert listed[name].paused
    assert listed[name].next_fire is None
    request = await client.trigger_schedule(name, request_id="once")
    assert request == "once"
    await client.trigger_schedule(name, request_id="once")  # a retry: the same run
    deadline = time.monotonic() + 30
    while (await client.schedule(name)).started < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)
    assert (await client.schedule(name)).started == 1
    resumed = await client.resume_schedule(name)
    assert resumed.next_fire is not None
    assert resumed.next_fire.minute == 0
    await client.delete_schedule(name)
    with pytest.raises(AionApiError, match="does not exist"):
        await client.schedule(name)
