"""The JSON contract: marshmallow schemas for every query string the routes accept and every body they return."""

from __future__ import annotations

import typing as t

from marshmallow import EXCLUDE, Schema, fields, validate

from .periods import DEFAULT_PERIOD, PERIODS


class _Args(Schema):
    class Meta:
        unknown = EXCLUDE  # ignored, so that e.g. ``account_id=`` can never change the scope


class PeriodArgs(_Args):
    """``?period=7d|30d|90d`` (default ``30d``)."""

    period = fields.String(load_default=DEFAULT_PERIOD, validate=validate.OneOf(list(PERIODS)))


class EscalationMetrics(Schema):
    """Response of ``GET /analytics/flowpilot/escalations``."""

    period = fields.String(required=True)
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    n_handoffs_claimed = fields.Integer(required=True)
    n_handoffs_with_action = fields.Integer(required=True)
    avg_seconds = fields.Float(required=True, allow_none=True)
    median_seconds = fields.Float(required=True, allow_none=True)
    p95_seconds = fields.Float(required=True, allow_none=True)
    metric_definition = fields.String(required=True)


class ErrorBody(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(keys=fields.String())


class ErrorEnvelope(Schema):
    """Every error: ``{"error": {"code", "message", "details"?}}``."""

    error = fields.Nested(ErrorBody, required=True)


def query_args(args: t.Any) -> dict[str, t.Any]:
    """A request's query string as a dict; a repeated key keeps all its values (and so fails validation)."""
    return {key: values[0] if len(values) == 1 else values for key, values in args.lists()}
