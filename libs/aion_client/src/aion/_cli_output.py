"""What the ``aion`` command prints: rich tables for people, JSON for scripts, errors on stderr.

Tables are laid out for the terminal they are read in: its width when stdout (or, when stdout
is piped into ``less`` or ``head``, stderr) is one, ``COLUMNS`` when set, else 200 columns
(CI logs, files). Short columns (statuses, times, sequence numbers) never wrap; long ones
(ids, event fields) fold inside the width that is left.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from aion.client import RetryNote

__all__ = ["Output", "compact", "plain", "table", "terminal_width", "when"]

_PIPED_WIDTH = 200


def terminal_width() -> int | None:
    """The width to render for, or None to let rich ask stdout's terminal."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:  # stdout piped (`aion history x | head`): the terminal is still on stderr
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return _PIPED_WIDTH


class Output:
    """Prints either rich tables (people) or JSON (scripts)."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True, width=terminal_width())
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def json(self, value: Any) -> None:
        """One JSON document on stdout."""
        print(json.dumps(plain(value), indent=2, default=str))  # noqa: T201

    def error(self, message: str) -> None:
        """A message on stderr."""
        self.errors.print(f"[bold red]error:[/] {escape(message)}")

    def note(self, message: str) -> None:
        """A warning on stderr that does not change the outcome (``--json`` keeps stdout)."""
        self.errors.print(f"[yellow]note:[/] {escape(message)}")

    def retrying(self, note: RetryNote) -> None:
        """The progress note before a command is sent again, on stderr."""
        self.errors.print(f"[yellow]waiting:[/] {note.describe()}", markup=True, highlight=False)


def plain(value: Any) -> Any:
    """Dataclasses (nested) as dicts, tuples as lists: what ``json.dumps`` takes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def when(value: datetime | None, *, time_only: bool = False) -> str:
    """A timestamp to the millisecond, as people read it (``--json`` keeps full ISO 8601)."""
    if value is None:
        return ""
    stamp = f"{value:%H:%M:%S}.{value.microsecond // 1000:03d}"
    return stamp if time_only else f"{value:%Y-%m-%d} {stamp}"


def table(*columns: str, title: str | None = None, short: tuple[str, ...] = ()) -> Table:
    """A table that fits the terminal: the ``short`` columns never wrap, the others fold
    (ids are never cut short with an ellipsis). No vertical rules: they cost width."""
    view = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for column in columns:
        if column in short:
            view.add_column(column, no_wrap=True)
        else:
            view.add_column(column, overflow="fold")
    return view


def compact(fields: Any, limit: int = 80) -> str:
    """An event's fields as ``key=value`` pairs, empty ones left out, long values shortened."""
    if not isinstance(fields, dict):
        return json.dumps(fields, default=str)
    parts = []
    for key, value in fields.items():
        if value is None or value in ("", [], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        parts.append(f"{key}={text if len(text) <= limit else text[: limit - 1] + '…'}")
    return " ".join(parts)
