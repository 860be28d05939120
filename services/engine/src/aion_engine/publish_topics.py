"""Which user topics the engine may publish to (``ctx.publish``), as the cores ask it.

The cores are pure and cannot wait for a broker, so :class:`PublishTopics` answers from what
it knows: a topic seen to exist may be written; a topic checked and found missing (within the
last :data:`MISSING_FOR_S`, or until a refresh sees it) may not — the core then blocks the run;
any other topic is assumed writable, and the service checks it with :meth:`check` before the
transaction that would write to it. If the check finds it missing, the service drops the
partition's work and acquires it again: the same commands are decided again, and this time
the core blocks the run whose code published there. With ``AION_PUBLISH_CREATE_TOPICS=on``
a missing topic is created instead (``AION_PARTITIONS`` partitions, the replication factor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from aion_common.domain import InfrastructureError
from aion_common.kafka.admin import ensure_topics
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options
from aion_common.settings import Settings

__all__ = ["MISSING_FOR_S", "PublishTopics"]

_log = logging.getLogger("aion.engine.publish")
MISSING_FOR_S = 60.0
_REFRESH_S = 10.0


class PublishTopics:
    """The engine process's knowledge of user topics (a :class:`~.publishing.TopicCheck`)."""

    def __init__(self, settings: Settings, *, create: bool = False) -> None:
        self._settings = settings
        self.create = create
        self.known: set[str] = set()
        self._missing: dict[str, float] = {}  # topic -> when it was found missing (monotonic)
        self._task: asyncio.Task[None] | None = None

    def __call__(self, topic: str) -> str | None:
        """Why ``topic`` may not be written now, or None (see the module docstring)."""
        if topic in self.known or self.create:
            return None
        found = self._missing.get(topic)
        if found is not None and time.monotonic() - found < MISSING_FOR_S:
            return "the topic does not exist (and AION_PUBLISH_CREATE_TOPICS is off)"
        return None

    def unknown(self, topics: Iterable[str]) -> set[str]:
        """Which of ``topics`` must be checked before they are written."""
        return {t for t in topics if t not in self.known}

    async def check(self, topics: set[str]) -> set[str]:
        """Refresh, create the missing ones when configured; the ones still missing."""
        await self.refresh()
        missing = topics - self.known
        if missing and self.create:
            await ensure_topics(self._settings, sorted(missing), configs={})
            _log.info("created topics to publish to", extra={"topics": sorted(missing)})
            self.known |= missing
            return set()
        now = time.monotonic()
        for topic in missing:
            self._missing[topic] = now
        return missing

    async def refresh(self) -> None:
        """Learn which topics exist now; a topic that exists again is no longer missing."""
        admin = AIOKafkaAdminClient(**client_options(self._settings), client_id="aion-publish")
        try:
            await admin.start()
            self.known = set(await admin.list_topics())
        except KafkaError as err:
            raise infrastructure_error(err, "listing topics") from err
        finally:
            await admin.close()
        for topic in list(self._missing):
            if topic in self.known:
                del self._missing[topic]

    async def start(self) -> None:
        """Refresh now and every few seconds in the background."""
        with contextlib.suppress(InfrastructureError):  # the broker away: the loop retries
            await self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="engine-publish-topics")

    async def stop(self) -> None:
        """Stop refreshing; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(_REFRESH_S)
            try:
                await self.refresh()
            except InfrastructureError as err:  # the next round retries
                _log.info("refreshing the topic list failed", extra={"error": repr(err)})
