"""The client's errors: the API's problems, and an API that cannot be reached."""

from __future__ import annotations

__all__ = ["AionApiError", "AionClientError", "AionUnavailable"]


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
