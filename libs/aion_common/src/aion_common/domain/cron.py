"""Cron expressions (five fields, UTC) and the next time one matches.

``minute hour day-of-month month day-of-week``, each ``*``, ``N``, ``A-B``, ``*/S``,
``A-B/S`` or a comma list of those; months and weekdays also by name (``jan``, ``mon``);
weekday 0 and 7 are Sunday. When both day fields are restricted a day matches either (as
Vixie cron does). ``@yearly``, ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and
``@hourly`` are shorthands. Every time is UTC. An expression that can never match (``0 0 31
2 *``) is refused when parsed.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aion_common.domain.errors import InvalidInput

__all__ = ["CronSpec"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# (name, low, high, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SEARCH_YEARS = 8  # a leap day on a given weekday recurs within 28 years; any match within 8


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed cron expression."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> CronSpec:
        """Parse ``text``; :class:`InvalidInput` saying which field is wrong, and how."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("cron expression is empty; e.g. '*/5 * * * *' (every 5 minutes)")
        expression = _MACROS.get(text.strip().lower(), text.strip())
        parts = expression.split()
        if len(parts) != len(_FIELDS):
            raise InvalidInput(
                f"cron expression {text!r} has {len(parts)} fields; expected 5: "
                "minute hour day-of-month month day-of-week (UTC)"
            )
        sets = [_field(part, field, text) for part, field in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(0 if d == 7 else d for d in sets[4])  # noqa: PLR2004 - Sunday
        spec = cls(
            text=text.strip(),
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=weekdays,
            any_day=parts[2] in ("*", "*/1"),
            any_weekday=parts[4] in ("*", "*/1"),
        )
        if spec.next_after(datetime(2000, 1, 1, tzinfo=UTC)) is None:
            raise InvalidInput(f"cron expression {text!r} never matches a date")
        return spec

    def matches_day(self, when: datetime) -> bool:
        """Whether ``when``'s date is one the expression fires on."""
        if when.month not in self.months:
            return False
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday_ok
        if self.any_weekday:
            return day_ok
        return day_ok or weekday_ok

    def next_after(self, after: datetime) -> datetime | None:
        """The first matching minute strictly after ``after`` (UTC); None if there is none
        within eight years (only possible for an expression :meth:`parse` refuses)."""
        t = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = t + timedelta(days=366 * _SEARCH_YEARS)
        while t < limit:
            if not self.matches_day(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t
        return None


_Field = tuple[str, int, int, dict[str, int]]


def _field(part: str, field: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in part.lower().split(","):
        values.update(_item(item, field, text))
    return frozenset(values)


def _item(item: str, field: _Field, text: str) -> range:
    name, low, high, names = field
    what = f"cron expression {text!r}, {name} field"
    body, _, step_text = item.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) < 1:
            raise InvalidInput(f"{what}: step {step_text!r} must be a whole number >= 1")
        step = int(step_text)
    if body == "*":
        start, end = low, high
    elif "-" in body:
        first, _, last = body.partition("-")
        start, end = _value(first, what, low, high, names), _value(last, what, low, high, names)
        if start > end:
            raise InvalidInput(f"{what}: range {body!r} runs backwards")
    else:
        start = _value(body, what, low, high, names)
        end = high if step_text else start
    return range(start, end + 1, step)


def _value(text: str, what: str, low: int, high: int, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        raise InvalidInput(f"{what}: {text!r} is not a number{' or a name' if names else ''}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidInput(f"{what}: {value} is outside {low}-{high}")
    return value
