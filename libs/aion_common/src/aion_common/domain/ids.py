"""Identifiers: validation of user-chosen ids and deterministic derivation of service ids.

Workflow ids are chosen by users; run, command and timer ids are UUID strings. Ids that
services derive (a child's start command, the watcher's ``RecordChildTerminal``, a timer's
``FireTimer``) are UUIDv5 over their inputs, so a re-issued command is always recognised as a
duplicate by its id.
"""

from __future__ import annotations

import hashlib
import uuid

from aion_common.domain.errors import InvalidInput

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "activity_outcome_id",
    "derive_id",
    "record_child_terminal_id",
    "start_run_id",
    "validate_id",
    "validate_name",
]

MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 128
_NAMESPACE = uuid.UUID("6f1c2a7e-5d0b-4c1e-9a53-a10e0c0de001")
_NAMESPACE_BYTES = _NAMESPACE.bytes


def validate_id(value: object, *, what: str = "workflow id") -> str:
    """Return ``value`` if it is a usable id: 1 to 255 characters, printable, no whitespace ends."""
    # Fast path for the common valid id (this runs for every id field of every decoded
    # record). The only printable character str.strip() removes is U+0020, so checking the
    # ends for a space is the same test as ``value == value.strip()`` for a printable string.
    if (
        type(value) is str
        and 0 < len(value) <= MAX_ID_LENGTH
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    ):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    if not value.isprintable() or value != value.strip():
        raise InvalidInput(f"{what} {value!r} holds control characters or surrounding spaces")
    return value


def validate_name(value: object, *, what: str = "name") -> str:
    """Return ``value`` if it is a usable type or signal name (1 to 128 printable characters)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(f"{what} must be 1 to {MAX_NAME_LENGTH} characters")
    if not value.isprintable() or value != value.strip():
        raise InvalidInput(f"{what} {value!r} holds control characters or surrounding spaces")
    return value


def derive_id(kind: str, *parts: str) -> str:
    """A deterministic UUID string for ``kind`` over ``parts`` (order matters).

    Exactly ``str(uuid.uuid5(namespace, name))``, computed without building UUID objects
    (the engine derives a few ids per command).
    """
    name = "\x1f".join((kind, *parts))
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8"), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def start_run_id(workflow_id: str, start_command_id: str) -> str:
    """The run id a ``StartWorkflow`` opens when admitted (its chain's first run): known to
    whoever sent the start, so a client can wait for exactly that run."""
    return derive_id("run", workflow_id, start_command_id)


def record_child_terminal_id(parent_workflow_id: str, parent_run_id: str, child_id: str) -> str:
    """The watcher's ``RecordChildTerminal`` command id for (parent, parent run, child)."""
    return derive_id("record-child-terminal", parent_workflow_id, parent_run_id, child_id)


def activity_outcome_id(activity_id: str, attempt: int, kind: str) -> str:
    """The command id of a worker's report on one attempt (``started``, ``completed``,
    ``failed``): the same however often it is sent, so a duplicate is a no-op."""
    return derive_id("activity-outcome", activity_id, str(attempt), kind)
