"""Query answers: what the engine says back to a ``QueryWorkflow`` (on the replies topic).

A query reads a run's state and changes nothing: no event is appended and its command id is
not remembered. The answer carries the handler's JSON result, or a :class:`QueryStatus`
saying why there is none, with a message for people.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from aion_common.domain.errors import InvalidInput
from aion_common.domain.ids import validate_name
from aion_common.domain.payload import Payload

__all__ = [
    "BUILTIN_QUERIES",
    "RESERVED_QUERY_PREFIX",
    "STACK_TRACE_QUERY",
    "WAITING_ON_QUERY",
    "QueryAnswer",
    "QueryStatus",
    "validate_query_name",
]

RESERVED_QUERY_PREFIX: Final = "__"
"""Query names starting with this are the engine's own; workflow code may not define them."""

STACK_TRACE_QUERY: Final = "__stack_trace"
"""Built in: the source line each frame of the run's code is suspended at, outermost first."""

WAITING_ON_QUERY: Final = "__waiting_on"
"""Built in: what the run is blocked on now (children, timers, signals, activities), and
the stack its code waits in."""

BUILTIN_QUERIES: Final = (STACK_TRACE_QUERY, WAITING_ON_QUERY)


def validate_query_name(value: object, *, builtin_ok: bool = True) -> str:
    """Return ``value`` if it names a query (1 to 128 printable characters); a name with the
    reserved prefix is refused unless ``builtin_ok`` and it is a built-in query."""
    name = validate_name(value, what="query name")
    if name.startswith(RESERVED_QUERY_PREFIX) and not (builtin_ok and name in BUILTIN_QUERIES):
        raise InvalidInput(
            f"query name {name!r}: names starting with {RESERVED_QUERY_PREFIX!r} are reserved "
            f"for the engine's own queries ({', '.join(BUILTIN_QUERIES)})"
        )
    return name


class QueryStatus(enum.Enum):
    """How a query was answered; anything but ``ANSWERED`` comes with a message."""

    ANSWERED = "ANSWERED"
    NOT_FOUND = "NOT_FOUND"
    """The engine holds no workflow (or run) of that id."""
    UNKNOWN_QUERY = "UNKNOWN_QUERY"
    """The run's code has registered no handler of that name (``known_queries`` lists those
    it has)."""
    RUN_CLOSED = "RUN_CLOSED"
    """The run is closed and no history was given to replay it with."""
    BLOCKED = "BLOCKED"
    """The run is blocked: its code cannot run until it is moved to code that can."""
    FAILED = "FAILED"
    """The handler raised, or returned something that is not JSON."""
    REFUSED = "REFUSED"
    """The handler tried to change the run (await, start a child or an activity, sleep,
    continue-as-new, draw random numbers or ids) or to do I/O: handlers are read-only."""
    CANNOT_REPLAY = "CANNOT_REPLAY"
    """The run's code could not be rebuilt (its version is not loaded, or its replay
    diverges from its history)."""
    INVALID = "INVALID"
    """The query itself is malformed (arguments that are not a JSON array, a history that is
    not one whole run)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryAnswer:
    """The engine's answer to the ``QueryWorkflow`` whose id is ``command_id``.

    ``run_id`` is the run that answered (None when none did); ``last_seq`` the seq of the
    newest event the answering state held (0 if none), so a reader can tell how fresh it is;
    ``replayed`` says the run was rebuilt from a given history (a closed run).
    """

    command_id: str
    workflow_id: str
    name: str
    status: QueryStatus
    message: str
    answered_at: datetime
    run_id: str | None = None
    result: Payload | None = None
    known_queries: tuple[str, ...] = ()
    replayed: bool = False
    last_seq: int = 0

    def __post_init__(self) -> None:
        if (self.status is QueryStatus.ANSWERED) != (self.result is not None):
            raise InvalidInput("a query answer holds a result exactly when it is ANSWERED")
