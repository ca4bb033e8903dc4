"""The JSON error envelope, and the handlers registered on the plugin's blueprint only.

Every error the plugin's routes return is ``{"error": {"code", "message", "details"?}}``; the
host's own error pages are never touched (no app-wide handler).
"""

from __future__ import annotations

import logging
import typing as t

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

logger = logging.getLogger("flowpilot_analytics")


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


def _database_error(exc: SQLAlchemyError) -> Response:
    logger.error("flowpilot_analytics: database error while answering a request", exc_info=exc)
    return error_response(ApiError(503, "database_unavailable",
                                   "The analytics database could not answer; try again shortly."))


def _unexpected_error(exc: Exception) -> Response:
    logger.error("flowpilot_analytics: unexpected error while answering a request", exc_info=exc)
    return error_response(ApiError(500, "internal_error", "The analytics service failed unexpectedly."))


def register_error_handlers(blueprint: Blueprint) -> None:
    """Attach the JSON handlers to ``blueprint`` (never to the app)."""
    blueprint.register_error_handler(ApiError, error_response)
    blueprint.register_error_handler(HTTPException, _http_error)
    blueprint.register_error_handler(SQLAlchemyError, _database_error)
    blueprint.register_error_handler(Exception, _unexpected_error)
