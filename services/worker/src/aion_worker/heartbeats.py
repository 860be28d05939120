"""Heartbeats of one running attempt, throttled on their way to the engine.

``activity.heartbeat()`` may be called thousands of times a second, from the worker's loop
or from a sync activity's thread. The first heartbeat goes to the engine at once (it also
tells the engine the attempt started); later ones at most every 0.8 x the activity's heartbeat
timeout (at most every 30 s without one), always carrying the newest details. Each carries a
command id of its own (this execution's nonce and a counter), so a re-delivered one is
dropped and a re-executed attempt's heartbeats still count.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aion_common.domain import (
    ActivityTask,
    Command,
    InvalidInput,
    Payload,
    RecordActivityHeartbeat,
    derive_id,
)

__all__ = ["Heartbeats"]

_DEFAULT_HEARTBEAT_INTERVAL_S = 30.0


class Heartbeats:
    """Throttles one attempt's heartbeats: the first goes at once, later ones at most every
    ``interval`` (0.8 x its heartbeat timeout, at most 30 s), always with the newest details."""

    def __init__(
        self,
        task: ActivityTask,
        send: Callable[[Command], Awaitable[bool]],
        spawn: Callable[..., None],
        *,
        limit: int,
    ) -> None:
        self._send = send
        self._spawn = spawn
        self._limit = limit
        self._task = task
        timeout_ms = task.options.heartbeat_timeout_ms
        self._interval = (
            _DEFAULT_HEARTBEAT_INTERVAL_S
            if timeout_ms is None
            else min(_DEFAULT_HEARTBEAT_INTERVAL_S, 0.8 * timeout_ms / 1000)
        )
        self._loop = asyncio.get_running_loop()
        self._nonce = uuid.uuid4().hex  # this execution's heartbeats are its own commands
        self._count = 0
        self._last_sent = float("-inf")
        self._details: Payload | None = None
        self._dirty = False
        self._handle: asyncio.TimerHandle | None = None
        self.sent = 0

    def __call__(self, details: Any) -> None:
        """``activity.heartbeat(details)``, from the loop or a thread."""
        payload = None
        if details is not None:
            try:
                payload = Payload.from_json(details, limit=self._limit)
            except InvalidInput as err:
                raise InvalidInput(f"activity.heartbeat() details rejected: {err}") from err
        self._loop.call_soon_threadsafe(self._record, payload)

    def _record(self, details: Payload | None) -> None:
        if details is not None:
            self._details = details
        self._dirty = True
        if self._handle is None:
            delay = max(0.0, self._last_sent + self._interval - self._loop.time())
            self._handle = self._loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._handle = None
        if not self._dirty:
            return
        self._dirty = False
        self._last_sent = self._loop.time()
        self._count += 1
        self.sent += 1
        task = self._task
        command = RecordActivityHeartbeat(
            command_id=derive_id(
                "activity-heartbeat",
                task.activity_id,
                str(task.attempt),
                self._nonce,
                str(self._count),
            ),
            issued_at=datetime.now(UTC),
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            activity_id=task.activity_id,
            attempt=task.attempt,
            details=self._details,
        )
        self._spawn(self._send(command), name="worker.heartbeat")

    def close(self) -> None:
        """The attempt ended: nothing more is sent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
