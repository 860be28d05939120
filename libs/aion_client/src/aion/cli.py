"""``aion``: start, signal, cancel and inspect workflows from a shell.

Exit codes (stable, for scripts):

- 0 — success (for ``result`` and ``start --wait``: the workflow completed);
- 1 — the workflow failed, was cancelled or timed out, is not known, or was still running
  when ``--timeout`` ended;
- 2 — usage or validation error (bad arguments, invalid JSON, an id or payload the API
  refused, a missing or wrong ``AION_API_TOKEN``);
- 3 — the API could not be reached, or answered that a backend it needs is unavailable;
- 4 — the engine refused the command (``start --wait``: an unknown workflow type, an id
  already running or not reusable, …); ``refused: <CODE>: <reason>`` is printed on stderr.

``--json`` prints machine-readable JSON on stdout; errors always go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from aion._cli_versions import VersionUsageError, add_commands, fetch_history
from aion.client import (
    AionApiError,
    AionClient,
    AionCommandRefused,
    AionUnavailable,
    HistoryEvent,
    HistoryPage,
    Run,
    WorkflowResult,
    WorkflowTree,
)

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNAVAILABLE", "EXIT_USAGE", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
DEFAULT_API = "http://127.0.0.1:8080"

Handler = Callable[[AionClient, argparse.Namespace, "Output"], Awaitable[int]]


class UsageError(Exception):
    """Arguments that parse but cannot be used (invalid JSON, say)."""


class Output:
    """Prints either rich tables (people) or JSON (scripts)."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        # piped output (a file, a pager, CI logs) is not squeezed to rich's default 80 columns
        width = None if sys.stdout.isatty() else 200
        self.console = Console(highlight=False, soft_wrap=True, width=width)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def json(self, value: Any) -> None:
        """One JSON document on stdout."""
        print(json.dumps(_plain(value), indent=2, default=str))  # noqa: T201

    def error(self, message: str) -> None:
        """A message on stderr."""
        self.errors.print(f"[bold red]error:[/] {message}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise UsageError(f"{what} is not valid JSON: {err}") from err


def _outcome_code(outcome: WorkflowResult) -> int:
    return EXIT_OK if outcome.succeeded else EXIT_FAILED


def _show_result(out: Output, outcome: WorkflowResult) -> int:
    if out.as_json:
        out.json(outcome)
    elif outcome.status == "BLOCKED":
        out.console.print(
            f"{outcome.workflow_id} is [red]BLOCKED[/]: {outcome.error_message or ''}\n"
            f"  see `aion describe {outcome.workflow_id}`; once fixed code is deployed, "
            f"`aion run move {outcome.workflow_id} HASH` (or route the type to it)"
        )
    elif not outcome.closed:
        out.console.print(f"{outcome.workflow_id} is still [yellow]{outcome.status}[/]")
    elif outcome.succeeded:
        out.console.print(json.dumps(outcome.result, indent=2))
    else:
        out.console.print(
            f"{outcome.workflow_id} [red]{outcome.status}[/]: {outcome.error_message or ''}"
        )
    return _outcome_code(outcome) if outcome.closed else EXIT_FAILED


async def _start(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    payload = _json_arg(args.input, "--input")
    accepted = await client.start(
        args.type,
        payload,
        id=args.id,
        request_id=args.request_id,
        package_version=args.version,
    )
    if not args.wait:
        if out.as_json:
            out.json(accepted)
        else:
            out.console.print(f"started {accepted.workflow_id} (command {accepted.command_id})")
        return EXIT_OK
    outcome = await client.result(
        accepted.workflow_id, wait=args.timeout, command_id=accepted.command_id
    )
    return _show_result(out, outcome)


async def _signal(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    payload = _json_arg(args.payload, "--payload")
    accepted = await client.signal(args.id, args.name, payload, request_id=args.request_id)
    return _accepted(out, accepted, f"signal {args.name!r} sent to {args.id}")


async def _cancel(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    accepted = await client.cancel(args.id, args.reason, request_id=args.request_id)
    return _accepted(out, accepted, f"cancellation of {args.id} requested")


async def _terminate(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    accepted = await client.terminate(args.id, args.reason, request_id=args.request_id)
    return _accepted(out, accepted, f"termination of {args.id} requested")


def _accepted(out: Output, accepted: Any, message: str) -> int:
    if out.as_json:
        out.json(accepted)
    else:
        out.console.print(f"{message} (command {accepted.command_id})")
    return EXIT_OK


async def _describe(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    found = await client.describe(args.id)
    if out.as_json:
        out.json(found)
        return EXIT_OK
    w, run = found.workflow, found.current_run
    out.console.print(f"[bold]{w.workflow_id}[/] ({w.workflow_type}) [bold]{w.status}[/]")
    out.console.print(f"current run {run.run_id}, started {_when(run.started_at)}")
    if run.package_version:
        out.console.print(f"package version {run.package_version}")
    if run.status == "COMPLETED":
        out.console.print(f"result: {json.dumps(run.result)}")
    elif run.error_message is not None:
        _show_error(out, found.workflow.workflow_id, run)
    runs = _table("run", "status", "started", "closed", title="runs")
    for r in found.runs:
        runs.add_row(r.run_id, r.status, _when(r.started_at), _when(r.closed_at))
    out.console.print(runs)
    if found.children:
        children = _table("child", "type", "state", "outcome", title="children")
        for c in found.children:
            outcome = c.error_message if c.state == "FAILED" else json.dumps(c.result)
            children.add_row(c.child_workflow_id, c.child_workflow_type, c.state, outcome)
        out.console.print(children)
    if found.pending_activities:
        pending = _table(
            "activity",
            "state",
            "attempt",
            "last failure",
            "next retry",
            "heartbeat",
            title="pending activities",
        )
        for a in found.pending_activities:
            state = a.state + (" (cancel requested)" if a.cancel_requested else "")
            heartbeat = _when(a.last_heartbeat_at)
            if a.heartbeat_details is not None:
                heartbeat += f" {json.dumps(a.heartbeat_details)}"
            pending.add_row(
                f"{a.activity_type} {a.activity_id[:8]}",
                state,
                str(a.attempt),
                a.last_error_message or "",
                _when(a.next_attempt_at),
                heartbeat,
            )
        out.console.print(pending)
    return EXIT_OK


def _show_error(out: Output, workflow_id: str, run: Run) -> None:
    kind = f"{run.error_type}: " if run.error_type else ""
    if run.status == "BLOCKED":
        out.console.print(f"[bold red]blocked[/]: {run.error_message}", markup=True)
        out.console.print(
            "  the run is open and keeps its inputs; deploy code that replays it "
            f"(aion replay {workflow_id} --against PATH), then route its type to it or "
            f"`aion run move {workflow_id} HASH`; or terminate it",
            markup=False,
        )
    else:
        out.console.print(f"error: {kind}{run.error_message}", markup=False)
    if run.error_traceback:
        out.console.print(run.error_traceback.rstrip(), markup=False, highlight=False)


async def _refusals(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    found = await client.refusals(args.id, limit=args.limit)
    if out.as_json:
        out.json(list(found))
        return EXIT_OK
    if not found:
        out.console.print(f"no refused commands to {args.id}")
        return EXIT_OK
    for r in found:  # reasons are long sentences: one block per refusal, not a table
        out.console.print(
            f"{r.refused_at.isoformat()} {r.command_type} {r.command_id}\n"
            f"  refused: {r.code}: {r.reason}",
            markup=False,
        )
    return EXIT_OK


def _when(value: Any) -> str:
    """A timestamp to the millisecond, as people read it (``--json`` keeps full ISO 8601)."""
    if value is None:
        return ""
    return f"{value:%Y-%m-%d %H:%M:%S}.{value.microsecond // 1000:03d}"


def _table(*columns: str, title: str | None = None) -> Table:
    """A table whose ids and names are folded, never cut short with an ellipsis."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _compact(fields: Any, limit: int = 80) -> str:
    """An event's fields as ``key=value`` pairs, empty ones left out, long values shortened."""
    if not isinstance(fields, dict):
        return json.dumps(fields, default=str)
    parts = []
    for key, value in fields.items():
        if value is None or value in ("", [], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        parts.append(f"{key}={text if len(text) <= limit else text[: limit - 1] + '…'}")
    return " ".join(parts)


async def _list(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    page = await client.list(
        workflow_type=args.type,
        status=args.status,
        parent=args.parent,
        limit=args.limit,
        cursor=args.cursor,
    )
    if out.as_json:
        out.json(page)
        return EXIT_OK
    table = _table("workflow", "type", "status", "started", "closed")
    for w in page.items:
        table.add_row(
            w.workflow_id, w.workflow_type, w.status, _when(w.started_at), _when(w.closed_at)
        )
    out.console.print(table)
    if page.next_cursor:
        out.console.print(f"more: --cursor {page.next_cursor}")
    return EXIT_OK


async def _history(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    if args.all:  # every event, as one page: what `aion.testing.replay` reads from a file
        whole = await fetch_history(client, args.id)
        if out.as_json:
            out.json(whole)
            return EXIT_OK
        page = HistoryPage(
            workflow_id=args.id,
            events=tuple(HistoryEvent.from_json(e) for e in whole["events"]),
            next_from_seq=None,
        )
    else:
        page = await client.history(args.id, from_seq=args.from_seq, limit=args.limit)
    if out.as_json:
        out.json(page)
        return EXIT_OK
    table = _table("seq", "event", "run", "recorded", "fields")
    for e in page.events:
        table.add_row(str(e.seq), e.event_type, e.run_id, _when(e.recorded_at), _compact(e.fields))
    out.console.print(table)
    return EXIT_OK


async def _tree(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    root = await client.tree(args.id, depth=args.depth)
    if out.as_json:
        out.json(root)
        return EXIT_OK
    view = Tree(_label(root))
    _grow(view, root)
    out.console.print(view)
    return EXIT_OK


def _label(node: WorkflowTree) -> str:
    return f"{node.workflow_id} ({node.workflow_type or '?'}) {node.status or 'not started'}"


def _grow(view: Tree, node: WorkflowTree) -> None:
    for child in node.children:
        _grow(view.add(_label(child)), child)


async def _result(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    outcome = await client.result(args.id, wait=args.timeout if args.wait else 0.0)
    return _show_result(out, outcome)


def _dev(_client: AionClient, _args: argparse.Namespace, out: Output) -> Awaitable[int]:
    async def unreachable() -> int:  # `main` execs `aion dev` before any client exists
        out.error("`aion dev` must run from `aion.cli.main`")
        return EXIT_USAGE

    return unreachable()


def _worker(_client: AionClient, _args: argparse.Namespace, out: Output) -> Awaitable[int]:
    async def unreachable() -> int:  # `main` execs `aion worker` before any client exists
        out.error("`aion worker` must run from `aion.cli.main`")
        return EXIT_USAGE

    return unreachable()


_EXEC = {
    "dev": ("aion_dev", "aion-dev", "libs/aion_dev"),
    "worker": ("aion_worker", "aion-worker", "services/worker"),
}


def _exec(command: str, rest: Sequence[str], out: Output) -> int:
    """Replace this process with ``aion dev``'s supervisor or a worker, so Ctrl-C and SIGTERM
    reach it directly."""
    module, distribution, path = _EXEC[command]
    if importlib.util.find_spec(module) is None:
        out.error(
            f"`aion {command}` needs the {distribution} package ({path}): "
            f"run `make install` in an aion checkout, or `pip install ./{path}`"
        )
        return EXIT_USAGE
    argv = [sys.executable, "-m", module, *rest]
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter and module, no shell


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aion",
        description="Start, signal, cancel and inspect aion workflows.",
        epilog="exit codes: 0 ok; 1 workflow failed/not found/still running; "
        "2 usage or validation; 3 API unreachable; 4 command refused by the engine",
    )
    parser.add_argument(
        "--api",
        default=os.environ.get("AION_API_URL", DEFAULT_API),
        help="API base URL (env AION_API_URL; default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--request-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _commands(sub)
    for name, command in sub.choices.items():  # `aion list --json` as well as `aion --json list`
        if name != "dev":
            command.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return parser


def _add_start(sub: Any) -> None:
    p = sub.add_parser("start", help="start a workflow")
    p.add_argument("type")
    p.add_argument("--id")
    p.add_argument("--input", default="null", help="JSON input (default null)")
    p.add_argument("--request-id", help="idempotency key: a retry starts nothing new")
    p.add_argument("--version", metavar="HASH", help="pin the run to this package version")
    p.add_argument("--wait", action="store_true", help="wait for the result")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits")
    p.set_defaults(handler=_start)


def _commands(sub: Any) -> None:
    _add_start(sub)
    p = sub.add_parser("signal", help="send a signal")
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("--payload", default="null", help="JSON payload (default null)")
    p.add_argument("--request-id")
    p.set_defaults(handler=_signal)
    for name, handler, verb in (("cancel", _cancel, "request"), ("terminate", _terminate, "")):
        p = sub.add_parser(name, help=f"{verb} {name} a workflow".strip())
        p.add_argument("id")
        p.add_argument("--reason", default="")
        p.add_argument("--request-id")
        p.set_defaults(handler=handler)
    p = sub.add_parser("describe", help="status, runs, children")
    p.add_argument("id")
    p.set_defaults(handler=_describe)
    p = sub.add_parser("list", help="list workflows, newest first")
    p.add_argument("--status")
    p.add_argument("--type")
    p.add_argument("--parent")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.set_defaults(handler=_list)
    p = sub.add_parser("history", help="a workflow's events")
    p.add_argument("id")
    p.add_argument("--from-seq", type=int, default=1)
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--all", action="store_true", help="every event (save one for a replay test)")
    p.set_defaults(handler=_history)
    p = sub.add_parser("tree", help="a workflow's child tree")
    p.add_argument("id")
    p.add_argument("--depth", type=int, default=3)
    p.set_defaults(handler=_tree)
    p = sub.add_parser("refusals", help="commands to a workflow the engine refused")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(handler=_refusals)
    p = sub.add_parser("result", help="a workflow's result")
    p.add_argument("id")
    p.add_argument("--wait", action="store_true", help="wait until it closes")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits")
    p.set_defaults(handler=_result)
    add_commands(sub)
    _add_process_commands(sub)


def _add_process_commands(sub: Any) -> None:
    """``aion dev`` and ``aion worker``: run as processes of their own (``main`` execs them)."""
    p = sub.add_parser(
        "dev",
        help="run the whole stack locally (Kafka, engine, watcher, projector, API); "
        "`aion dev --help` for its options",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of `aion dev`")
    p.set_defaults(handler=_dev)
    p = sub.add_parser(
        "worker",
        help="run activities: `aion worker --activities MODULE [--task-queue Q] "
        "[--max-concurrent N]`; `aion worker --help` for more",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of `aion worker`")
    p.set_defaults(handler=_worker)


async def _run(args: argparse.Namespace, out: Output) -> int:
    token = os.environ.get("AION_API_TOKEN") or None
    handler: Handler = args.handler
    async with AionClient(args.api, token, timeout=args.request_timeout) as client:
        return await handler(client, args, out)


def _api_error(out: Output, err: AionApiError) -> int:
    """Report a problem the API answered; return the exit code."""
    if isinstance(err, AionCommandRefused):
        if out.as_json:
            out.json(
                {
                    "refused": True,
                    "workflow_id": err.workflow_id,
                    "command_id": err.command_id,
                    "command_type": err.command_type,
                    "code": err.code,
                    "reason": err.reason,
                }
            )
        out.errors.print(f"refused: {err.code}: {err.reason}", markup=False)
        return EXIT_REFUSED
    out.error(err.detail if err.kind == "not-found" else str(err))
    return _api_error_code(err)


_USAGE_PROBLEMS = frozenset(
    {
        "invalid-input",
        "payload-too-large",
        "unauthorized",
        "package-too-large",
        "invalid-package",
        "invalid-route",
        "invalid-move",
    }
)


def _api_error_code(err: AionApiError) -> int:
    if err.kind == "unavailable":
        return EXIT_UNAVAILABLE
    if err.kind in _USAGE_PROBLEMS:
        return EXIT_USAGE
    if err.kind == "conflict":
        return EXIT_REFUSED
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    out = Output(as_json=args.json)
    if args.handler in (_dev, _worker):  # the rest belongs to that command's own parser
        return _exec("dev" if args.handler is _dev else "worker", [*unknown, *args.rest], out)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return asyncio.run(_run(args, out))
    except (UsageError, VersionUsageError) as err:
        out.error(str(err))
        return EXIT_USAGE
    except AionUnavailable as err:
        out.error(f"{err}\nis the API running? set --api or AION_API_URL")
        return EXIT_UNAVAILABLE
    except AionApiError as err:
        return _api_error(out, err)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
