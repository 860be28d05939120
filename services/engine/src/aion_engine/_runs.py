"""Run lifecycle rules: start admission, recording the code's decisions, the close policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, assert_never

from aion_common.domain import (
    Cancelled,
    CancelWorkflow,
    CarriedChild,
    ChildWorkflowScheduled,
    Command,
    Completed,
    Failed,
    IdReusePolicy,
    ParentClosePolicy,
    ParentLink,
    Payload,
    RecordChildTerminal,
    RefusalCode,
    StartWorkflow,
    TerminateWorkflow,
    TimerScheduled,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowError,
    WorkflowFailed,
    WorkflowStarted,
    derive_id,
    outcome_of,
    start_run_id,
)
from aion_engine import activities, publishing
from aion_engine._executor import (
    ContinueAsNewDecision,
    Finish,
    Publish,
    RequestCancelActivity,
    ScheduleActivity,
    ScheduleChild,
    ScheduleTimer,
    WorkflowDecision,
)
from aion_engine._state import RunState, WorkflowState
from aion_engine._work import Work
from aion_engine.publishing import TopicCheck
from aion_engine.versions import Missing, Versions

__all__ = [
    "MAX_CONTINUES_PER_COMMAND",
    "PARENT_CLOSE_REASON_PREFIX",
    "TERMINATED_ERROR_TYPE",
    "Blocked",
    "NextRun",
    "RunClosed",
    "carried_children",
    "child_terminal_record",
    "close_policy_commands",
    "close_policy_origin",
    "first_run_id",
    "first_started_event",
    "format_timeout",
    "loaded_types",
    "record_decision",
    "start_refusal",
    "terminated_error",
]

MAX_CONTINUES_PER_COMMAND: Final = 100
"""A run that continues-as-new without ever blocking would loop forever inside one command."""


PARENT_CLOSE_REASON_PREFIX: Final = "parent-close:"
"""Reasons of close-policy commands: ``parent-close:<POLICY>:<parent run id>:<parent id>``."""


class _RunClosedType:
    __slots__ = ()


RunClosed: Final = _RunClosedType()
"""Returned by :func:`record_decision` when the decision closed the run."""


@dataclass(frozen=True, slots=True)
class Blocked:
    """The decision cannot be carried out (its problem blocks the run)."""

    problem: Missing


@dataclass(frozen=True, slots=True)
class NextRun:
    """The run continued-as-new; ``started`` opens the next run (not yet appended), which
    holds the run's open children and gets its unconsumed ``signals`` before its first step."""

    started: WorkflowStarted
    signals: tuple[tuple[str, Payload], ...] = ()
    child_results: tuple[tuple[str, Payload | WorkflowError], ...] = ()


def loaded_types(versions: Versions) -> str:
    """The type names new runs may start as, for refusal messages."""
    return ", ".join(versions.types()) or "(none)"


def format_timeout(ms: int) -> str:
    """A timeout's human form: ``30s``, ``1m30s``, ``2h``, ``1500ms``."""
    if ms % 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms // 1000, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{seconds}s" if seconds or not text else "")


def start_refusal(
    cmd: StartWorkflow, state: WorkflowState | None, versions: Versions
) -> tuple[RefusalCode, str] | None:
    """Why ``cmd`` may not start a run, or None if it may."""
    run = None if state is None else state.run
    policy = cmd.id_reuse_policy
    if run is not None:
        if run.terminal is None:
            if policy is not IdReusePolicy.TERMINATE_IF_RUNNING:
                return (
                    RefusalCode.ALREADY_RUNNING,
                    f"workflow {cmd.workflow_id!r} is already running (run {run.run_id!r}); "
                    "start it with the id reuse policy TERMINATE_IF_RUNNING to replace it",
                )
        elif policy is IdReusePolicy.REJECT_DUPLICATE or (
            policy is IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
            and isinstance(run.terminal, WorkflowCompleted)
        ):
            closed_as = type(run.terminal).__name__
            return (
                RefusalCode.ID_REUSE_REJECTED,
                f"workflow id {cmd.workflow_id!r} was used by run {run.run_id!r} "
                f"({closed_as}) and the id reuse policy is {policy.value}",
            )
    if versions.version_for_start(cmd.workflow_type, cmd.package_version) is not None:
        return None
    if cmd.package_version:
        return (
            RefusalCode.UNKNOWN_PACKAGE,
            f"package version {cmd.package_version!r} is not deployed or does not define "
            f"workflow type {cmd.workflow_type!r}; deploy it first (aion deploy)",
        )
    return (
        RefusalCode.UNKNOWN_WORKFLOW_TYPE,
        f"workflow type {cmd.workflow_type!r} is not loaded by this engine; "
        f"loaded types: {loaded_types(versions)}",
    )


TERMINATED_ERROR_TYPE: Final = "Terminated"
"""``WorkflowError.error_type`` of a run ended by ``TerminateWorkflow`` (its message is
``terminated:<reason>``): the views show such a run as TERMINATED."""


def terminated_error(reason: str) -> WorkflowError:
    """The failure recorded for a terminated run (a parent sees its child failed with it)."""
    return WorkflowError(
        message=f"terminated:{reason or 'no reason given'}", error_type=TERMINATED_ERROR_TYPE
    )


def first_run_id(cmd: StartWorkflow) -> str:
    """The run id ``cmd`` opens when admitted (its chain's ``first_run_id``)."""
    return start_run_id(cmd.workflow_id, cmd.command_id)


def first_started_event(
    work: Work, run_id: str, cmd: StartWorkflow, package_version: str
) -> WorkflowStarted:
    """The ``WorkflowStarted`` opening a new chain for ``cmd`` on ``package_version``."""
    return WorkflowStarted(
        **work.envelope(run_id),
        workflow_type=cmd.workflow_type,
        input=cmd.input,
        first_run_id=run_id,
        parent=cmd.parent,
        package_version=package_version,
        execution_timeout_ms=cmd.execution_timeout_ms,
        pinned=bool(cmd.package_version),
    )


def record_decision(
    work: Work,
    run: RunState,
    decision: WorkflowDecision,
    versions: Versions,
    topics: TopicCheck | None = None,
) -> _RunClosedType | NextRun | Blocked | None:
    """Append the events (and outgoing commands, timers, records) one decision of the code
    makes."""
    env = work.envelope(run.run_id)
    match decision:
        case ScheduleChild():
            _schedule_child(work, run, decision)
        case ScheduleTimer(timer_id=timer_id, fire_at=fire_at):
            work.schedule_timer(TimerScheduled(**env, timer_id=timer_id, fire_at=fire_at))
        case ScheduleActivity():
            activities.schedule(work, run, decision)
        case RequestCancelActivity():
            raise AssertionError("the engine's drain records activity cancellations itself")
        case Publish():
            problem = publishing.record(work, run, decision, topics)
            if problem is not None:
                return Blocked(problem)
        case Finish(outcome=Completed(result=result)):
            work.append(WorkflowCompleted(**env, result=result))
            return RunClosed
        case Finish(outcome=Failed(error=error)):
            work.append(WorkflowFailed(**env, error=error))
            return RunClosed
        case Finish(outcome=Cancelled(reason=reason)):
            work.append(WorkflowCancelled(**env, reason=reason))
            return RunClosed
        case ContinueAsNewDecision():
            return _continue_as_new(work, run, decision, versions)
        case _:
            assert_never(decision)  # type: ignore[arg-type]  # Finish's union is matched above
    return None


def _schedule_child(work: Work, run: RunState, decision: ScheduleChild) -> None:
    workflow_id = work.state.workflow_id
    start_id = derive_id("start-child", workflow_id, run.run_id, decision.child_id)
    work.append(
        ChildWorkflowScheduled(
            **work.envelope(run.run_id),
            child_workflow_id=decision.child_id,
            child_workflow_type=decision.workflow_type,
            input=decision.input,
            parent_close_policy=decision.close_policy,
            start_command_id=start_id,
            execution_timeout_ms=decision.execution_timeout_ms,
        )
    )
    work.outgoing.append(
        StartWorkflow(
            command_id=start_id,
            issued_at=work.now,
            workflow_id=decision.child_id,
            workflow_type=decision.workflow_type,
            input=decision.input,
            parent=ParentLink(
                workflow_id=workflow_id, run_id=run.run_id, close_policy=decision.close_policy
            ),
            execution_timeout_ms=decision.execution_timeout_ms,
        )
    )


def _continue_as_new(
    work: Work, run: RunState, decision: ContinueAsNewDecision, versions: Versions
) -> _RunClosedType | NextRun:
    workflow_type = decision.workflow_type or run.started.workflow_type
    # A pinned chain stays on its version; else the next run moves to the type's route (as
    # Temporal's continue-as-new does), falling back to the engine's own modules.
    pinned = run.started.pinned and versions.offers(run.version, workflow_type)
    version = run.version if pinned else versions.version_for_start(workflow_type, "")
    problem = None
    if version is None:
        problem = (
            f"continue-as-new to workflow type {workflow_type!r}, which this engine has not "
            f"loaded; loaded types: {loaded_types(versions)}"
        )
    elif work.continues >= MAX_CONTINUES_PER_COMMAND:
        problem = (
            f"continued-as-new {work.continues} times within one command without waiting "
            "for anything; the workflow loops"
        )
    if problem is not None:
        work.append(
            WorkflowFailed(**work.envelope(run.run_id), error=WorkflowError(message=problem))
        )
        return RunClosed
    work.continues += 1
    # before the run closes: a closed run keeps only its start and terminal
    carried = carried_children(run, [c for c, _ in decision.child_results])
    next_run_id = derive_id("run", work.state.workflow_id, work.command_id, str(work.continues))
    work.append(
        WorkflowContinuedAsNew(
            **work.envelope(run.run_id),
            input=decision.input,
            workflow_type=decision.workflow_type,
            next_run_id=next_run_id,
        )
    )
    previous = run.started
    return NextRun(
        WorkflowStarted(
            **work.envelope(next_run_id),
            workflow_type=workflow_type,
            input=decision.input,
            first_run_id=previous.first_run_id,
            previous_run_id=previous.run_id,
            parent=previous.parent,
            package_version=version or "",
            execution_timeout_ms=previous.execution_timeout_ms,
            pinned=pinned,
            carried_children=carried,
        ),
        decision.signals,
        decision.child_results,
    )


def carried_children(run: RunState, unawaited: Sequence[str] = ()) -> tuple[CarriedChild, ...]:
    """The children to hand over to the next run of its chain: the open ones (in the order
    they were scheduled; a child carried in before keeps the run that scheduled it), then
    those recorded ended whose result the code had not awaited (``unawaited``)."""
    known: dict[str, ChildWorkflowScheduled | CarriedChild] = {
        c.child_workflow_id: c for c in run.started.carried_children
    }
    known.update(
        (e.child_workflow_id, e) for e in run.events if isinstance(e, ChildWorkflowScheduled)
    )
    children = [*run.open_children.values()]
    children += [known[c] for c in unawaited if c in known and c not in run.open_children]
    return tuple(
        child
        if isinstance(child, CarriedChild)
        else CarriedChild(
            child_workflow_id=child.child_workflow_id,
            child_workflow_type=child.child_workflow_type,
            parent_close_policy=child.parent_close_policy,
            origin_run_id=run.run_id,
        )
        for child in children
    )


def close_policy_commands(work: Work, run: RunState) -> list[Command]:
    """Commands that apply each open child's parent-close policy, in scheduling order."""
    commands: list[Command] = []
    workflow_id = work.state.workflow_id
    for child_id, scheduled in run.open_children.items():
        policy = scheduled.parent_close_policy
        if policy is ParentClosePolicy.ABANDON:
            continue
        # a carried child was started by an earlier run of the chain: its start names that
        # run, and so must the policy's command for the child to recognise it
        origin = scheduled.origin_run_id if isinstance(scheduled, CarriedChild) else run.run_id
        command_id = _close_command_id(workflow_id, origin, child_id)
        # run ids are UUIDs (no ':'), so the parent's id, last, may hold anything
        reason = f"{PARENT_CLOSE_REASON_PREFIX}{policy.value}:{origin}:{workflow_id}"
        if policy is ParentClosePolicy.TERMINATE:
            commands.append(
                TerminateWorkflow(
                    command_id=command_id, issued_at=work.now, workflow_id=child_id, reason=reason
                )
            )
        else:
            commands.append(
                CancelWorkflow(
                    command_id=command_id, issued_at=work.now, workflow_id=child_id, reason=reason
                )
            )
    return commands


def child_terminal_record(work: Work, run: RunState) -> list[Command]:
    """The parent's ``RecordChildTerminal`` when ``run``, a child's run, just ended for good.

    The same command, byte for byte, as the watcher's for this terminal (its id, its
    ``issued_at`` = the terminal's ``recorded_at``): it leaves in the transaction that carries
    the terminal, so the parent's engine has it one watcher hop earlier, and the watcher's own
    issue, if it makes one, is a duplicate (decision 44). A continue-as-new is not reported:
    the chain goes on, and its last run reports.
    """
    parent = run.started.parent
    if parent is None:
        return []
    for event in reversed(work.events):
        if event.run_id != run.run_id:
            continue
        outcome = outcome_of(event)
        if outcome is None:
            continue
        if isinstance(event, WorkflowContinuedAsNew):
            return []
        return [
            RecordChildTerminal.of(
                parent.workflow_id,
                parent.run_id,
                child_workflow_id=work.state.workflow_id,
                child_run_id=run.run_id,
                outcome=outcome,
                issued_at=event.recorded_at,
            )
        ]
    return []


def _close_command_id(parent_workflow_id: str, parent_run_id: str, child_id: str) -> str:
    return derive_id("parent-close", parent_workflow_id, parent_run_id, child_id)


def close_policy_origin(cmd: CancelWorkflow | TerminateWorkflow) -> tuple[str, str] | None:
    """``(parent workflow id, parent run id)`` if ``cmd`` is a close-policy command, else None.

    It is one when its reason has the close-policy form and its id is the one the engine
    derives from that parent run and ``cmd``'s workflow — so an operator's cancel whose reason
    merely looks like one is an ordinary cancel.
    """
    reason = cmd.reason
    if not reason.startswith(PARENT_CLOSE_REASON_PREFIX):
        return None
    parts = reason[len(PARENT_CLOSE_REASON_PREFIX) :].split(":", 2)
    if len(parts) != 3:  # noqa: PLR2004 - policy, parent run, parent workflow
        return None
    _policy, parent_run_id, parent_workflow_id = parts
    if cmd.command_id != _close_command_id(parent_workflow_id, parent_run_id, cmd.workflow_id):
        return None
    return parent_workflow_id, parent_run_id
