"""The plugin's domain errors: what went wrong, as a stable machine-readable ``code``, without HTTP.

The routes map them to statuses in one place (:mod:`flowpilot_analytics.web`) and the CLI to usage
errors in one place (:mod:`flowpilot_analytics.cli`).
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping


class AnalyticsError(Exception):
    """Base of every error the plugin reports to its caller, with a ``code`` and optional
    ``details``."""

    code = "error"

    def __init__(
        self, message: str, *, code: str | None = None, details: Mapping[str, t.Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = dict(details) if details else None


class NotSignedIn(AnalyticsError):
    """Nobody is signed in, or the identity lacks a field."""

    code = "unauthenticated"


class Forbidden(AnalyticsError):
    """The caller's role is below the route's minimum (``forbidden``) or not on the ladder
    (``unknown_role``)."""

    code = "forbidden"


class InvalidQuery(AnalyticsError):
    """The query asks for something the plugin cannot answer: a bad parameter, or an unsupported
    option."""

    code = "invalid_parameter"

    @classmethod
    def field(
        cls, name: str, problem: str, message: str = "The query string is not valid."
    ) -> InvalidQuery:
        """An error about one query parameter, in the shape validation errors have."""
        return cls(message, details={"fields": {name: [problem]}})


class NotFound(AnalyticsError):
    """What the request names does not exist for the caller's account (another account's is the
    same)."""

    code = "not_found"


class Conflict(AnalyticsError):
    """The request is valid but the account's state cannot answer it (e.g. ``clock=business``
    without business hours)."""

    code = "conflict"


class MethodNotAllowed(AnalyticsError):
    """The route exists but not with this method (a calendar version is never edited in place)."""

    code = "method_not_allowed"

    def __init__(self, method: str, allowed: t.Sequence[str], why: str = "") -> None:
        super().__init__(
            f"{method} is not allowed here; allowed: {', '.join(allowed)}. {why}".rstrip(),
            details={"allowed": list(allowed)},
        )
        self.allowed = tuple(allowed)


class UnsupportedMediaType(AnalyticsError):
    """A write whose body is not declared JSON (a cross-site form can send ``text/plain``)."""

    code = "unsupported_media_type"


class RateLimited(AnalyticsError):
    """Over the caller's per-user limit; ``retry_after`` seconds until it resets."""

    code = "rate_limited"

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(
            f"Too many requests: the limit is {limit}. Try again later.",
            details={"limit": limit, "retry_after_seconds": retry_after},
        )
        self.retry_after = retry_after
