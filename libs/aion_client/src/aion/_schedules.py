"""The client's schedule calls (``aion schedule …``), mixed into :class:`aion.AionClient`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self
from urllib.parse import quote

import httpx

from aion._results import Schedule

__all__ = ["ScheduleCalls", "ScheduleList"]


class ScheduleList(tuple[Schedule, ...]):
    """Every schedule, by id — a tuple, as :meth:`ScheduleCalls.schedules` always returned —
    and whether it may be out of date.

    While the API cannot read the schedule topics (Kafka is away, or it reads them again after
    an outage) it answers the schedules as it last read them: ``stale`` is then true and
    ``stale_reason`` says why (decision 62). A change made meanwhile may be missing."""

    stale: bool
    """The list is the API's last complete read, not a current one."""
    stale_reason: str | None
    """Why the list may be old (None while it is current)."""

    def __new__(
        cls, items: Iterable[Schedule] = (), *, stale: bool = False, stale_reason: str | None = None
    ) -> Self:
        """``items`` with the API's ``stale`` flag and reason."""
        made = super().__new__(cls, items)
        made.stale = stale
        made.stale_reason = stale_reason
        return made

    def __repr__(self) -> str:
        stale = f", stale_reason={self.stale_reason!r}" if self.stale else ""
        return f"ScheduleList({tuple.__repr__(self)}{stale})"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ScheduleList:
        """From the API's JSON (an API from before decision 62 sends no flag: current)."""
        reason = body.get("stale_reason")
        return cls(
            (Schedule.from_json(item) for item in body["items"]),
            stale=bool(body.get("stale", False)),
            stale_reason=None if reason is None else str(reason),
        )


def _segment(text: str) -> str:
    """One percent-encoded path segment (as the client's: ``/`` and dot segments too)."""
    if text in {".", ".."}:
        return text.replace(".", "%2E")
    return quote(text, safe="")


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


class ScheduleCalls:
    """Create, list, describe, pause, resume, trigger and delete schedules."""

    async def _call(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        raise NotImplementedError  # AionClient's

    async def create_schedule(
        self,
        schedule_id: str,
        workflow_type: str,
        input: Any = None,  # noqa: A002  # the API's field name
        *,
        cron: str | None = None,
        every: str | float | None = None,
        replace: bool = False,
        **options: Any,
    ) -> Schedule:
        """Create a schedule firing on ``cron`` (five fields, UTC) or ``every`` (``"30s"``,
        seconds); ``options``: ``overlap`` (``skip``, ``buffer``, ``allow``), ``jitter``,
        ``catchup_window``, ``offset``, ``paused``, ``note``, ``execution_timeout_ms``.
        ``replace`` overwrites an existing one (else it is a conflict)."""
        body = _compact({"type": workflow_type, "cron": cron, "every": every, **options})
        body["input"] = input
        path = f"/v1/schedules/{_segment(schedule_id)}"
        response = await self._call("PUT" if replace else "POST", path, json=body)
        return Schedule.from_json(response.json())

    async def schedules(self) -> ScheduleList:
        """Every schedule (a tuple); its ``stale`` is true, and ``stale_reason`` says why,
        while the API answers the schedules as last read (Kafka away, or read again)."""
        return ScheduleList.from_json((await self._call("GET", "/v1/schedules")).json())

    async def schedule(self, schedule_id: str) -> Schedule:
        """One schedule (:class:`AionApiError` ``not-found`` if it does not exist)."""
        response = await self._call("GET", f"/v1/schedules/{_segment(schedule_id)}")
        return Schedule.from_json(response.json())

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        """Stop firing (a trigger still starts a run)."""
        path = f"/v1/schedules/{_segment(schedule_id)}/pause"
        return Schedule.from_json((await self._call("POST", path)).json())

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        """Fire again, from now on."""
        path = f"/v1/schedules/{_segment(schedule_id)}/resume"
        return Schedule.from_json((await self._call("POST", path)).json())

    async def trigger_schedule(self, schedule_id: str, *, request_id: str | None = None) -> str:
        """Fire now (under the overlap policy); returns the request id (a retry with the same
        one starts one run)."""
        path = f"/v1/schedules/{_segment(schedule_id)}/trigger"
        body = _compact({"request_id": request_id})
        answer: str = (await self._call("POST", path, json=body)).json()["request_id"]
        return answer

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete the schedule; the runs it started go on."""
        await self._call("DELETE", f"/v1/schedules/{_segment(schedule_id)}")
