"""Continue-as-new in a whole stack: a workflow continues-as-new every three signals while
signals keep arriving and its children are open across each continue-as-new — every signal
is consumed exactly once, in order, and every child's result reaches the chain's last run."""

from __future__ import annotations

import asyncio

import pytest

from aion import AionClient
from aion.testing import wait_for_workflow

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SIGNALS = 30


async def test_signals_and_open_children_survive_continue_as_new(client: AionClient) -> None:
    await client.start("e2e.churn", {"target": SIGNALS, "nap": 1.0}, id="churn-1")

    async def send() -> None:
        for n in range(SIGNALS):
            await client.signal("churn-1", "n", n)
            await asyncio.sleep(0.02)  # they keep arriving while runs continue-as-new

    await send()
    run = await wait_for_workflow(client, "churn-1", timeout=90)
    assert run.status == "COMPLETED", run.error
    assert run.result["seen"] == list(range(SIGNALS)), "each signal once, in order"
    runs = run.result["runs"]
    assert runs == SIGNALS // 3
    assert run.result["results"] == [f"churn-1-c{i}" for i in range(runs)]
    continued = [e for e in run.history if e.event_type == "WorkflowContinuedAsNew"]
    assert len(continued) == runs - 1
    terminated = [e for e in run.history if e.event_type == "ChildWorkflowFailed"]
    assert not terminated, "no child was closed by a continue-as-new"
