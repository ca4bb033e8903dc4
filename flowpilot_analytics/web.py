"""HTTP for the plugin's blueprint: the JSON error envelope, and the one place domain errors get a
status.

Every error the plugin's routes return is ``{"error": {"code", "message", "details"}}``, ``details``
an object (``{}`` when there is nothing more to say), so a client reads every error one way; the
handlers are registered on the blueprint only, so the host's own error pages are never touched.
"""

from __future__ import annotations

import logging
import re
import typing as t

from flask import Blueprint, Response, current_app, got_request_exception, jsonify
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from .errors import (
    AnalyticsError,
    Conflict,
    Forbidden,
    InvalidQuery,
    MethodNotAllowed,
    NotFound,
    NotSignedIn,
    RateLimited,
    UnsupportedMediaType,
)

logger = logging.getLogger(__name__)

#: The HTTP status of each domain error.
STATUS: dict[type[AnalyticsError], int] = {
    InvalidQuery: 400,
    NotSignedIn: 401,
    Forbidden: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    Conflict: 409,
    UnsupportedMediaType: 415,
    RateLimited: 429,
}

#: Database error codes and texts that mean a table
#: or column is missing or unreadable, not an outage.
_SCHEMA_CODES = {
    "42P01",
    "42703",
    "42501",
}  # PostgreSQL: undefined table, undefined column, permission denied
_SCHEMA_TEXT = re.compile(
    r'no such (?:table|column): (?P<sqlite>[\w."]+)|relation "(?P<pg>[^"]+)" does not exist|'
    r'permission denied for (?:table|relation) (?P<denied>[\w."]+)|column (?P<column>[\w."]+) '
    r"does not exist"
)


def error_response(
    status: int,
    code: str,
    message: str,
    details: t.Mapping[str, object] | None = None,
    headers: t.Mapping[str, str] | None = None,
) -> Response:
    """The JSON envelope with ``status``; ``details`` is always there, empty when not given."""
    body = {"code": code, "message": message, "details": dict(details or {})}
    response = jsonify({"error": body})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _domain_error(error: AnalyticsError) -> Response:
    status = next((STATUS[kind] for kind in type(error).__mro__ if kind in STATUS), 500)
    headers = None
    if isinstance(error, RateLimited):
        headers = {"Retry-After": str(error.retry_after)}
    elif isinstance(error, MethodNotAllowed):
        headers = {"Allow": ", ".join(error.allowed)}
    return error_response(status, error.code, error.message, error.details, headers)


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "retry-after"}
    return error_response(exc.code or 500, code, exc.description or exc.name, headers=headers)


def schema_problem(exc: sa_exc.SQLAlchemyError) -> str | None:
    """The table (or column) a database error says is
    missing or unreadable; ``None`` for other errors."""
    if isinstance(exc, (sa_exc.NoSuchTableError, sa_exc.NoSuchColumnError)):
        return str(exc).split(" (", 1)[0] or "unknown"
    orig = getattr(exc, "orig", None)
    match = _SCHEMA_TEXT.search(str(orig) if orig is not None else "")
    if match is not None:
        return next(value for value in match.groups() if value)
    return "unknown" if getattr(orig, "sqlstate", None) in _SCHEMA_CODES else None


def _report(exc: Exception) -> None:
    """Tell the host's error tracking (Sentry and the like
    listen here), as Flask does for unhandled errors."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exc)


def _database_error(exc: sa_exc.SQLAlchemyError) -> Response:
    _report(exc)
    missing = schema_problem(exc)
    if missing is not None:
        logger.error("the table or column %s is missing or unreadable", missing, exc_info=exc)
        return error_response(
            500,
            "schema_missing",
            (
                f"The database has no readable {missing}. Run `flask flowpilot-analytics doctor` "
                f"to see what is missing; `flask flowpilot-analytics ddl` prints the plugin's own "
                f"tables, and FLOWPILOT_ANALYTICS_TABLES / FLOWPILOT_ANALYTICS_COLUMNS map the "
                f"host's."
            ),
            details={"table": missing, "command": "flask flowpilot-analytics doctor"},
        )
    logger.error("database error while answering a request", exc_info=exc)
    return error_response(
        503, "database_unavailable", "The analytics database could not answer; try again shortly."
    )


def _unexpected_error(exc: Exception) -> Response:
    _report(exc)
    logger.error("unexpected error while answering a request", exc_info=exc)
    return error_response(500, "internal_error", "The analytics service failed unexpectedly.")


def register_error_handlers(blueprint: Blueprint) -> None:
    """Attach the JSON handlers to ``blueprint`` (never to the app)."""
    blueprint.register_error_handler(AnalyticsError, _domain_error)
    blueprint.register_error_handler(HTTPException, _http_error)
    blueprint.register_error_handler(sa_exc.SQLAlchemyError, _database_error)
    blueprint.register_error_handler(Exception, _unexpected_error)
