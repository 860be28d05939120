"""The watcher's own knobs, read from ``AION_WATCHER_*`` environment variables.

Like the reference's ``SignalDeliveryConfig``: a failed produce is retried after
``initial_backoff``, doubling up to ``max_backoff``. The sweep runs every ``sweep_interval`` and
re-issues a record its parent has not recorded ``grace_period`` after it was issued.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aion_common.settings import SettingsError

__all__ = ["WatcherConfig"]

_MS = 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WatcherConfig:
    """Delivery backoff, reconciliation timing, and the metrics port (0: no HTTP endpoint)."""

    initial_backoff: float = 0.05
    max_backoff: float = 5.0
    grace_period: float = 10.0
    sweep_interval: float = 2.0
    blind_reissue_limit: int = 10
    port: int = 0
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise SettingsError("watcher backoff: need 0 < initial backoff <= max backoff")
        if self.grace_period <= 0 or self.sweep_interval <= 0:
            raise SettingsError("watcher grace period and sweep interval must be positive")
        if self.blind_reissue_limit < 0 or not 0 <= self.port <= 65535:  # noqa: PLR2004
            raise SettingsError("watcher blind re-issue limit >= 0 and port 0..65535")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WatcherConfig:
        """Read ``AION_WATCHER_{INITIAL_BACKOFF_MS,MAX_BACKOFF_MS,GRACE_MS,SWEEP_MS,PORT,HOST}``."""
        source = os.environ if env is None else env
        d = cls()
        return cls(
            initial_backoff=_ms(source, "AION_WATCHER_INITIAL_BACKOFF_MS", d.initial_backoff),
            max_backoff=_ms(source, "AION_WATCHER_MAX_BACKOFF_MS", d.max_backoff),
            grace_period=_ms(source, "AION_WATCHER_GRACE_MS", d.grace_period),
            sweep_interval=_ms(source, "AION_WATCHER_SWEEP_MS", d.sweep_interval),
            blind_reissue_limit=int(
                _num(source, "AION_WATCHER_BLIND_LIMIT", d.blind_reissue_limit)
            ),
            port=int(_num(source, "AION_WATCHER_PORT", d.port)),
            host=source.get("AION_WATCHER_HOST", d.host),
        )


def _ms(source: Mapping[str, str], name: str, default_s: float) -> float:
    return _num(source, name, default_s * _MS) / _MS


def _num(source: Mapping[str, str], name: str, default: float) -> float:
    raw = source.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as err:
        raise SettingsError(f"{name}={raw!r}: expected a number") from err
