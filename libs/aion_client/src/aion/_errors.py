"""The client's errors: the API's problems, and an API that cannot be reached."""

from __future__ import annotations

__all__ = [
    "AionApiError",
    "AionClientError",
    "AionCommandRefused",
    "AionInvalidRequest",
    "AionUnavailable",
]


class AionClientError(Exception):
    """Root of the client's errors."""


class AionApiError(AionClientError):
    """The API answered with a problem: ``kind`` is the last part of its ``type`` URI."""

    def __init__(self, status: int, problem_type: str, title: str, detail: str) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.problem_type = problem_type
        self.title = title
        self.detail = detail

    @property
    def kind(self) -> str:
        """``not-found``, ``invalid-input``, ``payload-too-large``, ``unauthorized``, …"""
        return self.problem_type.rsplit("/", 1)[-1]


class AionUnavailable(AionClientError):
    """The API could not be reached (connection refused, DNS, timeout)."""


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


class AionInvalidRequest(AionClientError):
    """A request the client refused before sending it (an invalid id, name or payload)."""
