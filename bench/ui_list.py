"""The web UI's workflow list at 1,000 and 100,000 workflows: ``python -m bench.ui_list``.

Two views databases are filled through the projector's public ``Projection`` (the same rows
the consumer writes): one with ``--small`` workflows, one with ``--large``. One API process
(``python -m aion_projector.api``, as deployed) serves each. The list page ``/`` is then
fetched in several scenarios — unfiltered, by status, by type, by a time range and by an id
prefix, each on its first page and on a deep page (a cursor 90% of the way down the matching
workflows, found by walking the JSON API) — alternating between the two servers request by
request, so drift of this machine's speed lands on both sides alike. Per scenario it prints
the p50/p95 of each side and the ratio of the p95s (the target: large within 2x of small).

``--database sqlite`` (files in a scratch directory) or ``postgresql`` (scratch databases on
the PostgreSQL of ``make postgres`` or ``AION_TEST_DATABASE_URL``, dropped after). The API's
command sink needs a broker: ``AION_BENCH_KAFKA`` or one started here. Prints one JSON object
per line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from aion_common.domain import (
    EventBatch,
    Payload,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowError,
    WorkflowFailed,
    WorkflowStarted,
)
from aion_common.testing import free_port, percentile
from aion_projector import Delivery, Projection, connect, migrate, session_factory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
TYPES = ("order", "payment", "shipping", "report", "email")
_INPUT = Payload.from_json({"order": 1234, "items": ["a", "b", "c"]})
_RESULT = Payload.from_json({"ok": True})
_PER_APPLY = 2000


def _deliveries(count: int) -> Iterator[list[Delivery]]:
    """``count`` workflows, started evenly over 30 days (ids not in start order): 20% left
    running, 65% completed, 10% failed, 5% cancelled; in chunks for one transaction each."""
    chunk: list[Delivery] = []
    step = SPAN / count
    for index in range(count):
        kind = TYPES[index % len(TYPES)]
        # ids interleave types and scatter against start time, as generated ids would
        wid = f"{kind}-{(index * 7919) % count:07d}"
        at = T0 + step * index
        run = f"{wid}-r1"
        envelope: dict[str, Any] = {"workflow_id": wid, "run_id": run, "command_id": f"{wid}-c"}
        events: list[Any] = [
            WorkflowStarted(
                **envelope,
                seq=1,
                recorded_at=at,
                workflow_type=kind,
                input=_INPUT,
                first_run_id=run,
                package_version="bench-1",
            )
        ]
        roll = index % 20
        closed = {**envelope, "seq": 2, "recorded_at": at + timedelta(seconds=5)}
        if 4 <= roll < 17:
            events.append(WorkflowCompleted(**closed, result=_RESULT))
        elif 17 <= roll < 19:
            events.append(WorkflowFailed(**closed, error=WorkflowError(message="boom")))
        elif roll == 19:
            events.append(WorkflowCancelled(**closed, reason="bench"))
        batch = EventBatch(
            workflow_id=wid, command_id=f"{wid}-c", writer="bench", events=tuple(events)
        )
        chunk.append((index % 6, index, batch))
        if len(chunk) == _PER_APPLY:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _fill(url: str, count: int) -> float:
    engine = connect(url)
    try:
        await migrate(engine)
        sessions = session_factory(engine)
        projection = Projection("aion.events")
        started = time.perf_counter()
        for chunk in _deliveries(count):
            async with sessions() as session:
                await projection.apply(session, chunk)
        return time.perf_counter() - started
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _api(url: str, bootstrap: str) -> AsyncIterator[str]:
    """The API as deployed, on a free port, until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "AION_DATABASE_URL": url,
        "AION_KAFKA_BOOTSTRAP": bootstrap,
        "AION_TOPIC_PREFIX": f"bench-ui-{uuid.uuid4().hex[:6]}",
        "AION_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aion_projector.api",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{base}/health")).status_code == 200:
                        break
                if time.monotonic() > deadline or process.returncode is not None:
                    raise SystemExit(f"the API on {url} did not start")
                await asyncio.sleep(0.2)
        yield base
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def _scenarios(count: int) -> dict[str, dict[str, str]]:
    """Name → list page query (the filters a person would set)."""
    quarter = (T0 + SPAN / 4).strftime("%Y-%m-%dT%H:%M:%S")
    three_quarters = (T0 + SPAN * 3 / 4).strftime("%Y-%m-%dT%H:%M:%S")
    del count
    return {
        "unfiltered": {},
        "status": {"status": "FAILED"},
        "type": {"type": "payment"},
        "time-range": {"started_from": quarter, "started_before": three_quarters},
        "id-prefix": {"q": "shipping-"},
    }


_API_FILTER = {"q": "id_prefix", "type": "type", "status": "status"}


async def _deep_cursor(http: httpx.AsyncClient, base: str, query: dict[str, str]) -> str | None:
    """The cursor after the first 90% of the workflows ``query`` matches (the UI's pages
    from there on are as deep as a person paging through would get)."""
    params: dict[str, Any] = {_API_FILTER.get(k, k): v for k, v in query.items()}
    total = 0
    walk = dict(params, limit=500)
    while True:  # count them, a page of 500 at a time
        body = (await http.get(f"{base}/v1/workflows", params=walk)).json()
        total += len(body["items"])
        if body["next_cursor"] is None:
            break
        walk["cursor"] = body["next_cursor"]
    target = total * 9 // 10
    reached, cursor = 0, None
    while reached < target:
        step = dict(params, limit=min(500, target - reached))
        if cursor is not None:
            step["cursor"] = cursor
        body = (await http.get(f"{base}/v1/workflows", params=step)).json()
        reached += len(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return None
    return cursor


async def _measure(bases: dict[int, str], samples: int, warm_up: int) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for name, query in _scenarios(0).items():
            for depth in ("first", "deep"):
                urls: dict[int, tuple[str, dict[str, str]]] = {}
                for size, base in bases.items():
                    params = dict(query)
                    if depth == "deep":
                        cursor = await _deep_cursor(http, base, query)
                        if cursor is None:
                            break
                        params["after"] = cursor
                    urls[size] = (f"{base}/", params)
                if len(urls) < len(bases):
                    continue
                times: dict[int, list[float]] = {size: [] for size in bases}
                for round_ in range(warm_up + samples):
                    order = sorted(urls) if round_ % 2 else sorted(urls, reverse=True)
                    for size in order:
                        url, params = urls[size]
                        began = time.perf_counter()
                        response = await http.get(url, params=params)
                        elapsed = (time.perf_counter() - began) * 1000
                        if response.status_code != 200:
                            raise SystemExit(f"{url} {params}: HTTP {response.status_code}")
                        if round_ >= warm_up:
                            times[size].append(elapsed)
                lines.append(_line(f"{name}-{depth}", times))
    return lines


def _line(scenario: str, times: dict[int, list[float]]) -> dict[str, object]:
    small, large = sorted(times)
    p95 = {size: percentile(sorted(values), 0.95) for size, values in times.items()}
    p50 = {size: percentile(sorted(values), 0.5) for size, values in times.items()}
    ratio = p95[large] / p95[small]
    return {
        "bench": "ui-list",
        "metric": f"p95_ratio_{scenario.replace('-', '_')}",
        "value": round(ratio, 2),
        "unit": f"p95 at {large} / p95 at {small} (target <= 2)",
        "within_2x": ratio <= 2,
        f"p95_ms_{small}": round(p95[small], 2),
        f"p95_ms_{large}": round(p95[large], 2),
        f"p50_ms_{small}": round(p50[small], 2),
        f"p50_ms_{large}": round(p50[large], 2),
        "samples": len(times[small]),
    }


@contextlib.contextmanager
def _databases(kind: str, scratch: Path, sizes: list[int]) -> Iterator[dict[int, str]]:
    if kind == "sqlite":
        yield {n: f"sqlite+aiosqlite:///{scratch / f'ui-{n}.db'}" for n in sizes}
        return
    from aion_common.testing import postgres  # noqa: PLC0415 - only for this option

    server = os.environ.get(postgres.ENV_URL) or postgres.read_provisioned_url()
    if server is None:
        raise SystemExit("no PostgreSQL: run `make postgres` or set AION_TEST_DATABASE_URL")
    names = {n: f"aion_bench_ui_{n}_{uuid.uuid4().hex[:6]}" for n in sizes}
    urls = {n: postgres.create_database(server, name) for n, name in names.items()}
    try:
        yield urls
    finally:
        for name in names.values():
            postgres.drop_database(server, name)


@contextlib.contextmanager
def _broker(scratch: Path) -> Iterator[str]:
    external = os.environ.get("AION_BENCH_KAFKA")
    if external:
        yield external
        return
    from aion_common.testing.broker import KafkaBroker  # noqa: PLC0415 - only when needed

    broker = KafkaBroker(scratch / "kafka", die_with_parent=True, heap="512m")
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


async def _run(urls: dict[int, str], bootstrap: str, kind: str, samples: int) -> None:
    for size, url in urls.items():
        seconds = await _fill(url, size)
        _print(
            {
                "bench": "ui-list",
                "metric": "fill_s",
                "value": round(seconds, 2),
                "unit": "s",
                "database": kind,
                "workflows": size,
            }
        )
    async with contextlib.AsyncExitStack() as stack:
        bases = {
            size: await stack.enter_async_context(_api(url, bootstrap))
            for size, url in urls.items()
        }
        for line in await _measure(bases, samples, warm_up=max(5, samples // 10)):
            _print({**line, "database": kind})


def _print(line: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Fill, serve, measure, print."""
    parser = argparse.ArgumentParser(prog="python -m bench.ui_list", description=__doc__)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200, help="requests per side and scenario")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="aion-bench-ui-") as scratch,
        _databases(args.database, Path(scratch), [args.small, args.large]) as urls,
        _broker(Path(scratch)) as bootstrap,
    ):
        asyncio.run(_run(urls, bootstrap, args.database, args.samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
