"""``aion-dev`` as a subprocess, the way a user runs it, for the dev stack's e2e tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from aion import AionApiError, AionClient, AionUnavailable, WorkflowResult

REPO_ROOT = Path(__file__).resolve().parents[3]
_BANNER = re.compile(r"aion dev is up: API (\S+)")
T = TypeVar("T")


class DevProcess:
    """``python -m aion_dev ARGS`` with stdout/stderr in files next to ``home``."""

    def __init__(self, home: Path, args: Sequence[str], *, tag: str = "run") -> None:
        self.home = home
        self.args = [*args]
        self.out_path = home.parent / f"{home.name}-{tag}.out"
        self.err_path = home.parent / f"{home.name}-{tag}.err"
        self.process: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    def start(self) -> None:
        """Launch it (from the repo root, so the ``examples`` package is importable)."""
        out, err = self.out_path.open("wb"), self.err_path.open("wb")
        self._files = [out, err]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aion_dev", "--home", str(self.home), *self.args],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def supervisor_log(self) -> str:
        """``<home>/logs/aion-dev.log`` (JSON lines)."""
        path = self.home / "logs" / "aion-dev.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def diagnostics(self) -> str:
        return (
            f"stdout:\n{self.stdout[-3000:]}\nstderr:\n"
            f"{self.err_path.read_text(errors='replace')[-5000:]}"
        )

    async def wait_up(self, timeout: float = 180) -> str:
        """Until the banner names the API; return its URL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := _BANNER.search(self.stdout):
                return match.group(1)
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"aion-dev exited {self.process.returncode}\n{self.diagnostics()}"
                )
            await asyncio.sleep(0.2)
        raise AssertionError(f"aion-dev not up within {timeout}s\n{self.diagnostics()}")

    def children(self) -> dict[str, int]:
        """Child pids by name, from ``<home>/aion-dev.pids``."""
        body = json.loads((self.home / "aion-dev.pids").read_text())
        return {str(k): int(v) for k, v in body["children"].items()}

    async def wait_exit(self, timeout: float = 120) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"aion-dev did not exit within {timeout}s")
            await asyncio.sleep(0.1)
        for handle in self._files:
            handle.close()
        return self.process.returncode

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill_quietly(self) -> None:
        """Teardown: SIGINT, then SIGKILL after 60 s (children die with it: PDEATHSIG)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    return False


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def retrying(call: Callable[[], Awaitable[T]], timeout: float = 120) -> T:
    """``call()``, again while the API is unreachable (it may be restarting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except AionUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def run_order(api_url: str, workflow_id: str, timeout: float = 180) -> WorkflowResult:
    """Start ``examples.order`` (its first charge attempt fails: a retry, then three activities
    complete)."""
    spec: dict[str, Any] = {"order_id": workflow_id, "amount": 4200, "fail_payment_attempts": 1}
    async with AionClient(api_url, timeout=30) as client:
        await retrying(
            lambda: client.start("examples.order", spec, id=workflow_id, request_id=workflow_id)
        )
        return await wait_closed(client, workflow_id, timeout)


async def wait_closed(client: AionClient, workflow_id: str, timeout: float) -> WorkflowResult:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{workflow_id} did not close within {timeout}s")
        try:
            result = await client.result(workflow_id, wait=min(20, remaining))
        except AionUnavailable:  # the API is restarting
            result = None
        except AionApiError as err:
            if err.status != 404:  # the views have not seen it yet
                raise
            result = None
        if result is not None and result.closed:
            return result
        await asyncio.sleep(0.2)


def processes_using(home: Path) -> list[int]:
    """Pids whose command line or environment names ``home`` (the broker, the services)."""
    marker = str(home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if (
                marker in (entry / "cmdline").read_bytes()
                or marker in (entry / "environ").read_bytes()
            ) and alive(int(entry.name)):
                found.append(int(entry.name))
    return found
