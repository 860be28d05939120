"""One settings object for every aion service, read from ``AION_*`` environment variables.

Every variable is documented in the README's configuration table; this module is the
source of truth for names and defaults. Invalid values raise :class:`SettingsError` naming
the variable, so a misconfigured service refuses to start with a clear message.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from aion_common.domain.durations import MAX_DURATION_MS
from aion_common.domain.payload import DEFAULT_PAYLOAD_LIMIT

__all__ = [
    "DEFAULT_PAYLOAD_LIMIT",
    "DEFAULT_RETENTION_MS",
    "MAX_DURATION_MS",
    "MAX_PARTITIONS",
    "MAX_PAYLOAD_LIMIT_BYTES",
    "MAX_PORT",
    "MAX_REPLICATION_FACTOR",
    "MAX_SESSION_TIMEOUT_MS",
    "MIN_PAYLOAD_LIMIT_BYTES",
    "Settings",
    "SettingsError",
    "TransactionMode",
    "parse_duration_ms",
    "parse_seconds",
    "parse_whole",
    "port_from_env",
    "seconds_option",
    "session_timeout_ms_from_env",
    "whole_from_env",
    "whole_option",
]

_N = TypeVar("_N", int, float)
TransactionMode = Literal["auto", "on", "off"]
_TRANSACTION_MODES: tuple[TransactionMode, ...] = ("auto", "on", "off")

# Client security options passed straight through to aiokafka, by environment variable.
_SECURITY_VARS: Mapping[str, str] = {
    "AION_KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "AION_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "AION_KAFKA_SASL_USERNAME": "sasl_plain_username",
    "AION_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "AION_KAFKA_SSL_CAFILE": "ssl_cafile",
    "AION_KAFKA_SSL_CERTFILE": "ssl_certfile",
    "AION_KAFKA_SSL_KEYFILE": "ssl_keyfile",
}


DEFAULT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000
"""How long a closed workflow is kept before it is purged (``AION_RETENTION``): 7 days."""

_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_MAX_DURATION_DAYS = MAX_DURATION_MS // _DURATION_UNITS["d"]
MAX_SESSION_TIMEOUT_MS = 30 * 60 * 1000
"""The longest consumer-group session timeout a service takes: the broker's default
``group.max.session.timeout.ms`` (30 min), past which it refuses the group join."""
_MIN_SESSION_TIMEOUT_MS = 1000
MAX_PARTITIONS = 1000
"""The most partitions an aion topic may have (``AION_PARTITIONS``): each is an engine,
watcher and projector work unit with its own local store, and ``aion dev`` takes as many."""
MAX_REPLICATION_FACTOR = 32767
"""The largest replication factor (``AION_REPLICATION_FACTOR``, ``AION_MIN_INSYNC_REPLICAS``):
Kafka's CreateTopics request carries it as a 16-bit signed integer."""
MIN_PAYLOAD_LIMIT_BYTES = 1024
"""The smallest ``AION_PAYLOAD_LIMIT_BYTES`` taken from the environment: below 1 KiB an
ordinary input or error does not fit (a unit typo such as ``2`` for 2 MiB, caught at start)."""
MAX_PAYLOAD_LIMIT_BYTES = 8 * 1024 * 1024
"""The largest ``AION_PAYLOAD_LIMIT_BYTES``, as ``AION_PACKAGE_LIMIT_BYTES``'s: aion's records
are then up to 4 x 8 + 1 = 33 MiB (:func:`aion_common.kafka.options.max_record_bytes`), within
the consumers' 50 MiB ``fetch.max.bytes`` and the broker's 100 MiB ``socket.request.max.bytes``
defaults (Kafka's 1 MiB ``message.max.bytes`` is raised per topic by aion itself)."""
_PAYLOAD_WHY = "one record carries up to 4, so 33 MiB at most: within Kafka's request sizes"
MAX_PORT = 65535


class SettingsError(ValueError):
    """An ``AION_*`` variable holds a value aion cannot use."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Configuration shared by the engine, watcher, projector and tools."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "aion"
    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int | None = None
    """``min.insync.replicas`` of the topics aion creates; None: ``min(2, replication_factor)``."""
    database_url: str = "sqlite+aiosqlite:///.aion/aion.db"
    payload_limit_bytes: int = DEFAULT_PAYLOAD_LIMIT
    transactions: TransactionMode = "auto"
    instance_id: str = "aion-1"
    kafka_security: Mapping[str, str] = field(default_factory=dict)
    state_dir: str = ".aion/state"
    """Where services keep their local state stores (``AION_STATE_DIR``): a cache of their
    changelog topics, rebuilt from Kafka when missing."""
    retention_ms: int | None = DEFAULT_RETENTION_MS
    """How long a closed workflow is kept before it is purged (``AION_RETENTION``); None
    keeps closed workflows for ever."""

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise SettingsError("AION_KAFKA_BOOTSTRAP must name at least one broker")
        if not self.topic_prefix or any(c not in _TOPIC_CHARS for c in self.topic_prefix):
            raise SettingsError(
                f"AION_TOPIC_PREFIX={self.topic_prefix!r}: use letters, digits, '.', '_' or '-'"
            )
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise SettingsError(
                f"AION_PARTITIONS={self.partitions}: expected 1 to {MAX_PARTITIONS}"
            )
        if not 1 <= self.replication_factor <= MAX_REPLICATION_FACTOR:
            raise SettingsError(
                f"AION_REPLICATION_FACTOR={self.replication_factor}: expected 1 to "
                f"{MAX_REPLICATION_FACTOR}"
            )
        isr = self.min_insync_replicas
        if isr is not None and not 1 <= isr <= self.replication_factor:
            raise SettingsError(
                f"AION_MIN_INSYNC_REPLICAS={isr}: must be between 1 and "
                f"AION_REPLICATION_FACTOR={self.replication_factor} (a write needs that many "
                "replicas in sync)"
            )
        if not 1 <= self.payload_limit_bytes <= MAX_PAYLOAD_LIMIT_BYTES:
            # from the environment the floor is MIN_PAYLOAD_LIMIT_BYTES; tests build less
            raise SettingsError(
                f"AION_PAYLOAD_LIMIT_BYTES={self.payload_limit_bytes}: expected 1 to "
                f"{MAX_PAYLOAD_LIMIT_BYTES}"
            )
        if self.transactions not in _TRANSACTION_MODES:
            raise SettingsError(
                f"AION_TRANSACTIONS={self.transactions!r}: expected one of {_TRANSACTION_MODES}"
            )
        if not self.state_dir.strip():
            raise SettingsError("AION_STATE_DIR must name a directory")
        if self.retention_ms is not None and self.retention_ms < 1:
            raise SettingsError(f"AION_RETENTION={self.retention_ms}ms: must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: the process environment); a numeric variable
        unset or blank takes its default."""
        source = os.environ if env is None else env
        defaults = cls()
        mode = source.get("AION_TRANSACTIONS", defaults.transactions)
        if mode not in _TRANSACTION_MODES:
            raise SettingsError(f"AION_TRANSACTIONS={mode!r}: expected one of {_TRANSACTION_MODES}")
        replicas_why = "Kafka carries a replication factor as a 16-bit number"
        return cls(
            bootstrap_servers=source.get("AION_KAFKA_BOOTSTRAP", defaults.bootstrap_servers),
            topic_prefix=source.get("AION_TOPIC_PREFIX", defaults.topic_prefix),
            partitions=whole_from_env(
                source,
                "AION_PARTITIONS",
                defaults.partitions,
                minimum=1,
                maximum=MAX_PARTITIONS,
                why="each partition is a work unit with a local store in every service",
            ),
            replication_factor=whole_from_env(
                source,
                "AION_REPLICATION_FACTOR",
                defaults.replication_factor,
                minimum=1,
                maximum=MAX_REPLICATION_FACTOR,
                why=replicas_why,
            ),
            min_insync_replicas=(
                parse_whole(
                    "AION_MIN_INSYNC_REPLICAS",
                    source["AION_MIN_INSYNC_REPLICAS"],
                    minimum=1,
                    maximum=MAX_REPLICATION_FACTOR,
                    why=replicas_why,
                )
                if source.get("AION_MIN_INSYNC_REPLICAS", "").strip()
                else None
            ),
            database_url=source.get("AION_DATABASE_URL", defaults.database_url),
            payload_limit_bytes=whole_from_env(
                source,
                "AION_PAYLOAD_LIMIT_BYTES",
                defaults.payload_limit_bytes,
                minimum=MIN_PAYLOAD_LIMIT_BYTES,
                maximum=MAX_PAYLOAD_LIMIT_BYTES,
                what="a whole number of bytes",
                why=_PAYLOAD_WHY,
            ),
            transactions=mode,
            instance_id=source.get("AION_INSTANCE_ID", defaults.instance_id),
            kafka_security={
                option: source[var] for var, option in _SECURITY_VARS.items() if var in source
            },
            state_dir=source.get("AION_STATE_DIR", defaults.state_dir),
            retention_ms=_retention(source),
        )

    @property
    def topic_min_insync_replicas(self) -> int:
        """What aion's topics are created with: the setting, else ``min(2, RF)`` (with three
        replicas, one broker may be lost without refusing or losing a write)."""
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return min(2, self.replication_factor)

    def kafka_client_options(self) -> dict[str, str]:
        """Options every aiokafka client gets: bootstrap servers plus security pass-through."""
        return {"bootstrap_servers": self.bootstrap_servers, **self.kafka_security}


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def parse_duration_ms(text: str, *, name: str = "duration") -> int:
    """``7d``, ``12h``, ``30m``, ``2s``, ``500ms`` (or a bare number of seconds) in ms, at most
    :data:`MAX_DURATION_MS` (float() reads a 309-digit number as inf: refused, not rounded)."""
    raw = text.strip().lower()
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?", raw)
    if match is None:
        raise SettingsError(
            f"{name}={_shown(text)}: expected a duration such as 7d, 12h, 30m, 2s, 500ms"
        )
    number, unit = match.groups()
    ms = float(number) * _DURATION_UNITS[unit or "s"]
    if not ms <= MAX_DURATION_MS:  # inf too
        raise SettingsError(
            f"{name}={_shown(text)}: expected at most {_MAX_DURATION_DAYS}d (100 years)"
        )
    if round(ms) < 1:
        raise SettingsError(f"{name}={_shown(text)}: must be positive")
    return round(ms)


def parse_whole(
    name: str, raw: str, *, minimum: int, maximum: int, what: str = "a whole number", why: str = ""
) -> int:
    """``raw``, the value of variable ``name``, as ASCII digits within ``minimum..maximum``.

    Anything else is a :class:`SettingsError` naming the variable, the value and the range
    (``what`` is counted; ``why`` says where the bound comes from). ``str.isdigit()`` alone
    would pass ``²``, which int() refuses, and int() refuses more than 4,300 digits: both
    are checked before int() sees them.
    """
    value = _whole_within(raw, minimum, maximum)
    if value is None:
        raise SettingsError(f"{name}={_shown(raw)}: {_expected(what, minimum, maximum, why)}")
    return value


def parse_seconds(name: str, raw: str, *, minimum: float, maximum: float, why: str = "") -> float:
    """``raw``, the value of variable ``name``, as a plain decimal number of seconds (``30``,
    ``0.5``) within ``minimum..maximum``; anything else (``inf``, ``nan``, ``-1``, ``1e9``)
    is a :class:`SettingsError` naming the variable, the value and the range."""
    value = _seconds_within(raw, minimum, maximum)
    if value is None:
        expected = _expected("a number of seconds", minimum, maximum, why)
        raise SettingsError(f"{name}={_shown(raw)}: {expected}")
    return value


def whole_option(
    *, minimum: int, maximum: int, what: str = "a whole number", why: str = ""
) -> Callable[[str], int]:
    """An argparse ``type=`` taking what :func:`parse_whole` takes; anything else is
    argparse's usage error (``error: argument --engines: '0': expected …``, exit 2)."""
    expected = _expected(what, minimum, maximum, why)
    return _option(lambda raw: _whole_within(raw, minimum, maximum), expected)


def seconds_option(*, minimum: float, maximum: float, why: str = "") -> Callable[[str], float]:
    """An argparse ``type=`` taking what :func:`parse_seconds` takes, as :func:`whole_option`."""
    expected = _expected("a number of seconds", minimum, maximum, why)
    return _option(lambda raw: _seconds_within(raw, minimum, maximum), expected)


def _option(within: Callable[[str], _N | None], expected: str) -> Callable[[str], _N]:
    def parse(raw: str) -> _N:
        value = within(raw)
        if value is None:  # argparse puts "argument --flag: " before it
            raise argparse.ArgumentTypeError(f"{_shown(raw)}: {expected}")
        return value

    return parse


def _whole_within(raw: str, minimum: int, maximum: int) -> int | None:
    text = raw.strip()
    significant = text.lstrip("0") or "0"
    if text.isascii() and text.isdigit() and len(significant) <= len(str(maximum)):
        value = int(significant)
        if minimum <= value <= maximum:
            return value
    return None


_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}")
"""Plain decimals of at most 12 digits before the point: float() would also take ``inf``,
``nan``, ``1e400`` (inf), ``-1`` and ``1_0``."""


def _seconds_within(raw: str, minimum: float, maximum: float) -> float | None:
    text = raw.strip()
    if _SECONDS.fullmatch(text) is None:
        return None
    value = float(text)
    return value if minimum <= value <= maximum else None


def _expected(what: str, minimum: float, maximum: float, why: str) -> str:
    because = f" ({why})" if why else ""
    low, high = (f"{n:g}" if isinstance(n, float) else str(n) for n in (minimum, maximum))
    return f"expected {what} from {low} to {high}{because}"


def whole_from_env(
    source: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int,
    maximum: int,
    what: str = "a whole number",
    why: str = "",
) -> int:
    """Variable ``name`` of ``source`` read by :func:`parse_whole`; ``default`` when it is
    unset or blank."""
    raw = source.get(name, "")
    if not raw.strip():
        return default
    return parse_whole(name, raw, minimum=minimum, maximum=maximum, what=what, why=why)


def session_timeout_ms_from_env(source: Mapping[str, str], name: str, default: int = 10_000) -> int:
    """A consumer group's session timeout (``AION_<SERVICE>_SESSION_TIMEOUT_MS``) in ms: 1 s
    up to the broker's default ``group.max.session.timeout.ms``; ``default`` when unset."""
    return whole_from_env(
        source,
        name,
        default,
        minimum=_MIN_SESSION_TIMEOUT_MS,
        maximum=MAX_SESSION_TIMEOUT_MS,
        what="whole milliseconds",
        why="the broker's group.max.session.timeout.ms is 30 min by default",
    )


def port_from_env(source: Mapping[str, str], name: str) -> int:
    """A health and metrics port (``AION_<SERVICE>_PORT``): 0 (no endpoint, also when unset
    or blank) to 65535."""
    return whole_from_env(
        source, name, 0, minimum=0, maximum=MAX_PORT, what="a port number", why="0: none"
    )


_SHOWN_CHARS = 40


def _shown(raw: str) -> str:
    """``raw`` for an error message: quoted, a long value cut short."""
    return (
        repr(raw) if len(raw) <= _SHOWN_CHARS else f"{raw[:_SHOWN_CHARS]!r}... ({len(raw)} chars)"
    )


def _retention(source: Mapping[str, str]) -> int | None:
    raw = source.get("AION_RETENTION", "")
    if not raw.strip():  # unset or blank, as every numeric variable
        return DEFAULT_RETENTION_MS
    if raw.strip().lower() in ("off", "forever", "never"):
        return None
    return parse_duration_ms(raw, name="AION_RETENTION")
