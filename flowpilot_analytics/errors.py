"""The JSON error envelope, and the handlers registered on the plugin's blueprint only.

Every error the plugin's routes return is ``{"error": {"code", "message", "details"?}}``; the
host's own error pages are never touched (no app-wide handler).
"""

from __future__ import annotations

import logging
import re
import typing as t
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, got_request_exception, jsonify
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

logger = logging.getLogger("flowpilot_analytics")


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<secret>[^@/\s]*)@")


def redact_uri(uri: str | None) -> str:
    """A storage or database URI fit for a log: the password replaced by ``***``."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", uri or "")


def redact(text: str, uri: str | None) -> str:
    """``text`` (e.g. an exception from a client of ``uri``) without ``uri``'s password anywhere in it."""
    secret = urlsplit(uri or "").password
    if secret:
        text = text.replace(secret, "***")
    return redact_uri(text)


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable ``code``."""

    def __init__(self, status: int, code: str, message: str, *, details: t.Mapping[str, t.Any] | None = None,
                 headers: t.Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details) if details else None
        self.headers = dict(headers) if headers else {}


def error_response(error: ApiError) -> Response:
    """Render an :class:`ApiError` as the JSON envelope."""
    from .schemas import ERROR_ENVELOPE

    body: dict[str, t.Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        body["details"] = error.details
    response = jsonify(ERROR_ENVELOPE.dump({"error": body}))
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "retry-after"}
    return error_response(ApiError(exc.code or 500, code, exc.description or exc.name, headers=headers))


#: Database error codes and texts that mean a table or column is missing or unreadable, not an outage.
_SCHEMA_CODES = {"42P01", "42703", "42501"}  # PostgreSQL: undefined table, undefined column, permission denied
_SCHEMA_TEXT = re.compile(r'no such (?:table|column): (?P<sqlite>[\w."]+)|relation "(?P<pg>[^"]+)" does not exist|'
                          r'permission denied for (?:table|relation) (?P<denied>[\w."]+)|column (?P<column>[\w."]+) '
                          r'does not exist')


def schema_problem(exc: SQLAlchemyError) -> str | None:
    """The table (or column) a database error says is missing or unreadable; ``None`` for other errors."""
    if isinstance(exc, (sa_exc.NoSuchTableError, sa_exc.NoSuchColumnError)):
        return str(exc).split(" (", 1)[0] or "unknown"
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else ""
    match = _SCHEMA_TEXT.search(text)
    if match is None and getattr(orig, "sqlstate", None) not in _SCHEMA_CODES:
        return None
    return next((value for value in match.groups() if value), "unknown") if match else "unknown"


def _report(exc: Exception) -> None:
    """Tell the host's error tracking (Sentry and the like listen here), as Flask does for unhandled errors."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exc)


def _database_error(exc: SQLAlchemyError) -> Response:
    _report(exc)
    missing = schema_problem(exc)
    if missing is not None:
        logger.error("flowpilot_analytics: the table or column %s is missing or unreadable", missing, exc_info=exc)
        return error_response(ApiError(500, "schema_missing", (
            f"The database has no readable {missing}. Run `flask flowpilot-analytics doctor` to see what is "
            f"missing; `flask flowpilot-analytics ddl` prints the plugin's own table, and "
            f"FLOWPILOT_ANALYTICS_TABLES / FLOWPILOT_ANALYTICS_COLUMNS map the host's."),
            details={"table": missing, "command": "flask flowpilot-analytics doctor"}))
    logger.error("flowpilot_analytics: database error while answering a request", exc_info=exc)
    return error_response(ApiError(503, "database_unavailable",
                                   "The analytics database could not answer; try again shortly."))


def _unexpected_error(exc: Exception) -> Response:
    _report(exc)
    logger.error("flowpilot_analytics: unexpected error while answering a request", exc_info=exc)
    return error_response(ApiError(500, "internal_error", "The analytics service failed unexpectedly."))


def register_error_handlers(blueprint: Blueprint) -> None:
    """Attach the JSON handlers to ``blueprint`` (never to the app)."""
    blueprint.register_error_handler(ApiError, error_response)
    blueprint.register_error_handler(HTTPException, _http_error)
    blueprint.register_error_handler(SQLAlchemyError, _database_error)
    blueprint.register_error_handler(Exception, _unexpected_error)
