"""aion's error tree: one root, with branches callers can route on.

- :class:`DomainRefusal` — a command the domain declines (answered to the caller, committed).
- :class:`InvalidInput` — a value that fails validation (ids, payloads, names).
- :class:`CodecError` / :class:`DecodeError` — bytes that are not a valid aion record.
- :class:`InfrastructureError` — broker or database trouble; ``retriable`` says whether to retry.
- :class:`NonDeterminism` — a workflow replay that diverged from its recorded history.
- :class:`SequenceError` — an event applied out of order (``seq != last + 1``).
"""

from __future__ import annotations

__all__ = [
    "AionError",
    "CodecError",
    "DecodeError",
    "DomainRefusal",
    "InfrastructureError",
    "InvalidInput",
    "InvariantViolation",
    "NonDeterminism",
    "PayloadTooLarge",
    "SequenceError",
]


class AionError(Exception):
    """Root of every error aion raises on purpose."""


class DomainRefusal(AionError):
    """The domain declined a command; ``reason`` is stable text a client can show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvariantViolation(DomainRefusal):
    """A command that must never happen did (for example a ContinuedAsNew sent as a terminal)."""


class InvalidInput(AionError):
    """A user- or service-supplied value failed validation."""


class PayloadTooLarge(InvalidInput):
    """A payload exceeds the configured size limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class CodecError(AionError):
    """A value could not be encoded or decoded."""


class DecodeError(CodecError):
    """Bytes that are not a valid aion record, with where they came from when known."""

    def __init__(
        self,
        problem: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        where = ""
        if topic is not None:
            where = f" at {topic}[{partition}]@{offset}"
        super().__init__(f"undecodable record{where}: {problem}")
        self.problem = problem
        self.topic = topic
        self.partition = partition
        self.offset = offset

    def located(self, *, topic: str, partition: int, offset: int) -> DecodeError:
        """Return the same error, naming the record's topic, partition and offset."""
        return DecodeError(self.problem, topic=topic, partition=partition, offset=offset)


class InfrastructureError(AionError):
    """Broker, database or network trouble. ``retriable`` says whether a retry may succeed."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class NonDeterminism(AionError):
    """A workflow's replay made a decision its history does not hold."""

    def __init__(self, workflow_id: str, seq: int, detail: str) -> None:
        super().__init__(f"non-determinism in workflow {workflow_id!r} at seq {seq}: {detail}")
        self.workflow_id = workflow_id
        self.seq = seq
        self.detail = detail
        self.source = ""
        """``file:line: code`` of the decision that diverged, when the replay traced it."""


class SequenceError(AionError):
    """An event was applied out of order."""

    def __init__(self, workflow_id: str, expected: int, got: int) -> None:
        super().__init__(f"workflow {workflow_id!r}: expected event seq {expected}, got {got}")
        self.workflow_id = workflow_id
        self.expected = expected
        self.got = got
