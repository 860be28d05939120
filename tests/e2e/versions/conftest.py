"""A stack with no workflow modules of its own: every version it runs comes from the packages
topic (the session broker, a fresh topic prefix, one engine)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aion import AionClient
from aion.testing import AionStack, running_stack
from aion_dev import StackConfig

REPO = Path(__file__).resolve().parents[3]

LONG = """
from aion import workflow


@workflow.defn("long")
async def long(ctx, n):
{body}
"""
V1 = """    first = await ctx.wait_signal("go")
    return {"version": 1, "n": n, "go": first}
"""
V1_COMPATIBLE = """    first = await ctx.wait_signal("go")
    return {"version": "1b", "n": n, "go": first}  # a new result: replays the same
"""
V2 = """    await ctx.sleep(0.01)  # a new step before the wait: v1 histories diverge here
    first = await ctx.wait_signal("go")
    return {"version": 2, "n": n, "go": first}
"""


def write_flow(root: Path, body: str, name: str = "longflow.py") -> Path:
    """``root/longflow.py`` with the ``long`` workflow's ``body``: a package of one module."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(LONG.format(body=body), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def versions_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AionStack]:
    """The stack, for one test module; no --workflows: packages only."""
    config = StackConfig(
        home=tmp_path_factory.mktemp("versions-stack"),
        kafka_bootstrap=kafka_bootstrap,
        workflows=(),
        topic_prefix=f"aiontest-{uuid.uuid4().hex[:10]}",
        partitions=3,
        pythonpath=(str(REPO),),
        env={"AION_PACKAGE_LIMIT_BYTES": str(64 * 1024)},
    )
    with running_stack(config) as stack:
        yield stack


@pytest.fixture
async def client(versions_stack: AionStack) -> AsyncIterator[AionClient]:
    async with versions_stack.client(timeout=30) as aion:
        yield aion
