"""Signal, cancel and terminate from the UI: review, confirm, idempotent send, refusals."""

from __future__ import annotations

import re

from aion_common.domain import CancelWorkflow, SignalWorkflow, TerminateWorkflow

from .conftest import Ui


def request_id(html: str) -> str:
    match = re.search(r'name="request_id" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


async def test_signal_is_reviewed_then_sent_once(ui: Ui) -> None:
    form = {"name": "decision", "payload": '{"approved": true}'}
    review = await ui.http.post("/workflows/order-3/actions/signal", data=form)
    assert review.status_code == 200
    assert "Yes, send the signal" in review.text
    assert ui.sink.sent == []  # nothing until confirmed

    confirm = {**form, "step": "confirm", "request_id": request_id(review.text)}
    sent = await ui.http.post("/workflows/order-3/actions/signal", data=confirm)
    again = await ui.http.post("/workflows/order-3/actions/signal", data=confirm)
    assert sent.status_code == again.status_code == 303
    assert sent.headers["location"].startswith("/workflows/order-3?sent=signal&command=")
    first, second = ui.sink.sent
    assert isinstance(first, SignalWorkflow)
    assert first.name == "decision"
    assert first.payload.to_json() == {"approved": True}
    assert first.command_id == second.command_id  # a re-submitted confirmation: one command

    page = await ui.http.get(sent.headers["location"])
    assert "Signal sent" in page.text


async def test_cancel_and_terminate_carry_the_reason(ui: Ui) -> None:
    for kind, cls in (("cancel", CancelWorkflow), ("terminate", TerminateWorkflow)):
        review = await ui.http.post(f"/workflows/order-3/actions/{kind}", data={"reason": "why"})
        assert "Please confirm" in review.text
        data = {"reason": "why", "step": "confirm", "request_id": request_id(review.text)}
        assert (await ui.http.post(f"/workflows/order-3/actions/{kind}", data=data)).is_redirect
        command = ui.sink.sent[-1]
        assert isinstance(command, cls)
        assert command.reason == "why"


async def test_bad_input_is_shown_on_the_form(ui: Ui) -> None:
    bad = await ui.http.post(
        "/workflows/order-3/actions/signal", data={"name": "x", "payload": "{nope"}
    )
    assert bad.status_code == 422
    assert "the payload is not JSON" in bad.text
    assert "{nope</textarea>" in bad.text  # kept for fixing
    unnamed = await ui.http.post("/workflows/order-3/actions/signal", data={"name": ""})
    assert unnamed.status_code == 422
    assert ui.sink.sent == []


async def test_a_post_from_another_site_is_refused(ui: Ui) -> None:
    data = {"reason": "", "step": "confirm", "request_id": "r-1"}
    for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"}):
        refused = await ui.http.post(
            "/workflows/order-3/actions/terminate", data=data, headers=headers
        )
        assert refused.status_code == 403
    assert ui.sink.sent == []
    same = await ui.http.post(
        "/workflows/order-3/actions/terminate", data=data, headers={"origin": "http://aion.test"}
    )
    assert same.status_code == 303


async def test_actions_show_only_while_running(ui: Ui) -> None:
    assert "Review signal…" in (await ui.http.get("/workflows/order-3")).text
    assert "Review signal…" not in (await ui.http.get("/workflows/order-1")).text
    form = await ui.http.get("/workflows/order-3/actions/cancel")
    assert form.status_code == 200
    assert 'id="cancel-reason"' in form.text
