"""The watcher's own knobs, read from ``AION_WATCHER_*`` environment variables.

Like the reference's ``SignalDeliveryConfig``: a failed produce is retried after
``initial_backoff``, doubling up to ``max_backoff``. The sweep runs every ``sweep_interval`` and
re-issues a record its parent has not recorded ``grace_period`` after it was issued (a record to
a parent on another watcher's partition: ``grace_period`` after the first issue, then twice as
long after each blind re-issue, at most ``blind_reissue_limit`` times).

Group membership: with ``static_membership`` the consumer joins as ``<group>.<AION_INSTANCE_ID>``
(KIP-345), so a watcher restarted after a crash takes its partitions back at once instead of
waiting out its dead predecessor's ``session_timeout``. ``AION_INSTANCE_ID`` must then be unique
per watcher: two members with one id replace each other in the group every heartbeat (measured:
both keep rejoining, each re-reading every partition). Left unset (``None``) it is on exactly
when ``AION_INSTANCE_ID`` is set to something other than its default, ``aion-1``.
``engine_reports_terminals`` (on by default) says the engines put each child's
``RecordChildTerminal`` in the transaction that writes its terminal (decision 44), so the
watcher issues none itself and only sweeps; turn it off for engines older than that.
``fetch_max_wait`` bounds how long a terminal can wait in the broker behind a fetch
already in flight for other partitions (aiokafka keeps one fetch per broker in flight), and
``fetch_min_bytes`` how much a fetch waits to collect within it. Left unset they follow
``engine_reports_terminals``: while the watcher issues every record itself its reading is on
each child's path (10 ms, 1 byte: a fetch returns with the first record); while the engines
report and the watcher only sweeps, nothing waits on it within the grace period, so it reads
in fewer, larger fetches (200 ms, 256 KiB: decision 59).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from aion_common.settings import (
    MAX_DURATION_MS,
    MAX_PORT,
    MAX_SESSION_TIMEOUT_MS,
    SettingsError,
)

__all__ = ["WatcherConfig"]

_MS = 1000.0
_MIN_SESSION_TIMEOUT_MS = 1000
_ISSUE_FETCH_WAIT = 0.01
_SWEEP_FETCH_WAIT = 0.2
_SWEEP_FETCH_MIN_BYTES = 256 * 1024
_MAX_FETCH_MIN_BYTES = 16 * 1024 * 1024
MAX_BLIND_LIMIT = 32
"""The most blind re-issues (``AION_WATCHER_BLIND_LIMIT``): the n-th waits 2**(n-1) grace
periods, so the 32nd comes 2**31 grace periods (680 years at 10 s) after the first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WatcherConfig:
    """Delivery backoff, reconciliation timing, and the metrics port (0: no HTTP endpoint)."""

    initial_backoff: float = 0.05
    max_backoff: float = 5.0
    grace_period: float = 10.0
    sweep_interval: float = 2.0
    blind_reissue_limit: int = 4
    static_membership: bool | None = None  # None: on when AION_INSTANCE_ID is not the default
    session_timeout: float = 10.0
    fetch_max_wait: float | None = None  # None: by engine_reports_terminals (above)
    fetch_min_bytes: int | None = None
    engine_reports_terminals: bool = True
    port: int = 0
    host: str = "127.0.0.1"
    changelog: bool | None = None
    """Keep the fold's facts in ``<prefix>.watcher-state`` and a local store (None: unless
    ``AION_TRANSACTIONS=off``, a broker that may not compact either)."""

    def __post_init__(self) -> None:
        durations = [self.initial_backoff, self.max_backoff, self.grace_period]
        durations += [self.sweep_interval, self.session_timeout, self.fetch_wait]
        # nan fails every comparison, so the range checks below would let it through
        if not all(math.isfinite(d) for d in durations):
            raise SettingsError("watcher durations must be finite")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise SettingsError("watcher backoff: need 0 < initial backoff <= max backoff")
        if self.grace_period <= 0 or self.sweep_interval <= 0:
            raise SettingsError("watcher grace period and sweep interval must be positive")
        if not 0 <= self.port <= MAX_PORT:
            raise SettingsError(f"watcher port: expected 0 to {MAX_PORT}")
        if not 1 <= self.session_timeout <= MAX_SESSION_TIMEOUT_MS / _MS:
            raise SettingsError(
                f"watcher session timeout {self.session_timeout} s: expected 1 s to "
                f"{MAX_SESSION_TIMEOUT_MS // 60_000} min"
            )
        if not 0 <= self.fetch_wait <= self.session_timeout:
            raise SettingsError("watcher fetch max wait: expected 0 to the session timeout")
        if not 0 <= self.blind_reissue_limit <= MAX_BLIND_LIMIT:
            raise SettingsError(f"watcher blind re-issue limit: expected 0 to {MAX_BLIND_LIMIT}")
        if not 1 <= self.fetch_bytes <= _MAX_FETCH_MIN_BYTES:
            raise SettingsError(f"watcher fetch min bytes must be 1..{_MAX_FETCH_MIN_BYTES}")

    @property
    def fetch_wait(self) -> float:
        """The consumer's ``fetch_max_wait`` in seconds, resolved (see the module docstring)."""
        if self.fetch_max_wait is not None:
            return self.fetch_max_wait
        return _SWEEP_FETCH_WAIT if self.engine_reports_terminals else _ISSUE_FETCH_WAIT

    @property
    def fetch_bytes(self) -> int:
        """The consumer's ``fetch_min_bytes``, resolved (see the module docstring)."""
        if self.fetch_min_bytes is not None:
            return self.fetch_min_bytes
        return _SWEEP_FETCH_MIN_BYTES if self.engine_reports_terminals else 1

    @property
    def heartbeat_interval(self) -> float:
        """A fifth of the session timeout (Kafka wants at most a third), at most 3 s."""
        return min(3.0, self.session_timeout / 5)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WatcherConfig:
        """Read the ``AION_WATCHER_*`` variables (README, configuration table).

        ``{INITIAL_BACKOFF,MAX_BACKOFF,GRACE,SWEEP,SESSION_TIMEOUT,FETCH_WAIT}_MS``,
        ``FETCH_MIN_BYTES``,
        ``BLIND_LIMIT``, ``STATIC_MEMBERSHIP`` (``auto``, ``1``/``0``, ``true``/``false``),
        ``ENGINE_REPORTS`` (``1``/``0``),
        ``PORT``, ``HOST``, ``CHANGELOG`` (``auto``, or on/off).
        """
        source = os.environ if env is None else env
        d = cls()
        return cls(
            initial_backoff=_ms(source, "AION_WATCHER_INITIAL_BACKOFF_MS", d.initial_backoff),
            max_backoff=_ms(source, "AION_WATCHER_MAX_BACKOFF_MS", d.max_backoff),
            grace_period=_ms(source, "AION_WATCHER_GRACE_MS", d.grace_period),
            sweep_interval=_ms(source, "AION_WATCHER_SWEEP_MS", d.sweep_interval),
            blind_reissue_limit=_whole(
                source, "AION_WATCHER_BLIND_LIMIT", d.blind_reissue_limit, high=MAX_BLIND_LIMIT
            ),
            static_membership=_flag(source, "AION_WATCHER_STATIC_MEMBERSHIP", d.static_membership),
            session_timeout=_ms(
                source,
                "AION_WATCHER_SESSION_TIMEOUT_MS",
                d.session_timeout,
                low=_MIN_SESSION_TIMEOUT_MS,
                high=MAX_SESSION_TIMEOUT_MS,
            ),
            fetch_max_wait=_ms_or_none(source, "AION_WATCHER_FETCH_WAIT_MS"),
            fetch_min_bytes=_whole_or_none(
                source, "AION_WATCHER_FETCH_MIN_BYTES", low=1, high=_MAX_FETCH_MIN_BYTES
            ),
            engine_reports_terminals=bool(
                _flag(source, "AION_WATCHER_ENGINE_REPORTS", d.engine_reports_terminals)
            ),
            port=_whole(source, "AION_WATCHER_PORT", d.port, high=MAX_PORT),
            host=source.get("AION_WATCHER_HOST", d.host),
            changelog=_flag(source, "AION_WATCHER_CHANGELOG", d.changelog),
        )


# Each parser refuses what its variable cannot mean with a SettingsError naming the variable:
# float() reads "inf", "nan" and "1e400" (inf) without complaint, and int() of those raises
# OverflowError/ValueError, which would surface as a crash instead of a settings error.


def _ms(
    source: Mapping[str, str],
    name: str,
    default_s: float,
    *,
    zero: bool = False,
    low: float = 0,
    high: int = MAX_DURATION_MS,
) -> float:
    """A duration given in milliseconds, in seconds: finite and positive (or 0 with ``zero``),
    at least ``low`` and at most ``high`` ms (100 years unless told: the sweep's arithmetic
    and the records' 64-bit times stay finite)."""
    value = _num(source, name, default_s * _MS)
    if value < 0 or (value == 0 and not zero):
        expected = ">= 0" if zero else "> 0"
        raise SettingsError(f"{name}={source.get(name)!r}: expected milliseconds {expected}")
    if not low <= value <= high:
        raise SettingsError(
            f"{name}={source.get(name)!r}: expected milliseconds from {low:g} to {high}"
        )
    return value / _MS


def _ms_or_none(source: Mapping[str, str], name: str) -> float | None:
    return None if _blank(source, name) else _ms(source, name, 0.0, zero=True)


def _whole(
    source: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int | None = None
) -> int:
    """A whole number within ``low``..``high`` (no upper bound when ``high`` is None)."""
    value = _num(source, name, default)
    if value != int(value) or value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise SettingsError(f"{name}={source.get(name)!r}: expected a whole number {bounds}")
    return int(value)


def _whole_or_none(source: Mapping[str, str], name: str, *, low: int, high: int) -> int | None:
    return None if _blank(source, name) else _whole(source, name, low, low=low, high=high)


def _blank(source: Mapping[str, str], name: str) -> bool:
    return not source.get(name, "").strip()


def _num(source: Mapping[str, str], name: str, default: float) -> float:
    """A finite number; ``default`` when the variable is unset or blank."""
    raw = source.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise SettingsError(f"{name}={raw!r}: expected a number") from err
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r}: expected a finite number")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(source: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = source.get(name)
    if raw is None or raw.strip().lower() == "auto":
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r}: expected auto, 1/0, true/false, yes/no or on/off")
