"""The list, registry, dead-letter and schedule pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from starlette.responses import HTMLResponse

from aion_common.domain import InvalidInput, validate_id, validate_name
from aion_projector.api._problems import ProblemError
from aion_projector.api._schedules import schedule_list
from aion_projector.api._state import ApiState, state
from aion_projector.api.ui._render import render
from aion_projector.operations import (
    dead_letters,
    open_run_versions,
    recent_refusals,
    versions_by_engine,
    workflow_types,
)
from aion_projector.queries import WorkflowFilter, list_workflows, stored_offsets
from aion_projector.schema import RunStatus

__all__ = ["PAGE_SIZE", "ListForm", "router"]

PAGE_SIZE = 50
_CURSOR = re.compile(r"^[A-Za-z0-9_=-]{1,1024}$")

router = APIRouter(include_in_schema=False)
State = Annotated[ApiState, Depends(state)]
Text = Annotated[str, Query(max_length=1024)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListForm:
    """The list page's filter form as submitted (strings, as the inputs hold them)."""

    q: str = ""
    status: str = ""
    type: str = ""
    started_from: str = ""
    started_before: str = ""

    def query(self, **extra: str | None) -> str:
        """This form's query string, plus ``extra`` (empty values left out)."""
        fields = {
            "q": self.q,
            "status": self.status,
            "type": self.type,
            "started_from": self.started_from,
            "started_before": self.started_before,
            **extra,
        }
        return urlencode({k: v for k, v in fields.items() if v})

    @property
    def filtered(self) -> bool:
        """Whether any criterion is set."""
        return any((self.q, self.status, self.type, self.started_from, self.started_before))

    def where(self) -> WorkflowFilter:
        """The filter; :class:`InvalidInput` names the field that is wrong."""
        if self.status and self.status not in RunStatus.__members__:
            raise InvalidInput(f"status {self.status!r} is not one of {', '.join(RunStatus)}")
        if self.q:
            validate_id(self.q, what="the id prefix")
        if self.type:
            validate_name(self.type, what="the type")
        return WorkflowFilter(
            id_prefix=self.q or None,
            status=self.status or None,
            workflow_type=self.type or None,
            started_from=_moment("started from", self.started_from),
            started_before=_moment("started before", self.started_before),
        )


def _moment(label: str, value: str) -> datetime | None:
    """A ``datetime-local`` input's value (or any ISO 8601 time), taken as UTC if zoneless."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise InvalidInput(f"{label}: {value!r} is not a time (YYYY-MM-DDTHH:MM)") from err
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _cursor(value: str) -> str | None:
    if not value:
        return None
    if not _CURSOR.match(value):
        raise InvalidInput("that page link is not one this UI made: start from the first page")
    return value


@router.get("/", response_class=HTMLResponse)
async def list_page(  # noqa: PLR0917 - FastAPI takes each query field as a parameter
    st: State,
    q: Text = "",
    status: Text = "",
    type: Text = "",  # noqa: A002 - the form field's name
    started_from: Text = "",
    started_before: Text = "",
    after: Text = "",
    before: Text = "",
) -> HTMLResponse:
    """Workflows, newest first (by id with an id prefix), filtered, a page at a time."""
    form = ListForm(
        q=q.strip(),
        status=status,
        type=type.strip(),
        started_from=started_from,
        started_before=started_before,
    )
    error = None
    page = None
    async with st.sessions() as session:
        types = await workflow_types(session)
        try:
            page = await list_workflows(
                session,
                form.where(),
                limit=PAGE_SIZE,
                after_cursor=_cursor(after),
                before_cursor=_cursor(before),
            )
        except InvalidInput as err:
            error = str(err)
    return render(
        "list.html",
        status_code=400 if error else 200,
        form=form,
        page=page,
        error=error,
        types=types,
        statuses=list(RunStatus),
        paged=bool(after or before),
        nav="workflows",
    )


@router.get("/registry", response_class=HTMLResponse)
async def registry_page(st: State) -> HTMLResponse:
    """Which engine owns which partition, package versions of open runs, per-partition lag."""
    snapshot = None if st.cluster is None else await st.cluster.snapshot()
    events = st.settings.topic_prefix + ".events"
    async with st.sessions() as session:
        versions = await open_run_versions(session)
        by_engine = await versions_by_engine(session)
        stored = await stored_offsets(session, events)
    views = {p: o for (_, p), o in stored.items()}
    routes = {} if st.catalog is None else st.catalog.routes()
    return render(
        "registry.html",
        snapshot=snapshot,
        versions=versions,
        by_engine=by_engine,
        routes={t: r.version for t, r in routes.items()},
        views=views,
        partitions=range(st.settings.partitions),
        nav="registry",
    )


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(
    st: State, refusals_after: Text = "", letters_after: Text = ""
) -> HTMLResponse:
    """Commands the engine refused, and records a consumer dead-lettered, newest first."""
    error = None
    refused = letters = None
    async with st.sessions() as session:
        try:
            refused = await recent_refusals(
                session, limit=PAGE_SIZE, after_cursor=_cursor(refusals_after)
            )
            letters = await dead_letters(
                session, limit=PAGE_SIZE, after_cursor=_cursor(letters_after)
            )
        except InvalidInput as err:
            error = str(err)
    return render(
        "dead_letters.html",
        status_code=400 if error else 200,
        error=error,
        refused=refused,
        letters=letters,
        refusals_after=refusals_after,
        letters_after=letters_after,
        nav="dead-letters",
    )


@router.get("/schedules", response_class=HTMLResponse)
async def schedules_page(st: State) -> HTMLResponse:
    """Every schedule, its next and last fire and counts; marked while they are the last
    read (Kafka away, or read again: decision 62), and said when not read yet."""
    try:
        listed = schedule_list(st)
    except ProblemError as err:
        error: str | None = err.detail
        return render(
            "schedules.html", status_code=err.status, error=error, listed=None, nav="schedules"
        )
    return render("schedules.html", listed=listed, error=None, nav="schedules")
