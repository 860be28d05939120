"""Activities in the domain: their options, retry policy, timeouts, and the retry decision.

Everything here is pure: the engine decides with these values and functions, the codec carries
them, and the SDK's :class:`aion.workflow.RetryPolicy` converts into :class:`RetryOptions`.
Durations are integer milliseconds so that the same history always yields the same deadlines.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Final

from aion_common.domain.errors import InvalidInput

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "LOCAL_TASK_QUEUE",
    "ActivityOptions",
    "RetryOptions",
    "TimeoutKind",
    "retry_delay_ms",
    "validate_task_queue",
]

DEFAULT_TASK_QUEUE: Final = "default"
LOCAL_TASK_QUEUE: Final = "aion.local"
"""The queue of local steps (``ctx.run``): the engine runs them itself, no topic carries them."""
_QUEUE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def validate_task_queue(value: object) -> str:
    """Return ``value`` if it can name a task queue (and so a Kafka topic suffix)."""
    if not isinstance(value, str) or not _QUEUE.match(value) or value in {".", ".."}:
        raise InvalidInput(
            f"task queue {value!r} must be 1 to 100 characters of letters, digits, '.', '_' "
            "or '-' (it names the Kafka topic <prefix>.tasks.<queue>)"
        )
    return value


class TimeoutKind(enum.Enum):
    """Which clock ended an activity attempt (or the whole activity)."""

    START_TO_CLOSE = "START_TO_CLOSE"
    SCHEDULE_TO_START = "SCHEDULE_TO_START"
    SCHEDULE_TO_CLOSE = "SCHEDULE_TO_CLOSE"
    HEARTBEAT = "HEARTBEAT"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryOptions:
    """How failed attempts are retried: Temporal's defaults (1 s, x2, capped at 100 s, no
    attempt limit). ``maximum_attempts`` 0 means unlimited; ``non_retryable_errors`` lists
    exception type names that end the activity at once."""

    initial_interval_ms: int = 1000
    backoff_coefficient: float = 2.0
    maximum_interval_ms: int = 100_000
    maximum_attempts: int = 0
    non_retryable_errors: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.initial_interval_ms < 1:
            raise InvalidInput("retry initial_interval must be positive")
        if not self.backoff_coefficient >= 1.0:
            raise InvalidInput("retry backoff_coefficient must be at least 1.0")
        if self.maximum_interval_ms < self.initial_interval_ms:
            raise InvalidInput("retry maximum_interval must be at least initial_interval")
        if self.maximum_attempts < 0:
            raise InvalidInput("retry maximum_attempts must be 0 (unlimited) or more")


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityOptions:
    """Where an activity runs and its clocks (milliseconds; None: not set).

    At least one of ``start_to_close_ms`` and ``schedule_to_close_ms`` must be set: an
    activity without either could hold its workflow for ever.
    """

    task_queue: str = DEFAULT_TASK_QUEUE
    start_to_close_ms: int | None = None
    schedule_to_close_ms: int | None = None
    schedule_to_start_ms: int | None = None
    heartbeat_timeout_ms: int | None = None
    retry: RetryOptions = field(default_factory=RetryOptions)

    def __post_init__(self) -> None:
        validate_task_queue(self.task_queue)
        if self.start_to_close_ms is None and self.schedule_to_close_ms is None:
            raise InvalidInput(
                "an activity needs start_to_close or schedule_to_close (or both): without "
                "either, a lost or hanging attempt would hold the workflow for ever"
            )
        for name in (
            "start_to_close_ms",
            "schedule_to_close_ms",
            "schedule_to_start_ms",
            "heartbeat_timeout_ms",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInput(f"activity {name.removesuffix('_ms')} must be positive")

    @property
    def attempt_timeout_ms(self) -> int:
        """How long one attempt may run once started: start-to-close, else schedule-to-close."""
        value = self.start_to_close_ms or self.schedule_to_close_ms
        assert value is not None  # __post_init__ requires one of them
        return value


def retry_delay_ms(retry: RetryOptions, failed_attempt: int) -> int:
    """The backoff after attempt ``failed_attempt`` (1-based) failed: initial x coefficient^(n-1),
    capped at the maximum interval."""
    delay = retry.initial_interval_ms * retry.backoff_coefficient ** (failed_attempt - 1)
    return int(min(delay, retry.maximum_interval_ms))
