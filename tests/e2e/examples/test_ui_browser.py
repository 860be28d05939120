"""The web UI in a real headless Chromium (Debian's, driven by Playwright) against the
examples' stack: list and filter, a fan-out parent and its child's history, a signal to the
approval example (what it waits on, and a query before and after) and a cancellation, each
from the UI as a person would use it. Screenshots
go to ``test-artifacts/ui/`` (``AION_TEST_ARTIFACTS`` to move it).

One browser for the module, one page per test: the stack is the session's, shared with the
examples' end-to-end tests.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from aion import AionClient
from aion.testing import AionStack, wait_for_workflow

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = os.environ.get("AION_TEST_CHROMIUM", "/usr/lib/chromium/chromium")
LIVE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("AION_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's (as root)")
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, aion_stack: AionStack) -> AsyncIterator[Page]:
    context = await browser.new_context(
        base_url=aion_stack.api_url, viewport={"width": 1280, "height": 900}
    )
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()


async def shot(page: Page, artifacts: Path, name: str) -> None:
    await page.screenshot(path=artifacts / f"{name}.png", full_page=True)


async def test_list_filters_by_status_and_leads_to_a_fanout_child_history(
    page: Page, aion_client: AionClient, artifacts: Path
) -> None:
    parent = "ui-fanout"
    await aion_client.start("examples.fanout", {"items": 4, "fail_every": 3}, id=parent)
    await wait_for_workflow(aion_client, parent, timeout=60)

    await page.goto("/")
    await expect(page.get_by_role("heading", name="Workflows")).to_be_visible()
    await page.get_by_label("Status").select_option("COMPLETED")
    await page.get_by_label("Workflow id starts with").fill("ui-fanout")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"status=COMPLETED"))
    rows = page.locator("table.workflows tbody tr")
    await expect(rows.first).to_be_visible()
    statuses = await page.locator("table.workflows tbody .status").all_inner_texts()
    assert statuses == ["COMPLETED"] * len(statuses), statuses
    assert statuses
    await shot(page, artifacts, "01-list-completed")

    ids = page.locator("table.workflows td[data-label='Workflow id']")
    await ids.get_by_role("link", name=parent, exact=True).click()
    await expect(page.get_by_role("heading", name=parent, level=1)).to_be_visible()
    children = page.locator("ul.tree > li")
    await expect(children).to_have_count(4)
    await expect(page.locator("ul.tree .status-failed")).to_have_count(1)  # item 2 fails
    await shot(page, artifacts, "02-fanout-parent")

    child = f"{parent}:item-001"
    await page.locator("ul.tree").get_by_role("link", name=child).click()
    await expect(page.get_by_role("heading", name=child, level=1)).to_be_visible()
    timeline = page.locator("ol.timeline > li")
    await expect(timeline).to_have_count(2)
    await expect(timeline.nth(0).locator(".etype")).to_have_text("WorkflowStarted")
    await expect(timeline.nth(1).locator(".etype")).to_have_text("WorkflowCompleted")
    await timeline.nth(1).get_by_text("JSON").click()  # expand the event's JSON
    await expect(timeline.nth(1).locator("pre.json")).to_contain_text('"result": 1')
    await expect(page.locator("dl.facts").get_by_role("link", name=parent)).to_be_visible()
    await shot(page, artifacts, "03-child-history")


async def test_a_signal_sent_from_the_ui_completes_the_approval(
    page: Page, aion_client: AionClient, artifacts: Path
) -> None:
    workflow_id = "ui-approval"
    await aion_client.start(
        "examples.approval", {"request": "laptop", "timeout": 300}, id=workflow_id
    )
    await page.goto(f"/workflows/{workflow_id}")
    await expect(page.locator("#wf-status")).to_contain_text("RUNNING", timeout=LIVE_TIMEOUT_MS)
    # what it waits on, asked of the engine, and the line its code is suspended at
    waiting = page.locator("#waiting")
    await expect(waiting).to_contain_text("awaited now: signal decision", timeout=LIVE_TIMEOUT_MS)
    await expect(waiting.locator("ol.stack")).to_contain_text("approval.py")
    await expect(waiting.locator("ol.stack")).to_contain_text('ctx.wait_signal("decision"')
    # a query from the form: answered in place, no confirmation
    await page.get_by_label("Query name").fill("status")
    await page.get_by_role("button", name="Run query").click()
    await expect(page.get_by_label("Query answer")).to_contain_text('"status": "waiting"')
    await shot(page, artifacts, "04-approval-waiting-and-query")

    await page.get_by_text("Actions: signal, cancel, terminate").click()
    await page.get_by_label("Signal name").fill("decision")
    await page.get_by_label("Payload (JSON)").fill('{"approved": true, "by": "ui"}')
    await page.get_by_role("button", name="Review signal…").click()
    await expect(page.get_by_role("heading", name="Please confirm")).to_be_visible()
    await shot(page, artifacts, "04b-signal-confirm")
    await page.get_by_role("button", name="Yes, send the signal").click()

    await expect(page.get_by_role("status")).to_contain_text("Signal sent")
    # the page updates itself: no reload
    await expect(page.locator("#wf-status")).to_contain_text("COMPLETED", timeout=LIVE_TIMEOUT_MS)
    await expect(page.get_by_label("Result")).to_contain_text('"status": "approved"')
    await expect(page.locator("ol.timeline .etype", has_text="SignalReceived")).to_have_count(1)
    # the closed run is queried by replaying it
    await page.get_by_label("Query name").fill("status")
    await page.get_by_role("button", name="Run query").click()
    await expect(page.locator("#query-answer")).to_contain_text("answered by replaying it")
    await expect(page.get_by_label("Query answer")).to_contain_text('"status": "approved"')
    await shot(page, artifacts, "05-approval-completed")


async def test_a_workflow_cancelled_from_the_ui_ends_cancelled(
    page: Page, aion_client: AionClient, artifacts: Path
) -> None:
    workflow_id = "ui-cancel"
    await aion_client.start("examples.cancellation", {"workers": 2}, id=workflow_id)
    await page.goto(f"/workflows/{workflow_id}")
    await expect(page.locator("ul.tree > li")).to_have_count(2, timeout=LIVE_TIMEOUT_MS)

    await page.get_by_text("Actions: signal, cancel, terminate").click()
    await page.get_by_label("Reason").first.fill("no longer needed")
    await page.get_by_role("button", name="Cancel workflow…").click()
    await page.get_by_role("button", name="Yes, cancel the workflow").click()

    await expect(page.locator("#wf-status")).to_contain_text("CANCELLED", timeout=LIVE_TIMEOUT_MS)
    await expect(page.locator("#actions")).to_contain_text("The workflow is closed")
    run = await wait_for_workflow(aion_client, workflow_id, timeout=30)
    assert run.status == "CANCELLED"
    await shot(page, artifacts, "06-cancelled")


async def test_registry_dead_letters_keyboard_and_a_narrow_window(
    page: Page, artifacts: Path
) -> None:
    await page.goto("/registry")
    await expect(page.get_by_role("heading", name="Partitions")).to_be_visible()
    await expect(page.locator("tbody").first).to_contain_text("engine-1")
    await shot(page, artifacts, "07-registry")
    await page.goto("/dead-letters")
    await expect(page.get_by_role("heading", name="Refused commands")).to_be_visible()
    await shot(page, artifacts, "08-dead-letters")

    await page.set_viewport_size({"width": 360, "height": 800})
    await page.goto("/")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Enter")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the list scrolls sideways at 360 px ({width} px wide)"
    await shot(page, artifacts, "09-list-narrow")


async def test_schedules_are_listed_on_their_page(
    page: Page, aion_client: AionClient, artifacts: Path
) -> None:
    schedule_id = "ui-nightly"
    note = "made by the browser test"
    await aion_client.create_schedule(
        schedule_id, "examples.fanout", {"items": 1}, every="1h", paused=True, note=note
    )
    try:
        await page.goto("/")
        await (
            page.get_by_role("navigation", name="Main")
            .get_by_role("link", name="Schedules")
            .click()
        )
        await expect(page.get_by_role("heading", name="Schedules", level=1)).to_be_visible()
        row = page.locator("tbody tr", has_text=schedule_id)
        await expect(row.locator("td[data-label='Spec']")).to_have_text("every 3600s")
        await expect(row.locator("td[data-label='Next fire']")).to_have_text("paused")
        await expect(row).to_contain_text(note)
        await expect(page.get_by_text("may be out of date")).to_have_count(0)
        await shot(page, artifacts, "10-schedules")
    finally:
        await aion_client.delete_schedule(schedule_id)
