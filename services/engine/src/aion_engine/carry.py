"""What a continue-as-new carries into the next run: unconsumed signals and open children.

Long-lived workflows continue-as-new all the time; nothing may be dropped there (Temporal drops
both unless the code drains them by hand: temporal#1289, temporal#2609):

- *Signals* the run received but had not consumed go to the next run in the order they arrived,
  recorded with its start and delivered before its first step (``signal_start``), so they come
  ahead of any newer signal.
- *Open children* stay attached to the chain: the next run's ``WorkflowStarted`` lists them
  (``carried_children``, each naming the run that scheduled it), no close policy is applied at
  the continue-as-new, and the child's terminal — which its watcher addresses to that run, the
  one its start names — is recorded in the run holding the child now (:func:`holder_run`),
  where ``ctx.get_child(id).result()`` awaits it. A close policy applies when the chain really
  ends, to every child it holds, under the run each started in.
"""

from __future__ import annotations

from aion_common.domain import CarriedChild, RecordChildTerminal
from aion_engine._state import WorkflowState

__all__ = ["holder_run"]


def holder_run(state: WorkflowState | None, cmd: RecordChildTerminal) -> str:
    """The run ``cmd`` must be recorded in: the chain's latest run when its start carried the
    child over from the run ``cmd`` names, else that run (whose own rules then apply).

    Asking the latest run's start, not the run ``cmd`` names, keeps this working however many
    runs the chain went through since that run (older closed runs are forgotten: decision 63):

    - the latest run is open and still holds the carried child: the terminal is recorded there;
    - it is open and recorded the child's terminal already: ``AlreadyRecorded``, nothing more;
    - it is closed (the chain ended; its close policy went to the child): ``ParentTerminal``.

    A child the open run holds under the same id but not as that carried child is another
    child: the record stays with the run it names.
    """
    if state is None:
        return cmd.parent_run_id
    run = state.run
    if run is None or run.run_id == cmd.parent_run_id:
        return cmd.parent_run_id
    child_id, origin = cmd.child_workflow_id, cmd.parent_run_id
    if not any(
        c.child_workflow_id == child_id and c.origin_run_id == origin
        for c in run.started.carried_children
    ):
        return origin
    held = run.open_children.get(child_id) if run.is_open else None
    if held is not None and not (isinstance(held, CarriedChild) and held.origin_run_id == origin):
        return origin
    return run.run_id
