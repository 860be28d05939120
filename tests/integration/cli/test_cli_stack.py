"""The real ``aion`` command against a whole running stack: an engine (the packaged example
workflows), the projector and the API, each its own process, on the real broker.

A start the engine refuses reaches the user: ``aion start … --wait`` prints
``refused: <CODE>: <reason>`` and exits 4. Commands sent straight to Kafka
(:class:`aion.KafkaCommands`) are applied by the same engine and seen through the API.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from aion import AionApiError, AionClient, AionCommandRefused, KafkaCommands
from aion_common.kafka import Topics, ensure_topics
from aion_common.settings import Settings
from aion_projector import connect, migrate

from .test_cli import _serving, aion

pytestmark = pytest.mark.slow


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def stack(aion_settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """Engine, projector and API processes; yields the API's URL."""
    engine = connect(aion_settings.database_url)
    await migrate(engine)
    await engine.dispose()
    await ensure_topics(aion_settings, Topics(aion_settings.topic_prefix))
    env = os.environ | {
        "AION_DATABASE_URL": aion_settings.database_url,
        "AION_KAFKA_BOOTSTRAP": aion_settings.bootstrap_servers,
        "AION_TOPIC_PREFIX": aion_settings.topic_prefix,
        "AION_PARTITIONS": str(aion_settings.partitions),
    }
    env.pop("AION_API_TOKEN", None)
    with ExitStack() as running:
        running.enter_context(
            _process(
                [sys.executable, "-m", "aion_engine", "--workflows", "aion_engine.examples"],
                env,
                tmp_path / "engine.log",
            )
        )
        running.enter_context(
            _process([sys.executable, "-m", "aion_projector"], env, tmp_path / "projector.log")
        )
        yield running.enter_context(_serving(env))


async def test_refused_and_completed_starts_reach_the_user(
    stack: str, aion_settings: Settings
) -> None:
    done = aion(
        stack,
        "--json",
        "start",
        "example.payment",
        "--id",
        "pay-cli",
        "--input",
        '{"line": 0, "amount": 5}',
        "--wait",
        "--timeout",
        "90",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "COMPLETED"
    assert json.loads(done.stdout)["result"]["line"] == 0

    unknown = aion(stack, "start", "example.nope", "--id", "ghost-cli", "--wait", "--timeout", "90")
    assert unknown.returncode == 4, (unknown.stdout, unknown.stderr)
    assert unknown.stderr.startswith(
        "refused: UNKNOWN_WORKFLOW_TYPE: workflow type 'example.nope' is not loaded"
    ), unknown.stderr
    listed = aion(stack, "--json", "refusals", "ghost-cli")
    assert [r["code"] for r in json.loads(listed.stdout)] == ["UNKNOWN_WORKFLOW_TYPE"]
    assert "UNKNOWN_WORKFLOW_TYPE" in aion(stack, "refusals", "ghost-cli").stdout

    # a reminder sleeps a day: a second start of the same id is refused as already running
    first = aion(stack, "start", "example.reminder", "--id", "rem-cli", "--input", "0")
    assert first.returncode == 0, first.stderr
    again = aion(
        stack,
        "--json",
        "start",
        "example.reminder",
        "--id",
        "rem-cli",
        "--input",
        "0",
        "--wait",
        "--timeout",
        "90",
    )
    assert again.returncode == 4, (again.stdout, again.stderr)
    assert "refused: ALREADY_RUNNING: " in again.stderr
    assert json.loads(again.stdout)["code"] == "ALREADY_RUNNING"

    # straight to Kafka, no API in the way: the engine applies it, the views show it
    async with KafkaCommands(aion_settings) as commands:
        sent = await commands.start(
            "example.payment", {"line": 1, "amount": 7}, request_id="kafka-pay-1"
        )
        refused = await commands.start("example.nope", None, request_id="kafka-ghost-1")
    async with AionClient(stack) as client:
        outcome = await client.result(sent.workflow_id, wait=90, command_id=sent.command_id)
        assert (outcome.status, outcome.result["line"]) == ("COMPLETED", 1)
        with pytest.raises(AionCommandRefused) as caught:
            await client.result(refused.workflow_id, wait=90, command_id=refused.command_id)
        assert caught.value.code == "UNKNOWN_WORKFLOW_TYPE"
        assert caught.value.command_id == refused.command_id


async def test_ids_with_slashes_percent_spaces_and_unicode_through_the_cli(stack: str) -> None:
    paid = "shop/pay 50% ü"
    done = aion(
        stack, "--json", "start", "example.payment", "--id", paid,
        "--input", '{"line": 3, "amount": 5}', "--wait", "--timeout", "90",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["workflow_id"] == paid
    described = json.loads(aion(stack, "--json", "describe", paid).stdout)
    assert described["workflow"]["workflow_id"] == paid
    history = json.loads(aion(stack, "--json", "history", paid).stdout)
    assert (history["workflow_id"], history["events"][-1]["event_type"]) == (
        paid,
        "WorkflowCompleted",
    )
    assert json.loads(aion(stack, "--json", "result", paid).stdout)["result"]["line"] == 3

    # a parent whose id ends like a sub-resource, with a child payment
    parent = "orders/1/history"
    started = aion(
        stack, "start", "example.order", "--id", parent,
        "--input", '{"lines": [7], "approval_timeout": 3600}',
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    async with AionClient(stack) as client, asyncio.timeout(90):
        while not await _has_children(client, parent):  # noqa: ASYNC110  # polling the API
            await asyncio.sleep(0.2)
    tree = json.loads(aion(stack, "--json", "tree", parent).stdout)
    assert tree["workflow_id"] == parent
    assert [c["workflow_type"] for c in tree["children"]] == ["example.payment"]
    assert parent in aion(stack, "tree", parent).stdout
    assert aion(stack, "signal", parent, "approve", "--payload", '"ok"').returncode == 0
    assert aion(stack, "cancel", parent, "--reason", "test/over").returncode == 0
    assert aion(stack, "describe", "orders/1").returncode == 1  # not found: another id

    ghost = "ghost/1 %"
    refused = aion(stack, "start", "example.nope", "--id", ghost, "--wait", "--timeout", "90")
    assert refused.returncode == 4, (refused.stdout, refused.stderr)
    listed = json.loads(aion(stack, "--json", "refusals", ghost).stdout)
    assert [(r["workflow_id"], r["code"]) for r in listed] == [(ghost, "UNKNOWN_WORKFLOW_TYPE")]


async def _has_children(client: AionClient, workflow_id: str) -> bool:
    """The views show ``workflow_id`` with its children (no watcher here: none closes)."""
    try:
        found = await client.describe(workflow_id)
    except AionApiError:
        return False  # not projected yet
    return bool(found.children)
