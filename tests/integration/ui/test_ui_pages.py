"""The web UI's pages over real views, on every backend: list filters and pages, the workflow
page, the registry and dead-letter pages, and the live fragment."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.integration.api.dataset import T0

from aion_projector import session_factory
from aion_projector.dead_letters import record_dead_letters
from aion_projector.operations import dead_letters as list_dead_letters
from aion_projector.operations import workflow_types
from aion_projector.queries import WorkflowFilter, list_workflows

from .conftest import Ui, dead_letters

WORKFLOW_LINK = re.compile(r'<a href="/workflows/([^"?]+)">')


def listed(html: str) -> list[str]:
    """The workflow ids of the list table's first column, in order."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    rows = body.split("<tr>")[1:]
    return [m.group(1) for row in rows if (m := WORKFLOW_LINK.search(row))]


async def test_list_is_newest_first_and_filters_by_status(ui: Ui) -> None:
    everything = listed((await ui.http.get("/")).text)
    assert everything[0] == "order-3"
    assert everything[-1] == "filler-00"
    assert len(everything) == 19

    page = await ui.http.get("/", params={"status": "FAILED"})
    assert page.status_code == 200
    assert listed(page.text) == ["order-2", "ship-1"]
    assert '<option value="FAILED" selected>' in page.text


async def test_list_filters_by_type_time_and_id_prefix(ui: Ui) -> None:
    by_type = await ui.http.get("/", params={"type": "order"})
    assert listed(by_type.text) == ["order-3", "order-2", "order-1"]
    assert '<option value="payment">' in by_type.text  # the type datalist

    # filler-00 … filler-11 started at T0 + 1 … 12 s
    window = {"started_from": "2026-01-01T00:00:03", "started_before": "2026-01-01T00:00:05"}
    assert listed((await ui.http.get("/", params=window)).text) == ["filler-03", "filler-02"]

    prefix = await ui.http.get("/", params={"q": "filler-0"})
    assert listed(prefix.text) == [f"filler-0{n}" for n in range(10)]  # in id order
    assert listed((await ui.http.get("/", params={"q": "nobody"})).text) == []


async def test_a_bad_filter_is_said_not_failed(ui: Ui) -> None:
    page = await ui.http.get("/", params={"started_from": "yesterday"})
    assert page.status_code == 400
    assert "started from: &#39;yesterday&#39; is not a time" in page.text
    page = await ui.http.get("/", params={"status": "ASLEEP"})
    assert page.status_code == 400
    page = await ui.http.get("/", params={"after": "not a cursor!"})
    assert page.status_code == 400


async def test_workflow_page_shows_outcome_children_and_history(ui: Ui) -> None:
    page = await ui.http.get("/workflows/order-1")
    assert page.status_code == 200
    html = page.text
    assert "status-completed" in html
    assert "&#34;total&#34;: 42" in html  # the result, pretty JSON
    for child in ("pay-1", "ship-1", "audit-1"):  # audit-1 is a grandchild, in the tree
        assert f'<a href="/workflows/{child}">{child}</a>' in html
    for event in ("WorkflowStarted", "ChildWorkflowScheduled", "SignalReceived"):
        assert f'<strong class="etype">{event}</strong>' in html
    assert "hx-trigger" not in html  # closed: nothing to poll
    assert "The workflow is closed" in html

    failed = (await ui.http.get("/workflows/order-2")).text
    assert "boom" in failed
    assert "status-failed" in failed


async def test_run_chain_links_each_run(ui: Ui) -> None:
    html = (await ui.http.get("/workflows/loop-1")).text
    assert '<a href="/workflows/loop-1?run=r-l1"' in html
    assert '<a href="/workflows/loop-1?run=r-l2" aria-current="true">' in html
    first = (await ui.http.get("/workflows/loop-1", params={"run": "r-l1"})).text
    assert "WorkflowContinuedAsNew" in first
    assert "current run</a>" in first


async def test_a_running_workflow_polls_and_the_fragment_answers_only_changes(ui: Ui) -> None:
    html = (await ui.http.get("/workflows/order-3")).text
    match = re.search(r'hx-get="/workflows/order-3/live\?seq=(\d+)"', html)
    assert match is not None
    assert 'hx-trigger="every 1000ms"' in html
    seq = match.group(1)
    assert (await ui.http.get(f"/workflows/order-3/live?seq={seq}")).status_code == 204
    changed = await ui.http.get("/workflows/order-3/live?seq=0")
    assert changed.status_code == 200
    assert changed.text.lstrip().startswith('<div id="live"')
    # a closed workflow's fragment stops the polling and replaces the actions out of band
    closed = await ui.http.get("/workflows/order-1/live?seq=0")
    assert "hx-trigger" not in closed.text
    assert 'hx-swap-oob="true"' in closed.text


async def test_unknown_workflow_is_a_page_not_a_stack_trace(ui: Ui) -> None:
    page = await ui.http.get("/workflows/nobody")
    assert page.status_code == 404
    assert "no workflow <code>nobody</code>" in page.text
    assert 'hx-get="/workflows/nobody/live?seq=0&amp;missing=true"' in page.text
    assert (await ui.http.get("/workflows/nobody/live?seq=0&missing=true")).status_code == 204
    # once it is in the views, the not-found page reloads itself into the workflow's page
    appeared = await ui.http.get("/workflows/order-3/live?seq=0&missing=true")
    assert appeared.headers["hx-refresh"] == "true"


async def test_registry_page_shows_owners_lag_and_open_versions(ui: Ui) -> None:
    html = (await ui.http.get("/registry")).text
    assert "engine-1" in html
    assert '<td data-label="Engine lag">3</td>' in html
    assert '<td data-label="Views stored">' in html
    assert 'href="/?type=filler&amp;status=RUNNING">filler</a>' in html
    assert re.search(r'data-label="Open runs">12<', html)


async def test_dead_letter_page_lists_refusals_and_dead_letters(ui: Ui) -> None:
    html = (await ui.http.get("/dead-letters")).text
    assert "ID_REUSE_REJECTED" in html
    assert "UNKNOWN_WORKFLOW_TYPE" in html
    assert "bad marker byte 0x00" in html
    assert "<code>aion.events</code> 0@17" in html
    assert "not an aion dead letter" in html  # the foreign record, kept with why


@pytest.mark.parametrize("path", ["/", "/workflows/order-1", "/registry", "/dead-letters"])
async def test_pages_load_nothing_from_elsewhere(ui: Ui, path: str) -> None:
    html = (await ui.http.get(path)).text
    assert not re.search(r'(src|href)="(https?:)?//', html), "no CDN or remote asset"
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert (await ui.http.get(asset)).status_code == 200


@pytest.mark.parametrize(
    "where",
    [
        WorkflowFilter(),
        WorkflowFilter(status="RUNNING"),
        WorkflowFilter(id_prefix="filler-"),
        WorkflowFilter(
            started_from=T0 + timedelta(seconds=3), started_before=T0 + timedelta(seconds=19)
        ),
    ],
    ids=["all", "running", "prefix", "time-range"],
)
async def test_keyset_pages_walk_forward_and_back(
    ui_engine: AsyncEngine, where: WorkflowFilter
) -> None:
    async with session_factory(ui_engine)() as session:
        whole = await list_workflows(session, where, limit=1000)
        expected = [w.workflow_id for w in whole.items]
        pages = [await list_workflows(session, where, limit=4)]
        assert pages[0].prev_cursor is None
        while pages[-1].next_cursor is not None:
            pages.append(
                await list_workflows(session, where, limit=4, after_cursor=pages[-1].next_cursor)
            )
        assert [w.workflow_id for p in pages for w in p.items] == expected
        back = pages[-1]
        for page in reversed(pages[:-1]):
            assert back.prev_cursor is not None
            back = await list_workflows(session, where, limit=4, before_cursor=back.prev_cursor)
            assert back.items == page.items
        assert back.prev_cursor is None


async def test_types_are_listed_by_a_loose_index_scan(ui_engine: AsyncEngine) -> None:
    async with session_factory(ui_engine)() as session:
        assert await workflow_types(session) == [
            "audit",
            "filler",
            "loop",
            "order",
            "payment",
            "shipping",
        ]
        assert await workflow_types(session, limit=2) == ["audit", "filler"]


async def test_dead_letters_are_stored_once(ui_engine: AsyncEngine) -> None:
    async with session_factory(ui_engine)() as session, session.begin():
        await record_dead_letters(session, dead_letters())  # re-delivered
    async with session_factory(ui_engine)() as session:
        page = await list_dead_letters(session, limit=1)
        assert len(page.items) == 1
        assert page.next_cursor is not None
        rest = await list_dead_letters(session, limit=10, after_cursor=page.next_cursor)
    assert len(rest.items) == 1
    assert rest.next_cursor is None
