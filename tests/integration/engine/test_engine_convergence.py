"""The engine converges when acquiring or emitting fails: the partition is acquired again.

Faults are injected into an in-process :class:`EngineService` on the real broker: an
acquisition whose rebuild fails (what a broker outage during a rebalance does), an emit that
fails, a partition producer left in aiokafka's fatal state (it refuses every transaction
from then on), and an emit that never answers (a producer whose sender task died). Each time
the workflow still completes with its history exactly once, and the engine did not exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from aion_common.domain import InfrastructureError, WorkflowCompleted
from aion_common.kafka import partition_for
from aion_common.settings import Settings
from aion_engine import service as service_module
from aion_engine.service import EngineService

from .conftest import EngineRig
from .workflows import REGISTRY

pytestmark = pytest.mark.kafka


class _FaultyEngine(EngineService):
    """An engine whose first rebuilds or emits fail as configured."""

    def __init__(
        self, settings: Settings, *, failing_rebuilds: int = 0, emit_fault: str | None = None
    ) -> None:
        super().__init__(settings, REGISTRY, tune_gc=False)
        self.failing_rebuilds = failing_rebuilds
        self.emit_fault = emit_fault
        self.rebuilds: Counter[int] = Counter()
        self.emits = 0
        self.emitting = asyncio.Event()

    async def _recover(self, owned: Any) -> Any:
        self.rebuilds[owned.partition] += 1
        if self.rebuilds[owned.partition] <= self.failing_rebuilds:
            raise InfrastructureError("injected: reading the state failed", retriable=True)
        return await super()._recover(owned)

    async def _emit_transactional(
        self, owned: Any, outputs: Any, changes: Any, offsets: Any
    ) -> None:
        self.emits += 1
        self.emitting.set()
        if self.emits == 1 and self.emit_fault == "error":
            raise KafkaError("injected emit failure")
        if self.emits == 1 and self.emit_fault == "fatal":
            # What aiokafka does when its sender task dies: the transaction manager goes to
            # FATAL_ERROR, after which begin_transaction() fails an internal assertion. (Between
            # transactions aiokafka's own fatal_error() then trips over its absent waiter, as
            # it does in the sender's done-callback.)
            with contextlib.suppress(AttributeError):
                owned.producer._txn_manager.fatal_error(KafkaError("injected sender death"))
        if self.emits == 1 and self.emit_fault == "hang":
            await asyncio.Event().wait()  # never answers; the emit timeout ends it
        await super()._emit_transactional(owned, outputs, changes, offsets)


async def _run_one(rig: EngineRig) -> tuple[int, list[Any]]:
    """Run one workflow to its end; its partition and history, once every partition is owned."""
    await rig.start()
    try:
        workflow_id = await rig.start_workflow("it.poller", {"remaining": 0, "runs": 0})
        history = await rig.wait_closed(workflow_id, timeout=60)
        assert rig._tasks[0].done() is False, "the engine's run() ended"
        # Converged: every partition owned again. Not a snapshot — another partition may still
        # be in its first acquisition (a topic created a moment ago: leaders not yet known).
        every = list(range(rig.settings.partitions))
        deadline = time.monotonic() + 30
        while rig.engine.owned_partitions != every:
            assert time.monotonic() < deadline, f"owned: {rig.engine.owned_partitions}"
            await asyncio.sleep(0.05)
    finally:
        await rig.stop()
    return partition_for(workflow_id, rig.settings.partitions), history


def _assert_exactly_once(history: list[Any]) -> None:
    assert isinstance(history[-1], WorkflowCompleted)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))


async def test_a_failed_acquisition_is_retried_until_the_partition_is_owned(
    aion_settings: Settings,
) -> None:
    rig = EngineRig(aion_settings)
    engine = _FaultyEngine(aion_settings, failing_rebuilds=2)
    rig.engine = engine
    _, history = await _run_one(rig)
    _assert_exactly_once(history)
    assert engine.rebuilds == dict.fromkeys(range(aion_settings.partitions), 3)


@pytest.mark.parametrize("fault", ["error", "fatal", "hang"])
async def test_a_failed_emit_acquires_the_partition_again(
    aion_settings: Settings, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_EMIT_TIMEOUT_S", 2.0)
    rig = EngineRig(aion_settings)
    engine = _FaultyEngine(aion_settings, emit_fault=fault)
    rig.engine = engine
    failed, history = await _run_one(rig)
    _assert_exactly_once(history)
    assert engine.emits >= 2  # the failed one, then the retry
    # The partition that failed was rebuilt from the log: acquired twice; every other at least
    # once (more only if an acquisition of its own failed, which it would have logged).
    assert engine.rebuilds[failed] == 2, engine.rebuilds
    assert all(engine.rebuilds[p] >= 1 for p in range(aion_settings.partitions)), engine.rebuilds


async def test_revocation_does_not_wait_for_an_emit_that_never_ends(
    aion_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "_REVOKE_WAIT_S", 0.5)
    rig = EngineRig(aion_settings)
    engine = _FaultyEngine(aion_settings, emit_fault="hang")  # the emit timeout stays 60 s
    rig.engine = engine
    await rig.start()
    try:
        await rig.start_workflow("it.poller", {"remaining": 0, "runs": 0})
        await asyncio.wait_for(engine.emitting.wait(), 60)
    finally:
        # Stopping revokes every partition: the stuck worker is cancelled, not awaited.
        await asyncio.wait_for(rig.stop(), 30)
    assert engine.owned_partitions == []
