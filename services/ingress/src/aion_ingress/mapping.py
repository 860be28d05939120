"""The ingress's pure core: one consumed record → one aion command, or why not.

:meth:`Mapper.map` decodes the record's value in its topic's format, picks the first route
whose ``when`` holds, and builds the route's command. Its id is derived from (ingress name,
topic, partition, offset) and its ``issued_at`` is the record's timestamp, so mapping the same
record again yields the identical command, which the engine applies once. A record that
cannot become a command is :class:`Unmapped` with a reason (the service dead-letters it); a
record no route wants is :data:`SKIPPED` when the configuration says ``unmatched: skip``.
No I/O, no clock: testable without a broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from aion_common.domain import (
    Command,
    InvalidInput,
    PackageRecord,
    Payload,
    PayloadTooLarge,
    RouteRecord,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
    derive_id,
    validate_id,
    validate_name,
)
from aion_ingress.config import Action, Condition, IngressConfig, Route
from aion_ingress.templates import RecordFields

__all__ = ["SKIPPED", "ConsumedRecord", "KnownTypes", "Mapper", "Skipped", "Unmapped", "command_id"]


class ConsumedRecord(Protocol):
    """What the mapper reads of a Kafka record (aiokafka's ``ConsumerRecord`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Unmapped:
    """The record cannot become a command: dead-letter it with ``reason``; ``error`` names
    the kind of problem (the dead letter's error header)."""

    reason: str
    error: str


class Skipped:
    """No route wants the record and the configuration skips such records."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Final = Skipped()


class KnownTypes:
    """The workflow types records may map to, when the configuration lists them
    (``workflow_types``): those, plus any type routed on ``<prefix>.routes`` (fed by the
    catalog reader, as a ``CatalogListener``: a type deployed and routed later is known at
    once). Without a list nothing is checked here — engines run types of their own modules
    that no topic announces — and the engine refuses an unknown type on the replies topic
    (``aion refusals ID``) instead of the record being dead-lettered."""

    def __init__(self, configured: frozenset[str] = frozenset()) -> None:
        self.configured = configured
        self.routed: set[str] = set()

    def package_added(self, record: PackageRecord) -> None:
        """Packages alone do not make a type startable: only routes count."""

    def package_removed(self, workflow_type: str, version: str) -> None:
        """See :meth:`package_added`."""

    def route_set(self, record: RouteRecord) -> None:
        """A type was routed to a version: records may start it."""
        self.routed.add(record.workflow_type)

    def problem(self, workflow_type: str) -> str | None:
        """Why ``workflow_type`` may not be started, or None."""
        if not self.configured:
            return None
        if workflow_type in self.configured or workflow_type in self.routed:
            return None
        known = ", ".join(sorted({*self.configured, *self.routed}))
        return (
            f"workflow type {workflow_type!r} is not known (listed under workflow_types, or "
            f"deployed and routed): known types are {known}"
        )


def command_id(name: str, topic: str, partition: int, offset: int) -> str:
    """The command id of the record at (``topic``, ``partition``, ``offset``) for the ingress
    named ``name``: the same however often the record is read."""
    return derive_id("ingress", name, topic, str(partition), str(offset))


class Mapper:
    """Maps records of the configured topics to commands."""

    def __init__(
        self, config: IngressConfig, *, payload_limit: int, known_types: KnownTypes | None = None
    ) -> None:
        self.config = config
        self.payload_limit = payload_limit
        self.known_types = known_types or KnownTypes(config.workflow_types)
        self._routes = {topic: config.routes_for(topic) for topic in config.topics}

    def map(self, record: ConsumedRecord) -> Command | Unmapped | Skipped:  # noqa: PLR0911
        """The command ``record`` becomes, or why it becomes none."""
        routes = self._routes.get(record.topic)
        if not routes:
            return Unmapped(f"no route reads topic {record.topic!r}", "UnroutedTopic")
        try:
            value = routes[0].format.decode(record.value)
        except InvalidInput as err:
            return Unmapped(f"{routes[0].format.name}: {err}", "UndecodableValue")
        fields = _fields(record, value)
        route = next((r for r in routes if r.when is None or _holds(r.when, fields)), None)
        if route is None:
            if self.config.unmatched == "skip":
                return SKIPPED
            return Unmapped(
                f"no route of topic {record.topic!r} matches the record "
                f"(routes {', '.join(r.where for r in routes)}; unmatched: dead-letter)",
                "NoMatchingRoute",
            )
        try:
            return self._command(route, fields)
        except PayloadTooLarge as err:
            return Unmapped(f"{route.where}: {err}", "PayloadTooLarge")
        except InvalidInput as err:
            return Unmapped(f"{route.where}: {err}", "UnmappableRecord")

    def _command(self, route: Route, fields: RecordFields) -> Command | Unmapped:
        workflow_id = validate_id(route.workflow_id.render(fields), what="workflow id")
        cid = command_id(self.config.name, fields.topic, fields.partition, fields.offset)
        issued_at = datetime.fromtimestamp(max(0, fields.timestamp) / 1000, UTC)
        limit = self.payload_limit
        signal = payload = None
        if route.signal is not None and route.payload is not None:
            signal = validate_name(route.signal.render(fields), what="signal name")
            payload = Payload.from_json(route.payload.read(fields), limit=limit)
        if route.action is Action.SIGNAL:
            assert signal is not None
            assert payload is not None
            return SignalWorkflow(
                command_id=cid,
                issued_at=issued_at,
                workflow_id=workflow_id,
                name=signal,
                payload=payload,
            )
        assert route.workflow_type is not None
        assert route.input is not None
        workflow_type = validate_name(route.workflow_type.render(fields), what="workflow type")
        unknown = self.known_types.problem(workflow_type)
        if unknown is not None:
            return Unmapped(f"{route.where}: {unknown}", "UnknownWorkflowType")
        start = StartWorkflow(
            command_id=cid,
            issued_at=issued_at,
            workflow_id=workflow_id,
            workflow_type=workflow_type,
            input=Payload.from_json(route.input.read(fields), limit=limit),
            execution_timeout_ms=route.execution_timeout_ms,
            id_reuse_policy=route.id_reuse_policy,
        )
        if route.action is Action.START:
            return start
        assert signal is not None
        assert payload is not None
        return SignalWithStartWorkflow(
            command_id=cid,
            issued_at=issued_at,
            workflow_id=workflow_id,
            workflow_type=workflow_type,
            input=start.input,
            signal_name=signal,
            signal_payload=payload,
            execution_timeout_ms=start.execution_timeout_ms,
            id_reuse_policy=start.id_reuse_policy,
        )


def _fields(record: ConsumedRecord, value: object) -> RecordFields:
    key: str | None = None
    key_problem = "the record has no key"
    if record.key is not None:
        try:
            key = record.key.decode("utf-8")
        except UnicodeDecodeError:
            key_problem = f"the record key is not UTF-8 ({record.key[:16].hex()}…)"
    headers = {}
    for name, raw in record.headers or ():
        try:
            headers[name] = raw.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            continue  # a binary header cannot be read by a path; it is not an error here
    return RecordFields(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        key=key,
        value=value,
        headers=headers,
        key_problem=key_problem,
    )


def _holds(condition: Condition, fields: RecordFields) -> bool:
    try:
        found = condition.field.read(fields)
    except InvalidInput:
        return condition.exists is False
    if condition.exists is not None:
        return condition.exists
    assert condition.values is not None
    return any(_same(found, value) for value in condition.values)


def _same(found: object, wanted: object) -> bool:
    """JSON equality: ``1 == 1.0``, but ``true`` is not ``1``."""
    if isinstance(found, bool) or isinstance(wanted, bool):
        return found is wanted
    return found == wanted
