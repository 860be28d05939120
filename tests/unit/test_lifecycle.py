"""Service lifecycle under real signals, and structured JSON logging."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from aion_common.runtime import (
    EXIT_OK,
    EXIT_STOP_TIMEOUT,
    bind,
    configure_logging,
    log_context,
    run_until_signalled,
)


class FakeService:
    """Runs until stopped; ``stubborn`` ignores stop(), ``slow_stop_s`` delays it."""

    def __init__(self, *, stubborn: bool = False, slow_stop_s: float = 0.0) -> None:
        self.started = asyncio.Event()
        self.events: list[str] = []
        self.stop_calls = 0
        self._stopped = asyncio.Event()
        self._stubborn = stubborn
        self._slow_stop_s = slow_stop_s

    async def start(self) -> None:
        self.events.append("start")

    async def run(self) -> None:
        self.events.append("run")
        self.started.set()
        try:
            if self._stubborn:
                await asyncio.Event().wait()
            await self._stopped.wait()
            self.events.append("run returned")
        except asyncio.CancelledError:
            self.events.append("run cancelled")
            raise

    async def stop(self) -> None:
        self.stop_calls += 1
        if self._stopped.is_set():
            return
        await asyncio.sleep(self._slow_stop_s)
        self.events.append("stop")
        self._stopped.set()


def send_signal_from_another_process(signum: int = signal.SIGTERM) -> None:
    """Deliver a real signal to this test process, as a supervisor would."""
    script = f"import os, signal; os.kill({os.getpid()}, signal.Signals({int(signum)}))"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)


async def _signal_when_running(service: FakeService, signums: list[int]) -> None:
    await service.started.wait()
    for signum in signums:
        await asyncio.to_thread(send_signal_from_another_process, signum)
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_real_signal_stops_the_service(signum: int) -> None:
    service = FakeService()
    sender = asyncio.create_task(_signal_when_running(service, [signum]))
    code = await asyncio.wait_for(run_until_signalled(service, stop_timeout_s=5), 30)
    await sender
    assert code == EXIT_OK
    assert service.events == ["start", "run", "stop", "run returned"]
    assert service.stop_calls >= 1
    # The handlers are gone: the loop has none left to remove.
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGTERM)
    assert not loop.remove_signal_handler(signal.SIGINT)


async def test_stop_is_bounded_and_the_run_is_cancelled() -> None:
    service = FakeService(stubborn=True)
    sender = asyncio.create_task(_signal_when_running(service, [signal.SIGTERM]))
    started = asyncio.get_running_loop().time()
    code = await asyncio.wait_for(run_until_signalled(service, stop_timeout_s=0.5), 30)
    await sender
    assert code == EXIT_STOP_TIMEOUT
    assert "run cancelled" in service.events
    assert asyncio.get_running_loop().time() - started < 10


async def test_a_second_signal_exits_at_once() -> None:
    exits: list[int] = []
    service = FakeService(slow_stop_s=1.0)
    sender = asyncio.create_task(_signal_when_running(service, [signal.SIGTERM, signal.SIGTERM]))
    code = await asyncio.wait_for(
        run_until_signalled(service, stop_timeout_s=5, hard_exit=exits.append), 30
    )
    await sender
    assert exits == [128 + signal.SIGTERM]
    assert code == EXIT_OK  # the fake hard exit returned, so the graceful stop finished


async def test_a_signal_during_a_start_that_waits_cancels_it_and_stops() -> None:
    class WaitingForABroker(FakeService):
        async def start(self) -> None:
            self.events.append("start")
            self.started.set()  # the signal is sent now: start() is still waiting
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.events.append("start cancelled")
                raise

    service = WaitingForABroker()
    sender = asyncio.create_task(_signal_when_running(service, [signal.SIGTERM]))
    code = await asyncio.wait_for(run_until_signalled(service, stop_timeout_s=5), 30)
    await sender
    assert code == EXIT_OK
    assert service.events == ["start", "start cancelled", "stop"]


async def test_a_run_that_returns_by_itself_exits_ok() -> None:
    class OneShot(FakeService):
        async def run(self) -> None:
            self.events.append("run")

    service = OneShot()
    assert await run_until_signalled(service) == EXIT_OK
    assert service.events == ["start", "run", "stop"]


async def test_a_crash_propagates_after_stop() -> None:
    class Crashing(FakeService):
        async def run(self) -> None:
            raise RuntimeError("boom")

    service = Crashing()
    with pytest.raises(RuntimeError, match="boom"):
        await run_until_signalled(service)
    assert service.events[-1] == "stop"


async def test_stop_is_idempotent() -> None:
    service = FakeService()
    await service.stop()
    await service.stop()
    assert service.events == ["stop"]


# --- logging -------------------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_line_per_record_with_extra_fields(log_stream: io.StringIO) -> None:
    logging.getLogger("aion.engine").info(
        "applied %s", "StartWorkflow", extra={"workflow_id": "wf-1", "partition": 2}
    )
    (line,) = _lines(log_stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "aion.engine"
    assert line["msg"] == "applied StartWorkflow"
    assert line["workflow_id"] == "wf-1"
    assert line["partition"] == 2
    assert str(line["ts"]).endswith("+00:00")


def test_bound_logger_and_context_add_ids(log_stream: io.StringIO) -> None:
    log = bind("aion.engine", workflow_id="wf-1").bind(run_id="r-1")
    with log_context(command_id="c-9"):
        log.warning("refused", extra={"reason": "closed"})
    log.info("after")
    first, second = _lines(log_stream)
    assert first["workflow_id"] == "wf-1"
    assert first["run_id"] == "r-1"
    assert first["command_id"] == "c-9"
    assert first["reason"] == "closed"
    assert "command_id" not in second


def test_exceptions_and_odd_values_stay_on_one_line(log_stream: io.StringIO) -> None:
    error = ValueError("bad\nvalue")
    logging.getLogger("x").error("failed", exc_info=error, extra={"obj": object()})
    text = log_stream.getvalue()
    assert text.count("\n") == 1
    (line,) = _lines(log_stream)
    assert "ValueError" in str(line["exc"])
    assert str(line["obj"]).startswith("<object")


def test_log_level_defaults_to_aion_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AION_LOG_LEVEL", "WARNING")
    configure_logging(stream=io.StringIO())
    assert logging.getLogger().level == logging.WARNING
    monkeypatch.delenv("AION_LOG_LEVEL")
    configure_logging(stream=io.StringIO())
    assert logging.getLogger().level == logging.INFO
