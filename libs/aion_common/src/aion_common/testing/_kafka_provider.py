"""Which Kafka broker a pytest session uses, started on first use and stopped at the end."""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from aion_common.testing._support import ProvisionError, find_repo_root, log_tail
from aion_common.testing.broker import (
    KafkaBroker,
    installed_kafka_version,
    kafka_libs_dir,
    pinned_kafka_version,
)

__all__ = ["ENV_BOOTSTRAP", "KafkaProvider"]

ENV_BOOTSTRAP = "AION_TEST_KAFKA"
ENV_IMAGE = "AION_TEST_KAFKA_IMAGE"
BrokerKind = Literal["env", "docker", "java"]


class KafkaProvider:
    """The session's broker: an existing one, a testcontainers Kafka, or the Java broker."""

    def __init__(self, kind: BrokerKind, *, bootstrap: str | None = None) -> None:
        self.kind: BrokerKind = kind
        self._bootstrap = bootstrap
        self._broker: KafkaBroker | None = None
        self._container: Any = None
        self._data_dir: Path | None = None
        self._failed = False
        self._error: str | None = None

    @classmethod
    def decide(cls) -> KafkaProvider:
        """Pick the broker without starting anything (cheap: runs for every pytest session)."""
        external = os.environ.get(ENV_BOOTSTRAP)
        if external:
            return cls("env", bootstrap=external)
        # A testcontainers Kafka only when its image is named: `make test` now starts a Docker
        # engine of its own (for the container tests), and testcontainers' default image cannot
        # be pulled where no registry is reachable (docs/decisions.md 26).
        if os.environ.get(ENV_IMAGE) and _docker_answers():
            return cls("docker")
        return cls("java")

    def header(self) -> str:
        """The ``aion broker:`` report header line."""
        if self.kind == "env":
            return f"aion broker: {ENV_BOOTSTRAP}={self._bootstrap} (an existing broker)"
        if self.kind == "docker":
            return f"aion broker: testcontainers Kafka ({_image()}), started on first use"
        return f"aion broker: Apache Kafka {_java_version()} (Java, Maven Central jars), started on first use"  # noqa: E501

    def bootstrap(self) -> str:
        """Start the broker if this is its first use; return ``host:port``."""
        if self._bootstrap is not None:
            return self._bootstrap
        if self._error is not None:
            raise ProvisionError(
                f"the session's Kafka broker failed to start earlier: {self._error}"
            )
        try:
            self._bootstrap = self._start_docker() if self.kind == "docker" else self._start_java()
        except ProvisionError as err:
            self._error = str(err)
            raise
        return self._bootstrap

    def failure_section(self) -> tuple[str, str] | None:
        """A report section with the broker log's tail, for a failed test that used Kafka."""
        if self._broker is None:
            return None
        self._failed = True
        log = self._broker.log_path
        return ("aion broker log", f"{log} (last 40 lines):\n{log_tail(log)}")

    def summary(self) -> str | None:
        """One line for the terminal summary once a broker was started, else None."""
        broker = self._broker
        if broker is None:
            return None if self._container is None else f"aion broker: ran at {self._bootstrap}"
        started = f"started in {broker.start_seconds or 0:.1f} s"
        kept = f"log kept: {broker.log_path}" if self._failed else "data dir removed"
        return f"aion broker: Apache Kafka {broker.kafka_version} ran at {self._bootstrap} ({started}; {kept})"  # noqa: E501

    def close(self) -> None:
        """Stop whatever this provider started; idempotent."""
        if self._broker is not None:
            # Killed, not stopped: its data is thrown away (or kept only for the log, which
            # is written as it goes), and a controlled shutdown of every partition the
            # session created would add its own wait to the end of every run.
            self._broker.kill()
            if not self._failed and self._data_dir is not None:
                shutil.rmtree(self._data_dir, ignore_errors=True)
                self._data_dir = None
        if self._container is not None:
            container, self._container = self._container, None
            container.stop()

    def _start_java(self) -> str:
        if self._broker is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="aion-kafka-"))
            # die_with_parent: a killed pytest run leaves no JVM behind.
            self._broker = KafkaBroker(self._data_dir, die_with_parent=True)
        self._broker.start()
        return self._broker.bootstrap_servers

    def _start_docker(self) -> str:
        # testcontainers' own default image (Confluent's Kafka) supports transactions; its start
        # script is written for that image, so an override must be a cp-kafka image too.
        kafka = importlib.import_module("testcontainers.kafka")
        image = os.environ.get(ENV_IMAGE)
        container = kafka.KafkaContainer(image) if image else kafka.KafkaContainer()
        container.start()
        self._container = container
        return str(container.get_bootstrap_server())


def _image() -> str:
    return os.environ.get(ENV_IMAGE, "testcontainers' default image")


def _java_version() -> str:
    try:
        root = find_repo_root()
    except ProvisionError:
        return "(version unknown: no aion checkout found)"
    return installed_kafka_version(kafka_libs_dir(root)) or pinned_kafka_version(root)


def _docker_answers() -> bool:
    """Whether testcontainers is installed and a Docker engine answers a ping."""
    try:
        importlib.import_module("testcontainers.kafka")
        docker = importlib.import_module("docker")
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
