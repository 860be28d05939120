"""``aion.testing.containers``: a whole aion stack in Docker containers, for end-to-end suites.

Built on testcontainers-python (``pip install 'aion[containers]'``) and its conventions:
:class:`KafkaContainer` and :class:`AionServiceContainer` are ``DockerContainer`` subclasses
with wait strategies; :class:`AionStack` starts a Kafka container and the aion services (the
engine, the watcher, the projector, an activity worker and the HTTP API) on a Docker network
of its own, waits until each is ready, and hands back the API URL, an
:class:`aion.AionClient` and the Kafka bootstrap address. Use it in a ``with`` block or
through the ``aion_container_stack`` pytest fixture (``pytest_plugins =
["aion.testing.containers"]`` in your ``conftest.py``)::

    with AionStack(workflows=["greetings"], source=Path("src")) as stack:
        async with stack.client() as client:
            await client.start("greet", "ada", id="g-1")

Your workflow and activity modules reach the engines and workers by a read-only bind mount
of ``source`` (put on their ``PYTHONPATH``). The images default to those ``make images``
builds in an aion checkout (``aion:dev`` and ``aion-kafka:<version>``); name your own with
``image=`` and ``kafka_image=``. An image the Docker engine lacks is refused at once, by
name (never pulled).

Networking: every published port is bound to 127.0.0.1 of the Docker host and reached there
(``TESTCONTAINERS_HOST_OVERRIDE`` is honoured when set); containers reach each other by
name on the stack's network. Cleaning up: ``stop()`` (or leaving the ``with`` block, or the
end of the session) removes the containers, the network and the data volume. Where Ryuk,
testcontainers' reaper, cannot be pulled (no registry), set
``TESTCONTAINERS_RYUK_DISABLED=true``: this kit does not need it.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import docker
import pytest
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer, Reaper
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import ExecWaitStrategy, HttpWaitStrategy

from aion.client import AionClient

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_KAFKA_IMAGE",
    "AionContainersError",
    "AionServiceContainer",
    "AionStack",
    "KafkaContainer",
    "aion_container_stack",
]

DEFAULT_IMAGE = "aion:dev"
"""The aion services image ``make images`` builds."""
DEFAULT_KAFKA_IMAGE = "aion-kafka:4.1.1"
"""The Kafka image ``make images`` builds (the version deploy/kafka/pom.xml pins)."""

_LOOPBACK = "127.0.0.1"
_INTERNAL_PORT = 19092
_EXTERNAL_PORT = 9092
_ADVERTISED_FILE = "/tmp/aion-advertised.env"  # noqa: S108 - inside the container
_HEALTH_PORTS = {"engine": 8082, "watcher": 8081, "projector": 8083, "worker": 8084, "api": 8080}
_COMMANDS = {
    "engine": ["aion-engine"],
    "watcher": ["aion-watcher"],
    "projector": ["aion-projector"],
    "worker": ["aion-worker"],
    "api": ["python", "-m", "aion_projector.api", "--host", "0.0.0.0", "--port", "8080"],  # noqa: S104 - inside the container
}
_DATA_DIR = "/opt/aion/data"
_SOURCE_DIR = "/opt/aion/user"


class AionContainersError(RuntimeError):
    """The container stack could not start (the message names what and what to do)."""


def _host() -> str:
    """Where published ports are reached: the override if set, else the host's loopback."""
    return testcontainers_config.tc_host_override or _LOOPBACK


class KafkaContainer(DockerContainer):
    """A single-node KRaft Apache Kafka from the ``aion-kafka`` image.

    Two listeners: one for the host, published on 127.0.0.1 (:meth:`get_bootstrap_server`),
    one for containers on ``network`` (:attr:`internal_bootstrap`, ``<alias>:19092``). The
    host's address is only known once the container runs, so the entry point waits for it
    (``AION_KAFKA_WAIT_FOR``), as testcontainers' own Kafka module does.
    """

    def __init__(
        self,
        image: str = DEFAULT_KAFKA_IMAGE,
        *,
        network: Network | None = None,
        alias: str = "kafka",
        heap: str = "512m",
        **kwargs: Any,
    ) -> None:
        super().__init__(image, network=network, network_aliases=[alias], **kwargs)
        self.alias = alias
        self.ports[f"{_EXTERNAL_PORT}/tcp"] = (_LOOPBACK, None)  # type: ignore[assignment] # docker-py takes (host ip, port)
        self.with_envs(
            AION_KAFKA_WAIT_FOR=_ADVERTISED_FILE,
            KAFKA_HEAP_OPTS=f"-Xmx{heap} -Xms{heap}",
            KAFKA_LISTENERS=f"EXTERNAL://:{_EXTERNAL_PORT},INTERNAL://:{_INTERNAL_PORT},"
            "CONTROLLER://127.0.0.1:9093",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="EXTERNAL:PLAINTEXT,INTERNAL:PLAINTEXT,"
            "CONTROLLER:PLAINTEXT",
            KAFKA_INTER_BROKER_LISTENER_NAME="INTERNAL",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@127.0.0.1:9093",
        )
        self._ready = ExecWaitStrategy(["/opt/kafka/bin/kafka-ready", str(_EXTERNAL_PORT)])

    @property
    def internal_bootstrap(self) -> str:
        """``<alias>:19092``: the bootstrap address for containers on the network."""
        return f"{self.alias}:{_INTERNAL_PORT}"

    def get_container_host_ip(self) -> str:
        """127.0.0.1 (or ``TESTCONTAINERS_HOST_OVERRIDE``): the ports are bound there."""
        return _host()

    def get_bootstrap_server(self) -> str:
        """``127.0.0.1:<port>``: the bootstrap address for clients on the host."""
        return f"{self.get_container_host_ip()}:{self.get_exposed_port(_EXTERNAL_PORT)}"

    def start(self) -> Self:
        """Start the container, tell it its advertised listeners, wait until it answers."""
        super().start()
        advertised = (
            f"EXTERNAL://{self.get_bootstrap_server()},INTERNAL://{self.internal_bootstrap}"
        )
        script = f"export KAFKA_ADVERTISED_LISTENERS='{advertised}'\n".encode()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(Path(_ADVERTISED_FILE).name)
            info.size = len(script)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(script))
        wrapped = self.get_wrapped_container()
        wrapped.put_archive(str(Path(_ADVERTISED_FILE).parent), archive.getvalue())
        self._ready.wait_until_ready(self)
        return self


class AionServiceContainer(DockerContainer):
    """One aion service from the aion image: engine, watcher, projector, worker or api.

    Its health port is published on 127.0.0.1; :meth:`start` returns once its readiness path
    answers 200 (the engine owns a rebuilt partition, the projector has caught up, …).
    """

    def __init__(
        self,
        image: str,
        kind: str,
        *,
        network: Network,
        env: Mapping[str, str],
        alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kind not in _COMMANDS:
            raise ValueError(f"unknown aion service {kind!r}: one of {sorted(_COMMANDS)}")
        super().__init__(image, network=network, network_aliases=[alias or kind], **kwargs)
        self.kind = kind
        self.health_port = _HEALTH_PORTS[kind]
        self.with_command(_COMMANDS[kind])
        self.with_envs(**env)
        if kind != "api":
            prefix = f"AION_{kind.upper()}"
            self.with_envs(**{f"{prefix}_PORT": str(self.health_port), f"{prefix}_HOST": "0.0.0.0"})  # noqa: S104 - inside the container
        self.ports[f"{self.health_port}/tcp"] = (_LOOPBACK, None)  # type: ignore[assignment] # docker-py takes (host ip, port)
        path = "/health" if kind == "api" else "/health/ready"
        self.waiting_for(HttpWaitStrategy(self.health_port, path).for_status_code(200))

    def get_container_host_ip(self) -> str:
        """127.0.0.1 (or ``TESTCONTAINERS_HOST_OVERRIDE``): the ports are bound there."""
        return _host()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the service's health port (the API's own port)."""
        return f"http://{self.get_container_host_ip()}:{self.get_exposed_port(self.health_port)}"


class AionStack:
    """Kafka and the aion services as containers; see the module docstring.

    ``workflows``: modules the engines import (``AION_WORKFLOWS``); ``activities``: more
    modules the workers import (``AION_ACTIVITIES``; they import the workflow modules too, so
    activities defined beside the workflows need nothing here, as with ``aion dev``);
    ``source``: a host directory mounted read-only and put on the engines' and workers'
    ``PYTHONPATH`` (your project; None uses only what the image ships, such as ``examples``).
    ``engines``, ``workers``: instances in each consumer group. The views are SQLite on a
    volume the projector and the API share. ``env``: more ``AION_*`` settings for every
    service.
    """

    def __init__(
        self,
        *,
        workflows: Sequence[str] = ("examples",),
        activities: Sequence[str] = (),
        source: str | os.PathLike[str] | None = None,
        image: str = DEFAULT_IMAGE,
        kafka_image: str = DEFAULT_KAFKA_IMAGE,
        engines: int = 1,
        workers: int = 1,
        partitions: int = 3,
        topic_prefix: str = "aion",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workflows = tuple(workflows)
        self.activities = tuple(dict.fromkeys((*workflows, *activities)))
        self.workers = workers
        self.source = Path(source).resolve() if source is not None else None
        self.image = image
        self.kafka_image = kafka_image
        self.engines = engines
        self.partitions = partitions
        self.topic_prefix = topic_prefix
        self.extra_env = dict(env or {})
        self.name = f"aion-{uuid.uuid4().hex[:8]}"
        self.network: Network | None = None
        self.kafka: KafkaContainer | None = None
        self.services: dict[str, AionServiceContainer] = {}
        self.startup_seconds: float | None = None
        self._volume = f"{self.name}-data"

    # -- what a test uses --------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The HTTP API's URL on the host (``http://127.0.0.1:<port>``)."""
        return self._service("api").url

    @property
    def bootstrap_servers(self) -> str:
        """Kafka's bootstrap address on the host, for your own producers and consumers."""
        if self.kafka is None:
            raise AionContainersError("the stack is not started")
        return self.kafka.get_bootstrap_server()

    def client(self, *, timeout: float = 10.0) -> AionClient:
        """A new :class:`aion.AionClient` on the stack's API (use it as ``async with``)."""
        return AionClient(self.api_url, timeout=timeout)

    def logs(self, name: str) -> str:
        """A container's output so far: ``kafka``, ``engine-1``, ``watcher``, ``api``, …"""
        container = self.kafka if name == "kafka" else self.services.get(name)
        if container is None:
            raise KeyError(f"no container {name!r}; have kafka and {sorted(self.services)}")
        out, err = container.get_logs()
        return (out + err).decode(errors="replace")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start Kafka, the engines, workers, watcher and projector, then the API; wait for each."""
        started = time.monotonic()
        _check_images(self.image, self.kafka_image)
        _check_reaper()
        try:
            self.network = Network().create()
            self.kafka = KafkaContainer(self.kafka_image, network=self.network)
            self.kafka.start()
            env = self._env()
            for index in range(1, self.engines + 1):
                self._add("engine", f"engine-{index}", env)
            for index in range(1, self.workers + 1):
                self._add("worker", f"worker-{index}", env)
            self._add("watcher", "watcher", env)
            self._add("projector", "projector", env)
            for name, container in self.services.items():
                self._start(name, container)
            # The API migrates the views' schema too: after the projector, never beside it.
            self._start("api", self._add("api", "api", env))
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Remove every container, the network and the data volume; safe to call twice."""
        for container in reversed(list(self.services.values())):
            _quietly_stop(container)
        self.services.clear()
        if self.kafka is not None:
            _quietly_stop(self.kafka)
            self.kafka = None
        if self.network is not None:
            network, self.network = self.network, None
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
        client = docker.from_env()
        try:
            client.volumes.get(self._volume).remove(force=True)
        except docker.errors.NotFound:
            pass
        finally:
            client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        assert self.kafka is not None
        env = {
            "AION_KAFKA_BOOTSTRAP": self.kafka.internal_bootstrap,
            "AION_TOPIC_PREFIX": self.topic_prefix,
            "AION_PARTITIONS": str(self.partitions),
            "AION_REPLICATION_FACTOR": "1",
            "AION_TRANSACTIONS": "on",
            "AION_DATABASE_URL": f"sqlite+aiosqlite:///{_DATA_DIR}/aion.db",
        }
        return {**env, **self.extra_env}

    def _add(self, kind: str, name: str, env: Mapping[str, str]) -> AionServiceContainer:
        assert self.network is not None
        own = {**env, "AION_INSTANCE_ID": name}
        if kind == "engine":
            own["AION_WORKFLOWS"] = ",".join(self.workflows)
        if kind == "worker":
            own["AION_ACTIVITIES"] = ",".join(self.activities)
        if kind in {"engine", "worker"} and self.source is not None:
            own["PYTHONPATH"] = f"{_SOURCE_DIR}:/opt/aion/app"
        container = AionServiceContainer(
            self.image, kind, network=self.network, env=own, alias=name
        ).with_name(f"{self.name}-{name}")
        if kind in {"projector", "api"}:
            container.with_volume_mapping(self._volume, _DATA_DIR, mode="rw")
        if kind in {"engine", "worker"} and self.source is not None:
            container.with_volume_mapping(str(self.source), _SOURCE_DIR, mode="ro")
        self.services[name] = container
        return container

    def _start(self, name: str, container: AionServiceContainer) -> None:
        try:
            container.start()
        except Exception as err:
            logs = "(no container)"
            if container._container is not None:
                out, errors = container.get_logs()
                logs = "\n".join((out + errors).decode(errors="replace").splitlines()[-30:])
            raise AionContainersError(
                f"aion service {name} ({self.image}) did not become ready: {err}\n"
                f"its last log lines:\n{logs}"
            ) from err

    def _service(self, name: str) -> AionServiceContainer:
        try:
            return self.services[name]
        except KeyError:
            raise AionContainersError("the stack is not started") from None


def _quietly_stop(container: DockerContainer) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.stop()


def _docker_answers() -> bool:
    try:
        client = docker.from_env(timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
    finally:
        client.close()


def _check_images(*images: str) -> None:
    """Refuse at once, naming the image, when the Docker engine lacks one (nothing is pulled)."""
    try:
        client = docker.from_env()
    except docker.errors.DockerException as err:
        raise AionContainersError(f"no Docker engine answers: {err}") from err
    try:
        for image in images:
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                raise AionContainersError(
                    f"the Docker engine has no image {image!r}: build it with `make images` in "
                    "an aion checkout, or pass the name of an image you have (image=, "
                    "kafka_image=)"
                ) from None
    finally:
        client.close()


def _check_reaper() -> None:
    if testcontainers_config.ryuk_disabled:
        return
    try:
        Reaper.get_instance()
    except docker.errors.DockerException as err:
        raise AionContainersError(
            f"testcontainers' reaper ({testcontainers_config.ryuk_image}) cannot start: {err}. "
            "Set TESTCONTAINERS_RYUK_DISABLED=true: AionStack removes its own containers, "
            "network and volume when it stops"
        ) from err


# -- the pytest fixture ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def aion_container_stack(request: pytest.FixtureRequest) -> Iterator[AionStack]:
    """An :class:`AionStack` for the session, with the ``aion_workflows`` ini modules.

    The modules come from ``--aion-workflows``/``--aion-activities`` and the
    ``aion_workflows``/``aion_activities`` ini keys (as for the ``aion_stack`` fixture); the
    project's rootdir is mounted as the engines' source. Skips
    when no Docker engine answers (fails when ``CI`` is set). Override this fixture to
    configure more (images, engines, a different source).
    """
    if not _docker_answers():
        reason = "aion_container_stack: no Docker engine answers"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: nothing may be skipped)", pytrace=False)
        pytest.skip(reason)
    workflows = _modules(request.config, "workflows")
    activities = _modules(request.config, "activities")
    stack = AionStack(
        workflows=workflows or ["examples"], activities=activities, source=request.config.rootpath
    )
    with stack:
        yield stack


def _modules(config: pytest.Config, kind: str) -> list[str]:
    """``--aion-<kind>`` then the ``aion_<kind>`` ini key (declared by the aion-testing plugin)."""
    modules = list(config.getoption(f"aion_{kind}", default=None) or [])
    # ValueError: the aion-testing plugin (which declares the ini key) is turned off.
    with contextlib.suppress(ValueError):
        modules += config.getini(f"aion_{kind}")
    return modules
