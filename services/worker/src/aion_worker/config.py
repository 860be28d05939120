"""The worker's own knobs: command-line options over ``AION_WORKER_*`` environment variables.

- ``task_queue`` (``--task-queue``, ``AION_TASK_QUEUE``, default ``default``): the queue whose
  topic ``<prefix>.tasks.<queue>`` this worker's group consumes.
- ``max_concurrent`` (``--max-concurrent``, ``AION_WORKER_MAX_CONCURRENT``, default 100):
  attempts running at once (async ones on the loop, sync ones in ``threads`` threads,
  ``AION_WORKER_THREADS``, default ``min(32, max_concurrent)``).
- ``shutdown_grace`` (``AION_WORKER_SHUTDOWN_GRACE_MS``, default 10 s): on SIGTERM, running
  attempts get this long to finish; the rest are abandoned (not reported, not committed: the
  next owner of their partition runs them again).
- ``static_membership``/``session_timeout`` (``AION_WORKER_STATIC_MEMBERSHIP``,
  ``AION_WORKER_SESSION_TIMEOUT_MS``): as the engine's (decision 22).
- ``port``/``host`` (``AION_WORKER_PORT``, ``AION_WORKER_HOST``): health and metrics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aion_common.domain import DEFAULT_TASK_QUEUE, InvalidInput, validate_task_queue
from aion_common.settings import (
    MAX_PORT,
    SettingsError,
    parse_whole,
    port_from_env,
    session_timeout_ms_from_env,
    whole_from_env,
    whole_option,
)

__all__ = ["WorkerConfig", "max_concurrent_option"]

_MAX_GRACE_MS = 300_000
MAX_CONCURRENT = 10_000
"""The most attempts one worker runs at once (``AION_WORKER_MAX_CONCURRENT``): each is a task
on one event loop, with twice as many fetched tasks waiting; more is a second replica's work."""
_CONCURRENT_WHAT = "a whole number of attempts"
_CONCURRENT_WHY = "one event loop runs them; more is a second replica's work"
max_concurrent_option = whole_option(
    minimum=1, maximum=MAX_CONCURRENT, what=_CONCURRENT_WHAT, why=_CONCURRENT_WHY
)
"""``--max-concurrent``'s argparse type: the range of ``AION_WORKER_MAX_CONCURRENT``."""
MAX_THREADS = 1024
"""The most threads for plain-``def`` activities (``AION_WORKER_THREADS``): OS threads, each
with its own stack."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """How one worker runs (see the module docstring for each field's variable)."""

    task_queue: str = DEFAULT_TASK_QUEUE
    max_concurrent: int = 100
    threads: int | None = None
    shutdown_grace: float = 10.0
    static_membership: bool | None = None
    session_timeout: float = 10.0
    port: int = 0
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        try:
            validate_task_queue(self.task_queue)
        except InvalidInput as err:
            raise SettingsError(str(err)) from err
        if not 1 <= self.max_concurrent <= MAX_CONCURRENT:
            raise SettingsError(
                f"worker max concurrent (--max-concurrent, AION_WORKER_MAX_CONCURRENT) "
                f"{self.max_concurrent}: expected 1 to {MAX_CONCURRENT}"
            )
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise SettingsError(f"AION_WORKER_THREADS={self.threads}: expected 1 to {MAX_THREADS}")
        if self.shutdown_grace < 0 or self.session_timeout < 1:
            raise SettingsError("worker shutdown grace >= 0 and session timeout >= 1 s")
        if not 0 <= self.port <= MAX_PORT:
            raise SettingsError(f"AION_WORKER_PORT={self.port}: expected 0 to {MAX_PORT}")

    @property
    def thread_count(self) -> int:
        """Threads for sync activities."""
        return self.threads if self.threads is not None else min(32, self.max_concurrent)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> WorkerConfig:
        """Read the ``AION_WORKER_*`` variables; ``overrides`` (command-line options) win."""
        source = os.environ if env is None else env
        d = cls()
        timeout_ms = session_timeout_ms_from_env(source, "AION_WORKER_SESSION_TIMEOUT_MS")
        values: dict[str, object] = {
            "task_queue": source.get("AION_TASK_QUEUE", d.task_queue),
            "max_concurrent": whole_from_env(
                source,
                "AION_WORKER_MAX_CONCURRENT",
                d.max_concurrent,
                minimum=1,
                maximum=MAX_CONCURRENT,
                what=_CONCURRENT_WHAT,
                why=_CONCURRENT_WHY,
            ),
            "threads": _threads(source),
            "shutdown_grace": _shutdown_grace_ms(source) / 1000,
            "static_membership": _membership(source.get("AION_WORKER_STATIC_MEMBERSHIP", "auto")),
            "session_timeout": timeout_ms / 1000,
            "port": port_from_env(source, "AION_WORKER_PORT"),
            "host": source.get("AION_WORKER_HOST", d.host),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]  # checked by __post_init__


def _threads(source: Mapping[str, str]) -> int | None:
    """``AION_WORKER_THREADS``; None (``min(32, max_concurrent)``) when unset or blank."""
    raw = source.get("AION_WORKER_THREADS", "")
    if not raw.strip():
        return None
    return parse_whole(
        "AION_WORKER_THREADS",
        raw,
        minimum=1,
        maximum=MAX_THREADS,
        what="a whole number of threads",
        why="OS threads, each with its own stack",
    )


def _shutdown_grace_ms(source: Mapping[str, str]) -> int:
    return whole_from_env(
        source,
        "AION_WORKER_SHUTDOWN_GRACE_MS",
        10_000,
        minimum=0,
        maximum=_MAX_GRACE_MS,
        what="whole milliseconds",
        # no fetch while draining: past max.poll.interval.ms the group takes the partitions
        why="5 min, aiokafka's max.poll.interval.ms, after which the partitions move anyway",
    )


def _membership(raw: str) -> bool | None:
    value = raw.strip().lower()
    if value in {"on", "true", "1"}:
        return True
    if value in {"off", "false", "0"}:
        return False
    if value == "auto":
        return None
    raise SettingsError(f"AION_WORKER_STATIC_MEMBERSHIP={raw!r}: expected on, off or auto")
