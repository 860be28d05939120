"""The watcher service beyond the reference: crashes before commit, rebuild, DLQ, HTTP endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket

from aion_common.domain import RecordChildTerminal
from aion_common.kafka import read_dead_letters
from aion_common.settings import Settings
from aion_watcher import CommandSender, WatcherService

from .harness import FAST, Rig


class SendThenHang:
    """Sends for real, then never returns: the ack never reaches the watcher, so no commit."""

    def __init__(self, inner: CommandSender) -> None:
        self.inner = inner

    async def send(self, command: RecordChildTerminal) -> None:
        await self.inner.send(command)
        await asyncio.Event().wait()


async def test_a_watcher_killed_before_commit_reissues_the_same_records(
    aion_settings: Settings,
) -> None:
    """Killed after producing but before committing: the restart re-issues identical records."""
    async with Rig(aion_settings, engine=False) as rig:
        parent = rig.flow()
        children = [rig.flow() for _ in range(3)]
        await rig.publish(parent.start(), *(c.start(parent) for c in children))
        service = WatcherService(aion_settings, FAST, wrap_sender=SendThenHang)
        await service.start()
        task = asyncio.create_task(service.run())
        await rig.publish(*(c.complete(i) for i, c in enumerate(children)))
        # The first fetched terminals are produced, then the watcher hangs before its commit.
        await rig.wait_until(lambda: len(rig.commands) >= 1, timeout=30)
        task.cancel()  # abrupt: the batch's offsets are never committed
        await asyncio.gather(task, return_exceptions=True)
        await service.stop()
        first = list(rig.commands)

        async with rig.watcher() as again:
            await rig.wait_until(lambda: all(rig.commands_for(c) for c in children))
            await rig.wait_until(lambda: len(rig.commands) == len(first) + 3)
            assert again.metrics.value("aion_watcher_records_issued_total") == 3
        for command in first:
            again_issued = [c for c in rig.commands[len(first) :] if c == command]
            assert again_issued == [command], "a re-issue is the same command (id, time, outcome)"


async def test_a_restart_after_commit_rebuilds_watches_without_reissuing(
    aion_settings: Settings,
) -> None:
    """The rebuild folds the committed history silently, then watches on from where it was."""
    async with Rig(aion_settings) as rig:
        parent, done, open_child = rig.flow(), rig.flow(), rig.flow()
        async with rig.watcher():
            await rig.publish(parent.start(), done.start(parent), open_child.start(parent))
            await rig.publish(done.complete())
            await rig.wait_until(lambda: len(parent.child_terminals(done)) == 1)
            await asyncio.sleep(0.3)  # the recorded event is folded and committed
        async with rig.watcher() as again:
            assert again.state.watch_count() == 1  # open_child's watch, rebuilt from its start
            await asyncio.sleep(FAST.grace_period * 2)
            assert len(rig.commands) == 1
            await rig.publish(open_child.complete())
            await rig.wait_until(lambda: len(parent.child_terminals(open_child)) == 1)
            assert again.metrics.value("aion_watcher_records_issued_total") == 1


async def test_an_undecodable_event_is_dead_lettered_and_consumption_goes_on(
    aion_settings: Settings,
) -> None:
    async with Rig(aion_settings) as rig, rig.watcher() as watcher:
        parent, child = rig.flow(), rig.flow()
        await rig._producer.send(rig.topics.events, parent.workflow_id, b"not avro")
        await rig.publish(parent.start(), child.start(parent), child.complete())
        await rig.wait_until(lambda: len(parent.child_terminals(child)) == 1)
        assert watcher.metrics.value("aion_watcher_dead_letters_total") == 1
    letters = [d async for d in read_dead_letters(aion_settings, rig.topics.dead_letter)]
    assert len(letters) == 1
    assert letters[0].reason.startswith("watcher: undecodable record")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def test_health_and_metrics_endpoint(aion_settings: Settings) -> None:
    config = dataclasses.replace(FAST, port=_free_port())
    async with Rig(aion_settings) as rig, rig.watcher(config) as watcher:
        parent, child = rig.flow(), rig.flow()
        await rig.publish(parent.start(), child.start(parent), child.complete())
        await rig.wait_until(lambda: len(parent.child_terminals(child)) == 1)
        await rig.wait_until(lambda: watcher.state.watch_count() == 0)
        await rig.wait_until(lambda: watcher.link.up)  # its probe runs beside the consumer
        assert watcher.http_port == config.port
        status, body = await _get(config.port, "/health")
        assert status == "HTTP/1.1 200 OK"
        health = json.loads(body)
        assert health.pop("kafka")["reachable"] is True
        assert health == {
            "ok": True,
            "ready": True,
            "partitions": [0, 1, 2],
            "rebuilding": [],
            "loading_closed": [],
            "watches": 0,
        }
        status, _ = await _get(config.port, "/health/ready")
        assert status == "HTTP/1.1 200 OK"
        status, body = await _get(config.port, "/metrics")
        text = body.decode()
        assert status == "HTTP/1.1 200 OK"
        assert "aion_watcher_records_issued_total 1.0" in text
        assert "aion_watcher_child_terminals_total 1.0" in text
        assert 'aion_watcher_consumer_lag{partition="0"}' in text
        assert (await _get(config.port, "/nope"))[0] == "HTTP/1.1 404 Not Found"
