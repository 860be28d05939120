"""One ``aion dev`` per home: a lock file, and a pid file to clean up after a killed one.

The lock (``home/aion-dev.lock``, ``flock``) is held while a stack runs; the kernel drops it
when the process dies, however it dies. The pid file (``home/aion-dev.pids``) lists the
supervisor and every child it launched, rewritten at each (re)start. If it is still there
when the next stack takes the lock, the previous supervisor was killed before it could stop
its children: any of them still alive (PR_SET_PDEATHSIG normally prevents that) is stopped,
by process group, before anything new starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

__all__ = ["HomeBusy", "HomeLock", "PidFile"]

_log = logging.getLogger("aion.dev")
# A stale pid is only signalled if its command line looks like one of ours (pids are reused).
_OURS = (b"aion", b"kafka")


class HomeBusy(RuntimeError):
    """Another ``aion dev`` is running with this home directory."""


class HomeLock:
    """An exclusive, non-blocking ``flock`` on ``home/aion-dev.lock``."""

    def __init__(self, home: Path) -> None:
        self.path = home / "aion-dev.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`HomeBusy` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise HomeBusy(
                f"another aion dev (pid {holder}) is running with home {self.path.parent}; "
                "stop it first or pass a different --home"
            ) from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class PidFile:
    """``home/aion-dev.pids``: JSON ``{"supervisor": pid, "children": {name: pid}}``."""

    def __init__(self, home: Path) -> None:
        self.path = home / "aion-dev.pids"

    def write(self, children: Mapping[str, int]) -> None:
        """Record the current children (atomically: write, then rename)."""
        partial = self.path.with_suffix(".partial")
        body = {"supervisor": os.getpid(), "children": dict(children)}
        partial.write_text(json.dumps(body) + "\n", encoding="utf-8")
        partial.replace(self.path)

    def read(self) -> dict[str, int]:
        """The children recorded, or nothing if there is no (readable) file."""
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        children = body.get("children", {}) if isinstance(body, dict) else {}
        return {str(k): int(v) for k, v in children.items() if isinstance(v, int)}

    def remove(self) -> None:
        """Delete the file (idempotent)."""
        self.path.unlink(missing_ok=True)

    def clean_stale(self, grace: float = 10.0) -> list[str]:
        """Stop children a killed supervisor left alive; return their names. Hold the lock."""
        stale = {name: pid for name, pid in self.read().items() if _is_ours(pid)}
        for name, pid in stale.items():
            _log.warning(
                "stopping %s (pid %d) left by a killed aion dev",
                name,
                pid,
                extra={"child": name, "pid": pid},
            )
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in stale.values()):
            time.sleep(0.1)
        for pid in stale.values():
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        self.remove()
        return sorted(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[-1].split()[0]


def _is_ours(pid: int) -> bool:
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(marker in cmdline for marker in _OURS)


def _signal(pid: int, sig: int) -> None:
    # Children lead their own process group; fall back to the pid if the group is gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            os.kill(pid, sig)
