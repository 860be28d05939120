"""A stack of this directory's own for the query tests: the session broker, a fresh topic
prefix, the engine, watcher, projector, API and a worker running :mod:`.flows`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aion import AionClient
from aion.testing import AionStack, running_stack
from aion_dev import StackConfig

FLOWS = "tests.e2e.queries.flows"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def query_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AionStack]:
    """The stack, for one test module."""
    config = StackConfig(
        home=tmp_path_factory.mktemp("query-stack"),
        kafka_bootstrap=kafka_bootstrap,
        workflows=(FLOWS,),
        topic_prefix=f"aiontest-{uuid.uuid4().hex[:10]}",
        partitions=2,
        pythonpath=(str(REPO),),
    )
    with running_stack(config) as stack:
        yield stack


@pytest.fixture
async def client(query_stack: AionStack) -> AsyncIterator[AionClient]:
    async with query_stack.client(timeout=30) as aion:
        yield aion
