"""Where a route's values come from: field paths and string templates over one record.

A *path* names one value of a record: ``value`` (the decoded value), ``value.order.id`` (a
field inside it; a digit part indexes a list), ``key`` (the UTF-8 key), ``topic``,
``partition``, ``offset``, ``timestamp`` (ms), ``header.<name>`` (a header, UTF-8), or
``null``. A *template* is a string with ``{path}`` placeholders (``"order-{value.id}"``;
``{{`` and ``}}`` are literal braces); each placeholder must name a string, number or
boolean. Both are parsed once, when the configuration is loaded, so a typo is a
configuration error, not a dead letter per record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aion_common.domain import InvalidInput

__all__ = ["Path", "RecordFields", "Template", "parse_path", "parse_template"]

_ROOTS = frozenset({"value", "key", "topic", "partition", "offset", "timestamp", "header", "null"})
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True, slots=True)
class RecordFields:
    """What paths read: one consumed record, its value decoded."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    value: object
    headers: Mapping[str, str]
    key_problem: str = "the record has no key"
    """Why ``key`` is None (no key, or one that is not UTF-8)."""


class Missing(InvalidInput):
    """A path that names nothing in this record."""


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path (see the module docstring)."""

    text: str
    root: str
    parts: tuple[str, ...]

    def read(self, record: RecordFields) -> object:  # noqa: PLR0911 - one answer per root
        """The value the path names in ``record``; :class:`Missing` if there is none."""
        match self.root:
            case "null":
                return None
            case "topic":
                return record.topic
            case "partition":
                return record.partition
            case "offset":
                return record.offset
            case "timestamp":
                return record.timestamp
            case "key":
                if record.key is None:
                    raise Missing(record.key_problem)
                return record.key
            case "header":
                name = self.parts[0]
                if name not in record.headers:
                    raise Missing(f"the record has no header {name!r}")
                return record.headers[name]
            case _:
                return _descend(record.value, self.parts, self.text)


def _descend(value: object, parts: Sequence[str], text: str) -> object:
    walked = "value"
    for part in parts:
        if isinstance(value, Mapping):
            if part not in value:
                raise Missing(f"field {walked}.{part} is missing")
            value = value[part]
        elif isinstance(value, list) and part.isdigit():
            index = int(part)
            if index >= len(value):
                raise Missing(f"{walked} has {len(value)} items, no [{index}]")
            value = value[index]
        else:
            kind = "null" if value is None else type(value).__name__
            raise Missing(f"{walked} is {kind}, so {text} names nothing")
        walked = f"{walked}.{part}"
    return value


def parse_path(text: object, *, what: str) -> Path:
    """Parse a path; :class:`InvalidInput` naming ``what`` if it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{what}: expected a path such as value.order_id, got {text!r}")
    root, *parts = text.strip().split(".")
    if root not in _ROOTS:
        raise InvalidInput(
            f"{what}: {text!r} starts with {root!r}; a path starts with one of "
            + ", ".join(sorted(_ROOTS))
        )
    if any(not part for part in parts):
        raise InvalidInput(f"{what}: {text!r} has an empty part")
    if root == "header" and len(parts) != 1:
        raise InvalidInput(f"{what}: {text!r}: write header.<name>")
    if root not in ("value", "header") and parts:
        raise InvalidInput(f"{what}: {root} has no fields ({text!r})")
    return Path(text.strip(), root, tuple(parts))


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and paths, rendered to a string per record."""

    text: str
    pieces: tuple[str | Path, ...]

    @property
    def constant(self) -> str | None:
        """The template's text when it has no placeholder, else None."""
        if all(isinstance(piece, str) for piece in self.pieces):
            return "".join(piece for piece in self.pieces if isinstance(piece, str))
        return None

    def render(self, record: RecordFields) -> str:
        """The template filled from ``record``; :class:`Missing` or :class:`InvalidInput`."""
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = piece.read(record)
            if isinstance(value, bool):
                out.append("true" if value else "false")
            elif isinstance(value, str | int | float):
                out.append(str(value))
            else:
                kind = "null" if value is None else type(value).__name__
                raise InvalidInput(f"{{{piece.text}}} is {kind}, not a string or number")
        return "".join(out)


def parse_template(text: object, *, what: str) -> Template:
    """Parse a template; :class:`InvalidInput` naming ``what`` if it is not one."""
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"{what}: expected a string template such as 'order-{{value.id}}'")
    pieces: list[str | Path] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            pieces.append(text[position : match.start()])
        token = match.group(0)
        if token in ("{{", "}}"):
            pieces.append(token[0])
        elif match.group(1) is None:
            raise InvalidInput(f"{what}: unbalanced {token!r} in {text!r} (write {token * 2})")
        else:
            pieces.append(parse_path(match.group(1), what=f"{what} {{{match.group(1)}}}"))
        position = match.end()
    if position < len(text):
        pieces.append(text[position:])
    return Template(text, tuple(pieces))
