"""One aion stack for the first-hour tests: the README's tour, and what the ``aion`` command
answers a new user's mistakes.

It runs the way a user runs ``aion dev``: from a work directory holding the README's Python
files (``greetings.py``, ``start_greetings.py``), a module of this package's own workflows and
a ``.venv`` link to this checkout's virtualenv (the tour's blocks start with ``source
.venv/bin/activate``), with its home at ``<workdir>/.aion`` — so the ``aion`` command run from
the work directory finds it by itself — and the services working there too (the tour's
activity writes ``cards/``). It loads the examples, the README's greetings and
:data:`FIRST_HOUR_WORKFLOWS`, on the session broker.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aion.testing import AionStack, running_stack
from aion_dev import StackConfig

REPO = Path(__file__).resolve().parents[3]
README = REPO / "README.md"
AION = REPO / ".venv" / "bin" / "aion"

FIRST_HOUR_WORKFLOWS = '''"""Workflows the first-hour tests start."""

from aion import activity, workflow


@workflow.defn("fh.echo")
async def echo(ctx: workflow.WorkflowContext, value: object) -> object:
    return value


@workflow.defn("fh.wait")
async def wait(ctx: workflow.WorkflowContext, value: object) -> object:
    return await ctx.wait_signal("go")


@workflow.defn("fh.fail")
async def fail(ctx: workflow.WorkflowContext, value: object) -> object:
    raise ValueError(f"cannot take {value!r}")  # FAIL_LINE


@activity.defn
def explode(value: object) -> object:
    raise activity.ApplicationError(f"kaput {value}", non_retryable=True)  # ACTIVITY_LINE


@workflow.defn("fh.activity-fails")
async def activity_fails(ctx: workflow.WorkflowContext, value: object) -> object:
    return await ctx.execute_activity(explode, value, start_to_close=10)  # CALL_LINE


@workflow.defn("fh.parent")
async def parent(ctx: workflow.WorkflowContext, count: int) -> list[object]:
    return [await ctx.execute_child("fh.echo", n) for n in range(count)]
'''


def line_of(marker: str) -> int:
    """The line of :data:`FIRST_HOUR_WORKFLOWS` holding ``# <marker>``."""
    lines = FIRST_HOUR_WORKFLOWS.splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.endswith(f"# {marker}"))


def tour_blocks() -> list[tuple[str, str]]:
    """The fenced code blocks of the README's tour, in order: ``(language, text)``."""
    text = README.read_text(encoding="utf-8")
    tour = text[text.index("## A five-minute tour") :]
    tour = tour[: tour.index("\n## ", 1)]
    return [
        (lang, body)
        for lang, body in re.findall(r"```(\w+)\n(.*?)```", tour, flags=re.DOTALL)
        if lang in {"bash", "python"}
    ]


def python_files() -> dict[str, str]:
    """The tour's Python blocks by the file name on their first line (``# greetings.py``)."""
    files = {}
    for lang, body in tour_blocks():
        if lang == "python":
            first = body.splitlines()[0]
            assert re.fullmatch(r"# \w+\.py", first), f"a tour block without its file: {first}"
            files[first[2:]] = body
    return files


@pytest.fixture(scope="package")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the user works: the README's files, this package's workflows, ``.venv``."""
    directory = tmp_path_factory.mktemp("first-hour")
    (directory / ".venv").symlink_to(REPO / ".venv")
    for name, body in python_files().items():
        (directory / name).write_text(body, encoding="utf-8")
    (directory / "firsthour_workflows.py").write_text(FIRST_HOUR_WORKFLOWS, encoding="utf-8")
    return directory


@pytest.fixture(scope="package")
def stack(workdir: Path, kafka_bootstrap: str) -> Iterator[AionStack]:
    """The stack, started from ``workdir`` as ``aion dev`` would be (home ``workdir/.aion``)."""
    config = StackConfig(
        home=workdir / ".aion",
        cwd=workdir,
        kafka_bootstrap=kafka_bootstrap,
        workflows=("examples", "greetings", "firsthour_workflows"),
        pythonpath=(str(REPO),),  # the examples package
        topic_prefix=f"firsthour-{uuid.uuid4().hex[:8]}",
        partitions=3,
    )
    with running_stack(config) as running:
        yield running


def user_env() -> dict[str, str]:
    """A new terminal's environment: no AION_* settings, the virtualenv not on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AION_", "VIRTUAL_ENV"))}
    venv_bin = str(REPO / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def aion(workdir: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The ``aion`` command run from ``workdir`` (which finds the stack by itself)."""
    return subprocess.run(
        [str(AION), *args],
        cwd=workdir,
        env=user_env() | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
