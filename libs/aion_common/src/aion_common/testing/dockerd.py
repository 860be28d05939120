"""A Docker engine for the container tests: use one that answers, else install and start one.

``python -m aion_common.testing.dockerd up --pid-file F`` (``make test`` runs it first): when a
daemon already answers it is used and nothing is started; otherwise Debian's ``docker.io``
(with ``docker-compose`` v1 and ``debootstrap``, which ``make images`` needs) is installed with
apt where ``dockerd`` is missing, ``dockerd`` is started in the background and its PID written
to ``F``. ``down --pid-file F`` stops exactly that PID (SIGTERM; containerd exits with it) and
nothing else. Where nothing can be installed or started, ``up`` says why and exits 0: the
container tests then skip with that reason (or fail, when ``CI`` is set).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aion_common.testing._support import ProvisionError, find_repo_root, log_tail, run_command

__all__ = ["DEBIAN_PACKAGES", "docker_cli", "server_version", "start_daemon", "stop_daemon"]

DEBIAN_PACKAGES = ("docker.io", "docker-compose", "debootstrap")
"""What ``up`` installs with apt when ``dockerd`` is missing."""

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0

Say = Callable[[str], None]


def docker_cli() -> str | None:
    """The ``docker`` client on PATH (any version talks to a 20.10+ daemon), or None."""
    return shutil.which("docker")


def server_version(timeout: float = 10.0) -> str | None:
    """The version of the Docker daemon that answers, or None when none does."""
    cli = docker_cli()
    if cli is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv
            [cli, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version else None


def _install(say: Say) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ProvisionError(
            "no Docker engine answers and `dockerd` is not installed; this is not a root "
            "Debian machine, so install Docker yourself (or start its daemon)"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    say(f"docker: installing Debian's {', '.join(DEBIAN_PACKAGES)} (apt-get)…")
    seconds = run_command(["apt-get", "update"], what="apt-get update", env=env)
    seconds += run_command(
        ["apt-get", "install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES],
        what="installing Docker with apt-get",
        env=env,
    )
    say(f"docker: installed in {seconds:.1f} s")


def start_daemon(log_path: Path, *, say: Say) -> int:
    """Start ``dockerd`` in the background (installing it if needed); return its PID."""
    if shutil.which("dockerd") is None:
        _install(say)
    if os.geteuid() != 0:
        raise ProvisionError("no Docker engine answers, and starting `dockerd` needs root")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["dockerd"],  # noqa: S607 - found on PATH above
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = started + _START_TIMEOUT
    while (version := server_version(timeout=2.0)) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_daemon(process.pid, say=say)
            raise ProvisionError(
                f"dockerd (pid {process.pid}) did not answer within {_START_TIMEOUT:.0f} s; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.2)
    say(
        f"docker: started dockerd {version} (pid {process.pid}) in "
        f"{time.monotonic() - started:.1f} s; log {log_path}"
    )
    return process.pid


def stop_daemon(pid: int, *, say: Say) -> None:
    """SIGTERM ``pid`` (a dockerd this module started), SIGKILL it after 30 s.

    A PID whose process is not ``dockerd`` (a stale PID file whose number was reused) is left
    alone.
    """
    started = time.monotonic()
    comm = Path(f"/proc/{pid}/comm")
    if comm.exists() and comm.read_text().strip() != "dockerd":
        say(f"docker: pid {pid} is no longer a dockerd ({comm.read_text().strip()}); left alone")
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        say(f"docker: dockerd (pid {pid}) had already exited")
        return
    while _alive(pid):
        if time.monotonic() - started > _STOP_TIMEOUT:
            os.kill(pid, signal.SIGKILL)
            say(f"docker: dockerd (pid {pid}) ignored SIGTERM for {_STOP_TIMEOUT:.0f} s; killed")
            return
        time.sleep(0.1)
    say(f"docker: stopped dockerd (pid {pid}) in {time.monotonic() - started:.1f} s")


def _alive(pid: int) -> bool:
    try:
        waited, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        # Not our child (started by an earlier `up`): look at /proc instead.
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().split()[2] != "Z"
    return waited == 0


def main(argv: Sequence[str] | None = None) -> int:
    """``up`` / ``down``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m aion_common.testing.dockerd")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--pid-file", type=Path, required=True)
    args = parser.parse_args(argv)
    say: Say = lambda line: print(line, flush=True)  # noqa: E731, T201 - CLI progress
    pid_file: Path = args.pid_file
    if args.command == "down":
        if pid_file.exists():
            stop_daemon(int(pid_file.read_text().strip()), say=say)
            pid_file.unlink()
        return 0
    version = server_version()
    if version is not None:
        say(f"docker: a Docker engine ({version}) answers; using it")
        return 0
    try:
        log = find_repo_root() / ".aion/docker/dockerd.log"
        pid = start_daemon(log, say=say)
    except ProvisionError as err:
        say(f"docker: {err}; the container tests will skip (fail when CI is set)")
        return 0
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{pid}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
