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

from aion_common.settings import SettingsError, session_timeout_ms_from_env

__all__ = ["IngressOptions"]

_MAX_PORT = 65535


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
        if not 0 <= self.port <= _MAX_PORT:
            raise SettingsError(f"AION_INGRESS_PORT={self.port}: expected 0..65535")
        if self.session_timeout < 1:
            raise SettingsError("AION_INGRESS_SESSION_TIMEOUT_MS must be at least 1000")
        if self.max_batch < 1:
            raise SettingsError("AION_INGRESS_MAX_BATCH must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> IngressOptions:
        """Read the ``AION_INGRESS_*`` variables; ``overrides`` (options given) win."""
        source = os.environ if env is None else env
        timeout_ms = session_timeout_ms_from_env(source, "AION_INGRESS_SESSION_TIMEOUT_MS")
        values: dict[str, object] = {
            "config": source.get("AION_INGRESS_CONFIG", ""),
            "port": _int(source, "AION_INGRESS_PORT", 0),
            "host": source.get("AION_INGRESS_HOST", "127.0.0.1"),
            "static_membership": _membership(source.get("AION_INGRESS_STATIC_MEMBERSHIP", "auto")),
            "session_timeout": timeout_ms / 1000,
            "max_batch": _int(source, "AION_INGRESS_MAX_BATCH", 500),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]  # checked by __post_init__


def _int(source: Mapping[str, str], name: str, default: int) -> int:
    raw = source.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw.strip())
    except ValueError as err:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from err


def _membership(raw: str) -> bool | None:
    value = raw.strip().lower()
    if value in {"on", "true", "1"}:
        return True
    if value in {"off", "false", "0"}:
        return False
    if value == "auto":
        return None
    raise SettingsError(f"AION_INGRESS_STATIC_MEMBERSHIP={raw!r}: expected on, off or auto")
