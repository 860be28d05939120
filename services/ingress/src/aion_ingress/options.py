"""The ingress's own knobs: ``AION_INGRESS_*`` environment variables (command-line wins).

- ``config`` (``--config``, ``AION_INGRESS_CONFIG``): the mapping file (``config.py``).
- ``port``/``host`` (``AION_INGRESS_PORT``, ``AION_INGRESS_HOST``): ``/health/live``,
  ``/health/ready`` and ``/metrics`` (port 0: none).
- ``static_membership``/``session_timeout`` (``AION_INGRESS_STATIC_MEMBERSHIP``: auto, on or
  off; ``AION_INGRESS_SESSION_TIMEOUT_MS``, default 10 s): as the engine's (decision 22).
- ``max_batch`` (``AION_INGRESS_MAX_BATCH``, default 500): records per transaction, at most.
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
    whole_from_env,
)

__all__ = ["IngressOptions"]

MAX_BATCH = 10_000
"""The most records one transaction takes (``AION_INGRESS_MAX_BATCH``): a partition's queue
stops fetching at 4,000 records, so a larger batch is never filled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressOptions:
    """How one ingress process runs (see the module docstring)."""

    config: str = ""
    port: int = 0
    host: str = "127.0.0.1"
    static_membership: bool | None = None
    session_timeout: float = 10.0
    max_batch: int = 500

    def __post_init__(self) -> None:
        if not 0 <= self.port <= MAX_PORT:
            raise SettingsError(f"AION_INGRESS_PORT={self.port}: expected 0 to {MAX_PORT}")
        if self.session_timeout < 1:
            raise SettingsError("AION_INGRESS_SESSION_TIMEOUT_MS must be at least 1000")
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise SettingsError(
                f"AION_INGRESS_MAX_BATCH={self.max_batch}: expected 1 to {MAX_BATCH}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> IngressOptions:
        """Read the ``AION_INGRESS_*`` variables; ``overrides`` (options given) win."""
        source = os.environ if env is None else env
        timeout_ms = session_timeout_ms_from_env(source, "AION_INGRESS_SESSION_TIMEOUT_MS")
        values: dict[str, object] = {
            "config": source.get("AION_INGRESS_CONFIG", ""),
            "port": port_from_env(source, "AION_INGRESS_PORT"),
            "host": source.get("AION_INGRESS_HOST", "127.0.0.1"),
            "static_membership": _membership(source.get("AION_INGRESS_STATIC_MEMBERSHIP", "auto")),
            "session_timeout": timeout_ms / 1000,
            "max_batch": whole_from_env(
                source,
                "AION_INGRESS_MAX_BATCH",
                500,
                minimum=1,
                maximum=MAX_BATCH,
                what="a whole number of records",
                why="a partition's queue stops fetching at 4000 records",
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]  # checked by __post_init__


def _membership(raw: str) -> bool | None:
    value = raw.strip().lower()
    if value in {"on", "true", "1"}:
        return True
    if value in {"off", "false", "0"}:
        return False
    if value == "auto":
        return None
    raise SettingsError(f"AION_INGRESS_STATIC_MEMBERSHIP={raw!r}: expected on, off or auto")
