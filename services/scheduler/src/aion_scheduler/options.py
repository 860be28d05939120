"""The scheduler's own knobs: ``AION_SCHEDULER_*`` environment variables.

- ``port``/``host`` (``AION_SCHEDULER_PORT``, ``AION_SCHEDULER_HOST``): ``/health/live``,
  ``/health/ready`` and ``/metrics`` (port 0: none).
- ``static_membership``/``session_timeout`` (``AION_SCHEDULER_STATIC_MEMBERSHIP``: auto, on or
  off; ``AION_SCHEDULER_SESSION_TIMEOUT_MS``, default 10 s): as the engine's (decision 22).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aion_common.settings import (
    MAX_PORT,
    SettingsError,
    port_from_env,
    session_timeout_ms_from_env,
)

__all__ = ["SchedulerOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerOptions:
    """How one scheduler process runs (see the module docstring)."""

    port: int = 0
    host: str = "127.0.0.1"
    static_membership: bool | None = None
    session_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= MAX_PORT:
            raise SettingsError(f"AION_SCHEDULER_PORT={self.port}: expected 0 to {MAX_PORT}")
        if self.session_timeout < 1:
            raise SettingsError("AION_SCHEDULER_SESSION_TIMEOUT_MS must be at least 1000")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SchedulerOptions:
        """Read the ``AION_SCHEDULER_*`` variables."""
        source = os.environ if env is None else env
        membership = source.get("AION_SCHEDULER_STATIC_MEMBERSHIP", "auto").strip().lower()
        if membership not in {"auto", "on", "off", "true", "false", "1", "0"}:
            raise SettingsError(
                f"AION_SCHEDULER_STATIC_MEMBERSHIP={membership!r}: expected on, off or auto"
            )
        static = None if membership == "auto" else membership in {"on", "true", "1"}
        timeout_ms = session_timeout_ms_from_env(source, "AION_SCHEDULER_SESSION_TIMEOUT_MS")
        return cls(
            port=port_from_env(source, "AION_SCHEDULER_PORT"),
            host=source.get("AION_SCHEDULER_HOST", "127.0.0.1"),
            static_membership=static,
            session_timeout=timeout_ms / 1000,
        )
