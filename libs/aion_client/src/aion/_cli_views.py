"""``aion describe``, ``list``, ``history``, ``tree``, ``refusals`` and ``result``: what the
views hold, as tables that fit the terminal (``--json`` for scripts)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.tree import Tree

from aion._cli_commands import show_result
from aion._cli_options import WAIT_SECONDS
from aion._cli_output import Output, compact, plain, table, when
from aion._cli_queries import show_waiting, waiting_or_why
from aion._cli_versions import fetch_history
from aion._results import HistoryEvent, HistoryPage, Run, WorkflowDescription, WorkflowTree
from aion.client import AionClient

__all__ = ["STATUSES", "add_view_parsers"]

EXIT_OK = 0
STATUSES = (
    "RUNNING",
    "BLOCKED",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TERMINATED",
    "TIMED_OUT",
    "CONTINUED_AS_NEW",
)
"""What ``--status`` takes (in any case; ``-`` for ``_``)."""


def _status(text: str) -> str:
    status = text.strip().upper().replace("-", "_")
    if status not in STATUSES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a status; one of {', '.join(STATUSES)} (any case)"
        )
    return status


async def _describe(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    found = await client.describe(args.id)
    waiting = (
        await waiting_or_why(client, args.id)
        if found.workflow.status in {"RUNNING", "BLOCKED"}
        else None
    )
    if out.as_json:
        out.json({**plain(found), "waiting": plain(waiting)})
        return EXIT_OK
    w, run = found.workflow, found.current_run
    out.console.print(f"[bold]{w.workflow_id}[/] ({w.workflow_type}) [bold]{w.status}[/]")
    out.console.print(f"current run {run.run_id}, started {when(run.started_at)}")
    if run.package_version:
        out.console.print(f"package version {run.package_version}")
    if run.status == "COMPLETED":
        out.console.print(f"result: {json.dumps(run.result)}", markup=False)
    elif run.error_message is not None:
        _show_error(out, w.workflow_id, run)
    runs = table("run", "status", "started", "closed", title="runs", short=("status",))
    for r in found.runs:
        runs.add_row(r.run_id, r.status, when(r.started_at), when(r.closed_at))
    out.console.print(runs)
    _children(out, found)
    _activities(out, found)
    if waiting is not None:
        show_waiting(out, waiting)
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
    elif (run.error_message or "").startswith(kind):  # "ValueError: …" names its type
        out.console.print(f"error: {run.error_message}", markup=False)
    else:
        out.console.print(f"error: {kind}{run.error_message}", markup=False)
    if run.error_traceback:
        out.console.print(run.error_traceback.rstrip(), markup=False, highlight=False)


def _children(out: Output, found: WorkflowDescription) -> None:
    if not found.children:
        return
    children = table("child", "type", "state", "outcome", title="children", short=("state",))
    for c in found.children:
        outcome = c.error_message if c.state == "FAILED" else json.dumps(c.result)
        children.add_row(c.child_workflow_id, c.child_workflow_type, c.state, outcome)
    out.console.print(children)


def _activities(out: Output, found: WorkflowDescription) -> None:
    if not found.pending_activities:
        return
    pending = table(
        "activity",
        "state",
        "attempt",
        "last failure",
        "next retry",
        "heartbeat",
        title="pending activities",
        short=("state", "attempt"),
    )
    for a in found.pending_activities:
        state = a.state + (" (cancel requested)" if a.cancel_requested else "")
        heartbeat = when(a.last_heartbeat_at)
        if a.heartbeat_details is not None:
            heartbeat += f" {json.dumps(a.heartbeat_details)}"
        pending.add_row(
            f"{a.activity_type} {a.activity_id[:8]}",
            state,
            str(a.attempt),
            a.last_error_message or "",
            when(a.next_attempt_at),
            heartbeat,
        )
    out.console.print(pending)


async def _refusals(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    found = await client.refusals(args.id, limit=args.limit)
    if out.as_json:
        out.json(list(found))
        return EXIT_OK
    if not found:
        out.console.print(f"no refused commands to {args.id}", markup=False)
        return EXIT_OK
    for r in found:  # reasons are long sentences: one block per refusal, not a table
        out.console.print(
            f"{r.refused_at.isoformat()} {r.command_type} {r.command_id}\n"
            f"  refused: {r.code}: {r.reason}",
            markup=False,
        )
    return EXIT_OK


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
    view = table(
        "workflow", "type", "status", "started", "closed", short=("status", "started", "closed")
    )
    for w in page.items:
        view.add_row(
            w.workflow_id, w.workflow_type, w.status, when(w.started_at), when(w.closed_at)
        )
    out.console.print(view)
    if page.next_cursor:
        out.console.print(f"more: --cursor {page.next_cursor}", markup=False)
    return EXIT_OK


async def _archived_history(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    found = await client.archived_history(args.id)
    if out.as_json:
        out.json(found)
        return EXIT_OK
    for item in found:
        out.console.print(f"purged {when(item.purged_at)} ({item.location})")
        view = table("seq", "event", "run", "recorded", "fields", short=("seq", "event", "run"))
        for e in item.events:
            view.add_row(
                str(e.seq), e.event_type, e.run_id[:8], when(e.recorded_at), compact(e.fields)
            )
        out.console.print(view)
    return EXIT_OK


async def _history(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    if args.archived:
        return await _archived_history(client, args, out)
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
    days = {e.recorded_at.date() for e in page.events}
    one_day = len(days) == 1
    title = f"{args.id}, {next(iter(days)):%Y-%m-%d} (UTC)" if one_day else f"{args.id} (UTC)"
    view = table(
        "seq", "event", "run", "recorded", "fields", title=title, short=("seq", "event", "run")
    )
    for e in page.events:
        view.add_row(
            str(e.seq),
            e.event_type,
            e.run_id[:8],  # enough to tell the runs apart; `describe` and --json have them whole
            when(e.recorded_at, time_only=one_day),
            compact(e.fields),
        )
    out.console.print(view)
    if page.next_from_seq is not None:
        out.console.print(f"more: --from-seq {page.next_from_seq}", markup=False)
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
    return show_result(out, outcome)


def add_view_parsers(sub: Any) -> None:
    """``describe``, ``list``, ``history``, ``tree``, ``refusals``, ``result``."""
    p = sub.add_parser("describe", help="status, runs, children; a failure's traceback")
    p.add_argument("id")
    p.set_defaults(handler=_describe)
    p = sub.add_parser("list", help="list workflows, newest first")
    p.add_argument(
        "--status",
        type=_status,
        metavar="STATUS",
        help=f"only these: {', '.join(STATUSES)} (any case)",
    )
    p.add_argument("--type", help="only this workflow type")
    p.add_argument("--parent", help="only children of this workflow id")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="the next page (printed under a full page)")
    p.set_defaults(handler=_list)
    p = sub.add_parser("history", help="a workflow's events")
    p.add_argument("id")
    p.add_argument("--from-seq", type=int, default=1)
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--all", action="store_true", help="every event (save one for a replay test)")
    p.add_argument(
        "--archived",
        action="store_true",
        help="the archived history of a purged workflow (every purged incarnation of the id)",
    )
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
    p.add_argument("--timeout", type=WAIT_SECONDS, default=60.0, help="seconds --wait waits")
    p.set_defaults(handler=_result)
