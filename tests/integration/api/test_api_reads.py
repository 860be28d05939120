"""Read endpoints over real views, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from .dataset import FILLER, TRACEBACK

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"https://aion.dev/problems/{kind}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


def assert_unavailable(response: httpx.Response, *, retry_after: int) -> str:
    """A 503 problem with ``Retry-After``; its detail (decision 66's writes)."""
    problem = assert_problem(response, 503, "unavailable")
    assert response.headers["retry-after"] == str(retry_after), response.headers
    detail: str = problem["detail"]
    return detail


async def test_list_pages_through_everything(api: httpx.AsyncClient) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        body = (await api.get("/v1/workflows", params=params)).json()
        seen += [w["workflow_id"] for w in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == FILLER + 7
    assert seen[0] == "order-3"  # newest started first


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"type": "order"}, {"order-1", "order-2", "order-3"}),
        ({"status": "FAILED"}, {"order-2", "ship-1"}),
        ({"status": "COMPLETED", "type": "payment"}, {"pay-1"}),
        ({"parent": "order-1"}, {"pay-1", "ship-1"}),
        ({"type": "loop", "status": "RUNNING"}, {"loop-1"}),
        ({"started_before": "2026-01-01T00:00:03Z", "type": "filler"}, {"filler-00", "filler-01"}),
        ({"started_from": "2026-01-01T00:00:13", "type": "filler"}, set()),
        ({"started_from": "2026-01-01T00:00:12+00:00", "type": "filler"}, {"filler-11"}),
    ],
)
async def test_list_filters(api: httpx.AsyncClient, params: dict, expected: set[str]) -> None:
    response = await api.get("/v1/workflows", params=params)
    assert response.status_code == 200, response.text
    assert {w["workflow_id"] for w in response.json()["items"]} == expected


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "x"},
        {"status": "SLEEPING"},
        {"started_from": "yesterday"},
        {"type": "t" * 129},
    ],
)
async def test_list_rejects_bad_parameters(api: httpx.AsyncClient, params: dict) -> None:
    body = assert_problem(await api.get("/v1/workflows", params=params), 422, "invalid-input")
    assert body["errors"]


async def test_list_rejects_a_forged_cursor(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/workflows", params={"cursor": "not-a-cursor"})
    assert "cursor" in assert_problem(response, 400, "invalid-input")["detail"]


async def test_describe_completed_with_children(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/workflows/order-1")
    assert response.status_code == 200
    body = response.json()
    assert body["workflow"]["status"] == "COMPLETED"
    assert body["current_run"]["run_id"] == "r-o1"
    assert body["current_run"]["result"] == {"total": 42}
    children = {c["child_workflow_id"]: c for c in body["children"]}
    assert children["pay-1"]["state"] == "COMPLETED"
    assert children["pay-1"]["result"] == 1
    assert children["ship-1"]["state"] == "FAILED"
    assert children["ship-1"]["error_message"] == "no truck"


async def test_describe_failed_and_run_chain(api: httpx.AsyncClient) -> None:
    failed = (await api.get("/v1/workflows/order-2")).json()
    assert failed["current_run"]["error_message"] == "boom"
    assert failed["current_run"]["error_details"] == {"code": 7}
    assert failed["current_run"]["error_type"] == "ValueError"
    assert failed["current_run"]["error_traceback"] == TRACEBACK
    loop = (await api.get("/v1/workflows/loop-1")).json()
    assert [r["run_id"] for r in loop["runs"]] == ["r-l1", "r-l2"]
    assert [r["status"] for r in loop["runs"]] == ["CONTINUED_AS_NEW", "RUNNING"]
    assert loop["current_run"]["previous_run_id"] == "r-l1"
    assert loop["workflow"]["first_run_id"] == "r-l1"


async def test_describe_unknown_and_invalid(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/v1/workflows/nope"), 404, "not-found")
    ghost = await api.get("/v1/workflows/ghost-1")  # its only command, a start, was refused
    assert_problem(ghost, 404, "not-found")
    assert (
        "its start was refused: UNKNOWN_WORKFLOW_TYPE: no workflow type" in ghost.json()["detail"]
    )
    assert ghost.json()["refusal"]["command_id"] == "cmd-ghost"
    refused_result = await api.get("/v1/workflows/ghost-1/result", params={"wait": 0.1})
    assert "its start was refused" in refused_result.json()["detail"]
    assert_problem(await api.get("/v1/workflows/" + "x" * 256), 422, "invalid-input")
    assert_problem(await api.get("/v1/workflows/%20padded"), 400, "invalid-input")
    assert_problem(await api.get("/v1/workflows/tab%09in"), 400, "invalid-input")


async def test_history_pages_by_seq(api: httpx.AsyncClient) -> None:
    full = (await api.get("/v1/workflows/order-1/history")).json()
    types = [e["event_type"] for e in full["events"]]
    assert types[0] == "WorkflowStarted"
    assert types[-1] == "WorkflowCompleted"
    assert [e["seq"] for e in full["events"]] == list(range(1, len(types) + 1))
    assert full["next_from_seq"] is None
    assert full["events"][-1]["fields"]["result"] == {"total": 42}
    page = (await api.get("/v1/workflows/order-1/history", params={"limit": 2})).json()
    assert [e["seq"] for e in page["events"]] == [1, 2]
    rest = await api.get(
        "/v1/workflows/order-1/history", params={"from_seq": page["next_from_seq"]}
    )
    assert [e["seq"] for e in rest.json()["events"]] == list(range(3, len(types) + 1))


async def test_history_errors(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/v1/workflows/nope/history"), 404, "not-found")
    for params in ({"from_seq": 0}, {"limit": 1001}, {"from_seq": "a"}):
        assert_problem(
            await api.get("/v1/workflows/order-1/history", params=params), 422, "invalid-input"
        )
    beyond = await api.get("/v1/workflows/order-1/history", params={"from_seq": 999})
    assert beyond.status_code == 200
    assert beyond.json()["events"] == []


async def test_tree(api: httpx.AsyncClient) -> None:
    tree = (await api.get("/v1/workflows/order-1/tree")).json()
    assert [c["workflow_id"] for c in tree["children"]] == ["pay-1", "ship-1"]
    assert tree["children"][0]["children"][0]["workflow_id"] == "audit-1"
    assert tree["children"][0]["children"][0]["status"] == "RUNNING"
    shallow = (await api.get("/v1/workflows/order-1/tree", params={"depth": 1})).json()
    assert shallow["children"][0]["children"] == []
    assert_problem(await api.get("/v1/workflows/nope/tree"), 404, "not-found")
    assert_problem(
        await api.get("/v1/workflows/order-1/tree", params={"depth": 11}), 422, "invalid-input"
    )


async def test_registry(api: httpx.AsyncClient) -> None:
    everything = (await api.get("/v1/registry")).json()["items"]
    assert {r["owner"] for r in everything} == {"engine-1"}
    loop = (await api.get("/v1/registry", params={"workflow_id": "loop-1"})).json()["items"]
    assert [(r["run_id"], r["status"]) for r in loop] == [
        ("r-l1", "CONTINUED_AS_NEW"),
        ("r-l2", "RUNNING"),
    ]
    running = (await api.get("/v1/registry", params={"status": "RUNNING", "limit": 500})).json()
    assert all(r["status"] == "RUNNING" for r in running["items"])
    assert_problem(await api.get("/v1/registry", params={"partition": -1}), 422, "invalid-input")


async def test_result_of_closed_workflows(api: httpx.AsyncClient) -> None:
    done = await api.get("/v1/workflows/order-1/result")
    assert done.status_code == 200
    assert done.json() | {} == {
        "workflow_id": "order-1",
        "run_id": "r-o1",
        "status": "COMPLETED",
        "closed": True,
        "result": {"total": 42},
        "error_message": None,
        "error_details": None,
        "error_type": None,
        "error_traceback": None,
        "pending_reason": None,
    }
    failed = (await api.get("/v1/workflows/order-2/result", params={"wait": 5})).json()
    assert (failed["status"], failed["error_message"]) == ("FAILED", "boom")
    assert (failed["error_type"], failed["error_traceback"]) == ("ValueError", TRACEBACK)


async def test_result_of_one_run_chain(api: httpx.AsyncClient) -> None:
    chain = await api.get("/v1/workflows/loop-1/result", params={"run_id": "r-l1"})
    assert chain.status_code == 202  # the chain r-l1 began goes on in r-l2
    assert (chain.json()["run_id"], chain.json()["status"]) == ("r-l2", "RUNNING")
    other = await api.get("/v1/workflows/order-1/result", params={"run_id": "r-later"})
    assert other.status_code == 202  # a start not taken yet: never the earlier run's result
    assert (other.json()["status"], other.json()["run_id"]) == ("PENDING", None)


async def test_command_status(api: httpx.AsyncClient) -> None:
    applied = await api.get("/v1/workflows/order-1/commands/cmd-order-1-1")
    assert applied.status_code == 200
    assert (applied.json()["state"], applied.json()["run_id"]) == ("APPLIED", "r-o1")
    refused = (await api.get("/v1/workflows/ghost-1/commands/cmd-ghost")).json()
    assert refused["state"] == "REFUSED"
    assert refused["refusal"]["code"] == "UNKNOWN_WORKFLOW_TYPE"
    pending = await api.get("/v1/workflows/order-1/commands/unseen", params={"wait": 0.2})
    assert pending.status_code == 202
    assert pending.json()["state"] == "PENDING"


async def test_result_still_running_after_wait(api: httpx.AsyncClient) -> None:
    running = await api.get("/v1/workflows/order-3/result", params={"wait": 0.2})
    assert running.status_code == 202
    assert running.headers["retry-after"] == "1"
    assert running.json()["closed"] is False
    assert running.json()["status"] == "RUNNING"


async def test_result_errors(api: httpx.AsyncClient) -> None:
    assert_problem(
        await api.get("/v1/workflows/nope/result", params={"wait": 0.1}), 404, "not-found"
    )
    assert_problem(
        await api.get("/v1/workflows/order-1/result", params={"wait": 61}), 422, "invalid-input"
    )


async def test_health_metrics_openapi_and_unknown_routes(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    await api.get("/v1/workflows/order-1")
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200
    assert 'route="/v1/workflows/{workflow_id}"' in metrics.text
    assert "aion_api_request_seconds_bucket" in metrics.text
    spec = (await api.get("/openapi.json")).json()
    assert "/v1/workflows/{workflow_id}/result" in spec["paths"]
    assert_problem(await api.get("/v2/nothing"), 404, "not-found")
    assert_problem(await api.delete("/v1/workflows/order-1"), 405, "method-not-allowed")
