"""``KafkaCommands``: send commands straight to ``<prefix>.commands``, without the HTTP API.

    settings = Settings.from_env()  # AION_KAFKA_BOOTSTRAP, AION_TOPIC_PREFIX, ...
    async with KafkaCommands(settings) as commands:
        started = await commands.start("order", {"sku": 1}, request_id="order-77")
        await commands.signal(started.workflow_id, "paid", {"amount": 10}, request_id="pay-77")

Each command is Avro-encoded with aion's codec and keyed by its workflow id, so it lands on
the workflow's partition (Kafka's default partitioner, :func:`aion_common.kafka.partition_for`)
where the engine owning that partition applies it. The producer is idempotent, and every
method returns once the broker acknowledged the record.

Command ids derive from ``request_id`` exactly as the API derives them, so retrying a request
— over Kafka or over the API, after a timeout or a crash — sends the same command, which the
engine applies once. Without ``request_id`` every call is a new command (a random id).

What this does not give: the engine's answer. A refused command (say, a start of an unknown
workflow type) is only visible through the API's views (``AionClient.refusals``, or
``AionClient.result(..., command_id=...)``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from aion._errors import AionInvalidRequest, AionUnavailable
from aion._results import Accepted
from aion_common.codecs import Codec
from aion_common.domain import (
    CancelWorkflow,
    Command,
    IdReusePolicy,
    InfrastructureError,
    InvalidInput,
    Payload,
    SignalWithStartWorkflow,
    SignalWorkflow,
    StartWorkflow,
    TerminateWorkflow,
    derive_id,
    start_run_id,
    validate_id,
    validate_name,
)
from aion_common.kafka import KeyedProducer, Topics, partition_for
from aion_common.settings import Settings

__all__ = ["KafkaCommands", "command_id_for", "start_ids_for"]


def start_ids_for(request_id: str) -> tuple[str, str]:
    """(command id, default workflow id) of a start with ``request_id`` — as the API's."""
    validate_id(request_id, what="request id")
    return derive_id("api-start", request_id), derive_id("api-start-workflow", request_id)


def command_id_for(kind: str, workflow_id: str, request_id: str) -> str:
    """The command id of a signal/cancel/terminate with ``request_id`` — as the API's.

    ``kind`` is ``api-signal:<name>``, ``api-signal-with-start:<name>``, ``api-cancel`` or
    ``api-terminate``.
    """
    validate_id(request_id, what="request id")
    return derive_id(kind, workflow_id, request_id)


class KafkaCommands:
    """Produces aion commands to ``<prefix>.commands``; use ``async with`` (or start/stop).

    Raises :class:`~aion.AionInvalidRequest` for an invalid id, name or payload (nothing is
    sent) and :class:`~aion.AionUnavailable` when the broker cannot be reached.
    """

    def __init__(self, settings: Settings, *, client_id: str | None = None) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).commands
        self._codec = Codec(payload_limit=settings.payload_limit_bytes)
        self._producer = KeyedProducer(
            settings,
            # a broker without transactions (AION_TRANSACTIONS=off) may lack idempotence too
            idempotent=settings.transactions != "off",
            client_id=client_id or f"aion-client-{settings.instance_id}",
        )

    @property
    def topic(self) -> str:
        """The commands topic this sends to."""
        return self._topic

    def partition_of(self, workflow_id: str) -> int:
        """The partition a command to ``workflow_id`` lands on."""
        return partition_for(workflow_id, self._settings.partitions)

    async def start_producer(self) -> None:
        """Connect to the brokers (``async with`` does it for you)."""
        try:
            await self._producer.start()
        except InfrastructureError as err:
            raise AionUnavailable(f"cannot reach Kafka: {err}") from err

    async def aclose(self) -> None:
        """Flush and disconnect (idempotent)."""
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start_producer()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(
        self,
        workflow_type: str,
        input: Any = None,  # noqa: A002  # the API's field name
        *,
        id: str | None = None,  # noqa: A002
        request_id: str | None = None,
        execution_timeout_ms: int | None = None,
        id_reuse_policy: IdReusePolicy | str = IdReusePolicy.ALLOW_DUPLICATE,
    ) -> Accepted:
        """Start a workflow; the id is generated when not given (from ``request_id`` if set).

        ``id_reuse_policy`` as :meth:`aion.AionClient.start`; ``run_id`` of the answer is the
        run the start opens once admitted."""
        with _invalid():
            policy = IdReusePolicy.parse(id_reuse_policy)
            workflow_type = validate_name(workflow_type, what="workflow type")
            if request_id is not None:
                command_id, default_id = start_ids_for(request_id)
            else:
                command_id = default_id = str(uuid.uuid4())
            workflow_id = validate_id(id) if id is not None else default_id
            command = StartWorkflow(
                command_id=command_id,
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                workflow_type=workflow_type,
                input=self._payload(input),
                execution_timeout_ms=execution_timeout_ms,
                id_reuse_policy=policy,
            )
        return await self._send(command)

    async def signal(
        self, workflow_id: str, name: str, payload: Any = None, *, request_id: str | None = None
    ) -> Accepted:
        """Send signal ``name`` with ``payload`` to the workflow's current run."""
        with _invalid():
            validate_id(workflow_id)
            validate_name(name, what="signal name")
            command = SignalWorkflow(
                command_id=self._command_id(f"api-signal:{name}", workflow_id, request_id),
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                name=name,
                payload=self._payload(payload),
            )
        return await self._send(command)

    async def signal_with_start(
        self,
        workflow_id: str,
        name: str,
        payload: Any = None,
        *,
        workflow_type: str,
        input: Any = None,  # noqa: A002  # the API's field name
        request_id: str | None = None,
        execution_timeout_ms: int | None = None,
        id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
    ) -> Accepted:
        """Signal the workflow's open run, starting a run of ``workflow_type`` first when it
        has none (as :meth:`aion.AionClient.signal_with_start`)."""
        with _invalid():
            validate_id(workflow_id)
            validate_name(name, what="signal name")
            command = SignalWithStartWorkflow(
                command_id=self._command_id(
                    f"api-signal-with-start:{name}", workflow_id, request_id
                ),
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                workflow_type=validate_name(workflow_type, what="workflow type"),
                input=self._payload(input),
                signal_name=name,
                signal_payload=self._payload(payload),
                execution_timeout_ms=execution_timeout_ms,
                id_reuse_policy=id_reuse_policy,
            )
        return await self._send(command)

    async def cancel(
        self, workflow_id: str, reason: str = "", *, request_id: str | None = None
    ) -> Accepted:
        """Ask the workflow to cancel; its code decides how it ends."""
        with _invalid():
            validate_id(workflow_id)
            command = CancelWorkflow(
                command_id=self._command_id("api-cancel", workflow_id, request_id),
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                reason=reason,
            )
        return await self._send(command)

    async def terminate(
        self, workflow_id: str, reason: str = "", *, request_id: str | None = None
    ) -> Accepted:
        """End the workflow's current run at once (it fails with ``terminated:<reason>``)."""
        with _invalid():
            validate_id(workflow_id)
            command = TerminateWorkflow(
                command_id=self._command_id("api-terminate", workflow_id, request_id),
                issued_at=datetime.now(UTC),
                workflow_id=workflow_id,
                reason=reason,
            )
        return await self._send(command)

    def _payload(self, value: Any) -> Payload:
        return Payload.from_json(value, limit=self._settings.payload_limit_bytes)

    @staticmethod
    def _command_id(kind: str, workflow_id: str, request_id: str | None) -> str:
        if request_id is None:
            return str(uuid.uuid4())
        return command_id_for(kind, workflow_id, request_id)

    async def _send(self, command: Command) -> Accepted:
        value = self._codec.encode_command(command)
        try:
            await self._producer.send(self._topic, command.workflow_id, value)
        except InfrastructureError as err:
            raise AionUnavailable(f"cannot send to {self._topic}: {err}") from err
        run_id = None
        if isinstance(command, StartWorkflow):
            run_id = start_run_id(command.workflow_id, command.command_id)
        return Accepted(
            workflow_id=command.workflow_id, command_id=command.command_id, run_id=run_id
        )


@contextlib.contextmanager
def _invalid() -> Iterator[None]:
    """Turns aion's validation errors into :class:`AionInvalidRequest` (nothing was sent)."""
    try:
        yield
    except (InvalidInput, TypeError) as err:
        raise AionInvalidRequest(str(err)) from err
