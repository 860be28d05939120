"""The API's view of the version catalog (packages and routes), and how it writes to it.

:class:`KafkaCatalog` tails ``<prefix>.packages`` and ``<prefix>.routes`` like every engine
does and writes through :class:`~aion_common.kafka.catalog.CatalogWriter`; a write returns
once the API has read it back, so ``aion deploy`` then ``aion route`` (or ``aion packages``)
see it at once. :class:`MemoryCatalog` is the same without Kafka, for tests of the routes.

Like the command sink, the catalog starts without Kafka (issue 19): its writer connects in the
background through the API's :class:`~aion_common.kafka.link.BrokerLink`. As the schedule
store's (decision 66), a write is refused at once while the link knows Kafka is away (or before
the writer connected), and otherwise answered within
:data:`~aion_projector.api._writer.WRITE_ANSWER_S`: written and read back, or
:class:`CatalogUnavailable` (503 with ``Retry-After``) saying whether the change was not made,
may or may not have been made (Kafka did not acknowledge it in time) or was made but not read
back yet, and what to run — never a request held until the client gives up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aion_common.codecs import Codec
from aion_common.domain import InfrastructureError, PackageRecord, RouteRecord
from aion_common.kafka.catalog import CatalogReader, CatalogWriter
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_projector.api._sink import DEFAULT_PRODUCE_TIMEOUT_S
from aion_projector.api._writer import WRITE_ANSWER_S, WriterConnection, WriteUnavailable

__all__ = [
    "CatalogState",
    "CatalogUnavailable",
    "KafkaCatalog",
    "MemoryCatalog",
    "VersionCatalog",
]

_CATCH_UP_S = 30.0


class CatalogUnavailable(WriteUnavailable):
    """A catalog change that was not made, or not confirmed: the message says which and what
    to run; the API answers it 503 with ``Retry-After: retry_after_s``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Change:
    """One catalog change in the words of its answers: a
    :class:`~aion_projector.api._writer.WriteWords`, and the words of one not read back."""

    what: str  # "the package 0123456789ab"
    not_done: str  # "the package was not deployed"
    again: str  # "run `aion deploy` again"
    look: str  # "`aion packages` shows whether it was"

    def not_written(self, why: str) -> str:
        return f"{why}; {self.not_done}: {self.again} once Kafka is back"

    def unacknowledged(self, where: str, timeout_s: float) -> str:
        return (
            f"{where} did not acknowledge {self.what} within {timeout_s:g} s, so it may or may "
            f"not have been written (Kafka may still take it when it answers): {self.look}; "
            f"{self.again} if not"
        )

    def refused(self, where: str, error: InfrastructureError) -> str:
        return f"{where} refused {self.what} ({error}); {self.again}"

    def not_read_back(self, within_s: float) -> str:
        return (
            f"{self.what} was written to Kafka, but this API has not read it back within "
            f"{within_s:g} s; it takes effect as written ({self.look} once read)"
        )


class VersionCatalog(Protocol):
    """What the versions routes read and write."""

    def records(self) -> list[PackageRecord]:
        """Every live package record (one per type and version)."""

    def version(self, version: str) -> list[PackageRecord]:
        """The records of one version (empty if unknown)."""

    def routes(self) -> dict[str, RouteRecord]:
        """The route per workflow type."""

    async def deploy(self, records: Sequence[PackageRecord]) -> None:
        """Write one version's records (atomically) and wait until they are read back."""

    async def remove(self, workflow_type: str, version: str) -> None:
        """Delete one type's record of a version; wait until read back."""

    async def route(self, record: RouteRecord) -> None:
        """Route new runs of a type; wait until read back."""


class CatalogState:
    """The catalog as read so far (a :class:`~aion_common.kafka.catalog.CatalogListener`)."""

    def __init__(self) -> None:
        self._packages: dict[tuple[str, str], PackageRecord] = {}
        self._routes: dict[str, RouteRecord] = {}

    def package_added(self, record: PackageRecord) -> None:
        """A package record was read."""
        self._packages[(record.workflow_type, record.version)] = record

    def package_removed(self, workflow_type: str, version: str) -> None:
        """A package record was deleted."""
        self._packages.pop((workflow_type, version), None)

    def route_set(self, record: RouteRecord) -> None:
        """A route was read."""
        self._routes[record.workflow_type] = record

    def records(self) -> list[PackageRecord]:
        """Every live record, by version then type."""
        return [self._packages[k] for k in sorted(self._packages, key=lambda k: (k[1], k[0]))]

    def version(self, version: str) -> list[PackageRecord]:
        """The records of ``version``, by type."""
        return sorted(
            (r for (_, v), r in self._packages.items() if v == version),
            key=lambda r: r.workflow_type,
        )

    def routes(self) -> dict[str, RouteRecord]:
        """The route per type."""
        return dict(self._routes)


class MemoryCatalog(CatalogState):
    """A catalog in memory: writes apply at once (tests)."""

    async def deploy(self, records: Sequence[PackageRecord]) -> None:
        """Add the records."""
        for record in records:
            self.package_added(record)

    async def remove(self, workflow_type: str, version: str) -> None:
        """Delete a record."""
        self.package_removed(workflow_type, version)

    async def route(self, record: RouteRecord) -> None:
        """Set a route."""
        self.route_set(record)


class KafkaCatalog(CatalogState):
    """The catalog on Kafka, tailed in the background; writes wait (bounded) to be read back.

    A send waits at most ``produce_timeout_s`` (capped at
    :data:`~aion_projector.api._writer.WRITE_ANSWER_S`) for Kafka's acknowledgement."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        link: BrokerLink | None = None,
        produce_timeout_s: float = DEFAULT_PRODUCE_TIMEOUT_S,
    ) -> None:
        super().__init__()
        codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._reader = CatalogReader(settings, self, codec=codec)
        self._writer = CatalogWriter(settings, codec=codec)
        self._send_timeout_s = min(produce_timeout_s, WRITE_ANSWER_S)
        self._connection = WriterConnection(
            self._writer,
            link,
            what="the catalog writer",
            refused="version changes are refused",
            task_name="api.catalog.connect",
        )

    async def start(self) -> None:
        """Connect the writer and start tailing; waits (bounded) for the catalog to be read.
        Without Kafka (or a ``link`` that knows it is away) the writer goes on connecting in
        the background and the API starts at once."""
        await self._reader.start()
        if await self._connection.start():
            await self._reader.caught_up(_CATCH_UP_S)

    async def stop(self) -> None:
        """Stop tailing and disconnect; idempotent."""
        await self._reader.stop()
        await self._connection.stop()

    async def _write(
        self, change: _Change, send: Callable[[], Awaitable[None]], done: Callable[[], bool]
    ) -> None:
        await self._connection.write(
            send, change, timeout_s=self._send_timeout_s, read=done, unavailable=CatalogUnavailable
        )

    async def deploy(self, records: Sequence[PackageRecord]) -> None:
        """Write the records in one transaction; wait until read back."""
        version = records[0].version[:12] if records else "?"
        change = _Change(
            what=f"the package {version}",
            not_done="the package was not deployed",
            again="run `aion deploy` again",
            look="`aion packages` shows whether it was",
        )
        keys = [(r.workflow_type, r.version) for r in records]
        await self._write(
            change,
            lambda: self._writer.deploy(records),
            lambda: all(k in self._packages for k in keys),
        )

    async def remove(self, workflow_type: str, version: str) -> None:
        """Tombstone a record; wait until read back."""
        change = _Change(
            what=f"the deletion of {workflow_type!r} in {version[:12]}",
            not_done=f"{workflow_type!r} in {version[:12]} was not deleted",
            again="run `aion package rm` again",
            look="`aion packages` shows whether it was",
        )
        key = (workflow_type, version)
        await self._write(
            change,
            lambda: self._writer.remove(workflow_type, version),
            lambda: key not in self._packages,
        )

    async def route(self, record: RouteRecord) -> None:
        """Write a route; wait until read back."""
        name, version = record.workflow_type, record.version[:12]
        change = _Change(
            what=f"the route of {name!r} to {version}",
            not_done=f"{name!r} was not routed to {version}",
            again="run `aion route` again",
            look="`aion routes` shows whether it was",
        )
        await self._write(
            change,
            lambda: self._writer.route(record),
            lambda: self._routes.get(record.workflow_type) == record,
        )
