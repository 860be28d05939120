"""AionClient without a server: requests it builds, problems and outages it raises."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

import aion
from aion import (
    AionApiError,
    AionClient,
    AionResultTimeout,
    AionUnavailable,
    AionWorkflowFailed,
    AionWrongServer,
    RetryNote,
)


def test_public_names_are_pinned() -> None:
    assert sorted(aion.__all__) == sorted(
        [
            "Accepted",
            "ArchivedHistory",
            "AionApiError",
            "AionClient",
            "AionClientError",
            "AionCommandRefused",
            "AionInvalidRequest",
            "AionResultTimeout",
            "AionQueryError",
            "AionUnavailable",
            "AionWorkflowFailed",
            "AionWrongServer",
            "Child",
            "CommandStatus",
            "HistoryEvent",
            "HistoryPage",
            "IdReusePolicy",
            "KafkaCommands",
            "Refusal",
            "RetryNote",
            "Run",
            "WaitItem",
            "WaitingOn",
            "WorkflowDescription",
            "WorkflowHandle",
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
    signal = json.loads(seen[1].content)
    assert signal.pop("payload") is None
    # No request id given: the client makes one up, so a re-sent signal is the same command.
    assert uuid.UUID(signal.pop("request_id"))
    assert signal == {}


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


@pytest.mark.parametrize(
    ("status", "headers", "body", "answered"),
    [
        (404, {"content-type": "text/html"}, "<html>Not Found</html>", "HTML"),
        (200, {"content-type": "text/html; charset=utf-8"}, "<html>hi</html>", "HTML"),
        (404, {"content-type": "application/json"}, '{"error": "no"}', "JSON that is not"),
        (200, {}, "", "an empty body"),
    ],
)
async def test_a_server_that_is_not_aion_is_named_so(
    status: int, headers: dict[str, str], body: str, answered: str
) -> None:
    transport = httpx.MockTransport(lambda _r: httpx.Response(status, text=body, headers=headers))
    async with AionClient("http://x:8080", transport=transport) as client:
        with pytest.raises(AionWrongServer) as caught:
            await client.list()
    message = str(caught.value)
    assert message.startswith(f"no aion API at http://x:8080 (it answered HTTP {status} with ")
    assert answered in message


def _result_body(run_id: str, status: str, **extra: object) -> dict[str, object]:
    return {"workflow_id": "w", "run_id": run_id, "status": status, "closed": True} | extra


async def test_result_after_a_start_waits_for_that_run() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(
                202, json={"workflow_id": "w", "command_id": "c2", "run_id": "run-2"}
            )
        return httpx.Response(200, json=_result_body("run-2", "COMPLETED", result=7))

    async with AionClient("http://x", transport=httpx.MockTransport(handler)) as client:
        handle = await client.start("t", None, id="w")
        assert (handle.workflow_id, handle.command_id, handle.run_id) == ("w", "c2", "run-2")
        assert await handle.result() == 7
        assert (await client.result("w")).result == 7
    for request in seen[1:]:
        assert request.url.params["run_id"] == "run-2"
        assert request.url.params["command_id"] == "c2"


async def test_a_failed_run_raises_with_its_type_and_traceback() -> None:
    failed = _result_body(
        "r",
        "FAILED",
        error_message="ValueError: nobody to greet",
        error_type="ValueError",
        error_traceback='Traceback (most recent call last):\n  File "greetings.py", line 21\n',
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"workflow_id": "w", "command_id": "c", "run_id": "r"})
        return httpx.Response(200, json=failed)

    async with AionClient("http://x", transport=httpx.MockTransport(handler)) as client:
        handle = await client.start("t", "", id="w")
        with pytest.raises(AionWorkflowFailed) as caught:
            await handle.result()
    assert caught.value.error_type == "ValueError"
    assert caught.value.status == "FAILED"
    assert 'File "greetings.py", line 21' in str(caught.value)


async def test_a_pending_start_says_why_when_the_wait_ends() -> None:
    pending = {
        "workflow_id": "w",
        "run_id": None,
        "status": "PENDING",
        "closed": False,
        "pending_reason": "no engine is running for partition 4",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"workflow_id": "w", "command_id": "c", "run_id": "r"})
        return httpx.Response(202, json=pending)

    async with AionClient("http://x", transport=httpx.MockTransport(handler)) as client:
        handle = await client.start("t", None, id="w")
        with pytest.raises(AionResultTimeout, match="no engine is running for partition 4"):
            await handle.result(timeout=0)


async def test_queries_send_their_arguments_and_raise_typed_errors() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/missing"):
            body = {
                "type": "https://aion.dev/problems/unknown-query",
                "title": "Unknown query",
                "status": 404,
                "detail": "no query 'missing'",
                "known_queries": ["status"],
            }
            return httpx.Response(404, json=body)
        return httpx.Response(200, json={"result": {"n": 1}, "run_id": "r", "replayed": True})

    async with AionClient("http://x", transport=httpx.MockTransport(handler)) as client:
        assert await client.query("w/1", "status", [1, "a"], wait=2) == {"n": 1}
        with pytest.raises(aion.AionQueryError) as caught:
            await client.query("w/1", "missing")
    assert seen[0].url.raw_path == b"/v1/workflows/w%2F1/queries/status"
    assert json.loads(seen[0].content) == {"args": [1, "a"], "timeout": 2}
    assert (caught.value.kind, caught.value.known_queries) == ("unknown-query", ("status",))


async def test_a_package_archive_is_aions_own_answer() -> None:
    archive = b"PK\x05\x06" + bytes(18)
    transport = httpx.MockTransport(
        lambda _r: httpx.Response(200, content=archive, headers={"content-type": "application/zip"})
    )
    async with AionClient("http://x:8080", transport=transport) as client:
        response = await client._call("GET", "/v1/packages/abc/archive")
    assert response.content == archive


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-sends after ~10 ms, 20 ms, … instead of 0.5 s, 1 s, …"""
    monkeypatch.setattr("aion.client._RETRY_FIRST_S", 0.01)


def _problem(status: int, detail: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/problem+json"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    body = {
        "type": "https://aion.dev/problems/unavailable",
        "title": "Service unavailable",
        "status": status,
        "detail": detail,
    }
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.usefixtures("quick_backoff")
async def test_a_command_is_resent_with_the_same_request_id_until_it_is_queued() -> None:
    bodies: list[dict[str, object]] = []
    answers = iter(
        [
            _problem(503, "kafka at 127.0.0.1:9 unreachable", retry_after="0"),
            "refused",
            _problem(504, "gateway timeout"),
            httpx.Response(202, json={"workflow_id": "w", "command_id": "c"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        answer = next(answers)
        if answer == "refused":
            raise httpx.ConnectError("refused", request=request)
        assert isinstance(answer, httpx.Response)
        return answer

    notes: list[RetryNote] = []
    transport = httpx.MockTransport(handler)
    async with AionClient("http://x", transport=transport, on_retry=notes.append) as client:
        accepted = await client.cancel("w", "enough")
    assert accepted.command_id == "c"
    assert len(bodies) == 4
    assert len({b["request_id"] for b in bodies}) == 1, "every attempt is the same command"
    assert [n.attempt for n in notes] == [1, 2, 3]
    assert notes[0].what == "cancel of w"
    assert "503 kafka at 127.0.0.1:9 unreachable" in notes[0].reason
    assert "cannot reach the aion API" in notes[1].reason
    assert notes[0].request_id == bodies[0]["request_id"]
    assert "retrying in" in notes[0].describe()


@pytest.mark.usefixtures("quick_backoff")
async def test_a_start_is_resent_like_every_command() -> None:
    """A start is a command too (it was left out once, after a rebase: bench.outage's starts
    failed on the first 503)."""
    bodies: list[dict[str, object]] = []
    answers = iter(
        [
            _problem(503, "kafka unreachable", retry_after="0"),
            httpx.Response(202, json={"workflow_id": "o-1", "command_id": "c", "run_id": "r"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return next(answers)

    notes: list[RetryNote] = []
    transport = httpx.MockTransport(handler)
    async with AionClient("http://x", transport=transport, on_retry=notes.append) as client:
        handle = await client.start("order", {"n": 1}, id="o-1")
    assert handle.workflow_id == "o-1"
    assert len(bodies) == 2
    assert bodies[0] == bodies[1], "the same command, with the same request id"
    assert notes[0].what == "start of order as o-1"


@pytest.mark.usefixtures("quick_backoff")
async def test_a_command_gives_up_after_retry_for_saying_what_was_tried() -> None:
    calls = 0

    def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _problem(503, "kafka unreachable", retry_after="0")

    transport = httpx.MockTransport(handler)
    async with AionClient(
        "http://x", transport=transport, retry_for=0.3, on_retry=lambda _n: None
    ) as client:
        with pytest.raises(AionUnavailable) as caught:
            await client.signal("w", "go", 1, request_id="sig-1")
    assert calls >= 2
    assert caught.value.attempts == calls
    assert caught.value.request_id == "sig-1"
    message = str(caught.value)
    assert "signal 'go' to w was not confirmed" in message
    assert f"sent {calls} times" in message
    assert "request id sig-1" in message


async def test_refusals_and_reads_are_not_resent() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "POST":
            refused = _problem(400, "bad")
            body = refused.json() | {"type": "https://aion.dev/problems/invalid-input"}
            problem_type = {"content-type": "application/problem+json"}
            return httpx.Response(400, json=body, headers=problem_type)
        return _problem(503, "database unavailable")

    async with AionClient("http://x", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(AionApiError) as refused:
            await client.start("order", 1)
        with pytest.raises(AionApiError) as unavailable:
            await client.describe("w")
    assert (refused.value.status, unavailable.value.status) == (400, 503)
    assert calls == ["POST", "GET"]


async def test_a_retry_after_is_waited_however_long_the_client_has_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API's Retry-After (it knows when Kafka is away) decides the wait, not the client's
    backoff grown through an outage: that held re-sends up to 6 s after Kafka's return."""
    waits: list[float] = []

    async def no_sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr("aion.client.asyncio.sleep", no_sleep)
    answers = iter(
        [_problem(503, "kafka unreachable", retry_after="2") for _ in range(8)]
        + [httpx.Response(202, json={"workflow_id": "w", "command_id": "c"})]
    )
    transport = httpx.MockTransport(lambda _r: next(answers))
    async with AionClient("http://x", transport=transport, on_retry=lambda _n: None) as client:
        await client.signal("w", "go", 1, request_id="sig-1")
    assert len(waits) == 8
    assert all(2.0 <= wait <= 2.4 for wait in waits), waits


def _schedule_json(schedule_id: str) -> dict[str, object]:
    return {
        "id": schedule_id,
        "type": "report",
        "input": None,
        "spec": "every 1h",
        "overlap": "skip",
        "jitter_ms": 0,
        "catchup_window_ms": 60_000,
        "paused": True,
        "note": "",
        "next_fire": None,
        "last_fire": None,
        "started": 0,
        "skipped": 0,
        "missed": 0,
        "buffered": None,
        "running": [],
        "last_started": None,
        "pending_triggers": 0,
    }


async def test_a_schedule_list_is_a_tuple_that_says_when_it_may_be_old() -> None:
    """Decision 62: the API lists the schedules as last read while Kafka is away; the list
    carries its flag and reason, and is still the tuple callers had before."""
    reason = "Kafka at 127.0.0.1:9 is unreachable: the schedules as last read"
    answers = iter(
        [
            {"items": [_schedule_json("a"), _schedule_json("b")], "stale": True},
            {"items": [_schedule_json("a")], "stale": True, "stale_reason": reason},
            {"items": [_schedule_json("a")], "stale": False, "stale_reason": None},
            {"items": []},  # an API from before decision 62
        ]
    )
    transport = httpx.MockTransport(lambda _r: httpx.Response(200, json=next(answers)))
    async with AionClient("http://x", transport=transport) as client:
        unexplained, stale, current, old_api = [await client.schedules() for _ in range(4)]
    assert isinstance(stale, tuple)
    assert [s.id for s in unexplained] == ["a", "b"]
    assert (unexplained.stale, unexplained.stale_reason) == (True, None)
    assert (stale.stale, stale.stale_reason, len(stale), stale[0].id) == (True, reason, 1, "a")
    assert stale == current == (current[0],)  # compared as the tuples they are
    assert reason in repr(stale)
    assert (current.stale, current.stale_reason) == (False, None)
    assert (old_api, old_api.stale, old_api.stale_reason) == ((), False, None)


async def test_a_refused_schedule_write_raises_with_the_apis_words() -> None:
    detail = "Kafka at 127.0.0.1:9 is unreachable: schedule 'a' was not written; retry"
    transport = httpx.MockTransport(lambda _r: _problem(503, detail, retry_after="2"))
    async with AionClient("http://x", transport=transport) as client:
        for write in (
            client.create_schedule("a", "report", every="1h"),
            client.create_schedule("a", "report", every="1h", replace=True),
            client.delete_schedule("a"),
        ):
            with pytest.raises(AionApiError) as caught:
                await write
            assert (caught.value.kind, caught.value.detail) == ("unavailable", detail)
            assert caught.value.retry_after == 2.0
            assert detail in str(caught.value)
