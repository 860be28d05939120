"""Projection throughput: ``python -m aion_projector.bench --database URL --events 20000``.

Builds a realistic mix (starts, signals, children scheduled and recorded, continue-as-new,
completions) in records of 1 to 3 events, applies it in transactions of ``--per-apply``
records as the consumer loop would, and prints one JSON object per line. The database's
projector tables are RESET first: point it at a scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta

from aion_common.domain import (
    ChildWorkflowCompleted,
    ChildWorkflowScheduled,
    Event,
    EventBatch,
    ParentClosePolicy,
    Payload,
    SignalReceived,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
)
from aion_projector.database import connect, reset, session_factory
from aion_projector.projection import Delivery, Projection

_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_INPUT = Payload.from_json({"order": 1234, "items": ["a", "b", "c"], "note": "x" * 80})


def _workflow(index: int, partitions: int) -> list[Delivery]:
    """One workflow's records: 10 events in 5 records, across two runs."""
    wid = f"bench-{index:07d}"
    at = _T0 + timedelta(milliseconds=index)
    r1, r2 = f"{wid}-r1", f"{wid}-r2"
    batches: list[tuple[Event, ...]] = [
        (
            WorkflowStarted(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=1,
                command_id="c1",
                workflow_type="order",
                input=_INPUT,
                first_run_id=r1,
                package_version="1.0",
            ),
            ChildWorkflowScheduled(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=2,
                command_id="c1",
                child_workflow_id=f"{wid}-child",
                child_workflow_type="pay",
                input=_INPUT,
                parent_close_policy=ParentClosePolicy.TERMINATE,
                start_command_id=f"{wid}-s",
            ),
        ),
        (
            SignalReceived(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=3,
                command_id="c2",
                name="go",
                payload=_INPUT,
            ),
        ),
        (
            ChildWorkflowCompleted(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=4,
                command_id="c3",
                child_workflow_id=f"{wid}-child",
                result=_INPUT,
            ),
            WorkflowContinuedAsNew(
                workflow_id=wid,
                recorded_at=at,
                run_id=r1,
                seq=5,
                command_id="c3",
                input=_INPUT,
                workflow_type=None,
                next_run_id=r2,
            ),
            WorkflowStarted(
                workflow_id=wid,
                recorded_at=at,
                run_id=r2,
                seq=6,
                command_id="c3",
                workflow_type="order",
                input=_INPUT,
                first_run_id=r1,
                previous_run_id=r1,
                package_version="1.0",
            ),
        ),
        (
            SignalReceived(
                workflow_id=wid,
                recorded_at=at,
                run_id=r2,
                seq=7,
                command_id="c4",
                name="a",
                payload=_INPUT,
            ),
            SignalReceived(
                workflow_id=wid,
                recorded_at=at,
                run_id=r2,
                seq=8,
                command_id="c4",
                name="b",
                payload=_INPUT,
            ),
        ),
        (
            SignalReceived(
                workflow_id=wid,
                recorded_at=at,
                run_id=r2,
                seq=9,
                command_id="c5",
                name="c",
                payload=_INPUT,
            ),
            WorkflowCompleted(
                workflow_id=wid, recorded_at=at, run_id=r2, seq=10, command_id="c5", result=_INPUT
            ),
        ),
    ]
    partition = index % partitions
    return [
        (
            partition,
            0,
            EventBatch(workflow_id=wid, command_id=b[0].command_id, writer="engine-1", events=b),
        )
        for b in batches
    ]


def _workload(events: int, partitions: int, concurrent: int) -> list[Delivery]:
    """Interleave ``concurrent`` workflows at a time, as a busy partition would hold them."""
    workflows = [_workflow(i, partitions) for i in range(max(1, events // 10))]
    out: list[Delivery] = []
    offsets = [0] * partitions
    for start in range(0, len(workflows), concurrent):
        group = workflows[start : start + concurrent]
        for step in range(5):
            for records in group:
                partition, _, batch = records[step]
                out.append((partition, offsets[partition], batch))
                offsets[partition] += 1
    return out


async def _run(url: str, events: int, per_apply: int) -> dict[str, object]:
    engine = connect(url)
    try:
        await reset(engine)
        deliveries = _workload(events, partitions=6, concurrent=200)
        total = sum(len(b.events) for _, _, b in deliveries)
        sessions = session_factory(engine)
        projection = Projection("aion.events")
        started = time.perf_counter()
        for start in range(0, len(deliveries), per_apply):
            async with sessions() as session:
                await projection.apply(session, deliveries[start : start + per_apply])
        elapsed = time.perf_counter() - started
        return {
            "bench": "projection",
            "metric": "events_per_s",
            "value": round(total / elapsed, 1),
            "unit": "events/s",
            "backend": engine.dialect.name,
            "events": total,
            "per_apply": per_apply,
            "seconds": round(elapsed, 3),
        }
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print its JSON line."""
    parser = argparse.ArgumentParser(prog="python -m aion_projector.bench")
    parser.add_argument("--database", required=True, help="SQLAlchemy async URL (tables reset!)")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--per-apply", type=int, default=500, help="records per transaction")
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args.database, args.events, args.per_apply))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
