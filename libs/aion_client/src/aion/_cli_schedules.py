"""The CLI's schedule commands: ``aion schedule create|list|describe|pause|resume|trigger|delete``.

A schedule starts a run of a workflow type on a cron expression (five fields, UTC) or every
interval; each run's workflow id is ``<schedule>-<nominal fire time>``, so a fire is never
doubled. ``aion list --id-prefix <schedule>-`` lists a schedule's runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aion._cli_output import Output, table, when
from aion._results import Schedule
from aion.client import AionClient

__all__ = ["add_schedule_commands"]

EXIT_OK, EXIT_USAGE = 0, 2


class ScheduleUsageError(Exception):
    """A schedule command was given something it cannot use."""


def _input(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise ScheduleUsageError(f"--input is not valid JSON: {err}") from err


async def _create(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    if (args.cron is None) == (args.every is None):
        out.error("give exactly one of --cron EXPR and --every INTERVAL")
        return EXIT_USAGE
    try:
        payload = _input(args.input)
    except ScheduleUsageError as err:
        out.error(str(err))
        return EXIT_USAGE
    options = {
        "overlap": args.overlap,
        "jitter": args.jitter,
        "catchup_window": args.catchup_window,
        "offset": args.offset,
        "note": args.note,
        "paused": args.paused or None,
    }
    schedule = await client.create_schedule(
        args.name,
        args.type,
        payload,
        cron=args.cron,
        every=args.every,
        replace=args.replace,
        **{k: v for k, v in options.items() if v is not None},
    )
    return _show(out, schedule, "created")


def _show(out: Output, schedule: Schedule, verb: str = "") -> int:
    if out.as_json:
        out.json(schedule.raw)
        return EXIT_OK
    state = "paused" if schedule.paused else f"next fire {when(schedule.next_fire) or '-'}"
    head = f"schedule {schedule.id} {verb}".rstrip()
    out.console.print(f"{head}: {schedule.type} {schedule.spec}, overlap {schedule.overlap}")
    out.console.print(f"  {state}; last fire {when(schedule.last_fire) or '-'}", markup=False)
    out.console.print(
        f"  runs started {schedule.started}, skipped {schedule.skipped}, "
        f"missed {schedule.missed}; latest {schedule.last_started or '-'}",
        markup=False,
    )
    if schedule.running:
        out.console.print(f"  open: {', '.join(schedule.running)}", markup=False)
    if schedule.note:
        out.console.print(f"  note: {schedule.note}", markup=False)
    return EXIT_OK


async def _list(client: AionClient, _args: argparse.Namespace, out: Output) -> int:
    schedules = await client.schedules()
    if schedules.stale:  # on stderr, so --json's stdout stays the list it always was
        why = f": {schedules.stale_reason}" if schedules.stale_reason else ""
        out.note(f"these schedules are as last read, and may be out of date{why}")
    if out.as_json:
        out.json([s.raw for s in schedules])
        return EXIT_OK
    view = table("schedule", "type", "spec", "overlap", "next fire", "last fire", "started")
    for s in schedules:
        view.add_row(
            s.id,
            s.type,
            s.spec,
            s.overlap,
            "paused" if s.paused else when(s.next_fire),
            when(s.last_fire),
            str(s.started),
        )
    out.console.print(view)
    return EXIT_OK


async def _describe(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    return _show(out, await client.schedule(args.name))


async def _pause(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    return _show(out, await client.pause_schedule(args.name), "paused")


async def _resume(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    return _show(out, await client.resume_schedule(args.name), "resumed")


async def _trigger(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    request_id = await client.trigger_schedule(args.name, request_id=args.request_id)
    if out.as_json:
        out.json({"schedule_id": args.name, "request_id": request_id})
    else:
        out.console.print(f"schedule {args.name} triggered (request {request_id})")
    return EXIT_OK


async def _delete(client: AionClient, args: argparse.Namespace, out: Output) -> int:
    await client.delete_schedule(args.name)
    if out.as_json:
        out.json({"deleted": True, "schedule_id": args.name})
    else:
        out.console.print(f"schedule {args.name} deleted; the runs it started go on")
    return EXIT_OK


def add_schedule_commands(sub: Any) -> None:
    """Add ``aion schedule …`` to the CLI's subcommands."""
    p = sub.add_parser("schedule", help="start runs on a cron or an interval")
    group = p.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")
    q = group.add_parser("create", help="create a schedule (--cron or --every)")
    q.add_argument("name")
    q.add_argument("--type", required=True, help="the workflow type each fire starts")
    q.add_argument("--cron", metavar="EXPR", help="five cron fields, UTC ('*/5 * * * *')")
    q.add_argument("--every", metavar="INTERVAL", help="an interval: 30s, 5m, 1h30m")
    q.add_argument("--input", default="null", help="each run's JSON input (default null)")
    q.add_argument(
        "--overlap",
        choices=("skip", "buffer", "allow"),
        help="while the previous run is open: skip the fire (default), buffer one, allow it",
    )
    q.add_argument("--jitter", metavar="DURATION", help="delay each fire by up to this much")
    q.add_argument(
        "--catchup-window", metavar="DURATION", help="after downtime, start fires this recent"
    )
    q.add_argument("--offset", metavar="DURATION", help="shift an interval's fires")
    q.add_argument("--paused", action="store_true", help="create it paused")
    q.add_argument("--note", help="a note shown with it")
    q.add_argument("--replace", action="store_true", help="overwrite an existing schedule")
    q.set_defaults(handler=_create)
    q = group.add_parser("list", help="every schedule, its next and last fire")
    q.set_defaults(handler=_list)
    for name, handler, text in (
        ("describe", _describe, "one schedule's definition and counts"),
        ("pause", _pause, "stop firing (trigger still works)"),
        ("resume", _resume, "fire again from now on"),
        ("delete", _delete, "delete it (its runs go on)"),
    ):
        q = group.add_parser(name, help=text)
        q.add_argument("name")
        q.set_defaults(handler=handler)
    q = group.add_parser("trigger", help="start a run now (under the overlap policy)")
    q.add_argument("name")
    q.add_argument("--request-id", help="idempotency key: a retry starts one run")
    q.set_defaults(handler=_trigger)
