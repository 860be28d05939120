"""The workflow page and its live fragment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse, Response

from aion_projector.api._paths import WORKFLOW
from aion_projector.api._reads import views_caught_up
from aion_projector.api._state import ApiState, state
from aion_projector.api.ui._render import render
from aion_projector.operations import PendingTimer, pending_timers, run_history
from aion_projector.queries import (
    HistoryEntry,
    Refusal,
    RunView,
    TreeNode,
    WorkflowDescription,
    child_tree,
    describe,
    refusals,
)
from aion_projector.schema import RunStatus

__all__ = ["HISTORY_PAGE", "WorkflowPage", "router"]

HISTORY_PAGE = 500
TREE_DEPTH = 3
_NOT_FOUND_POLL_MS = 1000

router = APIRouter(include_in_schema=False)
State = Annotated[ApiState, Depends(state)]
Seq = Annotated[int, Query(ge=1, le=2**62)]
RunId = Annotated[str, Query(max_length=255)]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowPage:
    """What the workflow page shows of one run (the current one unless another is asked for).

    The lead's "waiting on" and "pending activities" sections will read the describe API's
    fields for them; ``workflow.html`` has a marked place for each.
    """

    description: WorkflowDescription
    run: RunView
    history: list[HistoryEntry]
    more_from_seq: int | None
    timers: list[PendingTimer]
    tree: TreeNode | None
    refusals: list[Refusal]

    @property
    def live(self) -> bool:
        """Whether the page keeps asking for changes: the run shown is the open current one."""
        return (
            RunStatus(self.description.summary.status).is_open
            and self.run.run_id == self.description.summary.current_run_id
        )

    @property
    def input(self) -> Any:
        """The run's input, from its ``WorkflowStarted`` event when it is on this page."""
        for event in self.history:
            if event.event_type == "WorkflowStarted":
                return event.fields().get("input")
        return None


async def _load(
    session: AsyncSession, workflow_id: str, run_id: str | None, from_seq: int
) -> WorkflowPage | None:
    found = await describe(session, workflow_id)
    if found is None:
        return None
    run = next((r for r in found.runs if r.run_id == run_id), found.current_run)
    events = await run_history(
        session, workflow_id, run.run_id, from_seq=from_seq, limit=HISTORY_PAGE + 1
    )
    more = events[HISTORY_PAGE].seq if len(events) > HISTORY_PAGE else None
    open_run = RunStatus(run.status).is_open
    return WorkflowPage(
        description=found,
        run=run,
        history=events[:HISTORY_PAGE],
        more_from_seq=more,
        timers=await pending_timers(session, workflow_id, run.run_id) if open_run else [],
        tree=await child_tree(session, workflow_id, depth=TREE_DEPTH),
        refusals=await refusals(session, workflow_id, limit=10),
    )


def _not_found(workflow_id: str) -> HTMLResponse:
    return render(
        "not_found.html",
        status_code=404,
        workflow_id=workflow_id,
        poll_ms=_NOT_FOUND_POLL_MS,
        nav="workflows",
    )


@router.get(WORKFLOW, response_class=HTMLResponse)
async def workflow_page(  # noqa: PLR0917 - FastAPI takes each query field as a parameter
    st: State,
    workflow_id: str,
    run: RunId = "",
    from_seq: Seq = 1,
    sent: Annotated[str, Query(max_length=16)] = "",
    command: Annotated[str, Query(max_length=255)] = "",
) -> HTMLResponse:
    """One workflow: status, input, outcome, run chain, children, timers, history, actions."""
    await views_caught_up(st, workflow_id)
    async with st.sessions() as session:
        page = await _load(session, workflow_id, run or None, from_seq)
    if page is None:
        return _not_found(workflow_id)
    return render(
        "workflow.html",
        page=page,
        workflow_id=workflow_id,
        sent=sent if sent in {"signal", "cancel", "terminate"} else "",
        command=command,
        poll_ms=st.ui_poll_ms,
        from_seq=from_seq,
        nav="workflows",
    )


@router.get(f"{WORKFLOW}/live", response_class=HTMLResponse)
async def live_fragment(
    st: State,
    workflow_id: str,
    seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    missing: bool = False,
) -> Response:
    """The page's live part, re-rendered only when the workflow has new events (else 204,
    which htmx leaves alone); once the workflow closes the fragment stops asking."""
    async with st.sessions() as session:
        found = await describe(session, workflow_id)
        if found is None:
            return Response(status_code=204)
        if seq == 0 and missing:
            # the not-found page asked: the workflow has appeared, so load its page
            return Response(status_code=200, headers={"HX-Refresh": "true"})
        if found.summary.last_seq == seq and RunStatus(found.summary.status).is_open:
            return Response(status_code=204)
        page = await _load(session, workflow_id, None, 1)
    if page is None:
        return Response(status_code=204)
    return render(
        "_live.html",
        page=page,
        workflow_id=workflow_id,
        poll_ms=st.ui_poll_ms,
        from_seq=1,
        oob=True,
    )
