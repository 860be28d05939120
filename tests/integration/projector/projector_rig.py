"""An in-process projector on the real broker, and a wait for it to reach the log's end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from projector_workload import end_offsets

from aion_common.settings import Settings
from aion_projector.service import ProjectorService


@asynccontextmanager
async def running(settings: Settings, **options: Any) -> AsyncIterator[ProjectorService]:
    """A started projector whose loop runs as a task until the block ends."""
    service = ProjectorService(settings, **options)
    await service.start()
    task = asyncio.create_task(service.run(), name="projector")
    try:
        yield service
    finally:
        await service.stop()
        await task


async def caught_up(service: ProjectorService, settings: Settings, timeout: float = 60.0) -> None:
    """Wait until the stored offsets of every partition equal the log's committed end."""
    ends = await end_offsets(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while service.status.next_offsets != ends:
        if loop.time() > deadline:
            raise AssertionError(f"not caught up: stored {service.status.next_offsets}, end {ends}")
        await asyncio.sleep(0.1)
