"""Structured logging: one JSON object per line, with the ids a record is about.

Every line has ``ts`` (UTC, ISO-8601), ``level``, ``logger`` and ``msg``, plus every ``extra``
field and every field bound with :func:`log_context` (``workflow_id``, ``run_id``,
``command_id``, ``partition`` …). Bind ids once — for a whole command's handling with
:func:`log_context` (it follows the task, as a context variable), or on a logger with
:func:`bind` — so every service names them the same way.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

__all__ = ["BoundLogger", "JsonFormatter", "bind", "configure_logging", "log_context"]

_CONTEXT: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "aion_log_context", default=MappingProxyType({})
)
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: ``ts``, ``level``, ``logger``, ``msg``, then fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object (values JSON cannot hold become strings)."""
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_CONTEXT.get())
        line.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _ContextFormatter(logging.Formatter):
    """Plain text for people at a terminal, with the bound fields appended."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {**_CONTEXT.get(), **{k: v for k, v in vars(record).items() if k not in _STANDARD}}
        text = super().format(record)
        if not fields:
            return text
        return text + " " + " ".join(f"{k}={v}" for k, v in fields.items())


def configure_logging(
    level: int | str | None = None, *, json: bool = True, stream: TextIO | None = None
) -> None:
    """Route all logging to ``stream`` (stderr) as JSON lines, or as text when ``json=False``.

    ``level`` defaults to ``AION_LOG_LEVEL``, else INFO.

    Replaces the root logger's handlers, so calling it again reconfigures rather than doubles.
    """
    level = level if level is not None else os.environ.get("AION_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json
        else _ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (and tasks it starts)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class BoundLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds its bound fields to every record; ``extra`` at the call wins."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the bound fields under the call's own ``extra``."""
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs

    def bind(self, **fields: object) -> BoundLogger:
        """A logger with ``fields`` bound in addition to these."""
        return BoundLogger(self.logger, {**(self.extra or {}), **fields})


def bind(logger: logging.Logger | str, **fields: object) -> BoundLogger:
    """``logger`` (or the logger of that name) with ``fields`` on every record it logs."""
    base = logging.getLogger(logger) if isinstance(logger, str) else logger
    return BoundLogger(base, fields)
