"""How a run ended, as the reference engine's ``TerminalOutcome``, and parent links."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aion_common.domain.errors import InvalidInput
from aion_common.domain.payload import Payload, WorkflowError

__all__ = [
    "Cancelled",
    "Completed",
    "ContinuedAsNew",
    "Failed",
    "IdReusePolicy",
    "ParentClosePolicy",
    "ParentLink",
    "TerminalOutcome",
    "TimedOut",
]


class ParentClosePolicy(enum.Enum):
    """What happens to a child that is still open when its parent's run closes."""

    TERMINATE = "TERMINATE"
    REQUEST_CANCEL = "REQUEST_CANCEL"
    ABANDON = "ABANDON"


class IdReusePolicy(enum.Enum):
    """What ``StartWorkflow`` does when its workflow id was used before (Temporal's policies).

    A running id is refused ``ALREADY_RUNNING`` under every policy but
    ``TERMINATE_IF_RUNNING``, which terminates the running run and starts the new one in the
    same step. A closed id may be started again under ``ALLOW_DUPLICATE`` (the default, as
    Temporal's) and ``TERMINATE_IF_RUNNING``; under ``ALLOW_DUPLICATE_FAILED_ONLY`` only if its
    last run did not complete; never under ``REJECT_DUPLICATE`` (refused
    ``ID_REUSE_REJECTED``).
    """

    ALLOW_DUPLICATE = "ALLOW_DUPLICATE"
    ALLOW_DUPLICATE_FAILED_ONLY = "ALLOW_DUPLICATE_FAILED_ONLY"
    REJECT_DUPLICATE = "REJECT_DUPLICATE"
    TERMINATE_IF_RUNNING = "TERMINATE_IF_RUNNING"

    @classmethod
    def parse(cls, value: IdReusePolicy | str) -> IdReusePolicy:
        """``value`` as a policy: its name in any case, with ``_``, ``-`` or none between the
        words (``reject_duplicate``, ``RejectDuplicate`` as Temporal's CLI writes it)."""
        if isinstance(value, cls):
            return value
        key = "".join(ch for ch in str(value) if ch.isalnum()).upper()
        for policy in cls:
            if policy.value.replace("_", "") == key:
                return policy
        names = ", ".join(p.value for p in cls)
        raise InvalidInput(f"id reuse policy {value!r}: expected one of {names}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentLink:
    """A child's link to the parent run that started it, carried across continue-as-new."""

    workflow_id: str
    run_id: str
    close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed:
    """The run returned ``result``."""

    result: Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The run raised, or was terminated."""

    error: WorkflowError


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """The run accepted a cancellation request."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedOut:
    """The run exceeded its execution timeout; ``timeout`` is its human form, e.g. ``30s``."""

    timeout: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContinuedAsNew:
    """The run closed and a new run of the same workflow id started. Never a child terminal."""

    input: Payload
    workflow_type: str | None
    next_run_id: str


TerminalOutcome = Completed | Failed | Cancelled | TimedOut | ContinuedAsNew
