"""The API's view of the version catalog (packages and routes), and how it writes to it.

:class:`KafkaCatalog` tails ``<prefix>.packages`` and ``<prefix>.routes`` like every engine
does and writes through :class:`~aion_common.kafka.catalog.CatalogWriter`; a write returns
once the API has read it back, so ``aion deploy`` then ``aion route`` (or ``aion packages``)
see it at once. :class:`MemoryCatalog` is the same without Kafka, for tests of the routes.

Like the command sink, the catalog starts without Kafka (issue 19): its writer connects in the
background through the API's :class:`~aion_common.kafka.link.BrokerLink`, and a write before
then (or while the cluster is away) is refused as retriable, which the API answers with 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from aion_common.codecs import Codec
from aion_common.domain import InfrastructureError, PackageRecord, RouteRecord
from aion_common.kafka.catalog import CatalogReader, CatalogWriter
from aion_common.kafka.link import BrokerLink
from aion_common.settings import Settings
from aion_projector.api._writer import WriterConnection, read_back

__all__ = ["CatalogState", "KafkaCatalog", "MemoryCatalog", "VersionCatalog"]

_READ_BACK_S = 15.0
_CATCH_UP_S = 30.0


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
    """The catalog on Kafka, tailed in the background; writes wait to be read back."""

    def __init__(
        self, settings: Settings, *, codec: Codec | None = None, link: BrokerLink | None = None
    ) -> None:
        super().__init__()
        codec = codec or Codec(payload_limit=settings.payload_limit_bytes)
        self._reader = CatalogReader(settings, self, codec=codec)
        self._writer = CatalogWriter(settings, codec=codec)
        self._link = link
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

    def _check_connected(self) -> None:
        if not self._connection.connected:
            link = self._link
            where = "the Kafka cluster" if link is None else f"Kafka at {link.bootstrap}"
            raise InfrastructureError(
                f"{where} is not reachable yet; the version catalog cannot be written: retry",
                retriable=True,
            )

    async def deploy(self, records: Sequence[PackageRecord]) -> None:
        """Write the records in one transaction; wait until read back."""
        self._check_connected()
        await self._writer.deploy(records)
        keys = [(r.workflow_type, r.version) for r in records]
        await _read_back(lambda: all(k in self._packages for k in keys), "the package")

    async def remove(self, workflow_type: str, version: str) -> None:
        """Tombstone a record; wait until read back."""
        self._check_connected()
        await self._writer.remove(workflow_type, version)
        key = (workflow_type, version)
        await _read_back(lambda: key not in self._packages, "the deletion")

    async def route(self, record: RouteRecord) -> None:
        """Write a route; wait until read back."""
        self._check_connected()
        await self._writer.route(record)
        await _read_back(lambda: self._routes.get(record.workflow_type) == record, "the route")


async def _read_back(done: Callable[[], bool], what: str) -> None:
    if not await read_back(done, deadline=time.monotonic() + _READ_BACK_S):
        raise InfrastructureError(
            f"{what} was written to Kafka but not read back within {_READ_BACK_S:.0f} s; "
            "it takes effect once the catalog topics are readable",
            retriable=True,
        )
