"""The blueprint: each route validates its query with a schema, reads, and dumps with a schema."""

from __future__ import annotations

import typing as t

from flask import Blueprint, Response, jsonify, request
from marshmallow import Schema, ValidationError

from . import escalations
from .errors import ApiError, register_error_handlers
from .extension import current_state
from .periods import PERIODS, window_for
from .schemas import EscalationMetrics, PeriodArgs, query_args


def load_query(schema: Schema) -> dict[str, t.Any]:
    """Validate the query string; a 400 JSON error lists what is wrong and what is allowed."""
    try:
        return t.cast(dict[str, t.Any], schema.load(query_args(request.args)))
    except ValidationError as exc:
        raise ApiError(400, "invalid_parameter", "The query string is not valid.",
                       details={"fields": exc.normalized_messages(), "allowed_periods": list(PERIODS)}) from None


def escalations_view() -> Response:
    """``GET /analytics/flowpilot/escalations``: time from a claim to the first action after it."""
    state = current_state()
    identity = state.authorize("escalations")
    args = load_query(PeriodArgs())
    window = window_for(args["period"], state.clock())
    tables = state.host_tables()
    statement = state.statement(
        "escalations", lambda: escalations.build_query(tables, state.dialect, state.skew_seconds))
    rows = state.read(statement, {"account_id": identity.account_id, "window_start": window.start,
                                  "window_end": window.end})
    result = escalations.summarize(rows)
    return jsonify(EscalationMetrics().dump({
        "period": window.period,
        "window_start": window.start,
        "window_end": window.end,
        "n_handoffs_claimed": result.n_handoffs_claimed,
        "n_handoffs_with_action": result.n_handoffs_with_action,
        "avg_seconds": result.avg_seconds,
        "median_seconds": result.median_seconds,
        "p95_seconds": result.p95_seconds,
        "metric_definition": escalations.METRIC_DEFINITION,
    }))


def create_blueprint() -> Blueprint:
    """A fresh blueprint per registration, so that apps never share handlers or state."""
    blueprint = Blueprint("flowpilot_analytics", __name__)
    blueprint.add_url_rule("/analytics/flowpilot/escalations", "escalations", escalations_view, methods=["GET"])
    register_error_handlers(blueprint)
    return blueprint
