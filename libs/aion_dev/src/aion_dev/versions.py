"""``aion dev`` keeps the workflow modules deployed: a version per edit, new runs on the newest.

On start the named workflow modules are built into a package (what ``aion deploy`` of their
directory builds, and the version the engines know their own code as), uploaded and routed.
Then their files are rebuilt once a second; when an edit changes the version, the new one is
uploaded and routed, so new runs start on the edited code while runs already open stay on the
version they started on. An edit that does not build (a syntax error) is reported on the
terminal and not deployed; the route stays where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence

from aion.client import AionApiError, AionClient, AionUnavailable
from aion_common.packages import Package, PackageError, package_of_modules, user_modules

__all__ = ["CodeDeployer"]

_log = logging.getLogger("aion.dev.versions")
_POLL_S = 1.0


class CodeDeployer:
    """Deploys and routes the package of ``modules`` now and after every edit."""

    def __init__(
        self,
        modules: Sequence[str],
        pythonpath: Sequence[str],
        client: Callable[[], AionClient],
        *,
        say: Callable[[str], None],
        poll_s: float = _POLL_S,
    ) -> None:
        self._modules = user_modules(modules)
        self._pythonpath = list(pythonpath)
        self._client = client
        self._say = say
        self._poll_s = poll_s
        self.version: str | None = None
        """The version routed last (None before the first deploy, or with nothing to deploy)."""
        self._failed: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether there are user modules to deploy (not only aion's own examples)."""
        return bool(self._modules)

    async def deploy_once(self) -> str | None:
        """Build, and when the version changed, upload and route it; the routed version."""
        if not self._modules:
            return None
        try:
            package = await asyncio.to_thread(self._build)
        except PackageError as err:
            message = str(err)
            if message != self._failed:  # say it once per distinct error
                self._failed = message
                kept = f"; new runs stay on {self.version[:12]}" if self.version else ""
                self._say(f"aion dev: workflow code not deployed: {message}{kept}")
            return self.version
        self._failed = None
        if package.version == self.version:
            return self.version
        async with self._client() as client:
            info = await client.deploy(package.archive(), route=True)
        previous, self.version = self.version, info.version
        if previous is not None:
            self._say(
                f"aion dev: workflow code changed: version {info.version[:12]} deployed and "
                f"routed ({', '.join(info.workflow_types)}); new runs start on it, open runs "
                f"stay on {previous[:12]}"
            )
        _log.info(
            "workflow code deployed and routed",
            extra={"version": info.version, "workflow_types": list(info.workflow_types)},
        )
        return self.version

    async def watch(self) -> None:
        """Redeploy on every edit until cancelled; API hiccups are retried next poll."""
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.deploy_once()
            except (AionApiError, AionUnavailable) as err:
                _log.warning("deploying the edited workflow code failed", extra={"error": str(err)})

    def _build(self) -> Package:
        with _on_path(self._pythonpath):
            return package_of_modules(self._modules)


@contextlib.contextmanager
def _on_path(entries: Sequence[str]) -> Iterator[None]:
    added = [e for e in entries if e not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)
