"""The JSON contract: marshmallow schemas for every query string the routes accept and every body they return."""

from __future__ import annotations

import functools
import typing as t
import zoneinfo

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


@functools.lru_cache(maxsize=1)
def iana_zones() -> frozenset[str]:
    """The IANA zone names this machine knows (system zone database or the ``tzdata`` package)."""
    return frozenset(zoneinfo.available_timezones())


class PsaMetricsArgs(PeriodArgs):
    """``?period=7d|30d|90d&tz=<IANA zone>`` (defaults ``30d`` and ``UTC``)."""

    tz = fields.String(load_default="UTC", validate=validate.OneOf(
        sorted(iana_zones()), error="{input!r} is not an IANA time zone name (e.g. 'Europe/Berlin')."))


class TimeEntryTotals(Schema):
    count = fields.Integer(required=True)
    total_minutes = fields.Float(required=True)
    total_hours = fields.Float(required=True)


class PsaFunnel(Schema):
    """Sessions -> linked to a ticket -> documentation pushed -> time entry logged, with stage-to-stage rates."""

    sessions = fields.Integer(required=True)
    linked = fields.Integer(required=True)
    doc_pushed = fields.Integer(required=True)
    time_entry_logged = fields.Integer(required=True)
    linked_rate = fields.Float(required=True, allow_none=True)
    doc_pushed_rate = fields.Float(required=True, allow_none=True)
    time_entry_logged_rate = fields.Float(required=True, allow_none=True)


class PsaDailyTrend(Schema):
    date = fields.Date(required=True)
    sessions = fields.Integer(required=True)
    notes_posted = fields.Integer(required=True)
    time_entries = fields.Integer(required=True)
    minutes = fields.Float(required=True)


class EnhancedPsaMetrics(Schema):
    """Response of ``GET /analytics/flowpilot/psa-metrics``."""

    period = fields.String(required=True)
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    timezone = fields.String(required=True)
    time_entries = fields.Nested(TimeEntryTotals, required=True)
    funnel = fields.Nested(PsaFunnel, required=True)
    daily_trend = fields.List(fields.Nested(PsaDailyTrend), required=True)
