"""Durations people write: ``250ms``, ``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``, or seconds."""

from __future__ import annotations

import re

from aion_common.domain.errors import InvalidInput

__all__ = ["MAX_DURATION_MS", "parse_duration_ms"]

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_MAX_DAYS = 36_500
MAX_DURATION_MS = _MAX_DAYS * _UNITS_MS["d"]
"""The longest duration read: 100 years (``36500d``). float() reads ``1e400`` and a
309-digit number as inf, which no int can hold."""


def parse_duration_ms(value: object, *, what: str = "duration") -> int:
    """Milliseconds in ``value``: a number of seconds, or text such as ``1h30m`` or ``250ms``.

    Raises :class:`InvalidInput` naming ``what`` for anything else, or a negative duration.
    """
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: expected a duration such as 30s, got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or value != value:  # noqa: PLR0124 - NaN check
            raise InvalidInput(f"{what}: must not be negative, got {value!r}")
        return _bounded(value * 1000, what, value)
    if not isinstance(value, str):
        raise InvalidInput(f"{what}: expected a duration such as 30s, got {value!r}")
    text = value.strip().lower().replace(" ", "")
    if not text:
        raise InvalidInput(f"{what}: empty")
    try:
        seconds = float(text)
        return _bounded(seconds * 1000, what, value) if seconds >= 0 else _bad(what, value)
    except ValueError:
        pass
    total, position = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS_MS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        _bad(what, value)
    return _bounded(total, what, value)


def _bounded(ms: float, what: str, value: object) -> int:
    if not ms <= MAX_DURATION_MS:  # inf too
        raise InvalidInput(f"{what}: {value!r} is longer than {_MAX_DAYS}d (100 years)")
    return round(ms)


def _bad(what: str, value: object) -> int:
    raise InvalidInput(
        f"{what}: {value!r} is not a duration; write e.g. 250ms, 30s, 5m, 2h, 1d or 1h30m"
    )
