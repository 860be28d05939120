"""The engine's changelog: which records a decision writes, and how a partition is restored.

Per workflow (see :mod:`aion_engine._snapshot` for the encodings):

- a batch that starts or closes a run rewrites the workflow's *head*;
- a batch that leaves a run open adds a *run record* with the events it added to that run;
- a batch that closes a run tombstones that run's records;
- a purge tombstones the head.

So the bytes written grow with the events written, never with a run's size: an event is copied
once into a run record, and once more into a head only if it is a run's start or terminal.

Restoring a partition (:meth:`EngineChangelog.restore`) reads the open entries of its local
store (heads of workflows with an open run, and the run records), decodes each head and
applies the open run's events to it; closed workflows stay in the store and are read back one
at a time when a command needs them (:meth:`EngineChangelog.load_closed`). Every record that
cannot be read raises :class:`ChangelogCorrupt`, naming the partition and the offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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

__all__ = ["ChangelogCorrupt", "EngineChangelog"]


class ChangelogCorrupt(AionError):
    """A changelog record the engine cannot read: the partition is rebuilt from the events."""

    def __init__(self, partition: int, offset: int, key: bytes, problem: str) -> None:
        super().__init__(
            f"engine changelog partition {partition} offset {offset} (key {key!r}) is "
            f"unreadable: {problem}"
        )
        self.partition = partition
        self.offset = offset


@dataclass(slots=True)
class EngineChangelog:
    """One partition's changelog bookkeeping: the run records each open run has."""

    codec: Codec
    partition: int
    writer: str = "engine"
    run_keys: dict[str, list[bytes]] = field(default_factory=dict)
    """Keys of the run records written for each workflow's open run."""

    # -- writing ---------------------------------------------------------------------------

    def changes(
        self, state: WorkflowState | None, batch: EventBatch, encoded: bytes | None = None
    ) -> list[Change]:
        """The records the batch writes; ``state`` is the workflow's state after it (None
        once purged). ``encoded``: the batch as the events topic got it (trusted-encoded),
        reused as the run record when every event of the batch is the open run's."""
        workflow_id = batch.workflow_id
        if state is None or isinstance(batch.events[-1], WorkflowPurged):
            return self.purged(workflow_id)
        out: list[Change] = []
        boundary = any(
            isinstance(e, WorkflowStarted) or outcome_of(e) is not None for e in batch.events
        )
        run = state.open_run
        if boundary:
            # the run open before this batch (if any) closed in it, or none was open
            out.extend(Change(key, None) for key in self.run_keys.pop(workflow_id, ()))
            if run is None or run.started.seq > 1:
                out.append(self.head(state))
            # else a new workflow's first run: its head would be empty (its run records, from
            # seq 1, are the whole state)
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
        """Tombstones for every record of the workflow (it was purged)."""
        return [
            *(Change(key, None) for key in self.run_keys.pop(workflow_id, ())),
            Change(head_key(workflow_id), None),
        ]

    def head(self, state: WorkflowState) -> Change:
        """The workflow's head record."""
        run = state.run
        closed_at = None
        if run is not None and run.terminal is not None:
            closed_at = int(run.terminal.recorded_at.timestamp() * 1000)
        return Change(
            head_key(state.workflow_id),
            encode_head(self.codec, state),
            open=state.open_run is not None,
            closed_at_ms=closed_at,
        )

    def rewrite(self, state: WorkflowState, *, limit_bytes: int) -> list[Change]:
        """Every record of the workflow from scratch (a build from the event log): its head
        and, if a run is open, that run's events in records of at most ``limit_bytes``."""
        workflow_id = state.workflow_id
        out = [Change(key, None) for key in self.run_keys.pop(workflow_id, ())]
        out.append(self.head(state))
        run = state.open_run
        if run is not None:
            for batch in open_run_batches(
                workflow_id, self.writer, run.events, limit_bytes=limit_bytes, codec=self.codec
            ):
                key = run_key(workflow_id, batch.first_seq)
                out.append(Change(key, encode_run(self.codec, batch), open=True))
                self.run_keys.setdefault(workflow_id, []).append(key)
        return out

    # -- reading ---------------------------------------------------------------------------

    def restore(self, store: ChangelogStore) -> Iterator[WorkflowState]:
        """Every open workflow of the store, rebuilt (heads decoded, open runs re-applied)."""
        self.run_keys.clear()
        current: WorkflowState | None = None
        for key, value, offset in store.scan_open():
            workflow_id = workflow_of_key(key)
            if RUN_SEPARATOR not in key:
                if current is not None:
                    yield self._checked(current, store)
                current = self._decode_head(workflow_id, key, value, offset)
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
        """A closed workflow's state from the store, or None if the store has no head."""
        found = store.get(head_key(workflow_id))
        if found is None:
            return None
        value, offset = found
        return self._decode_head(workflow_id, head_key(workflow_id), value, offset)

    def forget(self, workflow_id: str) -> None:
        """Stop tracking the workflow's run records."""
        self.run_keys.pop(workflow_id, None)

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
