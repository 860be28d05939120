"""An Apache Kafka (KRaft) node run with Java from Maven Central jars: a single-node broker,
or one node of a cluster (:mod:`aion_common.testing.cluster`).

Used by ``make dev``, ``make kafka-jars`` and the pytest plugin. The jars are fetched once with
Maven into ``<repo>/.aion/cache/kafka-libs`` (``$AION_KAFKA_LIBS`` overrides); a data directory
that has been formatted keeps its topics and records across restarts.

CLI: ``python -m aion_common.testing.broker {fetch,run,start,stop} --help``.
"""

from __future__ import annotations

import base64
import ctypes
import os
import re
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from aion_common.testing._support import (
    ProvisionError,
    find_repo_root,
    free_port,
    log_tail,
    port_is_free,
    run_command,
)

__all__ = ["ClusterNode", "KafkaBroker", "ensure_jars", "kafka_libs_dir", "pinned_kafka_version"]

_POM = Path("deploy/kafka/pom.xml")
_LOG_CONFIG = Path("deploy/kafka/log4j2.properties")
_JAR_NAME = re.compile(r"^kafka_2\.13-(?P<version>\d[\w.-]*?)\.jar$")
_PR_SET_PDEATHSIG = 1


def kafka_libs_dir(repo_root: Path) -> Path:
    """Where the broker's jars live: ``$AION_KAFKA_LIBS`` or ``<repo>/.aion/cache/kafka-libs``."""
    override = os.environ.get("AION_KAFKA_LIBS")
    return Path(override).resolve() if override else repo_root / ".aion/cache/kafka-libs"


def pinned_kafka_version(repo_root: Path) -> str:
    """The Kafka version ``deploy/kafka/pom.xml`` pins."""
    pom = (repo_root / _POM).read_text(encoding="utf-8")
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom)
    if match is None:
        raise ProvisionError(f"{repo_root / _POM} has no <kafka.version> property")
    return match.group(1)


def installed_kafka_version(libs_dir: Path) -> str | None:
    """The version of the ``kafka_2.13`` jar in ``libs_dir``, or None if there is none."""
    if not libs_dir.is_dir():
        return None
    for jar in libs_dir.iterdir():
        if match := _JAR_NAME.match(jar.name):
            return match.group("version")
    return None


def ensure_jars(repo_root: Path, libs_dir: Path | None = None) -> tuple[Path, float | None]:
    """Make the pinned Kafka's jars present; return their directory and the fetch time.

    The time is None when the cache already held the pinned version. Maven writes into a
    private directory that is renamed into place, under a file lock, so concurrent callers
    never see half a cache.
    """
    target = libs_dir or kafka_libs_dir(repo_root)
    wanted = pinned_kafka_version(repo_root)
    if installed_kafka_version(target) == wanted:
        return target, None
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        import fcntl  # noqa: PLC0415 - POSIX only, and only needed on a cold cache

        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_kafka_version(target) == wanted:
            return target, None
        partial = target.parent / f".{target.name}.partial-{os.getpid()}"
        argv = ["mvn", "-q", "-B", "-f", str(repo_root / _POM), "dependency:copy-dependencies"]
        argv += ["-DincludeScope=runtime", f"-DoutputDirectory={partial}"]
        seconds = run_command(argv, what="fetching the Kafka jars from Maven Central")
        if installed_kafka_version(partial) != wanted:
            raise ProvisionError(f"`{' '.join(argv)}` left no kafka_2.13-{wanted}.jar in {partial}")
        if target.exists():
            _remove_tree(target)
        partial.rename(target)
    return target, seconds


def _remove_tree(path: Path) -> None:
    import shutil  # noqa: PLC0415 - only needed when replacing an outdated cache

    shutil.rmtree(path)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterNode:
    """Where a node sits in a cluster: its id and ports, every controller (the static quorum,
    ``1@127.0.0.1:p1,2@…``), the cluster id every node's storage is formatted with, and the
    replication factor the cluster's defaults and internal topics use."""

    node_id: int
    port: int
    controller_port: int
    voters: str
    cluster_id: str
    replication: int

    @property
    def min_insync_replicas(self) -> int:
        """2 once there are three replicas (one may be lost without refusing writes), else 1."""
        return 2 if self.replication >= 3 else 1  # noqa: PLR2004


class KafkaBroker:
    """One combined broker+controller KRaft node bound to 127.0.0.1.

    ``start()`` formats ``data_dir`` if it is new, launches Java in its own process group and
    returns once the broker answers a metadata request; ``stop()`` is idempotent. With
    ``die_with_parent`` the kernel sends the broker SIGTERM when the thread that started it
    exits, so a killed test run leaves no JVM behind (start it from a long-lived thread).
    ``heap`` defaults to ``kafka-server-start.sh``'s 1 GiB. Measured behind the ``aion dev``
    stack over the same three fan-out benchmark runs on a fresh broker: 768 MiB ran 15 young
    collections and 19 safepoint pauses over 5 ms, 1 GiB 10 and 12, 2 GiB 5 and 8. (A test
    broker that had accumulated ~1,000 partitions sat at G1's concurrent-cycle threshold at
    768 MiB, with remark and cleanup pauses of up to 40 ms.)

    ``node`` makes it one node of a cluster (see :class:`~aion_common.testing.cluster.
    KafkaCluster`, which starts them together: a node answers once a quorum of controllers
    is up); without it, it is a cluster of its own (node 1, replication factor 1).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        repo_root: Path | None = None,
        libs_dir: Path | None = None,
        heap: str = "1g",
        start_timeout: float = 60.0,
        die_with_parent: bool = False,
        node: ClusterNode | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.node = node
        self.repo_root = repo_root or find_repo_root()
        self._libs_dir = libs_dir
        self._requested_port = port
        self._heap = heap
        self._start_timeout = start_timeout
        self._die_with_parent = die_with_parent
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.port = 0
        self.controller_port = 0
        self.kafka_version = pinned_kafka_version(self.repo_root)
        self.start_seconds: float | None = None
        self.fetch_seconds: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` of the running broker."""
        if not self.port:
            raise ProvisionError("the broker has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's stdout/stderr (log4j2 writes there)."""
        return self.data_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        """The Java process id while the broker runs."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Fetch jars if needed, format a new data dir, launch the broker and wait for it."""
        started = time.monotonic()
        self.launch()
        self.wait_ready()
        self.start_seconds = time.monotonic() - started

    def launch(self) -> None:
        """:meth:`start` without the wait: the JVM is running, maybe not answering yet."""
        if self._process is not None:
            raise ProvisionError(f"broker at {self.bootstrap_servers} is already running")
        libs, self.fetch_seconds = ensure_jars(self.repo_root, self._libs_dir)
        self.kafka_version = installed_kafka_version(libs) or self.kafka_version
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._choose_ports()
        properties = self._write_properties()
        if not (self.data_dir / "logs/meta.properties").exists():
            self._format(libs, properties)
        self._launch(libs, properties)

    def wait_ready(self) -> None:
        """Until the launched broker answers a metadata request (stopped if it never does)."""
        try:
            self._wait_ready(time.monotonic() + self._start_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the broker, SIGKILL it after ``timeout`` seconds; safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the broker at once, without Kafka's controlled shutdown; safe to call twice.

        For a broker whose data dir is thrown away next: on SIGTERM Kafka closes and
        checkpoints every partition's log first, which takes many seconds once a test session
        has created thousands of partitions. A restart on the same data dir after a kill
        recovers the logs (Kafka's unclean-shutdown path), as after a crash.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, down_for: float = 0.0, *, timeout: float = 30.0) -> None:
        """Stop the broker, stay down ``down_for`` seconds, start it on the same ports and data.

        An outage for tests of clients that must ride one out: the address clients were given
        stays valid, and every record and committed offset is still there afterwards. Raises
        :class:`ProvisionError` if the broker is not running, or if its port was taken meanwhile.
        """
        if self._process is None:
            raise ProvisionError("restart(): the broker is not running")
        port = self.port
        self.stop(timeout)
        time.sleep(down_for)
        if not port_is_free(port):
            raise ProvisionError(f"restart(): port {port} was taken while the broker was down")
        requested, self._requested_port = self._requested_port, port
        try:
            self.start()
        finally:
            self._requested_port = requested

    def wait(self) -> int:
        """Block until the broker exits; return its exit status."""
        if self._process is None:
            raise ProvisionError("the broker has not been started")
        return self._process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _choose_ports(self) -> None:
        if self.node is not None:  # a cluster's ports are the cluster's to choose
            self.port, self.controller_port = self.node.port, self.node.controller_port
            return
        # A persistent data dir keeps its ports while they are free, so clients stay pointed at it.
        ports_file = self.data_dir / "ports"
        previous = ports_file.read_text().split() if ports_file.exists() else []
        old = [int(p) for p in previous if p.isdigit()]
        if self._requested_port:
            self.port = self._requested_port
        elif len(old) == 2 and port_is_free(old[0]):  # noqa: PLR2004 - broker and controller
            self.port = old[0]
        else:
            self.port = free_port()
        if len(old) == 2 and old[1] != self.port and port_is_free(old[1]):  # noqa: PLR2004
            self.controller_port = old[1]
        else:
            self.controller_port = free_port(avoid=[self.port])
        ports_file.write_text(f"{self.port} {self.controller_port}\n")

    def _write_properties(self) -> Path:
        node = self.node
        replicas = "1" if node is None else str(node.replication)
        min_isr = "1" if node is None else str(node.min_insync_replicas)
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1" if node is None else str(node.node_id),
            # Static voters (not --standalone): the quorum follows the ports chosen at each start.
            "controller.quorum.voters": (
                f"1@127.0.0.1:{self.controller_port}" if node is None else node.voters
            ),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:"
            f"{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            # An out-of-sync replica never becomes leader: it would lose acknowledged records.
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            # A SIGKILLed node's old registration lives until its session expires: the controller
            # refuses the restarted node (a new incarnation) until then, and the dead node stays
            # its partitions' leader. Kafka's 9 s made a killed test broker take ~13 s to return,
            # 3 s takes ~5.5 s; six heartbeats per session. (A new active controller restarts
            # every session, so a controller election cannot fence a live node.)
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "group.initial.rebalance.delay.ms": "0",
            # Crash tests use short session timeouts so a killed member leaves the group fast.
            "group.min.session.timeout.ms": "1000",
            # A zombie's timed-out transaction is aborted within a second instead of ten.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            # Room for an event batch carrying a payload at aion's default 2 MiB limit.
            "message.max.bytes": str(8 * 1024 * 1024),
        }
        path = self.data_dir / "server.properties"
        lines = ["# Written by aion_common.testing.broker at each start; edits are lost."]
        path.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in settings.items())]) + "\n")
        return path

    def _java(self, libs: Path, *args: str) -> list[str]:
        log_config = self.repo_root / _LOG_CONFIG
        return [
            "java",
            f"-Xmx{self._heap}",
            f"-Xms{self._heap}",
            # kafka.Kafka is launched directly, not through bin/kafka-server-start.sh: these are
            # that script's (kafka-run-class.sh's) performance options, which the apache/kafka
            # image runs with too. Without them G1 aims at 200 ms pauses, not 20.
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:MaxInlineLevel=15",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def _format(self, libs: Path, properties: Path) -> None:
        cluster_id = new_cluster_id() if self.node is None else self.node.cluster_id
        # ``--cluster-id=`` keeps an id that starts with "-" (base64url can) from reading as a flag.
        argv = self._java(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}")
        run_command(
            [*argv, "-c", str(properties)], what=f"formatting Kafka storage in {self.data_dir}"
        )

    def _launch(self, libs: Path, properties: Path) -> None:
        self._log = self.log_path.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"=== aion: starting broker on 127.0.0.1:{self.port} at {stamp}\n".encode())
        self._log.flush()
        try:
            self._process = subprocess.Popen(  # noqa: S603 - argv is built here
                self._java(libs, "kafka.Kafka", str(properties)),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self._die_with_parent else None,  # noqa: PLW1509 - only prctl, async-signal-safe
            )
        except FileNotFoundError as err:
            raise ProvisionError("running Kafka needs Java 17+: `java` is not on PATH") from err

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            status = self._process.poll()
            if status is not None:
                raise ProvisionError(
                    f"Kafka broker (pid {self._process.pid}) exited with status {status} while "
                    f"starting; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                if metadata_broker_count("127.0.0.1", self.port) > 0:
                    return
                last_error = "metadata lists no brokers yet"
            except OSError as err:
                last_error = str(err)
            time.sleep(0.2)
        raise ProvisionError(
            f"Kafka broker on 127.0.0.1:{self.port} did not answer a metadata request within "
            f"{self._start_timeout:.0f} s ({last_error}); log {self.log_path}:\n"
            f"{log_tail(self.log_path)}"
        )


def new_cluster_id() -> str:
    """A KRaft cluster id (``kafka-storage.sh random-uuid``'s form: base64url of 16 bytes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def metadata_broker_count(host: str, port: int, timeout: float = 2.0) -> int:
    """Send a Metadata v4 request (no topics) and return how many brokers the answer lists."""
    client_id = b"aion-probe"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">ib", 0, 0)  # empty topic list, no auto-creation
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read_exact(sock, 4))[0]
        answer = _read_exact(sock, size)
    # correlation id, throttle time, then the broker array's length.
    correlation, _throttle, brokers = struct.unpack_from(">iii", answer)
    if correlation != 1:
        raise OSError(f"metadata answer has correlation id {correlation}, expected 1")
    return int(brokers)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed mid-answer")
        chunks += chunk
    return bytes(chunks)


if __name__ == "__main__":
    from aion_common.testing._broker_cli import main

    raise SystemExit(main())
