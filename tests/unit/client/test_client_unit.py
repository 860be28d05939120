"""AionClient without a server: requests it builds, problems and outages it raises."""

from __future__ import annotations

import json

import httpx
import pytest

import aion
from aion import AionApiError, AionClient, AionUnavailable


def test_public_names_are_pinned() -> None:
    assert sorted(aion.__all__) == sorted(
        [
            "Accepted",
            "AionApiError",
            "AionClient",
            "AionClientError",
            "AionCommandRefused",
            "AionInvalidRequest",
            "AionUnavailable",
            "Child",
            "HistoryEvent",
            "HistoryPage",
            "KafkaCommands",
            "Refusal",
            "Run",
            "WorkflowDescription",
            "WorkflowPage",
            "WorkflowResult",
            "WorkflowSummary",
            "WorkflowTree",
        ]
    )


async def test_start_sends_only_given_fields_and_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"workflow_id": "w/1", "command_id": "c"})

    async with AionClient("http://x", "tok", transport=httpx.MockTransport(handler)) as client:
        accepted = await client.start("order", {"a": 1}, request_id="r")
        await client.signal("w/1", "go", None)
    assert accepted.workflow_id == "w/1"
    assert json.loads(seen[0].content) == {"type": "order", "input": {"a": 1}, "request_id": "r"}
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert seen[1].url.raw_path == b"/v1/workflows/w%2F1/signals/go"
    assert json.loads(seen[1].content) == {"payload": None}


async def test_problems_become_typed_errors() -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        body = {
            "type": "https://aion.dev/problems/not-found",
            "title": "Not found",
            "status": 404,
            "detail": "workflow 'w' is not in the views",
        }
        return httpx.Response(404, json=body, headers={"content-type": "application/problem+json"})

    async with AionClient("http://x", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(AionApiError) as caught:
            await client.describe("w")
    assert (caught.value.status, caught.value.kind) == (404, "not-found")


async def test_a_non_problem_error_still_raises_api_error() -> None:
    transport = httpx.MockTransport(lambda _r: httpx.Response(502, text="<html>bad gateway"))
    async with AionClient("http://x", transport=transport) as client:
        with pytest.raises(AionApiError) as caught:
            await client.list()
    assert caught.value.status == 502


async def test_connection_refused_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with AionClient("http://x", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(AionUnavailable, match="cannot reach the aion API"):
            await client.history("w")


async def test_result_polls_until_closed() -> None:
    answers = iter([(202, False), (202, False), (200, True)])

    def handler(_request: httpx.Request) -> httpx.Response:
        status, closed = next(answers)
        body = {"workflow_id": "w", "run_id": "r", "status": "COMPLETED" if closed else "RUNNING"}
        return httpx.Response(status, json=body | {"closed": closed, "result": 5})

    async with AionClient("http://x", transport=httpx.MockTransport(handler)) as client:
        outcome = await client.result("w", wait=5)
    assert outcome.closed
    assert outcome.succeeded
    assert outcome.result == 5
