"""``WorkflowHandle``: what :meth:`AionClient.start` returns — the run a start opened, and
waiting for exactly that run's result (never an earlier run's of the same id)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aion._errors import AionResultTimeout, AionWorkflowFailed
from aion._results import Accepted, CommandStatus, WorkflowDescription, WorkflowResult

if TYPE_CHECKING:
    from aion.client import AionClient

__all__ = ["WorkflowHandle"]


class WorkflowHandle(Accepted):
    """A started workflow: ``workflow_id``, the start's ``command_id`` and the ``run_id`` it
    opens once the engine admits it (as Temporal's handle, bound to its first run).

    ``await handle.result()`` returns the result of that run's chain (its last run after any
    continue-as-new) or raises: :class:`~aion.AionCommandRefused` if the engine refused the
    start (an unknown type, an id already running …), :class:`~aion.AionWorkflowFailed` if
    it ended other than completed, :class:`~aion.AionResultTimeout` if it is still open when
    the wait ends. :meth:`outcome` returns the :class:`~aion.WorkflowResult` instead of
    raising.
    """

    __slots__ = ("_client",)

    def __init__(self, client: AionClient, accepted: Accepted) -> None:
        super().__init__(
            workflow_id=accepted.workflow_id,
            command_id=accepted.command_id,
            run_id=accepted.run_id,
        )
        object.__setattr__(self, "_client", client)

    def _owner(self) -> AionClient:
        client: AionClient = object.__getattribute__(self, "_client")
        return client

    async def outcome(self, *, wait: float = 60.0) -> WorkflowResult:
        """This run's outcome, waiting up to ``wait`` seconds for it to close (``closed`` is
        false if it did not); raises :class:`~aion.AionCommandRefused` if the start was
        refused."""
        return await self._owner().result(
            self.workflow_id, wait=wait, command_id=self.command_id, run_id=self.run_id
        )

    async def result(self, *, timeout: float = 60.0) -> Any:  # noqa: ASYNC109 - the wait
        """The run's result, waiting up to ``timeout`` seconds (see the class docstring)."""
        outcome = await self.outcome(wait=timeout)
        if not outcome.closed:
            why = f": {outcome.pending_reason}" if outcome.pending_reason else ""
            raise AionResultTimeout(
                f"workflow {self.workflow_id!r} is still {outcome.status} after {timeout:g} s{why}",
                outcome=outcome,
            )
        if not outcome.succeeded:
            raise AionWorkflowFailed(
                self.workflow_id,
                outcome.status,
                outcome.error_message or "",
                error_type=outcome.error_type or "",
                traceback=outcome.error_traceback or "",
                outcome=outcome,
            )
        return outcome.result

    async def confirmed(self, *, wait: float = 2.0) -> CommandStatus:
        """Whether the engine admitted the start (``APPLIED``), refused it (``REFUSED``, with
        the code and reason) or has not answered within ``wait`` seconds (``PENDING``)."""
        return await self._owner().command_status(self.workflow_id, self.command_id, wait=wait)

    async def describe(self) -> WorkflowDescription:
        """The workflow as the views hold it now (its current run may be a later start's)."""
        return await self._owner().describe(self.workflow_id)
