"""The errors workflow and activity code raise and catch (re-exported by ``aion.workflow`` and
``aion.activity``)."""

from __future__ import annotations

__all__ = [
    "ActivityError",
    "ApplicationError",
    "ChildWorkflowFailed",
    "SandboxViolation",
    "SignalTimeout",
]


class ApplicationError(Exception):
    """An error of the user's own logic, with a stable ``type`` and a retry verdict.

    Raised from an activity, ``non_retryable=True`` ends the activity at once instead of
    retrying it; ``type`` (default: the class name) is what ``RetryPolicy.non_retryable_errors``
    and the workflow's :class:`ActivityError` see. ``details`` is JSON that travels with it.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,  # noqa: A002 - the SDK's public keyword (as Temporal's)
        non_retryable: bool = False,
        details: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type or "ApplicationError"
        self.non_retryable = non_retryable
        self.details = details


class ChildWorkflowFailed(Exception):
    """A child ended other than completed; ``message`` is the recorded error.

    Cancelled children carry ``cancelled:<reason>``, timed-out ones ``timed_out:<timeout>``,
    and a child whose start was refused ``start_refused:<code>:<reason>``.
    """

    def __init__(self, child_workflow_id: str, message: str) -> None:
        super().__init__(message)
        self.child_workflow_id = child_workflow_id
        self.message = message


class SignalTimeout(TimeoutError):
    """``wait_signal(name, timeout=…)`` saw no signal ``name`` before the timeout."""

    def __init__(self, name: str, timeout_ms: int) -> None:
        super().__init__(f"no signal {name!r} within {timeout_ms} ms")
        self.name = name
        self.timeout_ms = timeout_ms


class ActivityError(Exception):
    """An activity ended without a result: what the workflow's ``await`` raises.

    ``cause_type``, ``cause_message`` and ``traceback`` describe the last attempt's failure
    (empty when there was none, e.g. a schedule-to-start timeout); ``attempt`` is the number of
    the last attempt; ``timeout`` names the clock that ended it (``"START_TO_CLOSE"``,
    ``"SCHEDULE_TO_START"``, ``"SCHEDULE_TO_CLOSE"``, ``"HEARTBEAT"``) or is None;
    ``non_retryable`` says the error stopped the retries; ``cancelled`` that it was cancelled.
    """

    def __init__(
        self,
        *,
        activity_id: str,
        activity_type: str,
        attempt: int,
        cause_type: str = "",
        cause_message: str = "",
        traceback: str = "",
        timeout: str | None = None,
        non_retryable: bool = False,
        cancelled: bool = False,
    ) -> None:
        if cancelled:
            what = "was cancelled"
        elif timeout is not None:
            what = f"timed out ({timeout})"
        else:
            what = "failed"
        cause = cause_message or cause_type
        text = f"activity {activity_type!r} {what} after {attempt} attempt(s)"
        super().__init__(f"{text}: {cause}" if cause else text)
        self.activity_id = activity_id
        self.activity_type = activity_type
        self.attempt = attempt
        self.cause_type = cause_type
        self.cause_message = cause_message
        self.traceback = traceback
        self.timeout = timeout
        self.non_retryable = non_retryable
        self.cancelled = cancelled


class SandboxViolation(RuntimeError):
    """Workflow code did I/O or a blocking call (``open``, a socket, ``time.sleep``, a
    subprocess …). It would run again on every replay; do it in an activity instead. The run
    fails with this error even if the code catches it."""

    def __init__(self, call: str) -> None:
        super().__init__(
            f"{call} is refused inside workflow code: workflow code is replayed, so I/O and "
            "blocking calls would run again on every replay. Do it in an activity "
            "(ctx.execute_activity) and pass the result to the workflow"
        )
        self.call = call
