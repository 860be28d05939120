"""Which offset of each task partition a worker may commit: the lowest unfinished one.

A worker runs many tasks of a partition at once and they finish in any order; committing the
offset after the newest finished task would skip older ones still running, and a crash would
lose them. :class:`Watermarks` commits only up to the oldest record not yet done, so a crash
re-delivers exactly the unfinished tasks (and some finished after them: at-least-once).
"""

from __future__ import annotations

import heapq

__all__ = ["Watermarks"]


class Watermarks:
    """Per partition: records taken, records done, and the next offset safe to commit."""

    __slots__ = ("_done", "_next", "_pending")

    def __init__(self) -> None:
        self._pending: dict[int, list[int]] = {}  # partition -> heap of unfinished offsets
        self._done: dict[int, set[int]] = {}  # partition -> finished offsets still in the heap
        self._next: dict[int, int] = {}  # partition -> offset after the newest taken

    def take(self, partition: int, offset: int) -> None:
        """A record at ``offset`` was taken (it is unfinished until :meth:`done`)."""
        heapq.heappush(self._pending.setdefault(partition, []), offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def done(self, partition: int, offset: int) -> None:
        """The record at ``offset`` is finished (reported, skipped or dead-lettered)."""
        pending = self._pending.get(partition)
        if not pending:
            return
        self._done.setdefault(partition, set()).add(offset)
        done = self._done[partition]
        while pending and pending[0] in done:
            done.discard(heapq.heappop(pending))

    def committable(self, partition: int) -> int | None:
        """The offset to commit for ``partition`` (the oldest unfinished, or the one after the
        newest taken when all are done), or None if nothing was taken."""
        if partition not in self._next:
            return None
        pending = self._pending.get(partition)
        return pending[0] if pending else self._next[partition]

    def unfinished(self, partition: int) -> int:
        """How many taken records of ``partition`` are not done."""
        return len(self._pending.get(partition, ())) - len(self._done.get(partition, ()))

    def forget(self, partition: int) -> None:
        """The partition was revoked: its next owner reads from the committed offset."""
        self._pending.pop(partition, None)
        self._done.pop(partition, None)
        self._next.pop(partition, None)

    def partitions(self) -> tuple[int, ...]:
        """Partitions with taken records."""
        return tuple(sorted(self._next))
