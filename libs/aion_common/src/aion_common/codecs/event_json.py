"""Events as JSON: the body the projector's ``history`` view stores and the API serves, and back.

A body holds an event's own fields, not its envelope (workflow id, run id, seq, time and
command id travel beside it). Payloads are embedded as the JSON they already are
(``orjson.Fragment``: no parse, no re-encode), errors as ``{"message", "details", "error_type",
"traceback"}``, parent links and activity options as objects, enums by value and times as
RFC 3339. :func:`decode_event` rebuilds the event: the projector applies a held event that
way once its gap fills, and ``aion replay`` replays a history the API served.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from aion_common.domain import (
    EVENT_TYPES,
    ActivityOptions,
    CarriedChild,
    Event,
    ParentClosePolicy,
    ParentLink,
    Payload,
    PublishHeader,
    RetryOptions,
    TimeoutKind,
    WorkflowError,
)

__all__ = ["ENVELOPE_FIELDS", "decode_event", "encode_body", "payload_text"]

ENVELOPE_FIELDS = frozenset({"workflow_id", "run_id", "seq", "recorded_at", "command_id"})
_BY_NAME: dict[str, type[Any]] = {cls.__name__: cls for cls in EVENT_TYPES}


def payload_text(payload: Payload | None) -> str | None:
    """A payload's JSON as text, for the view columns that hold results and details."""
    return None if payload is None else payload.data.decode("utf-8")


def _plain(value: object) -> object:  # noqa: PLR0911 - one form per field type
    if isinstance(value, Payload):
        return orjson.Fragment(value.data)
    if isinstance(value, WorkflowError):
        details = None if value.details is None else orjson.Fragment(value.details.data)
        return {
            "message": value.message,
            "details": details,
            "error_type": value.error_type,
            "traceback": value.traceback,
        }
    if isinstance(value, ParentLink):
        return {
            "workflow_id": value.workflow_id,
            "run_id": value.run_id,
            "close_policy": value.close_policy.value,
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple) and value and isinstance(value[0], PublishHeader):
        return [{"name": h.name, "value": h.value} for h in value]
    if isinstance(value, tuple) and value and isinstance(value[0], CarriedChild):
        return [
            {
                "child_workflow_id": c.child_workflow_id,
                "child_workflow_type": c.child_workflow_type,
                "parent_close_policy": c.parent_close_policy.value,
                "origin_run_id": c.origin_run_id,
            }
            for c in value
        ]
    return value


_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name not in ENVELOPE_FIELDS)
    for cls in EVENT_TYPES
}
_HINTS: dict[type[Any], dict[str, Any]] = {cls: typing.get_type_hints(cls) for cls in EVENT_TYPES}


def encode_body(event: Event) -> str:
    """The event's own fields as compact JSON text."""
    body = {name: _plain(getattr(event, name)) for name in _FIELDS[type(event)]}
    return orjson.dumps(body).decode("utf-8")


def _payload(value: object) -> Payload:
    return Payload(orjson.dumps(value))


def _error(value: Any) -> WorkflowError:
    details = value.get("details")
    return WorkflowError(
        message=str(value["message"]),
        details=None if details is None else _payload(details),
        error_type=str(value.get("error_type", "")),
        traceback=str(value.get("traceback", "")),
    )


def _activity_options(value: Any) -> ActivityOptions:
    retry = dict(value["retry"])
    retry["non_retryable_errors"] = tuple(retry.get("non_retryable_errors", ()))
    return ActivityOptions(**{**value, "retry": RetryOptions(**retry)})


def _parent(value: Any) -> ParentLink:
    return ParentLink(
        workflow_id=value["workflow_id"],
        run_id=value["run_id"],
        close_policy=ParentClosePolicy(value["close_policy"]),
    )


_REVIVERS: dict[Any, Callable[[Any], object]] = {
    Payload: _payload,
    WorkflowError: _error,
    ParentLink: _parent,
    ParentClosePolicy: ParentClosePolicy,
    ActivityOptions: _activity_options,
    TimeoutKind: TimeoutKind,
    datetime: datetime.fromisoformat,
}


def _carried(value: Any) -> tuple[CarriedChild, ...]:
    return tuple(
        CarriedChild(
            child_workflow_id=c["child_workflow_id"],
            child_workflow_type=c["child_workflow_type"],
            parent_close_policy=ParentClosePolicy(c["parent_close_policy"]),
            origin_run_id=c["origin_run_id"],
        )
        for c in value
    )


def _headers(value: Any) -> tuple[PublishHeader, ...]:
    return tuple(PublishHeader(name=h["name"], value=h["value"]) for h in value)


def _revive(hint: Any, value: object) -> object:
    """Turn a JSON value back into the field type ``hint`` names (``X | None`` included)."""
    if value is None:  # a JSON null is a Payload's value (a signal sent with no payload)
        return _payload(None) if hint is Payload else None
    if hint == tuple[PublishHeader, ...]:
        return _headers(value)
    if hint == tuple[CarriedChild, ...]:
        return _carried(value)
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if len(args) == 1:
        hint = args[0]
    revive = _REVIVERS.get(hint)
    return value if revive is None else revive(value)


def decode_event(
    event_type: str,
    *,
    workflow_id: str,
    run_id: str,
    seq: int,
    recorded_at: datetime,
    command_id: str,
    body: str,
) -> Event:
    """Rebuild the event :func:`encode_body` stored."""
    cls = _BY_NAME[event_type]
    hints = _HINTS[cls]
    fields = orjson.loads(body)
    kwargs = {name: _revive(hints[name], value) for name, value in fields.items()}
    event: Event = cls(
        workflow_id=workflow_id,
        run_id=run_id,
        seq=seq,
        recorded_at=recorded_at,
        command_id=command_id,
        **kwargs,
    )
    return event
