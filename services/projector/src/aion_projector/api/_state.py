"""What the routes share: settings, the views' sessions and the command sink."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aion_common.packages import DEFAULT_PACKAGE_LIMIT
from aion_common.settings import Settings
from aion_projector.api._answers import QueryDesk
from aion_projector.api._catalog import VersionCatalog
from aion_projector.api._cluster import ClusterView
from aion_projector.api._sink import CommandSink
from aion_projector.archive import Archive
from aion_projector.one_hop import OneHopTransactions

if TYPE_CHECKING:
    from aion_projector.api._endings import RunEndings
    from aion_projector.api._schedules import ScheduleStore

__all__ = ["ApiState", "state"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiState:
    """The wiring :func:`~aion_projector.api.create_app` was given."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    sink: CommandSink
    poll_interval: float
    cluster: ClusterView | None = None
    """Where the registry page reads engine ownership and offsets (None: not shown)."""
    ui_poll_ms: int = 1000
    """How often a workflow page asks for changes while the workflow runs."""
    ui_session: str | None = None
    """The sign-in cookie's value when a token is required (None: no sign-in)."""
    catalog: VersionCatalog | None = None
    """Packages and routes (None: the versions endpoints answer 503)."""
    package_limit: int = DEFAULT_PACKAGE_LIMIT
    """The largest package archive an upload may be (bytes)."""
    queries: QueryDesk | None = None
    """Where queries are asked of the engine (None: the query endpoints answer 503)."""
    archive: Archive | None = None
    """Where purged workflows' histories were archived (None: no archive)."""
    schedules: ScheduleStore | None = None
    """Schedule definitions and states (None: the schedule endpoints answer 503)."""
    endings: RunEndings | None = None
    """Rings when a waited-for run ends (None: result long-polls only poll the views)."""
    one_hop: OneHopTransactions | None = None
    """Runs a result wait's reads in one thread hop on an SQLite file (None: through
    ``sessions``), as the projector writes (decision 58)."""


async def state(request: Request) -> ApiState:
    """The app's :class:`ApiState` (a FastAPI dependency).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
    round trip per request that cost more than the Kafka send under load.
    """
    found: ApiState = request.app.state.aion
    return found
