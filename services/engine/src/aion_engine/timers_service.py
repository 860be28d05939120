"""Durable timers at run time: a heap per owned partition that sends ``FireTimer`` when due.

Timers are durable because they are history (``TimerScheduled``): on assignment the engine
rebuilds a partition and re-arms every pending timer. Firing sends a ``FireTimer`` command with
a deterministic id to ``aion.commands``; a duplicate (fired twice across a restart) is a no-op
in the engine, so this scheduler can be at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aion_common.domain import FireTimer, InfrastructureError
from aion_common.kafka.link import RETRYING

__all__ = ["TimerScheduler"]

_log = logging.getLogger("aion.engine.timers")

Sender = Callable[[FireTimer], Awaitable[None]]


class TimerScheduler:
    """Fires the ``FireTimer`` commands of one partition when their time comes."""

    def __init__(self, partition: int, send: Sender) -> None:
        self._partition = partition
        self._send = send
        self._heap: list[tuple[datetime, str, FireTimer]] = []
        self._armed: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin firing; idempotent."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"timers-p{self._partition}")

    async def stop(self) -> None:
        """Stop firing and forget every timer; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._heap.clear()
        self._armed.clear()

    def arm(self, fire_at: datetime, command: FireTimer) -> None:
        """Fire ``command`` at ``fire_at`` (once, however often it is armed)."""
        if command.command_id in self._armed:
            return
        self._armed.add(command.command_id)
        heapq.heappush(self._heap, (fire_at, command.command_id, command))
        self._wake.set()

    def disarm(self, command_id: str) -> None:
        """Forget the timer sent as ``command_id`` (it is left in the heap and skipped when
        its time comes)."""
        self._armed.discard(command_id)

    @property
    def pending(self) -> int:
        """How many timers wait to fire."""
        return len(self._armed)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            fire_at = self._heap[0][0]
            delay = (fire_at - datetime.now(UTC)).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            _, command_id, command = heapq.heappop(self._heap)
            if command_id not in self._armed:
                continue  # disarmed
            try:
                await self._send(command)
            except InfrastructureError as err:
                # A send that fails is retried: the timer goes back on the heap a second later.
                _log.warning(
                    "timer send failed; retrying",
                    extra={
                        "workflow_id": command.workflow_id,
                        "command_id": command_id,
                        "error": str(err),
                        **RETRYING,
                    },
                )
                retry_at = datetime.now(UTC).timestamp() + 1.0
                heapq.heappush(
                    self._heap, (datetime.fromtimestamp(retry_at, UTC), command_id, command)
                )
                await asyncio.sleep(0.1)
            else:
                self._armed.discard(command_id)
