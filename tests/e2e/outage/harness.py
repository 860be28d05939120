"""What the broker-outage tests share: a mixed fan-out with signals and cancels, the commands a
client sends while the broker is away, health sampling, and the checks on the event log.

The workload is ``tests.e2e.watcher.workflows``: a ``wx.parent`` starts children that
complete at once, wait for signal ``go``, or wait until cancelled; the parent collects every
outcome. The commands that finish the waiting children are sent *during* an outage, through
``AionClient`` (which re-sends them with one request id until the API can queue them).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.e2e.watcher.workflows import expected_outcome

from aion import AionApiError, AionClient
from aion_common.codecs import Codec
from aion_common.domain import CancelRequested, Event, SignalReceived, check_history
from aion_common.kafka.consumer import read_partition_to_end
from aion_common.kafka.topics import Topics
from aion_common.settings import Settings
from aion_dev import Stack

WORKFLOWS = "tests.e2e.watcher.workflows"
KINDS = ("complete", "signal", "cancel", "signal", "cancel")
SERVICES = ("engine-1", "watcher", "projector", "api", "worker")


@dataclass
class FanOut:
    """Parents, each with one child of every kind in :data:`KINDS`."""

    tag: str
    parents: int
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in range(self.parents):
            children = [
                {"id": f"{self.tag}-{p}-c{c}", "kind": kind, "value": p * 100 + c}
                for c, kind in enumerate(KINDS)
            ]
            self.specs[f"{self.tag}-{p}"] = {"children": children}

    def children(self, kind: str) -> list[dict[str, Any]]:
        return [c for spec in self.specs.values() for c in spec["children"] if c["kind"] == kind]

    def waiting(self) -> list[str]:
        """Children that wait for a command the test sends."""
        return [c["id"] for c in self.children("signal") + self.children("cancel")]

    async def start(self, client: AionClient) -> None:
        for parent, spec in self.specs.items():
            await client.start("wx.parent", spec, id=parent, request_id=f"start-{parent}")

    async def until_waiting(self, client: AionClient, timeout: float = 120) -> None:
        """Until every signal/cancel child is running (so its command has someone to reach)."""
        deadline = time.monotonic() + timeout
        for child in self.waiting():
            while True:
                try:
                    if (await client.describe(child)).workflow.status == "RUNNING":
                        break
                except AionApiError as err:
                    if err.status != 404:
                        raise
                assert time.monotonic() < deadline, f"{child} did not start in {timeout} s"
                await asyncio.sleep(0.1)

    async def send_commands(self, client: AionClient) -> int:
        """Signal or cancel every waiting child, all at once; each with its own request id."""
        sends = [
            client.signal(c["id"], "go", c["value"], request_id=f"go-{c['id']}")
            for c in self.children("signal")
        ] + [
            client.cancel(c["id"], f"op-{c['value']}", request_id=f"cancel-{c['id']}")
            for c in self.children("cancel")
        ]
        accepted = await asyncio.gather(*sends)
        return len(accepted)

    async def check_results(self, client: AionClient, timeout: float = 180) -> None:
        """Every parent completed with every child's expected outcome."""
        for parent, spec in self.specs.items():
            outcome = await client.result(parent, wait=timeout)
            assert outcome.status == "COMPLETED", (parent, outcome)
            expected = {c["id"]: expected_outcome(c) for c in spec["children"]}
            assert outcome.result == expected, parent
        for child in self.waiting():  # a copy applied late would be refused: none was
            assert await client.refusals(child) == (), child

    async def check_log(self, settings: Settings) -> dict[str, int]:
        """The event log holds each (workflow, seq) once, without gaps, every history valid,
        and each command sent during the outage applied exactly once."""
        codec = Codec()
        copies: Counter[tuple[str, int]] = Counter()
        histories: dict[str, dict[int, Event]] = defaultdict(dict)
        topic = Topics(settings.topic_prefix).events
        for partition in range(settings.partitions):
            async for record in read_partition_to_end(settings, topic, partition):
                for event in codec.decode_batch(record.value).events:
                    copies[(event.workflow_id, event.seq)] += 1
                    histories[event.workflow_id][event.seq] = event
        doubled = [key for key, count in copies.items() if count > 1]
        assert not doubled, f"{len(doubled)} events doubled, e.g. {doubled[:3]}"
        ours = {w: h for w, h in histories.items() if w.startswith(f"{self.tag}-")}
        assert set(ours) == set(self.specs) | {
            c["id"] for spec in self.specs.values() for c in spec["children"]
        }
        for workflow_id, by_seq in ours.items():
            history = [by_seq[seq] for seq in sorted(by_seq)]
            assert [e.seq for e in history] == list(range(1, len(history) + 1)), workflow_id
            check_history(history)
        for child in self.children("signal"):
            signals = [e for e in ours[child["id"]].values() if isinstance(e, SignalReceived)]
            assert len(signals) == 1, (child["id"], signals)
            assert signals[0].payload.to_json() == child["value"]
        for child in self.children("cancel"):
            cancels = [e for e in ours[child["id"]].values() if isinstance(e, CancelRequested)]
            assert len(cancels) == 1, (child["id"], cancels)
        return {"workflows": len(ours), "events": sum(len(h) for h in ours.values())}


@dataclass
class Health:
    """Samples every service's ``/health/live`` and ``/health/ready`` while the test runs."""

    stack: Stack
    period: float = 0.2
    samples: dict[str, list[tuple[float, bool, bool]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    bodies: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    dead: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """Per service, what each failed ``/health/live`` answered."""
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Health:
        # A service still starting is not a live failure: the stack returns once the API is
        # up, while the projector (started last) may still be importing (seen: its endpoint
        # not listening for the first 2 s of the samples).
        async with httpx.AsyncClient(timeout=2.0) as http:
            deadline = time.monotonic() + 60
            for name in SERVICES:
                url = f"{self.stack.health_url(name)}/health/live"
                while (await _get(http, url))[0] != 200:
                    assert time.monotonic() < deadline, f"{name} never answered {url}"
                    await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self) -> None:
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                for name in SERVICES:
                    base = self.stack.health_url(name)
                    live_status, live_body = await _get(http, f"{base}/health/live")
                    status, body = await _get(http, f"{base}/health/ready")
                    now = time.monotonic()
                    self.samples[name].append((now, live_status == 200, status == 200))
                    self.bodies[name].append((now, f"{status} {body}"))
                    if live_status != 200:
                        self.dead[name].append(
                            f"{live_status} {live_body} at {now:.1f}; {_listening(base)}"
                        )
                await asyncio.sleep(self.period)

    async def until_ready(self, timeout: float = 120) -> None:
        """Until every service reports ready (after the broker's return)."""
        async with httpx.AsyncClient(timeout=2.0) as http:
            deadline = time.monotonic() + timeout
            for name in SERVICES:
                url = f"{self.stack.health_url(name)}/health/ready"
                while not await _ok(http, url):
                    assert time.monotonic() < deadline, f"{name} not ready again: {url}"
                    await asyncio.sleep(0.2)

    def check(self, lost_at: float, back_at: float) -> dict[str, float]:
        """Live never failed; ready went false while the broker was away; it is back now.

        Returns, per service, how long after the loss readiness was first seen false.
        """
        noticed: dict[str, float] = {}
        for name in SERVICES:
            samples = self.samples[name]
            assert samples, f"no health samples of {name}"
            assert not self.dead[name], f"{name}: /health/live failed: {self.dead[name]}"
            unready = [t for t, _, ready in samples if lost_at <= t <= back_at and not ready]
            seen = [f"{t - lost_at:+.1f}s {b}" for t, b in self.bodies[name]]
            assert unready, (
                f"{name}: /health/ready never went false while the broker was away "
                f"({back_at - lost_at:.1f} s): " + "\n".join(seen[-80:])
            )
            noticed[name] = round(unready[0] - lost_at, 2)
        return noticed


async def _ok(http: httpx.AsyncClient, url: str) -> bool:
    return (await _get(http, url))[0] == 200


def _listening(base: str) -> str:
    """Who listens on ``base``'s port now (for a failed probe's report), from /proc/net/tcp."""
    port = int(base.rsplit(":", 1)[1])
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return "listeners unknown"
    states = [row.split()[3] for row in rows if int(row.split()[1].split(":")[1], 16) == port]
    listening = "listening" if "0A" in states else "no listener"
    return f"port {port}: {listening} ({len(states)} sockets)"


async def _get(http: httpx.AsyncClient, url: str) -> tuple[int, str]:
    try:
        answer = await http.get(url)
    except httpx.HTTPError as err:
        return 0, repr(err)
    return answer.status_code, answer.text[:300]


def restarts(stack: Stack) -> dict[str, int]:
    """Restarts per supervised process so far."""
    return {name: process.restarts for name, process in stack.processes.items()}
