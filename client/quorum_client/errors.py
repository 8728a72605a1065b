"""Exceptions raised by the client; each carries the server's own message."""

from __future__ import annotations

from typing import Any


class QuorumError(Exception):
    """The API answered with an error status, or a job it ran ended badly.

    ``status_code`` is the HTTP status (``None`` for a job that failed after being accepted);
    ``message`` is the server's text; ``problems`` lists each problem the server named (import
    problems by line and field, request validation errors by field).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        problems: list[str] | None = None,
        body: Any = None,
    ):
        self.message = message
        self.status_code = status_code
        self.problems = list(problems or [])
        self.body = body
        shown = message if status_code is None else f"HTTP {status_code}: {message}"
        if self.problems and self.problems != [message]:
            shown += "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(shown)


class AuthenticationError(QuorumError):
    """401: no token, or one the server does not know."""


class PermissionDenied(QuorumError):
    """403: the token's user may not do this in this project."""


class NotFound(QuorumError):
    """404: no such object, or one the token's user may not see."""


class Conflict(QuorumError):
    """409: not possible in the object's current state (an export not built yet)."""


class InvalidRequest(QuorumError):
    """400 or 422: a value the server refused; ``problems`` names each one."""


class RateLimited(QuorumError):
    """429: too many failed logins from this client."""


class ImportRejected(QuorumError):
    """An import file was rejected whole; ``problems`` lists every problem by line and field,
    and ``job`` is the import job as the server reported it."""

    def __init__(self, job: Any, *, status_code: int | None = None):
        self.job = job
        errors = list(getattr(job, "errors", []) or [])
        super().__init__(
            f"import {job.id} rejected with {len(errors)} problem(s)",
            status_code=status_code,
            problems=errors,
        )


class JobFailed(QuorumError):
    """A background job (an export) ended failed or cancelled; ``job`` is its last state."""

    def __init__(self, message: str, *, job: Any):
        self.job = job
        super().__init__(message)


class JobTimeout(QuorumError):
    """Waiting for a job took longer than the timeout given; ``job`` is its last state."""

    def __init__(self, message: str, *, job: Any):
        self.job = job
        super().__init__(message)


BY_STATUS: dict[int, type[QuorumError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
}
