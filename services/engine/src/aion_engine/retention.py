"""Retention of closed workflows (``AION_RETENTION``, 7 days by default), as Temporal's
namespace retention: a workflow closed for longer is purged through the normal command path.

- :func:`purge` is the core's handler of :class:`~aion_common.domain.PurgeWorkflow`: a workflow
  that is closed and still at the command's ``last_seq`` gets a last event,
  :class:`~aion_common.domain.WorkflowPurged`, and is forgotten; its changelog records are
  tombstoned in the same transaction, every reader of ``aion.events`` forgets it too (the views
  archive its history first), and its id is free: a new start begins at seq 1, and other late
  commands are refused as for a workflow that does not exist. Anything else (unknown, open
  again, moved on since the sweep looked) is a no-op.
- :class:`RetentionSweep` runs in the engine process: every ``interval`` it asks each owned
  partition's local store for workflows closed before ``now - retention`` and sends each a
  ``PurgeWorkflow`` with the deterministic id ``derive_id("purge", workflow id, last seq)``,
  so a sweep that repeats itself (or a restarted engine's) sends the same command.

What a closed workflow keeps until then is its whole engine state (the changelog head: the
closed runs' starts and terminals, the window of earlier command ids, the ids that started
chains), so every guard holds for the whole retention period exactly as for a workflow just
closed: a late child record to a closed parent run appends nothing, an id-reuse policy sees
the last run's outcome, a duplicate start or command is recognised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aion_common.domain import (
    InfrastructureError,
    PurgeWorkflow,
    WorkflowPurged,
    derive_id,
)
from aion_common.kafka.changelog import ChangelogStore
from aion_engine._state import WorkflowState
from aion_engine._work import Work

__all__ = ["RetentionSweep", "expired_in", "purge", "purge_command"]

_log = logging.getLogger("aion.engine.retention")
_PER_SWEEP = 1_000  # purges sent per partition per sweep, at most
_REISSUE_S = 60.0  # a purge not applied by then is sent again


def purge(cmd: PurgeWorkflow, state: WorkflowState | None, now: datetime) -> Work | None:
    """The purge's unit of work (its one event appended), or None when it does not apply."""
    if state is None or state.last_seq != cmd.last_seq:
        return None
    run = state.run
    if run is None or run.terminal is None:
        return None  # open (again): it is not expired
    work = Work(state, cmd.command_id, now)
    closed = run.terminal.recorded_at.isoformat()
    work.append(
        WorkflowPurged(**work.envelope(run.run_id), reason=f"retention ran out (closed {closed})")
    )
    return work


def purge_command(workflow_id: str, last_seq: int, now: datetime) -> PurgeWorkflow:
    """The sweep's command for a workflow closed at ``last_seq``."""
    return PurgeWorkflow(
        command_id=derive_id("purge", workflow_id, str(last_seq)),
        issued_at=now,
        workflow_id=workflow_id,
        last_seq=last_seq,
    )


Sender = Callable[[PurgeWorkflow], Awaitable[None]]
Expired = Callable[[int], Iterable[tuple[int, str, int]]]
"""``expired(before_ms)``: (partition, workflow id, last seq) of workflows closed before."""


@dataclass(slots=True)
class RetentionSweep:
    """Sends ``PurgeWorkflow`` for every owned workflow whose retention ran out."""

    retention_ms: int
    expired: Expired
    send: Sender
    interval_s: float = 0.0
    sent: dict[str, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        if not self.interval_s:
            self.interval_s = min(60.0, max(0.5, self.retention_ms / 1000 / 4))

    def start(self) -> None:
        """Begin sweeping (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="engine-retention")

    async def stop(self) -> None:
        """Stop sweeping (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep_once()
            except InfrastructureError as err:
                _log.warning("retention sweep failed; retrying", extra={"error": str(err)})

    async def sweep_once(self) -> int:
        """One sweep; returns how many purges it sent."""
        now = datetime.now(UTC)
        before = int(now.timestamp() * 1000) - self.retention_ms
        monotonic = time.monotonic()
        self.sent = {k: t for k, t in self.sent.items() if monotonic - t < _REISSUE_S}
        count = 0
        for _partition, workflow_id, last_seq in self.expired(before):
            command = purge_command(workflow_id, last_seq, now)
            if command.command_id in self.sent:
                continue
            await self.send(command)
            self.sent[command.command_id] = monotonic
            count += 1
        if count:
            _log.info("retention sweep: purges sent", extra={"purges": count})
        return count


def expired_in(
    store: ChangelogStore, load: Callable[[str], WorkflowState | None], before_ms: int
) -> list[tuple[str, int]]:
    """(workflow id, last seq) of the store's workflows closed before ``before_ms``."""
    found = []
    for key, _closed_at in store.closed_before(before_ms, _PER_SWEEP):
        workflow_id = key.decode()
        with contextlib.suppress(UnicodeDecodeError):
            state = load(workflow_id)
            if state is not None and state.open_run is None:
                found.append((workflow_id, state.last_seq))
    return found
