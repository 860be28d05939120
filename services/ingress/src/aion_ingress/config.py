"""The ingress configuration file: which user topics become which workflow commands.

YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``), by extension::

    name: orders                  # consumer group <prefix>.ingress.orders (default "default")
    start_from: earliest          # where a new group starts reading: earliest | latest
    unmatched: dead-letter        # a record no route matches: dead-letter | skip
    create_topics: false          # create missing source topics (AION_PARTITIONS partitions)
    workflow_types: []            # types records may start besides the routed ones
    routes:
      - topic: orders
        format: json              # json | avro (with schema: FILE.avsc, wire, schema_id)
        action: start             # start | signal | signal-with-start
        workflow_type: examples.orders.order
        workflow_id: "order-{value.order_id}"
        input: value              # a path (templates.py); default value
      - topic: order-events
        action: signal-with-start
        workflow_type: order-events
        workflow_id: "{key}"
        signal: "{value.kind}"    # a template
        payload: value
        when: {field: value.kind, in: [paid, shipped]}

Routes of one topic are tried in order; the first whose ``when`` holds (a route without one
always does) maps the record. Every problem in the file is reported at once, each with where
it is (``routes[1].workflow_id: ...``), as one :class:`IngressConfigError`.
"""

from __future__ import annotations

import enum
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Literal

import yaml

from aion_common.codecs.user_formats import UserFormat, user_format
from aion_common.domain import (
    IdReusePolicy,
    InvalidInput,
    parse_duration_ms,
    validate_name,
)
from aion_ingress.templates import Path, Template, parse_path, parse_template

__all__ = [
    "Action",
    "Condition",
    "IngressConfig",
    "IngressConfigError",
    "Route",
    "load_config",
    "parse_config",
]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_TOPIC_MAX = 249  # Kafka's limit on a topic name


class IngressConfigError(InvalidInput):
    """The configuration file cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"ingress configuration {source} is not valid:\n{lines}")
        self.problems = tuple(problems)


class Action(enum.Enum):
    """What a route turns a record into."""

    START = "start"
    SIGNAL = "signal"
    SIGNAL_WITH_START = "signal-with-start"


@dataclass(frozen=True, slots=True)
class Condition:
    """``when``: the route applies if the field equals one of ``values`` (or merely exists,
    or is absent, with ``exists``)."""

    field: Path
    values: tuple[object, ...] | None = None
    exists: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One mapping from a topic's records to a command."""

    index: int
    topic: str
    action: Action
    workflow_id: Template
    workflow_type: Template | None = None
    input: Path | None = None
    signal: Template | None = None
    payload: Path | None = None
    when: Condition | None = None
    format: UserFormat = field(repr=False)
    id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE
    execution_timeout_ms: int | None = None

    @property
    def where(self) -> str:
        """``routes[i]`` (for messages)."""
        return f"routes[{self.index}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressConfig:
    """A parsed, checked configuration."""

    name: str = "default"
    routes: tuple[Route, ...] = ()
    start_from: Literal["earliest", "latest"] = "earliest"
    unmatched: Literal["dead-letter", "skip"] = "dead-letter"
    create_topics: bool = False
    workflow_types: frozenset[str] = frozenset()
    source: str = "<config>"

    @property
    def topics(self) -> tuple[str, ...]:
        """The source topics, in the order their first route appears."""
        return tuple(dict.fromkeys(route.topic for route in self.routes))

    def routes_for(self, topic: str) -> tuple[Route, ...]:
        """The routes of ``topic``, in file order."""
        return tuple(route for route in self.routes if route.topic == topic)


def load_config(path: FilePath | str) -> IngressConfig:
    """Read and check the file ``path`` (schema files are relative to its directory)."""
    path = FilePath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise IngressConfigError(str(path), [f"cannot read it: {err}"]) from err
    try:
        if path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        elif path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix == ".json":
            raw = json.loads(text)
        else:
            raise IngressConfigError(
                str(path), [f"unknown file type {path.suffix!r}: use .yaml, .toml or .json"]
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as err:
        raise IngressConfigError(str(path), [f"not valid {path.suffix[1:]}: {err}"]) from err
    return parse_config(raw, source=str(path), base=path.parent)


_TOP_KEYS = frozenset(
    {"name", "routes", "start_from", "unmatched", "create_topics", "workflow_types"}
)
_ROUTE_KEYS = frozenset(
    {
        "topic",
        "format",
        "schema",
        "wire",
        "schema_id",
        "action",
        "workflow_type",
        "workflow_id",
        "input",
        "signal",
        "payload",
        "when",
        "id_reuse_policy",
        "execution_timeout",
    }
)


def parse_config(
    raw: object, *, source: str = "<config>", base: FilePath | None = None
) -> IngressConfig:
    """Check a decoded configuration document; raises :class:`IngressConfigError`."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise IngressConfigError(source, ["expected a mapping with a `routes` list at the top"])
    problems.extend(
        f"unknown key {k!r} (known: {', '.join(sorted(_TOP_KEYS))})"
        for k in raw
        if k not in _TOP_KEYS
    )
    name = _group_name(raw.get("name", "default"), problems)
    start_from = _choice(
        raw.get("start_from", "earliest"), ("earliest", "latest"), "start_from", problems
    )
    unmatched = _choice(
        raw.get("unmatched", "dead-letter"), ("dead-letter", "skip"), "unmatched", problems
    )
    create_topics = raw.get("create_topics", False)
    if not isinstance(create_topics, bool):
        problems.append(f"create_topics: expected true or false, got {create_topics!r}")
        create_topics = False
    types = _types(raw.get("workflow_types", []), problems)
    routes_raw = raw.get("routes")
    routes: list[Route] = []
    if not isinstance(routes_raw, list) or not routes_raw:
        problems.append("routes: expected a non-empty list of routes")
    else:
        for index, entry in enumerate(routes_raw):
            route = _route(index, entry, base or FilePath(), problems)
            if route is not None:
                routes.append(route)
    _same_format_per_topic(routes, problems)
    if problems:
        raise IngressConfigError(source, problems)
    return IngressConfig(
        name=name,
        routes=tuple(routes),
        start_from=start_from,  # type: ignore[arg-type]  # one of the choices
        unmatched=unmatched,  # type: ignore[arg-type]  # one of the choices
        create_topics=create_topics,
        workflow_types=types,
        source=source,
    )


def _route(index: int, entry: object, base: FilePath, problems: list[str]) -> Route | None:
    where = f"routes[{index}]"
    if not isinstance(entry, Mapping):
        problems.append(f"{where}: expected a mapping, got {entry!r}")
        return None
    before = len(problems)
    problems.extend(
        f"{where}: unknown key {k!r} (known: {', '.join(sorted(_ROUTE_KEYS))})"
        for k in entry
        if k not in _ROUTE_KEYS
    )
    topic = _topic(entry.get("topic"), where, problems)
    action_text = entry.get("action")
    try:
        action = Action(action_text)
    except ValueError:
        problems.append(
            f"{where}.action: expected start, signal or signal-with-start, got {action_text!r}"
        )
        return None
    values: dict[str, Any] = {}
    values["workflow_id"] = _attempt(
        problems, lambda: parse_template(entry.get("workflow_id"), what=f"{where}.workflow_id")
    )
    starts = action is not Action.SIGNAL
    signals = action is not Action.START
    if starts:
        values["workflow_type"] = _workflow_type(entry.get("workflow_type"), where, problems)
        values["input"] = _attempt(
            problems, lambda: parse_path(entry.get("input", "value"), what=f"{where}.input")
        )
        default_policy = "reject_duplicate" if action is Action.START else "allow_duplicate"
        values["id_reuse_policy"] = _policy(
            entry.get("id_reuse_policy", default_policy), where, problems
        )
        if "execution_timeout" in entry:
            values["execution_timeout_ms"] = _attempt(
                problems, lambda: _timeout(entry["execution_timeout"], where)
            )
    else:
        problems.extend(
            f"{where}.{key}: only for action start or signal-with-start"
            for key in ("workflow_type", "input", "id_reuse_policy", "execution_timeout")
            if key in entry
        )
    if signals:
        values["signal"] = _attempt(
            problems, lambda: parse_template(entry.get("signal"), what=f"{where}.signal")
        )
        values["payload"] = _attempt(
            problems, lambda: parse_path(entry.get("payload", "value"), what=f"{where}.payload")
        )
        constant = values["signal"].constant if values.get("signal") else None
        if constant is not None:
            _attempt(problems, lambda: validate_name(constant, what=f"{where}.signal"))
    else:
        problems.extend(
            f"{where}.{key}: only for action signal or signal-with-start"
            for key in ("signal", "payload")
            if key in entry
        )
    if "when" in entry:
        values["when"] = _condition(entry["when"], where, problems)
    fmt = _format(entry, where, base, problems)
    if len(problems) > before or topic is None or fmt is None:
        return None
    return Route(index=index, topic=topic, action=action, format=fmt, **values)


def _attempt(problems: list[str], make: Any) -> Any:
    try:
        return make()
    except InvalidInput as err:
        problems.append(str(err))
        return None


def _group_name(value: object, problems: list[str]) -> str:
    if not isinstance(value, str) or not value or any(c not in _NAME_CHARS for c in value):
        problems.append(
            "name: use letters, digits, '.', '_' or '-' (it names the consumer group), "
            f"got {value!r}"
        )
        return "default"
    return value


def _choice(value: object, choices: tuple[str, ...], what: str, problems: list[str]) -> str:
    if value not in choices:
        problems.append(f"{what}: expected {' or '.join(choices)}, got {value!r}")
        return choices[0]
    return str(value)


def _types(value: object, problems: list[str]) -> frozenset[str]:
    if not isinstance(value, list):
        problems.append(f"workflow_types: expected a list of workflow type names, got {value!r}")
        return frozenset()
    found = set()
    for item in value:
        try:
            found.add(validate_name(item, what="workflow_types entry"))
        except InvalidInput as err:
            problems.append(str(err))
    return frozenset(found)


def _topic(value: object, where: str, problems: list[str]) -> str | None:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > _TOPIC_MAX
        or any(c not in _NAME_CHARS for c in value)
        or value in (".", "..")
    ):
        problems.append(f"{where}.topic: expected a Kafka topic name, got {value!r}")
        return None
    return value


def _workflow_type(value: object, where: str, problems: list[str]) -> Template | None:
    template = _attempt(problems, lambda: parse_template(value, what=f"{where}.workflow_type"))
    if template is not None and template.constant is not None:
        _attempt(problems, lambda: validate_name(template.constant, what=f"{where}.workflow_type"))
    return template  # type: ignore[no-any-return]


def _policy(value: object, where: str, problems: list[str]) -> IdReusePolicy:
    text = value.upper().replace("-", "_") if isinstance(value, str) else value
    try:
        return IdReusePolicy(text)
    except ValueError:
        problems.append(
            f"{where}.id_reuse_policy: expected allow_duplicate, allow_duplicate_failed_only or "
            f"reject_duplicate, got {value!r}"
        )
        return IdReusePolicy.ALLOW_DUPLICATE


def _timeout(value: object, where: str) -> int:
    ms = parse_duration_ms(value, what=f"{where}.execution_timeout")
    if ms < 1:
        raise InvalidInput(f"{where}.execution_timeout: must be positive")
    return ms


def _condition(  # noqa: PLR0911 - one refusal per malformed shape
    value: object, where: str, problems: list[str]
) -> Condition | None:
    what = f"{where}.when"
    if not isinstance(value, Mapping) or "field" not in value:
        problems.append(
            f"{what}: expected {{field: PATH, equals: X}}, {{field: PATH, in: [..]}} or "
            "{field: PATH, exists: BOOL}"
        )
        return None
    extra = set(value) - {"field", "equals", "in", "exists"}
    tests = [k for k in ("equals", "in", "exists") if k in value]
    if extra or len(tests) != 1:
        problems.append(f"{what}: give field and exactly one of equals, in, exists")
        return None
    path = _attempt(problems, lambda: parse_path(value["field"], what=f"{what}.field"))
    if path is None:
        return None
    match tests[0]:
        case "equals":
            return Condition(path, values=(value["equals"],))
        case "in":
            options = value["in"]
            if not isinstance(options, list) or not options:
                problems.append(f"{what}.in: expected a non-empty list")
                return None
            return Condition(path, values=tuple(options))
        case _:
            if not isinstance(value["exists"], bool):
                problems.append(f"{what}.exists: expected true or false")
                return None
            return Condition(path, exists=value["exists"])


def _format(
    entry: Mapping[str, Any], where: str, base: FilePath, problems: list[str]
) -> UserFormat | None:
    kind = entry.get("format", "json")
    schema = entry.get("schema")
    schema_id = entry.get("schema_id")
    if schema is not None and not isinstance(schema, str):
        problems.append(f"{where}.schema: expected a file path")
        return None
    if schema_id is not None and (isinstance(schema_id, bool) or not isinstance(schema_id, int)):
        problems.append(f"{where}.schema_id: expected a whole number")
        return None
    try:
        return user_format(
            str(kind),
            schema=None if schema is None else base / schema,
            wire=str(entry.get("wire", "single-object")),
            schema_id=schema_id,
        )
    except InvalidInput as err:
        problems.append(f"{where}: {err}")
        return None


def _same_format_per_topic(routes: Sequence[Route], problems: list[str]) -> None:
    """A record is decoded once, so every route of a topic must read the same format."""
    first: dict[str, Route] = {}
    for route in routes:
        seen = first.setdefault(route.topic, route)
        if seen is not route and seen.format != route.format:
            problems.append(
                f"{route.where}: topic {route.topic!r} is read as {seen.format.name} by "
                f"{seen.where}; every route of a topic must use the same format and schema"
            )
