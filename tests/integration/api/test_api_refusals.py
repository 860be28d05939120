"""Refusals the engine published, as the API shows them: the list per workflow id, and a
result wait about one command that answers the refusal (409 ``command-refused``)."""

from __future__ import annotations

import httpx

from .dataset import REFUSALS
from .test_api_reads import assert_problem


async def test_refusals_of_a_workflow(api: httpx.AsyncClient) -> None:
    answer = await api.get("/v1/workflows/order-1/refusals")
    assert answer.status_code == 200
    body = answer.json()
    assert body["workflow_id"] == "order-1"
    assert [(r["command_id"], r["code"], r["command_type"]) for r in body["items"]] == [
        ("cmd-order-1-again", "ID_REUSE_REJECTED", "StartWorkflow")
    ]
    assert body["items"][0]["reason"] == REFUSALS[0].reason
    ghost = (await api.get("/v1/workflows/ghost-1/refusals")).json()["items"]
    assert [r["code"] for r in ghost] == ["UNKNOWN_WORKFLOW_TYPE"]
    none = await api.get("/v1/workflows/never-seen/refusals")
    assert (none.status_code, none.json()["items"]) == (200, [])


async def test_refusals_errors(api: httpx.AsyncClient) -> None:
    assert_problem(
        await api.get("/v1/workflows/order-1/refusals", params={"limit": 0}), 422, "invalid-input"
    )
    assert_problem(await api.get("/v1/workflows/bad%01id/refusals"), 400, "invalid-input")


async def test_a_wait_on_a_refused_command_answers_the_refusal(api: httpx.AsyncClient) -> None:
    # a workflow that never existed: the refused start is the answer, not a 404
    ghost = await api.get(
        "/v1/workflows/ghost-1/result", params={"command_id": "cmd-ghost", "wait": 5}
    )
    problem = assert_problem(ghost, 409, "command-refused")
    assert problem["detail"] == f"UNKNOWN_WORKFLOW_TYPE: {REFUSALS[1].reason}"
    assert problem["refusal"]["code"] == "UNKNOWN_WORKFLOW_TYPE"
    assert problem["refusal"]["command_id"] == "cmd-ghost"
    # order-1 is closed, but this start of it was refused: the old result is not its answer
    again = await api.get(
        "/v1/workflows/order-1/result", params={"command_id": "cmd-order-1-again"}
    )
    assert assert_problem(again, 409, "command-refused")["refusal"]["code"] == "ID_REUSE_REJECTED"


async def test_a_wait_on_an_applied_command_gives_the_result(api: httpx.AsyncClient) -> None:
    done = await api.get("/v1/workflows/order-1/result", params={"command_id": "cmd-order-1-1"})
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["result"]) == ("COMPLETED", {"total": 42})


async def test_a_wait_on_a_command_neither_applied_nor_refused_is_pending(
    api: httpx.AsyncClient,
) -> None:
    for workflow_id in ("order-1", "not-yet-1"):
        pending = await api.get(
            f"/v1/workflows/{workflow_id}/result",
            params={"command_id": "cmd-in-flight", "wait": 0.1},
        )
        assert pending.status_code == 202
        assert pending.json() | {} == {
            "workflow_id": workflow_id,
            "run_id": None,
            "status": "PENDING",
            "closed": False,
            "result": None,
            "error_message": None,
            "error_details": None,
            "error_type": None,
            "error_traceback": None,
            "pending_reason": None,  # no cluster view in this app: nothing to say
        }
    assert_problem(
        await api.get("/v1/workflows/order-1/result", params={"command_id": "bad\x01id"}),
        400,
        "invalid-input",
    )
