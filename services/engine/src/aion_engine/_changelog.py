"""The engine's changelogs: which records a decision writes, and how a partition is restored.

Two compacted topics, both written in the transaction of the event batch they come from:
``<prefix>.engine-state`` holds open work only, ``<prefix>.engine-closed`` the heads of closed
workflows (until retention purges them). Per workflow (see :mod:`aion_engine._snapshot` for
the encodings):

- a batch that starts a run (not a new workflow's first: its run records from seq 1 are its
  whole state) writes the workflow's *head* to ``engine-state``; one that closes the run moves
  the head to ``engine-closed`` (and tombstones it in ``engine-state`` if it was there), and
  one that starts a run of a closed workflow tombstones its ``engine-closed`` head;
- a batch that leaves a run open adds a *run record* to ``engine-state`` with the events it
  added to that run;
- a batch that closes a run tombstones that run's records;
- a purge tombstones the ``engine-closed`` head.

So the bytes written grow with the events written, never with a run's size: an event is copied
once into a run record, and once more into a head only if it is a run's start or terminal.

Every transaction also writes the partition's *position* to ``engine-state`` (key
:data:`POSITION_KEY`): the next offset of ``aion.commands`` to read. It commits or aborts with
the events and the state it accompanies, so an acquisition resumes exactly where the state it
restored ends (docs/decisions.md 69: in place of the consumer group's offset, which the
transaction no longer carries).

Restoring a partition (:meth:`EngineChangelog.restore`) reads the local store of
``engine-state`` — open work only, O(open workflows) — decodes each head and applies the open
run's events to it; closed workflows are read back one at a time from the store of
``engine-closed`` when a command needs them (:meth:`EngineChangelog.load_closed`). Every
record that cannot be read raises :class:`ChangelogCorrupt`, naming the partition and the
offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from aion_common.codecs import Codec
from aion_common.domain import AionError, EventBatch, WorkflowPurged, WorkflowStarted, outcome_of
from aion_common.kafka.changelog import Change, ChangelogStore
from aion_engine._snapshot import (
    RUN_SEPARATOR,
    SnapshotError,
    decode_head,
    decode_run,
    encode_head,
    encode_run,
    head_key,
    open_run_batches,
    run_key,
    workflow_of_key,
)
from aion_engine._state import WorkflowState

__all__ = [
    "FORMAT",
    "POSITION_KEY",
    "ChangelogCorrupt",
    "EngineChangelog",
    "position_change",
    "read_position",
]

FORMAT = 2
"""The changelogs' layout (the build marker's version): 1 kept closed heads in
``engine-state``; a partition built in it is built again from the event log."""


class ChangelogCorrupt(AionError):
    """A changelog record the engine cannot read: the partition is rebuilt from the events."""

    def __init__(self, partition: int, offset: int, key: bytes, problem: str) -> None:
        super().__init__(
            f"engine changelog partition {partition} offset {offset} (key {key!r}) is "
            f"unreadable: {problem}"
        )
        self.partition = partition
        self.offset = offset


POSITION_KEY: Final = b"\x00aion.position"
"""The key of a partition's position in ``engine-state`` (no workflow id starts with a NUL)."""


def position_change(next_offset: int) -> Change:
    """The record of the partition's position: ``next_offset`` of ``aion.commands``, in
    decimal."""
    return Change(POSITION_KEY, b"%d" % next_offset)


def read_position(store: ChangelogStore, partition: int) -> int | None:
    """The position the store holds (None: none written yet, a log from before positions)."""
    found = store.get(POSITION_KEY)
    if found is None:
        return None
    value, offset = found
    try:
        position = int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        position = -1
    if position < 0:
        raise ChangelogCorrupt(partition, offset, POSITION_KEY, f"not a position: {value[:40]!r}")
    return position


@dataclass(slots=True)
class EngineChangelog:
    """One partition's changelog bookkeeping: the run records each open run has."""

    codec: Codec
    partition: int
    writer: str = "engine"
    run_keys: dict[str, list[bytes]] = field(default_factory=dict)
    """Keys of the run records written for each workflow's open run."""
    open_heads: set[str] = field(default_factory=set)
    """Open workflows whose head is in ``engine-state`` (a run after the first is open)."""

    # -- writing ---------------------------------------------------------------------------

    def changes(
        self, state: WorkflowState | None, batch: EventBatch, encoded: bytes | None = None
    ) -> list[Change]:
        """The records the batch writes; ``state`` is the workflow's state after it (None
        once purged). ``encoded``: the batch as the events topic got it (trusted-encoded),
        reused as the run record when every event of the batch is the open run's. Records
        for ``engine-closed`` are marked ``closed_log``; tombstones come first, so the list
        applied in order to one store leaves the right entry per key too."""
        workflow_id = batch.workflow_id
        if state is None or isinstance(batch.events[-1], WorkflowPurged):
            return self.purged(workflow_id)
        out: list[Change] = []
        first_boundary = next(
            (
                e
                for e in batch.events
                if isinstance(e, WorkflowStarted) or outcome_of(e) is not None
            ),
            None,
        )
        run = state.open_run
        if first_boundary is not None:
            # open before the batch: the run open then closes in it (its first boundary is the
            # terminal); else the workflow was new or closed, with a head in engine-closed if
            # it had a run before
            was_open = workflow_id in self.run_keys
            out.extend(Change(key, None) for key in self.run_keys.pop(workflow_id, ()))
            had_open_head = workflow_id in self.open_heads
            self.open_heads.discard(workflow_id)
            was_closed = not was_open and first_boundary.seq > 1
            if run is None:
                if had_open_head:
                    out.append(Change(head_key(workflow_id), None))
                out.append(self.head(state))
            else:
                if was_closed:
                    out.append(Change(head_key(workflow_id), None, closed_log=True))
                if run.started.seq > 1:
                    out.append(self.head(state))
                    self.open_heads.add(workflow_id)
                elif had_open_head:
                    out.append(Change(head_key(workflow_id), None))
                # else a new workflow's first run: its head would be empty (its run records,
                # from seq 1, are the whole state)
        if run is not None:
            events = tuple(e for e in batch.events if e.run_id == run.run_id)
            if events:
                key = run_key(workflow_id, events[0].seq)
                if encoded is not None and len(events) == len(batch.events):
                    value = encoded  # the same bytes: encoding them twice costs a third
                else:
                    sub = EventBatch(
                        workflow_id=workflow_id,
                        command_id=batch.command_id,
                        writer=batch.writer,
                        events=events,
                    )
                    value = encode_run(self.codec, sub)
                out.append(Change(key, value, open=True))
                self.run_keys.setdefault(workflow_id, []).append(key)
        return out

    def purged(self, workflow_id: str) -> list[Change]:
        """Tombstones for every record of the workflow (it was purged: closed, so its head
        is in engine-closed)."""
        out = [Change(key, None) for key in self.run_keys.pop(workflow_id, ())]
        if workflow_id in self.open_heads:
            self.open_heads.discard(workflow_id)
            out.append(Change(head_key(workflow_id), None))
        out.append(Change(head_key(workflow_id), None, closed_log=True))
        return out

    def head(self, state: WorkflowState) -> Change:
        """The workflow's head record: in engine-state while a run is open, else in
        engine-closed."""
        run = state.run
        closed_at = None
        if run is not None and run.terminal is not None:
            closed_at = int(run.terminal.recorded_at.timestamp() * 1000)
        is_open = state.open_run is not None
        return Change(
            head_key(state.workflow_id),
            encode_head(self.codec, state),
            open=is_open,
            closed_at_ms=closed_at,
            closed_log=not is_open,
        )

    def rewrite(self, state: WorkflowState, *, limit_bytes: int) -> list[Change]:
        """Every record of the workflow from scratch (a build from the event log): its head
        and, if a run is open, that run's events in records of at most ``limit_bytes``. An
        earlier flush of the same build may have written the workflow's head to the other
        changelog: it is tombstoned there (when it can have been written)."""
        workflow_id = state.workflow_id
        out = [Change(key, None) for key in self.run_keys.pop(workflow_id, ())]
        self.open_heads.discard(workflow_id)
        run = state.open_run
        if run is not None and run.started.seq > 1:
            out.append(Change(head_key(workflow_id), None, closed_log=True))
        head = self.head(state)
        out.append(head)
        if run is not None:
            self.open_heads.add(workflow_id)
            for batch in open_run_batches(
                workflow_id, self.writer, run.events, limit_bytes=limit_bytes, codec=self.codec
            ):
                key = run_key(workflow_id, batch.first_seq)
                out.append(Change(key, encode_run(self.codec, batch), open=True))
                self.run_keys.setdefault(workflow_id, []).append(key)
        return out

    # -- reading ---------------------------------------------------------------------------

    def restore(self, store: ChangelogStore) -> Iterator[WorkflowState]:
        """Every open workflow of the store (``engine-state``'s), rebuilt (heads decoded, open
        runs re-applied)."""
        self.run_keys.clear()
        self.open_heads.clear()
        current: WorkflowState | None = None
        for key, value, offset in store.scan_open():
            workflow_id = workflow_of_key(key)
            if RUN_SEPARATOR not in key:
                if current is not None:
                    yield self._checked(current, store)
                current = self._decode_head(workflow_id, key, value, offset)
                self.open_heads.add(workflow_id)
                continue
            batch = self._decode_run(key, value, offset)
            if current is None or current.workflow_id != workflow_id:
                if batch.first_seq != 1:
                    raise ChangelogCorrupt(
                        self.partition, offset, key, "a run record without a head"
                    )
                if current is not None:
                    yield self._checked(current, store)
                current = WorkflowState(workflow_id)  # a first run: nothing came before it
            try:
                for event in batch.events:
                    if event.seq > current.last_seq:
                        current.apply(event)
            except AionError as err:
                raise ChangelogCorrupt(self.partition, offset, key, str(err)) from err
            self.run_keys.setdefault(workflow_id, []).append(key)
        if current is not None:
            yield self._checked(current, store)

    def load_closed(self, store: ChangelogStore, workflow_id: str) -> WorkflowState | None:
        """A closed workflow's state from the store of ``engine-closed``, or None if the
        store has no head."""
        found = store.get(head_key(workflow_id))
        if found is None:
            return None
        value, offset = found
        return self._decode_head(workflow_id, head_key(workflow_id), value, offset)

    def forget(self, workflow_id: str) -> None:
        """Stop tracking the workflow's run records."""
        self.run_keys.pop(workflow_id, None)
        self.open_heads.discard(workflow_id)

    def _checked(self, state: WorkflowState, store: ChangelogStore) -> WorkflowState:
        if state.open_run is None:
            found = store.get(head_key(state.workflow_id))
            offset = -1 if found is None else found[1]
            raise ChangelogCorrupt(
                self.partition,
                offset,
                head_key(state.workflow_id),
                "an open head whose run records hold no open run",
            )
        return state

    def _decode_head(
        self, workflow_id: str, key: bytes, value: bytes, offset: int
    ) -> WorkflowState:
        try:
            return decode_head(self.codec, workflow_id, value)
        except SnapshotError as err:
            raise ChangelogCorrupt(self.partition, offset, key, str(err)) from err

    def _decode_run(self, key: bytes, value: bytes, offset: int) -> EventBatch:
        try:
            return decode_run(self.codec, value)
        except SnapshotError as err:
            raise ChangelogCorrupt(self.partition, offset, key, str(err)) from err
