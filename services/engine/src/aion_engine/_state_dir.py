"""One engine process per state directory: a lock file held for the process's life.

Two engines sharing ``AION_STATE_DIR`` and ``AION_INSTANCE_ID`` would write the same SQLite
files for partitions both believe they own during a rebalance; the second to start refuses,
naming the directory.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from aion_common.domain import InfrastructureError

__all__ = ["StateDirLock"]


class StateDirLock:
    """An exclusive ``flock`` on ``<directory>/.lock``; released when the process ends."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise (not retriable) if another process holds it."""
        if self._fd is not None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InfrastructureError(
                f"cannot use the state directory {self.directory} ({err.strerror}): set "
                "AION_STATE_DIR to a writable directory (a volume, to keep restarts warm)",
                retriable=False,
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise InfrastructureError(
                f"state directory {self.directory} is in use by another engine process with "
                "the same AION_INSTANCE_ID: give each engine its own AION_INSTANCE_ID (or "
                "AION_STATE_DIR)",
                retriable=False,
            ) from err
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
