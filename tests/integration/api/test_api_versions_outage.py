"""Version catalog writes while Kafka is away say what they did not do (decision 66, amended
2026-12-07).

Once the catalog's writer had connected, a deploy, route or deletion during an outage waited
for aiokafka's send, which waits for the broker's return however long that is: ``aion
deploy`` gave up with "cannot reach the aion API … ReadTimeout", and the package could be
written later, after the user was told it failed. Here the broker (one of this test's own)
is held down 8 s: every write is refused at once with its words and the catalog is
unchanged; after the return the writes are accepted and read back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_common.testing.broker import KafkaBroker
from aion_projector.api._catalog import KafkaCatalog
from aion_projector.api._writer import WRITE_ANSWER_S

from .conftest import _client
from .test_api_reads import assert_unavailable
from .test_api_versions import GREETINGS, _upload, _zip, catalog_app

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


async def _refused(answering: Awaitable[httpx.Response]) -> str:
    """A write's answer: 503 at once, with Retry-After 2; its detail."""
    began = time.monotonic()
    answer = await asyncio.wait_for(answering, WRITE_ANSWER_S + 2)
    took = time.monotonic() - began
    assert took < 2.0, f"answered after {took:.1f} s: Kafka is known to be away"
    return assert_unavailable(answer, retry_after=2)


async def test_catalog_writes_say_what_happened_while_kafka_is_away(
    own_broker: KafkaBroker, sqlite_views: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    settings = Settings(
        bootstrap_servers=own_broker.bootstrap_servers, topic_prefix="cat-w", partitions=2
    )
    where = f"kafka at {own_broker.bootstrap_servers} unreachable"
    first = _zip(tmp_path, "v1", GREETINGS.replace("{word}", "hello"))
    second = _zip(tmp_path, "v2", GREETINGS.replace("{word}", "hi"))
    link = BrokerLink(settings, name="api", interval_s=0.5)
    await link.start()
    catalog = KafkaCatalog(settings, link=link)
    await catalog.start()
    api = _client(catalog_app(settings, sqlite_views, catalog))
    try:
        uploaded = await _upload(api, first)
        assert uploaded.status_code == 201, uploaded.text
        v1 = uploaded.json()["version"]
        restarting = asyncio.create_task(asyncio.to_thread(own_broker.restart, 8.0))
        while not link.known_down:
            assert not restarting.done(), "the link never saw the broker away"
            await asyncio.sleep(0.02)

        detail = await _refused(_upload(api, second))
        assert where in detail, detail
        assert "the package was not deployed: run `aion deploy` again once Kafka is back" in (
            detail
        )
        detail = await _refused(api.put("/v1/routes/greet", json={"version": v1}))
        assert f"'greet' was not routed to {v1[:12]}: run `aion route` again" in detail, detail
        assert where in detail, detail
        detail = await _refused(api.delete(f"/v1/packages/order/{v1}"))
        assert f"'order' in {v1[:12]} was not deleted: run `aion package rm` again" in detail
        assert where in detail, detail

        assert not restarting.done(), "the broker came back before every write was tried"
        listed = (await api.get("/v1/packages")).json()["items"]
        assert [(e["workflow_type"], e["version"]) for e in listed] == [
            ("greet", v1),
            ("order", v1),
        ], "a refused write changed the packages"
        assert (await api.get("/v1/routes")).json()["items"] == []

        await restarting
        deadline = time.monotonic() + 30
        # 201, or 200 if an earlier try Kafka did not acknowledge in time was written after all
        while link.known_down or not (uploaded := await _upload(api, second)).is_success:
            assert time.monotonic() < deadline, "writes still refused after the broker returned"
            await asyncio.sleep(0.2)
        v2 = uploaded.json()["version"]
        routed = await api.put("/v1/routes/greet", json={"version": v2})
        assert routed.status_code == 200, routed.text
        deleted = await api.delete(f"/v1/packages/order/{v1}")
        assert deleted.status_code == 204, deleted.text
        listed = (await api.get("/v1/packages")).json()["items"]
        assert sorted((e["workflow_type"], e["version"], e["routed"]) for e in listed) == sorted(
            [("greet", v1, False), ("greet", v2, True), ("order", v2, False)]
        )
    finally:
        await api.aclose()
        await catalog.stop()
        await link.stop()
