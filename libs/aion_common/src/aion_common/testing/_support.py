"""Process and filesystem helpers shared by the broker and PostgreSQL provisioners."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ProvisionError",
    "find_repo_root",
    "free_port",
    "log_tail",
    "percentile",
    "port_is_free",
    "run_command",
    "run_coroutine",
]

T = TypeVar("T")

_REPO_MARKER = Path("deploy/kafka/pom.xml")


class ProvisionError(RuntimeError):
    """A test broker or database could not be provided; the message says what to do."""


def find_repo_root(start: Path | None = None) -> Path:
    """Return the aion checkout: ``$AION_HOME``, else the nearest parent holding the Kafka pom.

    The search starts at ``start`` (default: the working directory) and falls back to this
    file's location, so an editable install finds its checkout from anywhere.
    """
    home = os.environ.get("AION_HOME")
    if home:
        root = Path(home).resolve()
        if not (root / _REPO_MARKER).is_file():
            raise ProvisionError(f"AION_HOME={home!r} has no {_REPO_MARKER}: not an aion checkout")
        return root
    for origin in (start or Path.cwd(), Path(__file__)):
        for candidate in (origin.resolve(), *origin.resolve().parents):
            if (candidate / _REPO_MARKER).is_file():
                return candidate
    raise ProvisionError(
        f"cannot find the aion checkout (a directory holding {_REPO_MARKER}) above "
        f"{Path.cwd()} or {Path(__file__).parent}; set AION_HOME to it"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``: the smallest value with at
    least ``q`` of them at or below it. The p99 of 100 samples is the 99th smallest, not the
    largest (benchmarks print the maximum apart)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q} is not in (0, 1]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server (which sets SO_REUSEADDR, as Java and PostgreSQL do) can bind it now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Without SO_REUSEADDR, connections left in TIME_WAIT by the last run make it look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", avoid: Sequence[int] = ()) -> int:
    """A TCP port on ``host`` that the kernel just handed out and nobody listens on."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note saying it does not exist yet."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * lines))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def run_command(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
) -> float:
    """Run ``argv`` to completion and return its duration in seconds.

    A non-zero exit raises :class:`ProvisionError` naming ``what``, the command, its exit
    status and the tail of its combined output.
    """
    started = time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 - argv is built by aion, never from user input
            list(argv),
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as err:
        raise ProvisionError(f"{what}: {argv[0]!r} is not installed or not on PATH") from err
    except subprocess.TimeoutExpired as err:
        command = " ".join(argv)
        raise ProvisionError(f"{what}: `{command}` did not finish in {timeout:.0f} s") from err
    if done.returncode != 0:
        output = done.stdout.decode("utf-8", errors="replace").strip().splitlines()[-30:]
        raise ProvisionError(
            f"{what} failed: `{' '.join(argv)}` exited with status {done.returncode}\n"
            + "\n".join(output)
        )
    return time.monotonic() - started


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a worker thread.

    Synchronous code (CLI tools, pytest fixtures) uses this so it never creates, replaces or
    closes the calling thread's event loop, which pytest-asyncio owns during a test session.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aion-provision") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
