"""The CLI's query commands: ``aion query ID NAME [--args JSON]`` and ``aion waiting ID``,
and the "waiting on" part of ``aion describe``.

A query runs a handler of the workflow's code (``@workflow.query``) in the engine that owns
it, or one of the engine's own: ``__stack_trace`` (where the code is suspended) and
``__waiting_on``. ``aion waiting`` shows the latter as people read it.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from aion._cli_options import QUERY_SECONDS
from aion.client import AionApiError, AionClient, AionQueryError, AionUnavailable, WaitingOn

if TYPE_CHECKING:
    from aion._cli_output import Output

__all__ = ["QueryUsageError", "add_commands", "show_waiting", "waiting_or_why"]

EXIT_OK = 0
DESCRIBE_WAIT = 3.0
"""Seconds ``aion describe`` waits for the engine to say what an open run waits on."""


class QueryUsageError(Exception):
    """A query command was given something it cannot use (the message says what)."""


def _arguments(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise QueryUsageError(f"--args is not valid JSON: {err}") from err
    if not isinstance(value, list):
        raise QueryUsageError(
            "--args is the JSON array of the handler's arguments, e.g. '[\"sku-1\", 2]' "
            "(one argument that is itself a list: '[[1, 2]]')"
        )
    return value


async def _query(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    arguments = _arguments(args.args)
    answer = await client.query_answer(
        args.id, args.name, arguments, run_id=args.run, wait=args.timeout
    )
    if out.as_json:
        out.json(answer)
        return EXIT_OK
    result = answer["result"]
    if args.name == "__stack_trace" and isinstance(result, list):
        out.console.print("\n".join(str(line) for line in result) or "(not suspended)")
    else:
        out.console.print(json.dumps(result, indent=2), markup=False, highlight=False)
    if answer.get("replayed"):
        out.errors.print(
            f"(run {answer.get('run_id')} is closed: answered by replaying its history)",
            markup=False,
        )
    return EXIT_OK


async def _waiting(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    found = await client.waiting(args.id, wait=args.timeout)
    if out.as_json:
        out.json(found)
    else:
        show_waiting(out, found)
    return EXIT_OK


async def waiting_or_why(client: AionClient, workflow_id: str) -> WaitingOn | str:
    """What the open run waits on, or why the engine could not say (for ``describe``)."""
    try:
        return await client.waiting(workflow_id, wait=DESCRIBE_WAIT)
    except (AionQueryError, AionUnavailable) as err:
        return str(err.detail) if isinstance(err, AionApiError) else str(err)
    except AionApiError as err:
        if err.kind in {"unavailable", "not-found"}:
            return err.detail
        raise


def show_waiting(out: Output, found: WaitingOn | str) -> None:
    """Print what the run waits on and the stack its code is suspended in."""
    if isinstance(found, str):
        out.console.print(f"waiting on: unknown ({found})", markup=False)
        return
    if found.status not in {"RUNNING", "BLOCKED"}:
        out.console.print(f"waiting on: nothing ({found.status})", markup=False)
        return
    if not found.waiting_on:
        out.console.print("waiting on: nothing", markup=False)
    else:
        out.console.print("waiting on:", markup=False)
        for item in found.waiting_on:
            mark = "  ▸ " if item.awaited else "    "
            now = "  (awaited now)" if item.awaited else ""
            out.console.print(f"{mark}{item.describe()}{now}", markup=False)
    if found.status == "BLOCKED":
        out.console.print(f"its code cannot run: {found.blocked_reason}", markup=False)
    elif found.stack:
        out.console.print("suspended at (outermost first):", markup=False)
        for frame in found.stack:
            out.console.print(f"    {frame}", markup=False, highlight=False)


def add_commands(sub: Any) -> None:
    """Add the query commands to the CLI's subcommands."""
    p = sub.add_parser(
        "query",
        help="ask a workflow a query: a @workflow.query handler, or the engine's own "
        "__stack_trace / __waiting_on (a closed run is replayed)",
    )
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument(
        "--args", default="[]", help="JSON array of the handler's arguments (default [])"
    )
    p.add_argument("--run", help="ask this run of the workflow (default: its current run)")
    p.add_argument(
        "--timeout", type=QUERY_SECONDS, default=5.0, help="seconds to wait for the engine"
    )
    p.set_defaults(handler=_query)
    p = sub.add_parser(
        "waiting", help="what a workflow waits on now, and the line its code is suspended at"
    )
    p.add_argument("id")
    p.add_argument(
        "--timeout", type=QUERY_SECONDS, default=5.0, help="seconds to wait for the engine"
    )
    p.set_defaults(handler=_waiting)
