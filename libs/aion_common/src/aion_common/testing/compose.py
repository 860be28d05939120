"""Run docker-compose.yml for real: ``python -m aion_common.testing.compose {up,down}``.

``make compose-up`` (after ``make images``) starts the stack detached and waits until every
container reports healthy, printing each one's time to healthy and the total;
``make compose-down`` removes its containers, network and volumes. The override
``deploy/compose.local.yml`` (the images ``make images`` built from local parts) is added when
the public Kafka or PostgreSQL image of docker-compose.yml is not on the Docker engine.

Compose v2 (``docker compose``) is used where installed, else v1 (``docker-compose``, which
Debian packages). :class:`ComposeStack` is the same thing for tests: its own project name and
API port, ``kill`` and ``wait_healthy`` for fault injection.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aion_common.settings import MAX_PORT, SettingsError, whole_from_env, whole_option
from aion_common.testing._support import ProvisionError, find_repo_root
from aion_common.testing.dockerd import docker_cli
from aion_common.testing.images import image_exists

__all__ = ["OVERRIDE", "ComposeStack", "compose_command"]

OVERRIDE = "deploy/compose.local.yml"
_POLL = 0.5

Say = Callable[[str], None]


def compose_command() -> list[str]:
    """``docker compose`` when the v2 plugin answers, else ``docker-compose`` (v1)."""
    cli = docker_cli()
    if cli is not None:
        done = subprocess.run(  # noqa: S603 - fixed argv
            [cli, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if done.returncode == 0:
            return [cli, "compose"]
    v1 = shutil.which("docker-compose")
    if v1 is None:
        raise ProvisionError(
            "neither `docker compose` (v2) nor `docker-compose` (v1) is installed "
            "(Debian: apt-get install docker-compose)"
        )
    return [v1]


class ComposeStack:
    """docker-compose.yml as project ``project``, its API on ``127.0.0.1:api_port``."""

    def __init__(
        self,
        repo_root: Path | None = None,
        *,
        project: str = "aion",
        api_port: int = 8080,
        local: bool | None = None,
        say: Say = print,
    ) -> None:
        self.root = repo_root or find_repo_root()
        self.project = project
        self.api_port = api_port
        self.say = say
        compose_file = self.root / "docker-compose.yml"
        self.files = [compose_file]
        if local if local is not None else self._public_images_missing(compose_file):
            self.files.append(self.root / OVERRIDE)
        self.seconds_to_healthy: dict[str, float] = {}

    @property
    def api_url(self) -> str:
        """The API's URL on the host."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def uses_override(self) -> bool:
        """Whether deploy/compose.local.yml is in use."""
        return len(self.files) > 1

    def _public_images_missing(self, compose_file: Path) -> bool:
        # PyYAML is a test dependency (it ships no type information), needed only here.
        yaml: Any = importlib.import_module("yaml")
        services = yaml.safe_load(compose_file.read_text())["services"]
        public = [services[name]["image"] for name in ("kafka", "postgres")]
        missing = [image for image in public if not image_exists(image)]
        if missing:
            self.say(f"compose: {', '.join(missing)} not on the Docker engine: adding {OVERRIDE}")
        return bool(missing)

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run one compose command on this project; raise ProvisionError on failure if ``check``."""
        argv, env = self._argv(*args)
        done = subprocess.run(  # noqa: S603 - argv built here
            argv,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise ProvisionError(
                f"`{' '.join(argv)}` exited with status {done.returncode}:\n"
                f"{(done.stderr or done.stdout).strip()[-3000:]}"
            )
        return done

    def _argv(self, *args: str) -> tuple[list[str], dict[str, str]]:
        argv = [*compose_command(), "-p", self.project]
        for path in self.files:
            argv += ["-f", str(path)]
        return [*argv, *args], {**os.environ, "AION_API_PORT": str(self.api_port)}

    def services(self) -> list[str]:
        """The service names of the (merged) compose files."""
        return self.compose("config", "--services").stdout.split()

    def _has_container(self, service: str) -> bool:
        return bool(self.compose("ps", "-q", service, check=False).stdout.split())

    def container_id(self, service: str) -> str:
        """The id of ``service``'s container (raises if it has none)."""
        found = self.compose("ps", "-q", service).stdout.split()
        if not found:
            raise ProvisionError(f"compose service {service!r} has no container")
        return found[0]

    def health(self, service: str) -> str:
        """``healthy`` / ``starting`` / ``unhealthy``, or the container's state if it has none."""
        template = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        done = subprocess.run(  # noqa: S603 - argv built here
            [_cli(), "inspect", "--format", template, self.container_id(service)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return done.stdout.strip() or "unknown"

    def up(self, timeout: float = 300.0) -> float:
        """Start the stack detached (no build); return its seconds until every service is healthy.

        Health is polled while ``up`` runs (compose v1's ``up`` returns only once the
        dependencies it waits on are healthy), so each service's time is its own.
        """
        started = time.monotonic()
        argv, env = self._argv("up", "-d", "--no-build")
        with subprocess.Popen(  # noqa: S603 - argv built here
            argv,
            cwd=self.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            try:
                seconds = self.wait_healthy(timeout, since=started, process=process)
            finally:
                output, _ = process.communicate(timeout=timeout)
        if process.returncode != 0:
            raise ProvisionError(f"`{' '.join(argv)}` exited with status {process.returncode}:\n"
                                 f"{output.strip()[-3000:]}")  # fmt: skip
        return seconds

    def wait_healthy(
        self,
        timeout: float = 300.0,
        *,
        since: float | None = None,
        process: subprocess.Popen[str] | None = None,
    ) -> float:
        """Wait until every service is healthy; return seconds since ``since`` (or now).

        With ``process`` (a running ``up``), a service with no container yet is not an error
        until that process has exited.
        """
        began = since if since is not None else time.monotonic()
        deadline = time.monotonic() + timeout
        pending = set(self.services())
        while pending:
            for service in sorted(pending):
                if not self._has_container(service):
                    if process is None or process.poll() is not None:
                        raise ProvisionError(
                            f"compose project {self.project}: {service} has no container\n"
                            f"{self.logs(tail=30)}"
                        )
                    continue
                if self.health(service) == "healthy":
                    self.seconds_to_healthy[service] = time.monotonic() - began
                    pending.discard(service)
            if not pending:
                break
            if time.monotonic() > deadline:
                states = {s: self.health(s) for s in sorted(pending)}
                raise ProvisionError(
                    f"compose project {self.project}: not healthy after {timeout:.0f} s: "
                    f"{states}\n{self.logs(*sorted(pending), tail=30)}"
                )
            time.sleep(_POLL)
        return time.monotonic() - began

    def kill(self, service: str) -> str:
        """``docker kill`` (SIGKILL) the service's container; return its id."""
        container = self.container_id(service)
        subprocess.run(  # noqa: S603 - argv built here
            [_cli(), "kill", container], capture_output=True, check=True, timeout=60
        )
        return container

    def restart_count(self, service: str) -> int:
        """How many times the engine restarted the service's container."""
        done = subprocess.run(  # noqa: S603 - argv built here
            [_cli(), "inspect", "--format", "{{.RestartCount}}", self.container_id(service)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return int(done.stdout.strip())

    def logs(self, *services: str, tail: int = 50) -> str:
        """The last ``tail`` log lines of each service (all when none are named)."""
        done = self.compose("logs", "--no-color", f"--tail={tail}", *services, check=False)
        return done.stdout + done.stderr

    def down(self) -> None:
        """Remove the project's containers, network and volumes."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20")


def _cli() -> str:
    cli = docker_cli()
    if cli is None:
        raise ProvisionError("the `docker` client is not on PATH")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """``up`` / ``down`` the stack as project ``aion`` (``--project`` to change)."""
    parser = argparse.ArgumentParser(prog="python -m aion_common.testing.compose")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--project", default=os.environ.get("COMPOSE_PROJECT_NAME", "aion"))
    parser.add_argument(
        "--api-port",
        type=whole_option(minimum=1, maximum=MAX_PORT, what="a port"),
        help="default: AION_API_PORT, else 8080",
    )
    args = parser.parse_args(argv)
    if args.api_port is None:
        try:
            args.api_port = whole_from_env(
                os.environ, "AION_API_PORT", 8080, minimum=1, maximum=MAX_PORT, what="a port"
            )
        except SettingsError as err:
            parser.exit(2, f"error: {err}\n")
    say: Say = lambda line: print(line, flush=True)  # noqa: E731, T201 - CLI progress
    try:
        stack = ComposeStack(project=args.project, api_port=args.api_port, say=say)
        if args.command == "down":
            stack.down()
            say(f"compose: project {args.project} removed (containers, network, volumes)")
            return 0
        seconds = stack.up()
    except ProvisionError as err:
        say(f"error: {err}")
        return 1
    for service, at in sorted(stack.seconds_to_healthy.items(), key=lambda item: item[1]):
        say(f"compose: {service} healthy at {at:.1f} s")
    say(f"compose: project {args.project} healthy in {seconds:.1f} s; API at {stack.api_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
