"""A stack with an ingress (its configuration written here) and the scheduler, on the session
broker under a fresh topic prefix, running :mod:`.flows`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from aion import AionClient
from aion.testing import AionStack, running_stack
from aion_common.settings import Settings
from aion_dev import StackConfig

FLOWS = "tests.e2e.integrations.flows"
PAYLOAD_LIMIT = 4096  # small, so a record over it fits the broker's own record size limit
REPO = Path(__file__).resolve().parents[3]


def ingress_config(prefix: str) -> dict[str, object]:
    """Orders start workflows; events signal-with-start collectors; a checked topic."""
    return {
        "name": "e2e",
        "create_topics": True,
        "routes": [
            {
                "topic": f"{prefix}-orders",
                "action": "start",
                "workflow_type": "e2e.ingested",
                "workflow_id": "order-{value.id}",
            },
            {
                "topic": f"{prefix}-events",
                "action": "signal-with-start",
                "workflow_type": "e2e.collector",
                "workflow_id": "{key}",
                "input": "value.expected",
                "signal": "event",
                "payload": "value.n",
            },
            {
                "topic": f"{prefix}-typed",
                "action": "start",
                "workflow_type": "{value.kind}",
                "workflow_id": "typed-{value.id}",
            },
        ],
        "workflow_types": ["e2e.ingested", "e2e.collector"],
    }


@pytest.fixture(scope="module")
def integration_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AionStack]:
    """The stack, for one test module."""
    home = tmp_path_factory.mktemp("integration-stack")
    prefix = f"aiontest-{uuid.uuid4().hex[:10]}"
    config_file = home / "ingress.json"
    config_file.write_text(json.dumps(ingress_config(prefix)))
    config = StackConfig(
        home=home,
        kafka_bootstrap=kafka_bootstrap,
        workflows=(FLOWS,),
        topic_prefix=prefix,
        partitions=3,
        pythonpath=(str(REPO),),
        ingress=(config_file,),
        env={"AION_PAYLOAD_LIMIT_BYTES": str(PAYLOAD_LIMIT), "AION_PUBLISH_CREATE_TOPICS": "on"},
    )
    with running_stack(config) as stack:
        asyncio.run(_until_topics(stack.settings, [r["topic"] for r in _routes(prefix)]))
        yield stack


def _routes(prefix: str) -> list[dict[str, str]]:
    routes = ingress_config(prefix)["routes"]
    assert isinstance(routes, list)
    return routes


async def _until_topics(settings: Settings, topics: list[str]) -> None:
    """The ingress creates its source topics when it starts; wait for them (bounded)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        for _ in range(300):
            if set(topics) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the ingress did not create {topics}")
    finally:
        await admin.close()


@pytest.fixture
async def client(integration_stack: AionStack) -> AsyncIterator[AionClient]:
    async with integration_stack.client(timeout=30) as aion:
        yield aion
