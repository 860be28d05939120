"""``RetryPolicy``: how an activity's failed attempts are retried."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from aion_common.domain import RetryOptions

__all__ = ["RetryPolicy", "to_ms"]


def to_ms(value: float | timedelta, what: str) -> int:
    """Whole milliseconds in a duration given as seconds or a timedelta (at least 1)."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ValueError(f"{what} must be a positive duration, got {value!r}")
    return max(1, round(seconds * 1000))


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Temporal's retry policy: the n-th retry waits ``initial_interval`` x
    ``backoff_coefficient``^(n-1), at most ``maximum_interval`` (default 100 x the initial
    interval); ``maximum_attempts`` 0 retries until a timeout ends the activity;
    ``non_retryable_errors`` are exception type names (``"ValueError"``, or an
    ``ApplicationError``'s ``type``) that end it at once. Durations are seconds or timedeltas.
    """

    initial_interval: float | timedelta = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float | timedelta | None = None
    maximum_attempts: int = 0
    non_retryable_errors: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.to_options()  # validate now, where the policy is written

    def to_options(self) -> RetryOptions:
        """The domain form carried in ``ActivityScheduled``."""
        initial = to_ms(self.initial_interval, "RetryPolicy.initial_interval")
        maximum = (
            100 * initial
            if self.maximum_interval is None
            else to_ms(self.maximum_interval, "RetryPolicy.maximum_interval")
        )
        if isinstance(self.non_retryable_errors, str):
            raise TypeError("RetryPolicy.non_retryable_errors is a list of type names")
        return RetryOptions(
            initial_interval_ms=initial,
            backoff_coefficient=float(self.backoff_coefficient),
            maximum_interval_ms=maximum,
            maximum_attempts=int(self.maximum_attempts),
            non_retryable_errors=tuple(str(name) for name in self.non_retryable_errors),
        )
