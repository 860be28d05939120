"""Version endpoints: upload and list packages, route types to versions, move a run.

A package is uploaded as its zip (``aion deploy`` builds it; ``POST /v1/packages`` with
``Content-Type: application/zip``). The API checks it without running it — the archive is a
package within the size limit, every Python file parses, and it declares at least one workflow
type with ``@workflow.defn`` — and then writes one record per declared type in one Kafka
transaction: a refused upload leaves nothing behind. The version is the content hash, so
uploading the same files again changes nothing (200 instead of 201).

Routes name the version new runs of a type start on; a route to a version that is not uploaded
or does not define the type is refused. A version's record is deleted only when no open run of
its type is on it and it is not the type's route. Moving a run sends a ``MoveWorkflow``; the
engine checks that the version's code replays the run before moving it, and refuses otherwise
(``GET .../refusals``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from aion_common.domain import (
    MoveWorkflow,
    PackageRecord,
    RouteRecord,
    validate_id,
    validate_name,
    validate_version,
)
from aion_common.packages import Package, PackageError, declared_workflows
from aion_projector.api._catalog import VersionCatalog
from aion_projector.api._models import Accepted
from aion_projector.api._paths import SEGMENT, WORKFLOW, url_segment
from aion_projector.api._problems import PROBLEM_MEDIA_TYPE, ProblemError
from aion_projector.api._state import ApiState, state
from aion_projector.api._writes import command_id_for
from aion_projector.operations import open_run_versions, open_runs_on
from aion_projector.queries import describe
from aion_projector.schema import RunStatus

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["versions"])
State = Annotated[ApiState, Depends(state)]
Version = Annotated[
    str, Path(pattern="^[0-9a-f]{64}$", description="A package version (sha-256, 64 hex).")
]
WorkflowType = Annotated[str, Path(min_length=1, max_length=128, description="Workflow type.")]
WorkflowId = Annotated[str, Path(min_length=1, max_length=255, description="Workflow id.")]
_NAMED_RUNS = 10
_PROBLEM = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class PackageOut(_Out):
    """One package version: what it defines and holds."""

    version: str
    workflow_types: list[str]
    top_level: list[str]
    files: int
    size_bytes: int = Field(description="The archive's size (compressed).")
    uploaded_at: datetime
    created: bool = Field(default=False, description="False when it was uploaded before.")


class PackageEntryOut(_Out):
    """One workflow type of one version, as ``aion packages`` lists it."""

    workflow_type: str
    version: str
    size_bytes: int
    uploaded_at: datetime
    routed: bool = Field(description="Whether new runs of the type start on this version.")
    open_runs: int = Field(description="Open runs of the type on this version.")


class PackagesOut(_Out):
    """Every live package record."""

    items: list[PackageEntryOut]


class RouteOut(_Out):
    """New runs of ``workflow_type`` start on ``version``."""

    workflow_type: str
    version: str
    routed_at: datetime


class RoutesOut(_Out):
    """Every route."""

    items: list[RouteOut]


class RouteRequest(BaseModel):
    """Route a type to a version."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern="^[0-9a-f]{64}$", description="An uploaded package version.")


class MoveRequest(BaseModel):
    """Move a workflow's current (or the given) run to a version."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern="^[0-9a-f]{64}$", description="An uploaded package version.")
    run_id: str | None = Field(default=None, min_length=1, max_length=255)
    request_id: str | None = Field(default=None, min_length=1, max_length=255)


def _catalog(st: ApiState) -> VersionCatalog:
    if st.catalog is None:
        raise ProblemError(503, "unavailable", "this API has no version catalog configured")
    return st.catalog


def _package_out(records: list[PackageRecord], *, created: bool = False) -> PackageOut:
    first = records[0]
    return PackageOut(
        version=first.version,
        workflow_types=sorted(r.workflow_type for r in records),
        top_level=list(first.top_level),
        files=len(Package.from_archive(first.archive, limit=len(first.archive)).files),
        size_bytes=len(first.archive),
        uploaded_at=min(r.uploaded_at for r in records),
        created=created,
    )


def _unprocessable(detail: str) -> ProblemError:
    return ProblemError(422, "invalid-package", f"{detail}; nothing was deployed")


def _check_upload(data: bytes, limit: int) -> tuple[Package, dict[str, str]]:
    if len(data) > limit:
        raise ProblemError(
            413,
            "package-too-large",
            f"the package archive is {len(data)} bytes, over the limit of {limit} "
            "(AION_PACKAGE_LIMIT_BYTES); leave data files out or raise the limit; "
            "nothing was deployed",
        )
    try:
        package = Package.from_archive(data, limit=limit)
        declared = declared_workflows(package)
    except PackageError as err:
        raise _unprocessable(str(err)) from err
    if not package.top_level:
        raise _unprocessable("the archive holds no importable Python module")
    if not declared:
        raise _unprocessable(
            "the package declares no workflow (no function decorated with @workflow.defn)"
        )
    for name in declared:
        validate_name(name, what="workflow type")
    return package, declared


@router.post(
    "/packages",
    status_code=201,
    summary="Upload a package",
    responses={
        200: {"description": "The same version was uploaded before."},
        201: {"description": "The package version was stored."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_route(
    st: State,
    request: Request,
    response: Response,
    route: Annotated[bool, Query(description="Also route every type it defines to it.")] = False,
) -> PackageOut:
    """Store a package (its zip as the body); with ``route``, route its types to it too."""
    catalog = _catalog(st)
    package, declared = _check_upload(await request.body(), st.package_limit)
    version = package.version
    known = {r.workflow_type for r in catalog.version(version)}
    created = not set(declared) <= known
    if created:
        now = datetime.now(UTC)
        types = tuple(sorted(declared))
        archive = package.archive()
        await catalog.deploy(
            [
                PackageRecord(
                    workflow_type=t,
                    version=version,
                    workflow_types=types,
                    top_level=package.top_level,
                    archive=archive,
                    uploaded_at=now,
                )
                for t in types
            ]
        )
    if route:
        routes = catalog.routes()
        for workflow_type in sorted(declared):
            current = routes.get(workflow_type)
            if current is None or current.version != version:
                await catalog.route(
                    RouteRecord(
                        workflow_type=workflow_type, version=version, routed_at=datetime.now(UTC)
                    )
                )
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/packages/{version}"
    return _package_out(catalog.version(version), created=created)


@router.get("/packages", summary="List packages")
async def packages_route(st: State) -> PackagesOut:
    """Every live (type, version) record, with whether it is routed and its open runs."""
    catalog = _catalog(st)
    routes = catalog.routes()
    async with st.sessions() as session:
        counts = {
            (c.workflow_type, c.package_version): c.open_runs
            for c in await open_run_versions(session)
        }
    return PackagesOut(
        items=[
            PackageEntryOut(
                workflow_type=r.workflow_type,
                version=r.version,
                size_bytes=len(r.archive),
                uploaded_at=r.uploaded_at,
                routed=(route := routes.get(r.workflow_type)) is not None
                and route.version == r.version,
                open_runs=counts.get((r.workflow_type, r.version), 0),
            )
            for r in catalog.records()
        ]
    )


def _records(catalog: VersionCatalog, version: str) -> list[PackageRecord]:
    validate_version(version)
    records = catalog.version(version)
    if not records:
        raise ProblemError(
            404,
            "not-found",
            f"package version {version} is not uploaded (aion deploy PATH uploads one)",
        )
    return records


@router.get("/packages/{version}", summary="Describe a package version")
async def package_route(st: State, version: Version) -> PackageOut:
    """What one version defines and holds."""
    return _package_out(_records(_catalog(st), version))


@router.get(
    "/packages/{version}/archive",
    summary="Download a package version",
    response_class=Response,
    responses={200: {"content": {"application/zip": {"schema": {"type": "string"}}}}},
)
async def archive_route(st: State, version: Version) -> Response:
    """The version's files as the zip that was uploaded (``aion replay --against HASH``)."""
    record = _records(_catalog(st), version)[0]
    return Response(content=record.archive, media_type="application/zip")


@router.delete(
    "/packages/{workflow_type}/{version}",
    status_code=204,
    summary="Delete one type of a package version",
    responses={
        409: {"description": "Open runs use it, or it is the type's route.", "content": _PROBLEM}
    },
)
async def delete_route(st: State, workflow_type: WorkflowType, version: Version) -> Response:
    """Delete the record of ``workflow_type`` in ``version``: refused while it is the type's
    route or an open run of the type is on it (the runs are named)."""
    catalog = _catalog(st)
    validate_name(workflow_type, what="workflow type")
    if workflow_type not in {r.workflow_type for r in _records(catalog, version)}:
        raise ProblemError(
            404, "not-found", f"package version {version} does not define {workflow_type!r}"
        )
    route = catalog.routes().get(workflow_type)
    if route is not None and route.version == version:
        raise ProblemError(
            409,
            "conflict",
            f"{workflow_type!r} is routed to {version[:12]}: route it to another version "
            "first (aion route TYPE HASH)",
        )
    async with st.sessions() as session:
        total, ids = await open_runs_on(session, workflow_type, version, limit=_NAMED_RUNS)
    if total:
        named = ", ".join(ids) + (f" and {total - len(ids)} more" if total > len(ids) else "")
        raise ProblemError(
            409,
            "conflict",
            f"{total} open run(s) of {workflow_type!r} are on {version[:12]}: {named}; let them "
            "finish, move them (aion run move ID HASH) or terminate them first",
        )
    await catalog.remove(workflow_type, version)
    return Response(status_code=204)


@router.get("/routes", summary="List routes")
async def routes_route(st: State) -> RoutesOut:
    """The version new runs of each type start on."""
    routes = _catalog(st).routes()
    return RoutesOut(
        items=[
            RouteOut(workflow_type=t, version=r.version, routed_at=r.routed_at)
            for t, r in sorted(routes.items())
        ]
    )


@router.put(
    f"/routes/{{workflow_type:{SEGMENT}}}",
    summary="Route a type to a version",
    responses={422: {"description": "The version does not define the type."}},
)
async def set_route(
    st: State, workflow_type: WorkflowType, body: Annotated[RouteRequest, Body()]
) -> RouteOut:
    """New runs of ``workflow_type`` (and continue-as-new runs not pinned) start on
    ``version``; every engine sees the change. Runs already open stay on theirs."""
    catalog = _catalog(st)
    validate_name(workflow_type, what="workflow type")
    records = _records(catalog, body.version)
    types = sorted(r.workflow_type for r in records)
    if workflow_type not in types:
        raise ProblemError(
            422,
            "invalid-route",
            f"package version {body.version[:12]} does not define workflow type "
            f"{workflow_type!r} (it defines {', '.join(types)}); the route was not changed",
        )
    record = RouteRecord(
        workflow_type=workflow_type, version=body.version, routed_at=datetime.now(UTC)
    )
    await catalog.route(record)
    return RouteOut(workflow_type=workflow_type, version=record.version, routed_at=record.routed_at)


_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "The move is queued; the engine checks the replay and applies it."},
    409: {"description": "The run is closed.", "content": _PROBLEM},
}


@router.post(
    f"{WORKFLOW}/move", status_code=202, responses=_ACCEPTED, summary="Move a run to a version"
)
async def move_route(
    st: State, workflow_id: WorkflowId, body: Annotated[MoveRequest, Body()], response: Response
) -> Accepted:
    """Queue a ``MoveWorkflow``: the run goes on on ``version`` if that code replays its
    history (the engine refuses the move otherwise: ``GET .../refusals``)."""
    catalog = _catalog(st)
    validate_id(workflow_id)
    async with st.sessions() as session:
        found = await describe(session, workflow_id)
    if found is None:
        raise ProblemError(404, "not-found", f"workflow {workflow_id!r} is not in the views")
    wanted = body.run_id or found.summary.current_run_id
    run = next((r for r in found.runs if r.run_id == wanted), None)
    if run is None:
        raise ProblemError(404, "not-found", f"workflow {workflow_id!r} has no run {wanted!r}")
    if not RunStatus(run.status).is_open:
        raise ProblemError(
            409,
            "conflict",
            f"run {run.run_id} of {workflow_id!r} is {run.status}: only an open run can move",
        )
    types = {r.workflow_type for r in _records(catalog, body.version)}
    if run.workflow_type not in types:
        raise ProblemError(
            422,
            "invalid-move",
            f"package version {body.version[:12]} does not define {run.workflow_type!r}",
        )
    command = MoveWorkflow(
        command_id=command_id_for(f"api-move:{body.version}", workflow_id, body.request_id),
        issued_at=datetime.now(UTC),
        workflow_id=workflow_id,
        run_id=run.run_id,
        package_version=body.version,
    )
    await st.sink.send(command)
    response.headers["Location"] = f"/v1/workflows/{url_segment(workflow_id)}"
    return Accepted(workflow_id=workflow_id, command_id=command.command_id)
