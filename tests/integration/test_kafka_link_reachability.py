"""``BrokerLink``'s real probe: a live broker is reachable, a dead address is not, with why."""

from __future__ import annotations

import asyncio
import dataclasses

from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_common.testing import free_port


async def test_a_live_cluster_is_reachable_and_a_dead_address_is_not(
    aion_settings: Settings,
) -> None:
    live = BrokerLink(aion_settings, name="live")
    dead_address = f"127.0.0.1:{free_port()}"
    dead = BrokerLink(
        dataclasses.replace(aion_settings, bootstrap_servers=dead_address), name="dead"
    )
    await asyncio.gather(live.start(), dead.start())
    try:
        assert await live.wait_up(10)
        async with asyncio.timeout(10):
            while not dead.known_down:  # noqa: ASYNC110  # polling the link's state
                await asyncio.sleep(0.05)
        assert not dead.up
        reason = dead.not_ready_reason()
        assert reason is not None
        assert dead_address in reason
        assert "KafkaConnectionError" in reason
        await asyncio.sleep(1.5)  # probed again since: still up, still down
        assert live.up
        assert dead.known_down
        assert live.outages == 0
        assert dead.outages == 1
    finally:
        await asyncio.gather(live.stop(), dead.stop())
