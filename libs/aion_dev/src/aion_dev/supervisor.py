"""Supervised child processes: restarted with backoff when they die, stopped by process group.

Each child runs in its own session (so its process group id is its pid and ``killpg`` reaches
anything it spawned), with its output appended to one log file, and with ``PR_SET_PDEATHSIG``
so the kernel sends it SIGTERM if the supervising thread dies — a SIGKILLed ``aion dev``
leaves no service behind. A child that exits while it should be running is restarted after a
backoff that doubles (reset once it stays up for a while) and the restart is logged as
``restarted <name> (<exit code or signal>, restart <n>)`` — unless its ``on_exit`` callback
says a restart cannot help (a service that refused to start because of the user's code or
configuration): then it stays down and ``gave_up`` says how it exited.
:meth:`SupervisedProcess.hold` stops a child on purpose and keeps it down until
:meth:`SupervisedProcess.release` (an outage on demand, for tests and benchmarks); that is
neither a crash nor a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import queue
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from aion_common.testing.broker import KafkaBroker

__all__ = ["Backoff", "BrokerProcess", "ChildProcess", "SupervisedProcess", "describe_exit"]

_log = logging.getLogger("aion.dev")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Restart delays: ``initial`` doubling to ``maximum``; back to ``initial`` after ``stable``."""

    initial: float = 0.5
    maximum: float = 10.0
    stable: float = 30.0

    def delay(self, previous: float | None, ran_for: float) -> float:
        """The wait before the next restart, given the last delay and how long the child ran."""
        if previous is None or ran_for >= self.stable:
            return self.initial
        return min(self.maximum, previous * 2)


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal SIGKILL`` for a ``Popen.returncode``."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pid`` (our children lead their own); False if gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


class SupervisedProcess(ABC):
    """One supervised child: ``name``, its current ``pid``, and how many ``restarts`` so far."""

    def __init__(
        self,
        name: str,
        *,
        backoff: Backoff = Backoff(),
        on_spawn: Callable[[SupervisedProcess], None] | None = None,
        on_exit: Callable[[SupervisedProcess, int], bool] | None = None,
    ) -> None:
        self.name = name
        self.pid: int | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.gave_up: str | None = None
        """How the child last exited, when ``on_exit`` said not to restart it."""
        self.launch_s = 0.0
        """How long the last launch took (for the broker: until it answered a request)."""
        self._backoff = backoff
        self._on_spawn = on_spawn
        self._on_exit = on_exit
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_delay: float | None = None
        self._held: asyncio.Event | None = None  # set: the child is down, on purpose
        self._released = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether a process is up (not between a crash and its restart)."""
        return self.pid is not None

    async def start(self) -> None:
        """Launch the child and begin supervising it."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} is already supervised")
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name=f"supervise:{self.name}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the child's process group; the supervisor notices and restarts it."""
        if self.pid is None:
            raise ProcessLookupError(f"{self.name} is not running")
        _log.info(
            "signalling %s", self.name, extra={"child": self.name, "pid": self.pid, "signal": sig}
        )
        signal_group(self.pid, sig)

    async def hold(self, grace: float = 30.0, *, sig: int = signal.SIGTERM) -> None:
        """Stop the child (``sig``, SIGKILL after ``grace``) and keep it down until
        :meth:`release`; returns once it is down. ``sig=SIGKILL``: a crash left dead."""
        if self._task is None or self.pid is None or self._held is not None:
            raise ProcessLookupError(f"{self.name} is not running under supervision")
        down = self._held = asyncio.Event()
        self._released.clear()
        pid = self.pid
        _log.info("holding %s down", self.name, extra={"child": self.name, "pid": pid})
        signal_group(pid, sig)
        try:
            await asyncio.wait_for(down.wait(), grace)
        except TimeoutError:
            signal_group(pid, signal.SIGKILL)
            await down.wait()

    async def release(self) -> float:
        """Start a held child again; returns once it runs, with how long its launch took."""
        if self._held is None:
            raise ProcessLookupError(f"{self.name} is not held")
        self._released.set()
        while self._held is not None and not self._stopping.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the supervising task launches it
        return self.launch_s

    def abandon(self) -> None:
        """SIGKILL the group and stop supervising (no restart); ``stop`` still awaits it."""
        self._stopping.set()
        if self.pid is not None:
            signal_group(self.pid, signal.SIGKILL)

    async def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; no restart. Idempotent."""
        self._stopping.set()
        task = self._task
        if task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        termed: int | None = None
        killed: int | None = None
        # Polled, because a restart may be launching a new pid while we stop.
        while not task.done():
            pid = self.pid
            if pid is not None and pid != termed:
                signal_group(pid, signal.SIGTERM)
                termed = pid
            elif pid is not None and pid != killed and loop.time() >= deadline:
                _log.warning(
                    "%s did not stop within %.0f s: SIGKILL",
                    self.name,
                    grace,
                    extra={"child": self.name, "pid": pid},
                )
                signal_group(pid, signal.SIGKILL)
                killed = pid
            await asyncio.wait({task}, timeout=0.1)
        self.pid = None

    async def _spawn(self) -> None:
        began = time.monotonic()
        self.pid = await self._launch()
        self.started_at = time.monotonic()
        self.launch_s = self.started_at - began
        if self._on_spawn is not None:
            self._on_spawn(self)

    async def _supervise(self) -> None:
        while True:
            assert self.pid is not None
            pid = self.pid
            returncode = await self._wait()
            self.pid = None
            signal_group(pid, signal.SIGKILL)  # anything it left in its group
            if self._stopping.is_set():
                return
            if self._held is not None:
                if not await self._wait_release(describe_exit(returncode)):
                    return
                continue
            how = describe_exit(returncode)
            if self._on_exit is not None and not self._on_exit(self, returncode):
                self.gave_up = how
                _log.error(
                    "%s exited (%s) and is not restarted: a restart cannot help",
                    self.name,
                    how,
                    extra={"child": self.name, "pid": pid, "exit": how},
                )
                return
            ran = time.monotonic() - self.started_at
            self._last_delay = self._backoff.delay(self._last_delay, ran)
            _log.warning(
                "%s exited (%s) after %.1f s; restarting in %.1f s",
                self.name,
                how,
                ran,
                self._last_delay,
                extra={"child": self.name, "pid": pid, "exit": how},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._last_delay)
            if self._stopping.is_set():
                return
            if not await self._respawn(how):
                return

    async def _wait_release(self, how: str) -> bool:
        """Held: stay down until released (then launch) or stopped; whether it runs again."""
        held = self._held
        assert held is not None
        _log.info("%s is down (%s), held", self.name, how, extra={"child": self.name})
        held.set()
        stopping = asyncio.ensure_future(self._stopping.wait())
        released = asyncio.ensure_future(self._released.wait())
        try:
            await asyncio.wait({stopping, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            released.cancel()
        if self._stopping.is_set():
            self._held = None
            return False
        try:
            await self._spawn()
        except Exception:  # noqa: BLE001 - a failed launch is retried like a crash
            _log.exception("release of %s failed", self.name, extra={"child": self.name})
            self._held = None
            return await self._retry_launch()
        finally:
            self._held = None
        _log.info("released %s", self.name, extra={"child": self.name, "pid": self.pid})
        return True

    async def _respawn(self, how: str) -> bool:
        self.restarts += 1
        try:
            await self._spawn()
        except Exception as err:  # noqa: BLE001 - a failed launch is retried like a crash
            if self._stopping.is_set():  # stopped while it started: not a failure
                self.pid = None
                return False
            _log.exception("restart of %s failed: %s", self.name, err, extra={"child": self.name})
            self.pid = None
            return await self._retry_launch()
        _log.warning(
            "restarted %s (%s, restart %d)",
            self.name,
            how,
            self.restarts,
            extra={"child": self.name, "pid": self.pid, "restarts": self.restarts, "exit": how},
        )
        return True

    async def _retry_launch(self) -> bool:
        delay = self._backoff.maximum
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return False
            try:
                await self._spawn()
            except Exception:  # noqa: BLE001 - keep trying until stopped
                _log.exception("restart of %s failed again", self.name)
                continue
            return True
        return False

    @abstractmethod
    async def _launch(self) -> int:
        """Start the process; return its pid (its process group id too)."""

    @abstractmethod
    async def _wait(self) -> int:
        """Wait for the current process to exit; return its ``returncode``."""


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ChildProcess(SupervisedProcess):
    """A Python service (``argv``) with ``env``, output appended to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
        backoff: Backoff = Backoff(),
        on_spawn: Callable[[SupervisedProcess], None] | None = None,
        on_exit: Callable[[SupervisedProcess, int], bool] | None = None,
    ) -> None:
        super().__init__(name, backoff=backoff, on_spawn=on_spawn, on_exit=on_exit)
        self.argv = tuple(argv)
        self.log_path = log_path
        self.log_offset = 0
        self._env = dict(env)
        self._cwd = cwd
        self._process: asyncio.subprocess.Process | None = None

    async def _launch(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(
                f"=== aion-dev: starting {self.name} at {stamp}: {' '.join(self.argv)}\n".encode()
            )
            log.flush()
            self.log_offset = log.tell()
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        return self._process.pid

    async def _wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()


class _LaunchThread:
    """One daemon thread running calls in order; it lives as long as the broker it launched.

    A daemon, so an interpreter exiting without ``stop()`` is not held up by it; the kernel
    then sends the broker SIGTERM (PDEATHSIG) as the process, and this thread, go.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], None], Future[None]] | None]
        self._calls = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], None]) -> Future[None]:
        """Run ``call`` on the thread; its future."""
        future: Future[None] = Future()
        self._calls.put((call, future))
        return future

    def shutdown(self) -> None:
        """Let the thread end after the calls queued so far."""
        self._calls.put(None)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                call()
            except BaseException as err:  # noqa: BLE001 - handed to the awaiting task
                future.set_exception(err)
            else:
                future.set_result(None)


class BrokerProcess(SupervisedProcess):
    """The embedded Kafka broker, supervised like the services.

    The JVM is launched from one dedicated thread that lives as long as this object, because
    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits.
    """

    def __init__(
        self,
        broker: KafkaBroker,
        *,
        name: str = "kafka",
        backoff: Backoff = Backoff(),
        on_spawn: Callable[[SupervisedProcess], None] | None = None,
    ) -> None:
        super().__init__(name, backoff=backoff, on_spawn=on_spawn)
        self.broker = broker
        self._thread = _LaunchThread(f"aion-dev-{name}")

    @property
    def log_path(self) -> Path:
        """The broker's own log."""
        return self.broker.log_path

    async def _launch(self) -> int:
        await asyncio.wrap_future(self._thread.submit(self._start_broker))
        pid = self.broker.pid
        assert pid is not None
        return pid

    def _start_broker(self) -> None:
        self.broker.stop()  # forget a dead JVM (no-op when none ran)
        self.broker.start()

    async def _wait(self) -> int:
        # A daemon thread (not the loop's executor, which the interpreter joins at exit).
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int] = loop.create_future()

        def wait() -> None:
            code = self._wait_broker()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, exited, code)

        threading.Thread(target=wait, name="aion-dev-kafka-wait", daemon=True).start()
        return await exited

    def _wait_broker(self) -> int:
        try:
            return self.broker.wait()
        except RuntimeError:  # stopped meanwhile: ProvisionError is a RuntimeError
            return -signal.SIGTERM

    async def stop(self, grace: float = 30.0) -> None:
        """Stop the JVM (SIGTERM, SIGKILL after ``grace``), then its launching thread.

        A JVM still starting is stopped at once too: a restart waits up to 90 s for the broker
        to answer (a cluster node restarted as the others stop never does), and ``pid`` is only
        set once it has — Ctrl-C in ``aion dev`` during a node's restart waited those 90 s.
        """
        self._stopping.set()
        starting = self.broker.pid
        if self.pid is None and starting is not None:
            signal_group(starting, signal.SIGTERM)
        await super().stop(grace)
        await asyncio.wrap_future(self._thread.submit(self.broker.stop))
        self._thread.shutdown()


def _resolve(future: asyncio.Future[int], value: int) -> None:
    if not future.done():
        future.set_result(value)
