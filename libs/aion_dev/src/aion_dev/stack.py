"""The whole aion stack as supervised local processes: what ``aion dev`` and test fixtures run.

    async with Stack(StackConfig(home=Path(".aion"), workflows=("examples",))) as stack:
        async with stack.client() as aion:
            await aion.start("example.order", {...})

Children are the real service commands — ``python -m aion_engine``, ``python -m aion_watcher``,
``python -m aion_projector``, ``python -m aion_projector.api``, one ``python -m aion_worker``
per task queue (``worker`` for the ``default`` queue), ``python -m aion_scheduler`` and one
``python -m aion_ingress --config FILE`` per ingress configuration — configured through ``AION_*``
variables, plus the embedded Apache Kafka (``aion_common.testing.broker``) unless a bootstrap
is given. Everything lives under ``home``: ``kafka/`` (the broker's data, kept across runs, so
a stop and a start keep every workflow), ``aion.db`` (SQLite views), ``logs/<name>.log``.

Every service gets a health endpoint of its own (``health_url(name)``: ``/health/live``,
``/health/ready``, ``/metrics``), and the stack watches the Kafka cluster itself
(:attr:`Stack.kafka`, a :class:`~aion_common.kafka.link.BrokerLink`): ``aion dev`` prints when
it went away and when it came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from aion import AionClient
from aion._stack_home import forget_api_url, write_api_url
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_common.testing import free_port, port_is_free
from aion_common.testing.broker import KafkaBroker
from aion_common.testing.cluster import KafkaCluster
from aion_dev.pidfile import HomeLock, PidFile
from aion_dev.startup import EARLY_EXITS, EXIT_USER_CODE, cause_from_log, check_user_code
from aion_dev.supervisor import BrokerProcess, ChildProcess, SupervisedProcess

__all__ = [
    "BROKER_COUNTS",
    "MAX_ENGINES",
    "Stack",
    "StackConfig",
    "StackError",
    "StartupError",
    "SupervisedProcess",
]

MAX_ENGINES = 16
"""The most engine processes a stack runs: they share one machine (an engine beyond the
partitions idles), and each is a Python process with its own memory."""
BROKER_COUNTS = (1, 3, 4, 5)
"""Embedded Kafka nodes a stack may run. Not 2: every node is a KRaft voter and the topics keep
2 replicas in sync, so losing either node stops writes, with no failover to try. At most 5
(each a JVM with a 512 MiB heap on this one machine; 5 voters survive two lost nodes)."""

_log = logging.getLogger("aion.dev")
_SERVICES_GRACE_S = 20.0
_HEALTH_PORT_VARS = {
    "engine": "AION_ENGINE",
    "watcher": "AION_WATCHER",
    "projector": "AION_PROJECTOR",
    "worker": "AION_WORKER",
}
_KAFKA_GRACE_S = 30.0


class StackError(RuntimeError):
    """The stack could not start, or did not become ready in time; the message says why."""


class StartupError(StackError):
    """The user's code or configuration keeps a service from starting: restarting cannot
    help. The message holds what the service said (the exception and its traceback)."""


@dataclass(frozen=True)
class StackConfig:
    """What to run and where; every default gives the self-contained local stack."""

    home: Path = Path(".aion")
    """Data root: ``kafka/`` (embedded broker data), ``aion.db`` (SQLite), ``logs/``."""
    kafka_bootstrap: str | None = None
    """None: start the embedded Java Apache Kafka under ``home/kafka``."""
    database_url: str | None = None
    """None: SQLite (aiosqlite) at ``home/aion.db``."""
    workflows: tuple[str, ...] = ()
    """Modules the engines import to register workflows (``examples``, ``my_pkg.workflows``)."""
    activities: tuple[str, ...] = ()
    """Modules the workers import for activities; they also import ``workflows``, so
    activities defined beside the workflows that call them are found."""
    task_queues: tuple[str, ...] = ("default",)
    """One worker per task queue."""
    ingress: tuple[Path, ...] = ()
    """Ingress configuration files: one supervised ``aion ingress --config FILE`` each."""
    scheduler: bool = True
    """Run the scheduler (``aion schedule …`` needs it to fire)."""
    companions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Other supervised processes, ``(name, python arguments)``, started before the workers:
    the services the examples' activities call (``("shop", ("-m", "examples.shop", …))``)."""
    api_host: str = "127.0.0.1"
    api_port: int = 0
    """0: ``preferred_api_port`` if free, else the port used last time with this home if free,
    else a free one."""
    preferred_api_port: int = 0
    """A port to try first at every start (``aion dev`` asks for 8080, the CLI's default)."""
    check_user_code: bool = True
    """Import the workflow and activity modules in a check process while the broker starts,
    so a broken module fails the start within seconds with its error."""
    engines: int = 1
    brokers: int = 1
    """Embedded Kafka nodes: 1, or a cluster of 3 to 5 (``kafka-1`` … ``kafka-N``, replication
    factor 3, 2 replicas in sync) to try failover on (:data:`BROKER_COUNTS`)."""
    topic_prefix: str = "aion"
    partitions: int = 6
    pythonpath: tuple[str, ...] = ()
    """Prepended to the children's ``PYTHONPATH`` (their working directory is always added)."""
    cwd: Path | None = None
    """The children's working directory (None: this process's), where relative paths in the
    user's code (an activity writing a file) land."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for every child (the stack's own ``AION_*`` settings win)."""
    health_ports: bool = True
    """Give the engines, the watcher and the projector a health endpoint each (free ports)."""


class Stack:
    """The supervised stack; an async context manager that starts it and waits until ready."""

    def __init__(
        self,
        config: StackConfig | None = None,
        *,
        report: Callable[[str], None] | None = None,
    ) -> None:
        """``report`` hears why the start is failing as soon as that is known (``aion dev``
        prints it at once; :class:`StartupError` carries it too, after everything stopped)."""
        self.config = config or StackConfig()
        self._report = report
        self._ready = False
        self._failure: StartupError | None = None
        self._early_exits: dict[str, int] = {}
        if not 1 <= self.config.engines <= MAX_ENGINES:
            raise StackError(f"engines={self.config.engines}: expected 1 to {MAX_ENGINES}")
        if self.config.brokers not in BROKER_COUNTS:
            raise StackError(
                f"brokers={self.config.brokers}: expected 1, or 3 to {BROKER_COUNTS[-1]} (with 2 "
                "nodes, losing either stops writes: there is no failover to try)"
            )
        if self.config.brokers > 1 and self.config.kafka_bootstrap:
            raise StackError("brokers and kafka_bootstrap exclude each other: pick one")
        self.home = self.config.home.resolve()
        self.logs = self.home / "logs"
        self.processes: dict[str, SupervisedProcess] = {}
        self.timings: dict[str, float] = {}
        self._settings: Settings | None = None
        self._api_port = 0
        self._health_ports: dict[str, int] = {}
        self._replication = 1
        self._kafka: BrokerLink | None = None
        self._lock = HomeLock(self.home)
        self._pids = PidFile(self.home)
        self._started = False
        self._locked = False
        self._stopped = False

    # -- what callers use ------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The ``aion_common`` settings every child runs with (known once started)."""
        if self._settings is None:
            raise StackError("the stack has not been started")
        return self._settings

    @property
    def api_url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:8080``."""
        if not self._api_port:
            raise StackError("the stack has not been started")
        return f"http://{self.config.api_host}:{self._api_port}"

    @property
    def kafka(self) -> BrokerLink:
        """The stack's own view of whether the Kafka cluster answers (once started)."""
        if self._kafka is None:
            raise StackError("the stack has not been started")
        return self._kafka

    def health_url(self, name: str) -> str:
        """The base URL of ``name``'s health endpoint (``api``: the API's own)."""
        if name == "api":
            return self.api_url
        port = self._health_ports.get(name)
        if port is None:
            raise StackError(f"{name} has no health endpoint (health_ports is off, or no such)")
        return f"http://{self.config.api_host}:{port}"

    def client(self, *, timeout: float = 10.0, retry_for: float = 60.0) -> AionClient:
        """A new client of this stack's API (close it, or use it as ``async with``); it re-sends
        a command for at most ``retry_for`` seconds while the API or Kafka is away."""
        token = self.config.env.get("AION_API_TOKEN", os.environ.get("AION_API_TOKEN"))
        return AionClient(self.api_url, token=token or None, timeout=timeout, retry_for=retry_for)

    @property
    def worker_names(self) -> dict[str, str]:
        """Worker process name → its task queue (``worker`` serves ``default``)."""
        return {
            "worker" if queue == "default" else f"worker-{queue}": queue
            for queue in dict.fromkeys(self.config.task_queues)
        }

    @property
    def ingress_names(self) -> dict[str, Path]:
        """Ingress process name (``ingress``, ``ingress-2`` …) → its configuration file."""
        return {
            "ingress" if i == 1 else f"ingress-{i}": path
            for i, path in enumerate(self.config.ingress, start=1)
        }

    @property
    def engine_names(self) -> list[str]:
        """``engine-1`` … ``engine-N``."""
        return [f"engine-{i}" for i in range(1, self.config.engines + 1)]

    async def __aenter__(self) -> Self:
        await self.start()
        try:
            await self.wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the home, start Kafka (if embedded) and every service; don't wait for ready."""
        if self._started:
            raise StackError("a Stack starts once; make a new one to start again")
        self._started = True
        began = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        self._locked = True
        try:
            if stale := self._pids.clean_stale():
                _log.warning("cleaned up after a killed aion dev", extra={"stopped": stale})
            bootstrap = await self._start_kafka_checked()
            self._settings = Settings(
                bootstrap_servers=bootstrap,
                topic_prefix=self.config.topic_prefix,
                partitions=self.config.partitions,
                database_url=self.config.database_url
                or f"sqlite+aiosqlite:///{self.home / 'aion.db'}",
                instance_id="aion-dev",
                replication_factor=self._replication,
            )
            self._api_port = self._choose_api_port()
            self._kafka = BrokerLink(self._settings, name="aion-dev")
            await self._kafka.start()
            await self._start_services()
        except BaseException:
            await self.stop()
            raise
        self.timings["start_s"] = round(time.monotonic() - began, 3)

    async def _start_kafka_checked(self) -> str:
        """Start the broker while the user's modules are checked; a failed check wins."""
        if not self.config.check_user_code:
            return await self._start_kafka()
        env = {**os.environ, **self.config.env, "PYTHONPATH": self._pythonpath()}
        check = asyncio.ensure_future(
            check_user_code(self.config.workflows, self.config.activities, env, self.config.cwd)
        )
        kafka = asyncio.ensure_future(self._start_kafka())
        try:
            await asyncio.wait({check, kafka}, return_when=asyncio.FIRST_COMPLETED)
            problem = await check  # the broker goes on starting meanwhile
            if problem is not None:
                self._fail(StartupError(problem))
                await self._abort_broker_start(kafka)
                assert self._failure is not None
                raise self._failure
            return await kafka
        finally:
            for task in (check, kafka):
                if not task.done():
                    task.cancel()
            await asyncio.gather(check, kafka, return_exceptions=True)

    async def _abort_broker_start(self, kafka: asyncio.Future[str]) -> None:
        """The start failed: a broker still starting is stopped now (SIGTERM once it has a pid)
        rather than waited for, so ``aion dev`` exits in seconds, not after Kafka's start."""
        process = self.processes.get("kafka")
        deadline = time.monotonic() + _KAFKA_GRACE_S
        signalled = False
        while not kafka.done() and time.monotonic() < deadline:
            pid = process.broker.pid if isinstance(process, BrokerProcess) else None
            if pid is not None and not signalled:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                signalled = True
            await asyncio.sleep(0.05)

    def _fail(self, error: StartupError) -> None:
        if self._failure is None:
            self._failure = error
            if self._report is not None:
                self._report(str(error))
            else:
                _log.error("the stack cannot start: %s", error)

    async def _start_kafka(self) -> str:
        if self.config.kafka_bootstrap:
            return self.config.kafka_bootstrap
        if self.config.brokers > 1:
            return await self._start_cluster()
        broker = KafkaBroker(self.home / "kafka", die_with_parent=True)
        process = BrokerProcess(broker, on_spawn=self._record_pids)
        self.processes["kafka"] = process
        began = time.monotonic()
        await process.start()
        self.timings["kafka_s"] = round(time.monotonic() - began, 3)
        _log.info(
            "kafka started",
            extra={"bootstrap": broker.bootstrap_servers, "pid": broker.pid, **self.timings},
        )
        return broker.bootstrap_servers

    async def _start_cluster(self) -> str:
        """Every node supervised on its own (``kafka-1`` …), launched together: a node answers
        once a quorum of the controllers runs."""
        cluster = KafkaCluster(
            self.home / "kafka-cluster", nodes=self.config.brokers, die_with_parent=True
        )
        self._replication = cluster.replication
        nodes = [
            BrokerProcess(node, name=f"kafka-{index}", on_spawn=self._record_pids)
            for index, node in enumerate(cluster.nodes, 1)
        ]
        self.processes.update((process.name, process) for process in nodes)
        began = time.monotonic()
        await asyncio.gather(*(process.start() for process in nodes))
        await asyncio.to_thread(cluster.wait_registered, len(nodes))
        self.timings["kafka_s"] = round(time.monotonic() - began, 3)
        _log.info(
            "kafka cluster started",
            extra={"bootstrap": cluster.bootstrap_servers, "pids": cluster.pids, **self.timings},
        )
        return cluster.bootstrap_servers

    @property
    def kafka_processes(self) -> list[SupervisedProcess]:
        """The embedded broker's process, or each node's (none with ``kafka_bootstrap``)."""
        return [p for n, p in self.processes.items() if n == "kafka" or n.startswith("kafka-")]

    def _choose_api_port(self) -> int:
        if self.config.api_port:
            return self.config.api_port
        host = self.config.api_host
        preferred = self.config.preferred_api_port
        remembered = self.home / "api.port"
        if preferred and port_is_free(preferred, host):
            port = preferred  # every start tries it again: the CLI's default finds it
        else:
            port = 0
            with contextlib.suppress(OSError, ValueError):
                previous = int(remembered.read_text().strip())
                if previous and port_is_free(previous, host):
                    port = previous
            port = port or free_port(host)
        remembered.write_text(f"{port}\n")
        return port

    async def _start_services(self) -> None:
        python = sys.executable
        workflows = [arg for module in self.config.workflows for arg in ("--workflows", module)]
        api = self._child(
            "api",
            [python, "-m", "aion_projector.api", "--host", self.config.api_host],
            extra_args=["--port", str(self._api_port)],
        )
        await api.start()
        engines = [
            self._child(name, [python, "-m", "aion_engine", *workflows], instance=name)
            for name in self.engine_names
        ]
        watcher = self._child("watcher", [python, "-m", "aion_watcher"])
        modules = dict.fromkeys((*self.config.activities, *self.config.workflows))
        activities = [arg for module in modules for arg in ("--activities", module)]
        workers = [
            self._child(
                name,
                [python, "-m", "aion_worker", "--task-queue", queue, *activities],
                instance=name,
            )
            for name, queue in self.worker_names.items()
        ]
        companions = [
            self._child(name, [python, *arguments]) for name, arguments in self.config.companions
        ]
        extras = (  # registered only when it runs: a process never started counts as down
            [self._child("scheduler", [python, "-m", "aion_scheduler"])]
            if self.config.scheduler
            else []
        )
        extras += [
            self._child(name, [python, "-m", "aion_ingress", "--config", str(path.resolve())])
            for name, path in self.ingress_names.items()
        ]
        for process in (*companions, *engines, watcher, *workers, *extras):
            await process.start()
        # The API migrates the views on start; the projector follows once it answers, so two
        # processes never race to create the same SQLite tables.
        await self._wait_health(time.monotonic() + 60)
        write_api_url(self.home, self.api_url)  # the CLI run from here finds this stack
        await self._child("projector", [python, "-m", "aion_projector"]).start()

    def _child(
        self,
        name: str,
        argv: list[str],
        *,
        extra_args: list[str] | None = None,
        instance: str | None = None,
    ) -> ChildProcess:
        env = self._child_env(instance or name)
        kind = name.split("-", 1)[0] if name.startswith(("engine-", "worker-")) else name
        variable = _HEALTH_PORT_VARS.get(kind)
        if variable is not None and self.config.health_ports:
            port = self._health_ports.setdefault(name, free_port(self.config.api_host))
            env[f"{variable}_PORT"] = str(port)
            env[f"{variable}_HOST"] = self.config.api_host
        process = ChildProcess(
            name,
            [*argv, *(extra_args or [])],
            env=env,
            log_path=self.logs / f"{name}.log",
            cwd=self.config.cwd,
            on_spawn=self._record_pids,
            on_exit=self._restartable,
        )
        self.processes[name] = process
        return process

    def _child_env(self, instance: str) -> dict[str, str]:
        settings = self.settings
        env = {**os.environ, **self.config.env}
        env |= {
            "AION_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
            "AION_TOPIC_PREFIX": settings.topic_prefix,
            "AION_PARTITIONS": str(settings.partitions),
            "AION_REPLICATION_FACTOR": str(settings.replication_factor),
            "AION_DATABASE_URL": settings.database_url,
            "AION_INSTANCE_ID": instance,
            "AION_STATE_DIR": env.get("AION_STATE_DIR") or str(self.home / "state"),
            "AION_ARCHIVE": env.get("AION_ARCHIVE") or str(self.home / "archive"),
            "PYTHONUNBUFFERED": "1",
        }
        env["PYTHONPATH"] = self._pythonpath()
        return env

    def _pythonpath(self) -> str:
        """The children's ``PYTHONPATH``: the configured entries, the working directory, then
        what the environment had."""
        inherited = {**os.environ, **self.config.env}.get("PYTHONPATH", "")
        cwd = (self.config.cwd or Path.cwd()).resolve()
        paths = [*self.config.pythonpath, str(cwd), *inherited.split(":")]
        return os.pathsep.join(dict.fromkeys(p for p in paths if p))

    def _restartable(self, process: SupervisedProcess, returncode: int) -> bool:
        """Whether ``process``, which just exited, is worth restarting: not while the stack is
        still starting if it refused to start (the user's code or settings) or keeps exiting.
        Once the stack was ready, a crash is always restarted."""
        if self._ready or self._stopped:
            return True
        exits = self._early_exits[process.name] = self._early_exits.get(process.name, 0) + 1
        if returncode != EXIT_USER_CODE and exits < EARLY_EXITS:
            return True
        cause = "(no log)"
        if isinstance(process, ChildProcess):
            cause = cause_from_log(process.log_path, process.log_offset)
        how = "refused to start" if returncode == EXIT_USER_CODE else f"exited {exits} times"
        self._fail(
            StartupError(
                f"{process.name} {how} while the stack was starting; it said:\n{cause}\n"
                f"(its whole log: {getattr(process, 'log_path', self.logs)})"
            )
        )
        return False

    def _record_pids(self, _changed: SupervisedProcess) -> None:
        self._pids.write({n: p.pid for n, p in self.processes.items() if p.pid is not None})

    # -- readiness -------------------------------------------------------------------------

    async def wait_ready(self, timeout: float = 60) -> None:  # noqa: ASYNC109 - the API
        """Until the API's /health answers ok and the engines own every partition."""
        if self._settings is None:
            raise StackError("start the stack before waiting for it")
        began = time.monotonic()
        deadline = began + timeout
        await self._wait_health(deadline)
        while True:
            if self._failure is not None:
                raise self._failure
            owned = self._owned_by_engine()
            all_owned = set().union(*owned.values())
            missing = sorted(set(range(self.settings.partitions)) - all_owned)
            # With no more engines than partitions, each must have joined and got a share;
            # else the first to join owns everything until the group rebalances.
            idle = [n for n, parts in owned.items() if not parts]
            if self.config.engines > self.settings.partitions:
                idle = []
            down = [n for n, p in self.processes.items() if not p.running]
            if not missing and not down and not idle:
                break
            if time.monotonic() >= deadline:
                raise StackError(
                    f"the stack was not ready within {timeout:.0f} s: partitions without an "
                    f"engine {missing}, engines without a partition {idle}, processes down "
                    f"{down}; logs in {self.logs}"
                )
            await asyncio.sleep(0.2)
        self._ready = True
        self.timings["ready_s"] = round(time.monotonic() - began, 3)
        _log.info("aion dev stack ready", extra={"api_url": self.api_url, **self.timings})

    async def _wait_health(self, deadline: float) -> None:
        last = "no answer yet"
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if self._failure is not None:
                    raise self._failure
                try:
                    response = await http.get(f"{self.api_url}/health")
                    if response.status_code == 200:  # noqa: PLR2004
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as err:
                    last = f"{type(err).__name__}: {err}"
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"the API at {self.api_url} did not report healthy ({last}); "
                        f"see {self.logs / 'api.log'}"
                    )
                await asyncio.sleep(0.2)

    def owned_partitions(self) -> set[int]:
        """Partitions the running engines say they own (from their logs since their start)."""
        return set().union(*self._owned_by_engine().values())

    def _owned_by_engine(self) -> dict[str, set[int]]:
        owned: dict[str, set[int]] = {}
        for name in self.engine_names:
            process = self.processes.get(name)
            running = isinstance(process, ChildProcess) and process.running
            owned[name] = (
                partitions_owned(process.log_path, process.log_offset)
                if isinstance(process, ChildProcess) and running
                else set()
            )
        return owned

    # -- stop ------------------------------------------------------------------------------

    def kill_all(self) -> None:
        """SIGKILL every child's process group now (a second Ctrl-C); no restarts follow."""
        for process in self.processes.values():
            process.abandon()

    async def stop(self) -> None:
        """SIGTERM every service (SIGKILL after a grace), then Kafka; release the home."""
        if self._stopped:
            return
        self._stopped = True
        brokers = self.kafka_processes
        services = [p for p in self.processes.values() if p not in brokers]
        await asyncio.gather(*(p.stop(_SERVICES_GRACE_S) for p in services))
        if self._kafka is not None:  # first: the broker going away now is no news
            await self._kafka.stop()
        await asyncio.gather(*(p.stop(_KAFKA_GRACE_S) for p in brokers))
        if self._locked:  # else the pid file is another stack's
            forget_api_url(self.home)
            self._pids.remove()
            self._lock.release()
            self._locked = False
        _log.info("aion dev stack stopped", extra={"home": str(self.home)})


def partitions_owned(log_path: Path, offset: int) -> set[int]:
    """Replay an engine's ``partition acquired/released`` log lines from ``offset``."""
    owned: set[int] = set()
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            lines = log.read().splitlines()
    except OSError:
        return owned
    for raw in lines:
        if b"partition " not in raw:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        message, partition = line.get("msg"), line.get("partition")
        if not isinstance(partition, int):
            continue
        if message == "partition acquired":
            owned.add(partition)
        elif message == "partition released":
            owned.discard(partition)
    return owned
