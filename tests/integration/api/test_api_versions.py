"""The versions endpoints over real views (SQLite), with the catalog in memory: uploads are
checked without running them and refused whole, routes need a version that defines the type,
deletions are refused while open runs or a route use the version, moves become commands."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aion_common.domain import MoveWorkflow
from aion_common.packages import Package, build_package
from aion_common.settings import Settings
from aion_projector import Projection
from aion_projector.api import create_app
from aion_projector.api._catalog import KafkaCatalog, MemoryCatalog, VersionCatalog

from .conftest import MemorySink, Sessions, _client
from .dataset import TOPIC, Script, started
from .test_api_reads import assert_unavailable

GREETINGS = """
from aion import workflow


@workflow.defn("greet")
async def greet(ctx, name):
    return "{word} " + name


@workflow.defn(name="order")
async def order(ctx, value):
    return value
"""


def _zip(tmp_path: Path, tag: str, source: str, name: str = "greetings.py") -> bytes:
    root = tmp_path / tag
    root.mkdir(exist_ok=True)
    (root / name).write_text(source)
    return build_package(root / name).archive()


def catalog_app(
    settings: Settings,
    sessions: Sessions,
    catalog: VersionCatalog,
    sink: MemorySink | None = None,
) -> FastAPI:
    """The API on ``catalog`` (packages up to 64 KiB)."""
    return create_app(
        settings,
        session_factory=sessions,
        command_sink=sink or MemorySink(),
        catalog=catalog,
        package_limit=64 * 1024,
    )


@pytest.fixture
async def setup(
    sqlite_views: Sessions,
) -> AsyncIterator[tuple[httpx.AsyncClient, MemoryCatalog, MemorySink]]:
    catalog, sink = MemoryCatalog(), MemorySink()
    app = catalog_app(Settings(payload_limit_bytes=4096), sqlite_views, catalog, sink)
    async with _client(app) as client:
        yield client, catalog, sink


async def _upload(client: httpx.AsyncClient, data: bytes, **params: str) -> httpx.Response:
    return await client.post(
        "/v1/packages",
        content=data,
        params=params,
        headers={"Content-Type": "application/zip"},
    )


async def test_an_upload_is_stored_once_and_listed(
    setup: tuple[httpx.AsyncClient, MemoryCatalog, MemorySink], tmp_path: Path
) -> None:
    client, catalog, _ = setup
    data = _zip(tmp_path, "v1", GREETINGS.replace("{word}", "hello"))
    first = await _upload(client, data)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["workflow_types"] == ["greet", "order"]
    assert body["created"] is True
    again = await _upload(client, data)
    assert again.status_code == 200
    assert again.json()["version"] == body["version"]
    assert again.json()["created"] is False
    listed = (await client.get("/v1/packages")).json()["items"]
    assert [(e["workflow_type"], e["routed"]) for e in listed] == [
        ("greet", False),
        ("order", False),
    ]
    archive = await client.get(f"/v1/packages/{body['version']}/archive")
    assert archive.content == data
    assert len(catalog.records()) == 2


async def test_an_upload_with_route_routes_every_type(
    setup: tuple[httpx.AsyncClient, MemoryCatalog, MemorySink], tmp_path: Path
) -> None:
    client, _, _ = setup
    data = _zip(tmp_path, "v1", GREETINGS.replace("{word}", "hello"))
    version = (await _upload(client, data, route="true")).json()["version"]
    routes = (await client.get("/v1/routes")).json()["items"]
    assert {(r["workflow_type"], r["version"]) for r in routes} == {
        ("greet", version),
        ("order", version),
    }


@pytest.mark.parametrize(
    ("source", "status", "message"),
    [
        ("def broken(:\n", 422, "greetings.py:1: syntax error"),
        ("def helper():\n    return 1\n", 422, "declares no workflow"),
        (
            "from aion import workflow\nNAME = 'x'\n@workflow.defn(NAME)\nasync def f(c, i): ...\n",
            422,
            "must be a string literal",
        ),
    ],
)
async def test_bad_packages_are_refused_and_nothing_is_stored(
    setup: tuple[httpx.AsyncClient, MemoryCatalog, MemorySink],
    tmp_path: Path,
    source: str,
    status: int,
    message: str,
) -> None:
    client, catalog, _ = setup
    answer = await _upload(client, _zip(tmp_path, "bad", source))
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert "nothing was deployed" in answer.json()["detail"]
    assert catalog.records() == []


async def test_an_oversized_or_foreign_upload_is_refused(
    setup: tuple[httpx.AsyncClient, MemoryCatalog, MemorySink], tmp_path: Path
) -> None:
    client, catalog, _ = setup
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored, not deflated: over the limit
        archive.writestr("flows.py", GREETINGS + "#" * (70 * 1024))
    too_large = await _upload(client, buffer.getvalue())
    assert too_large.status_code == 413
    assert "over the limit of 65536" in too_large.json()["detail"]
    not_zip = await _upload(client, b"this is not a zip")
    assert not_zip.status_code == 422
    assert "not a package archive" in not_zip.json()["detail"]
    assert catalog.records() == []


async def test_a_route_needs_an_uploaded_version_that_defines_the_type(
    setup: tuple[httpx.AsyncClient, MemoryCatalog, MemorySink], tmp_path: Path
) -> None:
    client, catalog, _ = setup
    version = (await _upload(client, _zip(tmp_path, "v1", GREETINGS))).json()["version"]
    unknown = await client.put("/v1/routes/greet", json={"version": "f" * 64})
    assert unknown.status_code == 404
    assert "is not uploaded" in unknown.json()["detail"]
    wrong_type = await client.put("/v1/routes/shipping", json={"version": version})
    assert wrong_type.status_code == 422
    assert "does not define workflow type 'shipping'" in wrong_type.json()["detail"]
    assert catalog.routes() == {}
    ok = await client.put("/v1/routes/greet", json={"version": version})
    assert ok.status_code == 200
    assert catalog.routes()["greet"].version == version


async def test_a_version_in_use_is_not_deleted(
    setup: tuple[httpx.AsyncClient, MemoryCatalog, MemorySink],
    sqlite_views: Sessions,
    tmp_path: Path,
) -> None:
    client, catalog, _ = setup
    version = (await _upload(client, _zip(tmp_path, "v1", GREETINGS))).json()["version"]
    assert (await client.put("/v1/routes/greet", json={"version": version})).is_success
    script = Script()
    for n in range(12):
        spec_type, fields = started(f"run-{n}", "order")
        script.batch(f"on-v1-{n:02d}", (spec_type, {**fields, "package_version": version}))
    async with sqlite_views() as session:
        await Projection(TOPIC).apply(
            session, [(1, 10_000 + i, b) for i, (_, _, b) in enumerate(script.deliveries)]
        )
    routed = await client.delete(f"/v1/packages/greet/{version}")
    assert routed.status_code == 409
    assert "route it to another version first" in routed.json()["detail"]
    in_use = await client.delete(f"/v1/packages/order/{version}")
    assert in_use.status_code == 409
    detail = in_use.json()["detail"]
    assert "12 open run(s) of 'order'" in detail
    assert "on-v1-00" in detail
    assert "and 2 more" in detail
    other = (await _upload(client, _zip(tmp_path, "v2", GREETINGS.replace("{word}", "hi")))).json()
    assert (await client.put("/v1/routes/greet", json={"version": other["version"]})).is_success
    deleted = await client.delete(f"/v1/packages/greet/{version}")
    assert deleted.status_code == 204
    assert [r.workflow_type for r in catalog.version(version)] == ["order"]


async def test_a_move_becomes_a_command_for_an_open_run(
    setup: tuple[httpx.AsyncClient, MemoryCatalog, MemorySink], tmp_path: Path
) -> None:
    client, _, sink = setup
    version = (await _upload(client, _zip(tmp_path, "v1", GREETINGS))).json()["version"]
    moved = await client.post("/v1/workflows/order-3/move", json={"version": version})
    assert moved.status_code == 202, moved.text
    (command,) = sink.sent
    assert isinstance(command, MoveWorkflow)
    assert (command.workflow_id, command.run_id, command.package_version) == (
        "order-3",
        "r-o3",
        version,
    )
    closed = await client.post("/v1/workflows/order-1/move", json={"version": version})
    assert closed.status_code == 409
    assert "only an open run can move" in closed.json()["detail"]
    wrong_type = await client.post("/v1/workflows/loop-1/move", json={"version": version})
    assert wrong_type.status_code == 422
    assert "does not define 'loop'" in wrong_type.json()["detail"]
    unknown = await client.post("/v1/workflows/nobody/move", json={"version": version})
    assert unknown.status_code == 404


async def test_a_catalog_write_kafka_does_not_acknowledge_in_time_is_answered_at_once(
    sqlite_views: Sessions, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """aiokafka holds a send while the broker is away until it returns, however long, and a
    transaction's abort waits as long: the API bounds the write and says the change may or
    may not have been made (decision 66, amended 2026-12-07). Before the writer connected, a
    write is refused at once with what was not done."""
    settings = Settings(bootstrap_servers="127.0.0.1:9", topic_prefix="slow")
    catalog = KafkaCatalog(settings, produce_timeout_s=0.2)
    never = asyncio.Event()

    async def unacknowledged(*_args: object) -> None:
        await never.wait()

    for name in ("deploy", "remove", "route"):
        monkeypatch.setattr(catalog._writer, name, unacknowledged)
    app = catalog_app(settings, sqlite_views, catalog)
    data = _zip(tmp_path, "v1", GREETINGS.replace("{word}", "hello"))
    try:
        async with _client(app) as client:
            refused = await _upload(client, data)
            assert assert_unavailable(refused, retry_after=2) == (
                "the Kafka cluster is not reachable yet; the package was not deployed: run "
                "`aion deploy` again once Kafka is back"
            )
            monkeypatch.setattr(catalog._connection, "_connected", True)  # as if connected
            began = time.monotonic()
            answer = await _upload(client, data)
            took = time.monotonic() - began
    finally:
        await catalog.stop()  # gives up on the unacknowledged send
    assert took < 2, f"answered after {took:.1f} s"
    version = Package.from_archive(data, limit=len(data)).version
    assert assert_unavailable(answer, retry_after=1) == (
        f"the Kafka cluster did not acknowledge the package {version[:12]} within 0.2 s, so it "
        "may or may not have been written (Kafka may still take it when it answers): "
        "`aion packages` shows whether it was; run `aion deploy` again if not"
    )
