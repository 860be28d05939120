"""User payloads: JSON carried as bytes, with a size limit; and workflow errors."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aion_common.domain.errors import InvalidInput, PayloadTooLarge

__all__ = ["DEFAULT_PAYLOAD_LIMIT", "Payload", "WorkflowError"]

DEFAULT_PAYLOAD_LIMIT = 2 * 1024 * 1024
_PREVIEW = 60


@dataclass(frozen=True, slots=True)
class Payload:
    """A JSON document stored as UTF-8 bytes; build with :meth:`from_json` or :meth:`from_bytes`."""

    data: bytes

    @classmethod
    def from_json(cls, value: object, *, limit: int = DEFAULT_PAYLOAD_LIMIT) -> Payload:
        """Encode a JSON value; raises :class:`InvalidInput` or :class:`PayloadTooLarge`."""
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"payload is not JSON-serialisable: {err}") from err
        data = text.encode("utf-8")
        if len(data) > limit:
            raise PayloadTooLarge(len(data), limit)
        return cls(data)

    @classmethod
    def from_bytes(cls, data: bytes, *, limit: int = DEFAULT_PAYLOAD_LIMIT) -> Payload:
        """Validate raw bytes as one UTF-8 JSON document within ``limit``."""
        if len(data) > limit:
            raise PayloadTooLarge(len(data), limit)
        try:
            json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InvalidInput(f"payload is not valid UTF-8: {err}") from err
        except ValueError as err:
            raise InvalidInput(f"payload is not valid JSON: {err}") from err
        return cls(bytes(data))

    def to_json(self) -> object:
        """The decoded JSON value."""
        return json.loads(self.data.decode("utf-8"))

    def __repr__(self) -> str:
        preview = self.data[:_PREVIEW].decode("utf-8", errors="replace")
        suffix = "…" if len(self.data) > _PREVIEW else ""
        return f"Payload({preview}{suffix})"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowError:
    """Why a workflow, child or activity failed.

    ``message`` is what a person reads (for raised exceptions ``"<Type>: <text>"``);
    ``error_type`` the exception's class name when one was raised (``""`` otherwise) and
    ``traceback`` its formatted traceback, so the failure can be debugged where it is shown.
    """

    message: str
    details: Payload | None = None
    error_type: str = ""
    traceback: str = ""
