"""Which code runs which run: package versions, routes, and the engine's own modules.

A run starts on a version — pinned by its start, else its type's route, else the version of
the modules this engine was started with (``--workflows``) — records it in
``WorkflowStarted.package_version``, and is replayed on exactly that version for its whole
life. Versions arrive from the ``<prefix>.packages`` topic and are loaded on first use, each
in a namespace of its own (:class:`aion_common.packages.PackageLoader`), so any number of
versions of the same modules run side by side. A version that cannot be loaded (its package
is not here yet, or its code does not import) is a :class:`Missing` for the runs that need it:
the core blocks them instead of failing them.

Routes and packages are external state that every engine sees through the compacted topics;
a route whose package this engine has not read yet is held back (new runs keep the previous
route) until the package arrives, so a run never starts on a version this engine cannot load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aion_common.domain import PackageRecord, RouteRecord
from aion_common.kafka.catalog import CATALOG_RECORD_BYTES
from aion_common.packages import Package, PackageError, PackageLoader
from aion_engine.registry import WorkflowFn, WorkflowRegistry

__all__ = ["Missing", "Versions"]

_log = logging.getLogger("aion.engine.versions")


@dataclass(frozen=True, slots=True)
class Missing:
    """Why a version's code is not available for a run (the reason a run is blocked)."""

    reason: str
    error_type: str = "PackageUnavailable"


@dataclass(slots=True)
class _Loaded:
    workflows: dict[str, WorkflowFn] = field(default_factory=dict)
    problem: Missing | None = None
    had_package: bool = False  # a load error of a package that was here is for good


class Versions:
    """Versions, routes and the local modules of one engine process (shared by its cores)."""

    def __init__(
        self,
        local: WorkflowRegistry,
        *,
        local_version: str = "",
        package_dir: Path | None = None,
    ) -> None:
        self._local = local
        self.local_version = local_version
        self._loader = None if package_dir is None else PackageLoader(package_dir)
        self._packages: dict[str, PackageRecord] = {}  # version -> a record of it
        self._types: dict[str, set[str]] = {}  # version -> types offered by records present
        self._loaded: dict[str, _Loaded] = {}
        self._routes: dict[str, str] = {}  # type -> version in effect
        self._pending_routes: dict[str, str] = {}  # type -> version whose package is not here
        self.listeners: list[Callable[[str, str], None]] = []
        """Called with (workflow type, version) when a route takes effect or a package
        arrives: blocked runs may now be movable."""

    # -- what the topics feed in ---------------------------------------------------------

    def package_added(self, record: PackageRecord) -> None:
        """A package record was read from ``<prefix>.packages``."""
        self._packages.setdefault(record.version, record)
        # a version offers the types whose records are live (``aion package rm`` deletes one)
        self._types.setdefault(record.version, set()).add(record.workflow_type)
        pending = [t for t, v in self._pending_routes.items() if v == record.version]
        for workflow_type in pending:
            if workflow_type in self._types[record.version]:
                del self._pending_routes[workflow_type]
                self._set_route(workflow_type, record.version)
        for listener in self.listeners:
            listener(record.workflow_type, record.version)

    def package_removed(self, workflow_type: str, version: str) -> None:
        """A package record was deleted (a tombstone): new runs cannot start on it here."""
        types = self._types.get(version)
        if types is not None:
            types.discard(workflow_type)

    def route_set(self, record: RouteRecord) -> None:
        """A route was read from ``<prefix>.routes``; held back until its package is here."""
        if record.version in self._local_versions() or workflow_type_in(
            self._types.get(record.version), record.workflow_type
        ):
            self._pending_routes.pop(record.workflow_type, None)
            self._set_route(record.workflow_type, record.version)
        else:
            self._pending_routes[record.workflow_type] = record.version

    def _set_route(self, workflow_type: str, version: str) -> None:
        if self._routes.get(workflow_type) == version:
            return
        self._routes[workflow_type] = version
        _log.info("route in effect", extra={"workflow_type": workflow_type, "version": version})
        for listener in self.listeners:
            listener(workflow_type, version)

    # -- what the core asks --------------------------------------------------------------

    def route(self, workflow_type: str) -> str | None:
        """The version new runs of ``workflow_type`` start on, if routed."""
        return self._routes.get(workflow_type)

    def version_for_start(self, workflow_type: str, pinned: str) -> str | None:
        """The version a new run starts on, or None when no version offers the type."""
        if pinned:
            return pinned if self.offers(pinned, workflow_type) else None
        routed = self._routes.get(workflow_type)
        if routed is not None:
            return routed
        if self._local.get(workflow_type) is not None:
            return self.local_version
        return None

    def offers(self, version: str, workflow_type: str) -> bool:
        """Whether ``version`` (known here) defines ``workflow_type``."""
        if version in self._local_versions():
            return self._local.get(workflow_type) is not None
        return workflow_type_in(self._types.get(version), workflow_type)

    def workflow(self, workflow_type: str, version: str) -> WorkflowFn | Missing:
        """The code of ``workflow_type`` in ``version``, loading the version on first use."""
        if version in self._local_versions():
            fn = self._local.get(workflow_type)
            if fn is not None:
                return fn
            if not version:
                return Missing(f"workflow type {workflow_type!r} is not loaded by this engine")
        loaded = self._load(version)
        if loaded.problem is not None:
            return loaded.problem
        fn = loaded.workflows.get(workflow_type)
        if fn is None:
            return Missing(
                f"package version {version[:12]} does not define workflow type {workflow_type!r}"
            )
        return fn

    def types(self) -> tuple[str, ...]:
        """Every type a new run may start as here (local, routed)."""
        return tuple(sorted({*self._local.types(), *self._routes}))

    def loaded(self) -> tuple[str, ...]:
        """The versions this process has code of (its own, and packages loaded so far)."""
        own = (self.local_version,) if self.local_version else ()
        packaged = tuple(v for v, found in self._loaded.items() if found.problem is None)
        return tuple(sorted({*own, *packaged}))

    def _local_versions(self) -> tuple[str, ...]:
        return ("", self.local_version)

    def _load(self, version: str) -> _Loaded:
        loaded = self._loaded.get(version)
        if loaded is not None:
            return loaded
        record = self._packages.get(version)
        if record is None or self._loader is None:
            # not cached: the package may arrive later
            return _Loaded(problem=Missing(f"package version {version[:12]} is not available"))
        loaded = _Loaded(had_package=True)
        try:
            # the API checked the upload against its limit; read whatever the topic holds
            package = Package.from_archive(record.archive, limit=CATALOG_RECORD_BYTES)
            modules = self._loader.load(package)
        except PackageError as err:
            loaded.problem = Missing(
                f"package version {version[:12]} does not load: {err}", "PackageLoadError"
            )
            _log.error("package does not load", extra={"version": version, "error": str(err)})
        else:
            registry = WorkflowRegistry()
            for module in modules:
                registry.add_module(module)
            loaded.workflows = {t: f for t in registry.types() if (f := registry.get(t))}
            _log.info(
                "package version loaded",
                extra={"version": version, "workflow_types": registry.types()},
            )
        self._loaded[version] = loaded
        return loaded


def workflow_type_in(types: Iterable[str] | None, workflow_type: str) -> bool:
    """Whether ``types`` (None: unknown) holds ``workflow_type``."""
    return types is not None and workflow_type in types
