"""``aion init DIR``: a new project — a workflow, the activity it calls, a test on a real
stack, a ``pyproject.toml`` depending on the aion distributions and a README that says how
to run it (three commands)."""

from __future__ import annotations

import re
from pathlib import Path

from aion._cli_output import Output

__all__ = ["init_project", "project_files"]

EXIT_OK, EXIT_USAGE = 0, 2

_WORKFLOWS = '''"""This project's workflows: `aion dev --workflows workflows` runs them.

Workflow code is replayed by the engine, so it is deterministic and does no I/O: I/O goes in
activities (activities.py), waiting in `ctx.sleep` and `ctx.wait_signal`, time and randomness
come from `ctx.now()` and `ctx.random()`.
"""

from aion import workflow

from activities import compose_greeting


@workflow.defn("hello")
async def hello(ctx: workflow.WorkflowContext, name: str) -> str:
    """Greet `name`; the greeting is composed by an activity, on a worker."""
    if not name:
        raise ValueError("nobody to greet")
    greeting: str = await ctx.execute_activity(compose_greeting, name, start_to_close=10)
    return greeting
'''

_ACTIVITIES = '''"""This project's activities: ordinary functions that do the I/O (HTTP
calls, files, databases). A worker runs them (`aion dev` starts one), at least once per
attempt; a failed attempt is retried by the workflow's retry policy, on durable timers.
"""

from aion import activity


@activity.defn
async def compose_greeting(name: str) -> str:
    """Compose a greeting (a real project would call a service or write a file here)."""
    return f"hello, {name}"
'''

_TEST = '''"""The workflows, run on a real aion stack that the `aion.testing` pytest plugin
starts once per session (the embedded Apache Kafka; about twenty seconds)."""

import pytest

from aion import AionClient
from aion.testing import WorkflowNotCompleted, assert_history, run_workflow


async def test_hello_greets_through_an_activity(aion_client: AionClient) -> None:
    result = await run_workflow(aion_client, "hello", "ada", id="hello-ada")

    assert result == "hello, ada"
    await assert_history(
        aion_client,
        "hello-ada",
        ["WorkflowStarted", "ActivityScheduled", "ActivityCompleted", "WorkflowCompleted"],
        exact=False,
    )


async def test_hello_fails_without_a_name(aion_client: AionClient) -> None:
    with pytest.raises(WorkflowNotCompleted, match="nobody to greet"):
        await run_workflow(aion_client, "hello", "")
'''

_PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "Workflows on aion"
requires-python = ">=3.11"
# aion: the SDK, client, CLI and test plugin; aion-dev: `aion dev` and the services it runs.
# Not on PyPI yet: install them from an aion checkout or its wheels (README.md).
dependencies = ["aion", "aion-dev"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-asyncio>=0.24"]

[tool.setuptools]
py-modules = ["workflows", "activities"]

[tool.pytest.ini_options]
testpaths = ["tests"]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
# What the test stack's engine and worker import (the project directory is on their path).
aion_workflows = ["workflows"]
aion_activities = ["activities"]
"""

_README = """# {name}

Workflows on aion: `workflows.py` holds a workflow, `activities.py` the activity it calls, and
`tests/` a test that runs both on a real aion stack.

## Run it

From this directory, with aion installed (see Install):

```bash
pytest                                   # the tests, on an aion stack of their own (~20 s)
aion dev --workflows workflows           # the whole stack with your workflows, until Ctrl-C
aion start hello --input '"ada"' --wait  # in a second terminal, here: prints "hello, ada"
```

`aion dev` also loads aion's examples and serves a web UI (it prints where); the `aion`
command finds the stack started from this directory. Then `aion describe <id>`,
`aion history <id>`, `aion list`; `aion --help` for the rest.

## Install

aion is not on PyPI yet: its distributions come from an aion checkout. {install}

Add your own workflows to `workflows.py` (or more modules: `aion dev --workflows a
--workflows b`), activities to `activities.py`, and list new modules in `pyproject.toml`'s
`aion_workflows`/`aion_activities` for the tests.
"""

_INSTALL_CHECKOUT = """This project was created from the one at
`{checkout}`: its virtualenv has aion, pytest and pytest-asyncio (`make install` there made
it), so

```bash
source {checkout}/.venv/bin/activate
```

is all it takes. For a virtualenv of your own, build the wheels there (`make dist`) and
install them with the test tools: `pip install {checkout}/dist/*.whl pytest pytest-asyncio`
(`docs/install.md` in the checkout has more)."""

_INSTALL_ELSEWHERE = """In a checkout, `make install` makes a virtualenv with everything
(`source .venv/bin/activate`), or `make dist` builds the wheels: `pip install dist/*.whl
pytest pytest-asyncio` into a virtualenv of your own (`docs/install.md` there has more)."""

_GITIGNORE = """.aion/
__pycache__/
.pytest_cache/
*.egg-info/
"""


def _checkout() -> Path | None:
    """The aion checkout this ``aion`` runs from (an editable install), if it is one."""
    root = Path(__file__).resolve().parents[4]  # libs/aion_client/src/aion/ -> the checkout
    if (root / "libs" / "aion_client" / "pyproject.toml").is_file() and (
        root / "Makefile"
    ).is_file():
        return root
    return None


def project_files(name: str, checkout: Path | None) -> dict[str, str]:
    """The files of a new project called ``name``, by relative path."""
    install = (
        _INSTALL_ELSEWHERE if checkout is None else _INSTALL_CHECKOUT.format(checkout=checkout)
    )
    return {
        "workflows.py": _WORKFLOWS,
        "activities.py": _ACTIVITIES,
        "tests/test_workflows.py": _TEST,
        "pyproject.toml": _PYPROJECT.format(name=name),
        "README.md": _README.format(name=name, install=install),
        ".gitignore": _GITIGNORE,
    }


def init_project(directory: str, out: Output) -> int:
    """Write the project into ``directory`` (created; refused if it holds anything)."""
    target = Path(directory).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        out.error(f"{target} already exists and is not an empty directory: choose another")
        return EXIT_USAGE
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", target.resolve().name).strip("-._") or "workflows"
    for relative, text in project_files(name, _checkout()).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if out.as_json:
        out.json({"directory": str(target), "files": sorted(project_files(name, None))})
    else:
        out.console.print(
            f"wrote a new aion project in {target}: workflows.py, activities.py, "
            f"tests/test_workflows.py, pyproject.toml, README.md\n"
            f"next: cd {target} and follow README.md (pytest, then aion dev)",
            markup=False,
        )
    return EXIT_OK
