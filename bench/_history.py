"""History for the recovery benchmark, made by the engine's own core and codec (no API).

:func:`engine_history` yields, in order, the records a partition's topics would hold after the
engine ran ``open_workflows`` workflows that wait (first) and then parent/child pairs to
completion: each item is one command's event batch as ``aion.events`` holds it, and the
changelog records the engine wrote in the same transaction. Every prefix that ends after a
closed pair is a consistent partition (what the events say, the changelog says).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from aion_common.codecs import Codec, encode_key
from aion_common.domain import (
    Command,
    ParentLink,
    Payload,
    RecordChildTerminal,
    StartWorkflow,
    WorkflowStarted,
    derive_id,
    outcome_of,
    record_child_terminal_id,
)
from aion_common.kafka.changelog import Change
from aion_engine._changelog import EngineChangelog
from aion_engine.core import EngineCore
from aion_engine.registry import WorkflowRegistry, load_modules

__all__ = ["Step", "engine_history", "registry"]


def registry() -> WorkflowRegistry:
    """The benchmark's workflows."""
    found = WorkflowRegistry()
    load_modules(["bench.recovery_workflows"], found)
    return found


@dataclass(frozen=True, slots=True)
class Step:
    """One command's output: its event record (key, value), its changelog records."""

    key: bytes
    value: bytes
    events: int
    changes: list[Change]
    closed_pair: bool


def _start(workflow_id: str, workflow_type: str, now: datetime, value: int) -> StartWorkflow:
    return StartWorkflow(
        command_id=f"start-{workflow_id}",
        issued_at=now,
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        input=Payload.from_json(value),
    )


def engine_history(
    *, open_workflows: int, prefix: str = "h", now: datetime | None = None
) -> Iterator[Step]:
    """Open workflows first, then closed parent/child pairs for as long as the caller reads."""
    codec = Codec()
    now = now or datetime.now(UTC)
    found = registry()
    changelog = EngineChangelog(codec, 0, writer="bench")
    core = EngineCore(found, writer="bench")
    for index in range(open_workflows):
        yield from _run(
            core,
            changelog,
            codec,
            [_start(f"{prefix}-open-{index}", "recovery.waiting", now, index)],
            now,
        )
    template = _Template.make(core, changelog, codec, prefix, now)
    index = 0
    while True:
        yield from template.pair(index)
        index += 1


def _closed_id(prefix: str, index: int) -> str:
    return f"{prefix}-closed-{index:09d}"


@dataclass(frozen=True, slots=True)
class _Template:
    """One closed parent/child pair made by the core, copied for every other index by
    replacing its ids (all fixed-width, so every Avro length prefix stays right). Checked at
    construction: the copy for index 1 is byte for byte what the core makes for it."""

    steps: list[Step]
    ids: tuple[str, ...]
    child_n: str

    @classmethod
    def make(
        cls,
        core: EngineCore,
        changelog: EngineChangelog,
        codec: Codec,
        prefix: str,
        now: datetime,
    ) -> _Template:
        made = [
            list(
                _run(
                    core,
                    changelog,
                    codec,
                    [_start(_closed_id(prefix, i), "recovery.parent", now, 0)],
                    now,
                )
            )
            for i in (0, 1)
        ]
        first = made[0]
        parent = _closed_id(prefix, 0)
        child = next(
            key
            for s in first
            for c in s.changes
            if (key := c.key.split(b"\0")[0].decode()) != parent and parent in key
        )
        child_n = child.replace(parent, "\0")  # the child id with the parent's id held out
        template = cls(first, _pair_ids(parent, child_n), child_n)
        copy = list(template.pair(1, prefix=prefix))
        expected = made[1]
        if [(s.key, s.value, s.changes) for s in copy] != [
            (s.key, s.value, s.changes) for s in expected
        ]:
            raise AssertionError("the history template does not reproduce the core's output")
        return cls(first, template.ids, child_n)

    def pair(self, index: int, *, prefix: str | None = None) -> Iterator[Step]:
        """The pair for ``index``."""
        parent = self.ids[0]
        base = parent.rsplit("-closed-", 1)[0] if prefix is None else prefix
        swaps = [
            (old.encode(), new.encode())
            for old, new in zip(
                self.ids, _pair_ids(_closed_id(base, index), self.child_n), strict=True
            )
        ]
        last = len(self.steps) - 1
        for number, step in enumerate(self.steps):
            yield Step(
                _swap(step.key, swaps),
                _swap(step.value, swaps),
                step.events,
                [
                    dataclasses.replace(
                        c,
                        key=_swap(c.key, swaps),
                        value=None if c.value is None else _swap(c.value, swaps),
                    )
                    for c in step.changes
                ],
                closed_pair=number == last,
            )


def _pair_ids(parent: str, child_n: str) -> tuple[str, ...]:
    """The pair's ids: ``child_n`` is the child's id with NUL where the parent's id goes
    (default child ids are ``<parent>/<type>/<n>``)."""
    start = f"start-{parent}"
    parent_run = derive_id("run", parent, start)
    child = child_n.replace("\0", parent)
    child_start = derive_id("start-child", parent, parent_run, child)
    child_run = derive_id("run", child, child_start)
    record = record_child_terminal_id(parent, parent_run, child)
    return (parent, parent_run, child, child_start, child_run, record)


def _swap(data: bytes, swaps: list[tuple[bytes, bytes]]) -> bytes:
    for old, new in swaps:
        data = data.replace(old, new)
    return data


def _run(
    core: EngineCore,
    changelog: EngineChangelog,
    codec: Codec,
    commands: list[Command],
    now: datetime,
) -> Iterator[Step]:
    parents: dict[str, ParentLink] = {}
    pending = list(commands)
    while pending:
        decision = core.handle(pending.pop(0), now=now)
        pending.extend(decision.outgoing)
        batch = decision.batch
        if batch is None:
            continue
        state = core.state_of(batch.workflow_id)
        changes = changelog.changes(state, batch)
        yield Step(
            encode_key(batch.workflow_id),
            codec.encode_batch(batch, trusted=True),
            len(batch.events),
            changes,
            closed_pair=False,
        )
        for event in batch.events:
            if isinstance(event, WorkflowStarted) and event.parent is not None:
                parents[event.workflow_id] = event.parent
                continue
            outcome = outcome_of(event)
            parent = parents.get(event.workflow_id)
            if outcome is not None and parent is not None:
                pending.append(
                    RecordChildTerminal.of(
                        parent.workflow_id,
                        parent.run_id,
                        child_workflow_id=event.workflow_id,
                        child_run_id=event.run_id,
                        outcome=outcome,
                        issued_at=now,
                    )
                )
