"""The client's errors: the API's problems, and an API that cannot be reached."""

from __future__ import annotations

__all__ = [
    "AionApiError",
    "AionClientError",
    "AionCommandRefused",
    "AionInvalidRequest",
    "AionQueryError",
    "AionResultTimeout",
    "AionUnavailable",
    "AionWorkflowFailed",
    "AionWrongServer",
]


class AionClientError(Exception):
    """Root of the client's errors."""


class AionApiError(AionClientError):
    """The API answered with a problem: ``kind`` is the last part of its ``type`` URI."""

    def __init__(
        self,
        status: int,
        problem_type: str,
        title: str,
        detail: str,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.problem_type = problem_type
        self.title = title
        self.detail = detail
        self.retry_after = retry_after
        """Seconds the API asked to wait before retrying (its ``Retry-After``), if it said."""

    @property
    def kind(self) -> str:
        """``not-found``, ``invalid-input``, ``payload-too-large``, ``unauthorized``, …"""
        return self.problem_type.rsplit("/", 1)[-1]


class AionUnavailable(AionClientError):
    """The API could not be reached (connection refused, DNS, timeout), or — after retrying a
    command for as long as the client was allowed to — the command was not confirmed.

    For a command, ``request_id`` is its idempotency key (send it again with it to be sure it
    is applied, once) and ``attempts`` how many times it was sent.
    """

    def __init__(self, message: str, *, request_id: str | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.attempts = attempts


class AionWrongServer(AionClientError):
    """Something answered at the API's URL, but not aion's API: another server on that port
    (a web page, a different service). The message says what it answered."""

    def __init__(self, url: str, status: int, answered: str) -> None:
        super().__init__(f"no aion API at {url} (it answered HTTP {status} with {answered})")
        self.url = url
        self.status = status
        self.answered = answered


class AionCommandRefused(AionApiError):
    """The engine refused the command a wait was about (problem ``command-refused``).

    ``code`` is the engine's stable ``RefusalCode`` (``UNKNOWN_WORKFLOW_TYPE``,
    ``ALREADY_RUNNING``, ``ID_REUSE_REJECTED``, ``WORKFLOW_CLOSED``, …); ``reason`` says why.
    """

    def __init__(
        self,
        status: int,
        problem_type: str,
        title: str,
        detail: str,
        *,
        workflow_id: str,
        command_id: str,
        command_type: str,
        code: str,
        reason: str,
    ) -> None:
        super().__init__(status, problem_type, title, detail)
        self.workflow_id = workflow_id
        self.command_id = command_id
        self.command_type = command_type
        self.code = code
        self.reason = reason


class AionWorkflowFailed(AionClientError):
    """The workflow ended other than completed (:meth:`WorkflowHandle.result`).

    ``status`` is ``FAILED``, ``CANCELLED``, ``TERMINATED`` or ``TIMED_OUT``; ``error_type``,
    ``message`` and ``traceback`` are what the run recorded (for a workflow exception: its
    class name, ``"<Type>: <text>"`` and the traceback through the workflow's own code);
    ``outcome`` is the whole :class:`~aion.WorkflowResult`.
    """

    def __init__(
        self,
        workflow_id: str,
        status: str,
        message: str,
        *,
        error_type: str = "",
        traceback: str = "",
        outcome: object = None,
    ) -> None:
        text = f"workflow {workflow_id!r} ended {status}: {message}"
        super().__init__(f"{text}\n{traceback.rstrip()}" if traceback else text)
        self.workflow_id = workflow_id
        self.status = status
        self.message = message
        self.error_type = error_type
        self.traceback = traceback
        self.outcome = outcome


class AionResultTimeout(AionClientError, TimeoutError):
    """The workflow was still open when the wait for its result ended; the message says what
    it was doing (``RUNNING``, or ``PENDING`` and why: no engine for its partition)."""

    def __init__(self, message: str, *, outcome: object = None) -> None:
        super().__init__(message)
        self.outcome = outcome


class AionQueryError(AionApiError):
    """A query got no answer: ``kind`` says why — ``unknown-query`` (``known_queries`` lists
    the queries the run's code registered), ``query-refused`` (the handler awaited, decided
    or did I/O), ``query-failed`` (it raised), ``workflow-blocked``, ``cannot-replay``,
    ``query-timeout`` (no engine answered in time)."""

    def __init__(
        self,
        status: int,
        problem_type: str,
        title: str,
        detail: str,
        *,
        known_queries: tuple[str, ...] = (),
    ) -> None:
        super().__init__(status, problem_type, title, detail)
        self.known_queries = known_queries


class AionInvalidRequest(AionClientError):
    """A request the client refused before sending it (an invalid id, name or payload)."""
