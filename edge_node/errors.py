"""Named errors of the domain; the API maps each to one HTTP status."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error a user can cause; `message` is safe to show (no PII)."""

    status = 400

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        """Keep the message and an optional list of per-field messages."""
        super().__init__(message)
        self.message = message
        self.errors = errors or [message]


class ValidationError(EdgeError):
    """Input is malformed or out of range."""

    status = 400


class AuthError(EdgeError):
    """Not logged in, or the session ended."""

    status = 401


class ForbiddenError(EdgeError):
    """Logged in, but the role may not do this."""

    status = 403


class NotFoundError(EdgeError):
    """The named record does not exist."""

    status = 404


class ConflictError(EdgeError):
    """The action does not fit the record's current state (e.g. replayed)."""

    status = 409


class LockedError(EdgeError):
    """The account is locked after repeated failed logins."""

    status = 423


class ThrottledError(EdgeError):
    """This client failed too many logins lately; it may try again after `retry_after_s`."""

    status = 429

    def __init__(self, retry_after_s: int) -> None:
        """Say when to come back (whole seconds, at least 1)."""
        super().__init__(f"too many failed logins from this client; try again in "
                         f"{retry_after_s} s")
        self.retry_after_s = retry_after_s
