"""How a run ended, as the reference engine's ``TerminalOutcome``, and parent links."""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
    """Whether ``StartWorkflow`` may reuse the id of a closed workflow."""

    ALLOW_DUPLICATE = "ALLOW_DUPLICATE"
    ALLOW_DUPLICATE_FAILED_ONLY = "ALLOW_DUPLICATE_FAILED_ONLY"
    REJECT_DUPLICATE = "REJECT_DUPLICATE"


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
