"""The JSON contract: marshmallow schemas for every query string the routes accept and every body they return.

:class:`Schemas` holds one app's instances, built once at ``init_app`` (argument schemas depend on its
settings); the OpenAPI document is generated from these classes.
"""

from __future__ import annotations

import functools
import typing as t
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from .config import Settings
from .escalations import MAX_TARGET_SECONDS
from .periods import DEFAULT_PERIOD, PERIODS


class _Args(Schema):
    class Meta:
        unknown = EXCLUDE  # ignored, so that e.g. ``account_id=`` can never change the scope


class PeriodArgs(_Args):
    """``?period=7d|30d|90d`` (default ``30d``), or ``?since=&until=`` (ISO 8601), and ``compare=previous``."""

    period = fields.String(
        validate=validate.OneOf(list(PERIODS)),
        metadata={"default": DEFAULT_PERIOD, "description": "Not with since/until."},
    )
    since = fields.DateTime(
        format="iso", metadata={"description": "Start of a custom range (ISO 8601; no offset means UTC); needs until."}
    )
    until = fields.DateTime(format="iso", metadata={"description": "End of a custom range (inclusive); needs since."})
    compare = fields.String(
        validate=validate.OneOf(["previous"]),
        metadata={"description": "previous: add the same figures for the equal-length window just before."},
    )

    def __init__(self, *args: t.Any, max_range_days: int = 366, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_range_days = max_range_days

    @validates_schema
    def _check_range(self, data: dict[str, t.Any], **kwargs: t.Any) -> None:
        since, until = data.get("since"), data.get("until")
        if since is None or until is None:
            if (since is None) != (until is None):
                raise ValidationError("since and until go together.", "since" if since is None else "until")
            return
        if "period" in data:
            raise ValidationError("Give either period or since/until, not both.", "period")
        if not (1970 <= since.year <= 9000 and 1970 <= until.year <= 9000):
            raise ValidationError("since and until must lie between the years 1970 and 9000.", "since")
        since, until = _utc(since), _utc(until)
        if since >= until:
            raise ValidationError("since must be before until.", "until")
        if until - since > timedelta(days=self.max_range_days):
            raise ValidationError(f"The range may span at most {self.max_range_days} days.", "until")

    @post_load
    def _normalize(self, data: dict[str, t.Any], **kwargs: t.Any) -> dict[str, t.Any]:
        if "since" in data:
            data["since"], data["until"] = _utc(data["since"]), _utc(data["until"])
        else:
            data.setdefault("period", DEFAULT_PERIOD)
        return data


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _target_field() -> fields.Float:
    return fields.Float(
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_TARGET_SECONDS),
        metadata={
            "description": "Response target in seconds (above 0, at most 7 days): adds `target` attainment. "
            "Default: FLOWPILOT_ANALYTICS_TARGET_SECONDS."
        },
    )


class EscalationArgs(PeriodArgs):
    """The escalation route's query: the window, ``compare``, ``group_by=engineer`` and ``target_seconds``."""

    target_seconds = _target_field()

    group_by = fields.String(
        validate=validate.OneOf(["engineer"]),
        metadata={"description": "engineer: add one group per claimer (the handoffs' claimed_by column)."},
    )


class CursorField(fields.String):
    """A signed ``next_cursor``, decoded by the schema's ``decode_cursor`` (which raises ``ValueError``)."""

    def _deserialize(self, value: t.Any, attr: str | None, data: t.Any, **kwargs: t.Any) -> t.Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        decode = getattr(self.parent, "decode_cursor", None)
        if len(text) > 1000 or decode is None:
            raise ValidationError("Not a cursor this API returned.")
        try:
            return decode(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class HandoffsArgs(PeriodArgs):
    """The drill-down's query: the window, a bucket filter, the page, and the format."""

    class Meta(_Args.Meta):
        exclude = ("compare",)

    bucket = fields.String(
        validate=validate.Length(max=16),
        metadata={"description": "A distribution bucket index (0 = fastest) or no_action."},
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = CursorField(
        metadata={"description": "next_cursor of the previous page (signed; valid for the user it was returned to)."}
    )
    format = fields.String(
        validate=validate.OneOf(["json", "csv"]),
        metadata={"description": "csv streams every matching handoff (no paging); Accept: text/csv works too."},
    )

    def __init__(
        self,
        *args: t.Any,
        bucket_count: int = 6,
        decode_cursor: t.Callable[[str], t.Any] | None = None,
        **kwargs: t.Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.bucket_count = bucket_count
        self.decode_cursor = decode_cursor

    @validates_schema
    def _check_bucket(self, data: dict[str, t.Any], **kwargs: t.Any) -> None:
        bucket = data.get("bucket")
        if bucket is None or bucket == "no_action":
            return
        if not (bucket.isascii() and bucket.isdigit() and int(bucket) < self.bucket_count):
            raise ValidationError(f"One of 0..{self.bucket_count - 1} or no_action.", "bucket")

    @post_load
    def _bucket_index(self, data: dict[str, t.Any], **kwargs: t.Any) -> dict[str, t.Any]:
        if data.get("bucket") not in (None, "no_action"):
            data["bucket"] = int(data["bucket"])
        return data


class HandoffItem(Schema):
    handoff_id = fields.Raw(required=True)
    session_id = fields.Raw(required=True)
    claimed_at = fields.AwareDateTime(format="iso", required=True)
    first_action_at = fields.AwareDateTime(format="iso", required=True, allow_none=True)
    seconds = fields.Float(required=True, allow_none=True)
    bucket = fields.Integer(required=True, allow_none=True, metadata={"description": "null: no action yet."})


class HandoffPage(Schema):
    """Response of ``GET /analytics/flowpilot/escalations/handoffs``: newest claim first."""

    period = fields.String(required=True)
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    items = fields.List(fields.Nested(HandoffItem), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class Bucket(Schema):
    min_seconds = fields.Float(required=True)
    max_seconds = fields.Float(required=True, allow_none=True)
    count = fields.Integer(required=True)


class Distribution(Schema):
    """Handoffs by time to first action: ``[min_seconds, max_seconds)`` buckets, then those with none."""

    buckets = fields.List(fields.Nested(Bucket), required=True)
    no_action = fields.Integer(required=True)


class TargetAttainment(Schema):
    """Attainment of the response target over the figure's claimed handoffs (pending ones apart)."""

    seconds = fields.Float(required=True)
    n_within = fields.Integer(required=True, metadata={"description": "First action within the target."})
    n_breached = fields.Integer(
        required=True, metadata={"description": "First action after the target, or none and older than it."}
    )
    n_pending = fields.Integer(required=True, metadata={"description": "No action yet, younger than the target."})
    attainment = fields.Float(
        required=True, allow_none=True, metadata={"description": "n_within / (n_within + n_breached); null if 0."}
    )


class EscalationStats(Schema):
    """The counts and statistics every escalation figure has (the account, a window, an engineer, a point)."""

    n_handoffs_claimed = fields.Integer(required=True)
    n_handoffs_with_action = fields.Integer(required=True)
    avg_seconds = fields.Float(required=True, allow_none=True)
    median_seconds = fields.Float(required=True, allow_none=True)
    p95_seconds = fields.Float(required=True, allow_none=True)
    target = fields.Nested(
        TargetAttainment, required=True, allow_none=True, metadata={"description": "null when no target is in force."}
    )


class EscalationFigures(EscalationStats):
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)


class EngineerGroup(EscalationStats):
    engineer = fields.Raw(required=True, allow_none=True, metadata={"description": "The claimer's id."})


class EscalationMetrics(EscalationFigures):
    """Response of ``GET /analytics/flowpilot/escalations``."""

    period = fields.String(required=True)
    metric_definition = fields.String(required=True)
    distribution = fields.Nested(Distribution)
    previous = fields.Nested(EscalationFigures, metadata={"description": "With compare=previous."})
    groups = fields.List(fields.Nested(EngineerGroup), metadata={"description": "With group_by=engineer."})


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
    # CET, EET, MET and WET are zones with summer time for zoneinfo, but fixed-offset abbreviations for
    # PostgreSQL: the two would put a timestamp on different days. Europe/Paris, Europe/Athens... say what is meant.
    ambiguous = {"CET", "EET", "MET", "WET"}
    return (
        frozenset(zoneinfo.available_timezones())
        - {"localtime", "Factory", "posixrules", "posix/localtime"}
        - ambiguous
    )


class PsaMetricsArgs(PeriodArgs):
    """``?period=7d|30d|90d&tz=<IANA zone>`` (defaults ``30d`` and ``UTC``), ``format=csv`` for the trend."""

    format = fields.String(
        validate=validate.OneOf(["json", "csv"]),
        metadata={"description": "csv: the daily trend as CSV (Accept: text/csv works too)."},
    )
    tz = fields.String(
        load_default="UTC",
        validate=validate.OneOf(
            sorted(iana_zones()), error="{input!r} is not an IANA time zone name (e.g. 'Europe/Berlin')."
        ),
    )


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


class PsaFigures(Schema):
    """The totals and funnel of one window (the report's own, or the previous one)."""

    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    time_entries = fields.Nested(TimeEntryTotals, required=True)
    funnel = fields.Nested(PsaFunnel, required=True)


class EnhancedPsaMetrics(PsaFigures):
    """Response of ``GET /analytics/flowpilot/psa-metrics``: the window's figures, the zone and the trend."""

    period = fields.String(required=True)
    timezone = fields.String(required=True)
    daily_trend = fields.List(fields.Nested(PsaDailyTrend), required=True)
    previous = fields.Nested(PsaFigures, metadata={"description": "With compare=previous (no trend)."})


class TrendArgs(PeriodArgs):
    """The trend's query: the window, ``tz``, ``interval``, ``target_seconds``, ``format``; anything else is refused."""

    class Meta:
        unknown = RAISE
        exclude = ("compare",)

    tz = fields.String(
        load_default="UTC",
        validate=validate.OneOf(
            sorted(iana_zones()), error="{input!r} is not an IANA time zone name (e.g. 'Europe/Berlin')."
        ),
    )
    interval = fields.String(
        load_default="day",
        validate=validate.OneOf(["day", "week"]),
        metadata={"description": "day, or week (ISO weeks, keyed by their Monday)."},
    )
    target_seconds = _target_field()
    format = fields.String(
        validate=validate.OneOf(["json", "csv"]),
        metadata={"description": "csv: one row per point (Accept: text/csv works too)."},
    )


class TrendPoint(EscalationStats):
    start = fields.Date(required=True, metadata={"description": "The local day, or the Monday of the ISO week."})


class EscalationTrend(Schema):
    """Response of ``GET /analytics/flowpilot/escalations/trend``: the metric per local day or ISO week."""

    period = fields.String(required=True)
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    timezone = fields.String(required=True)
    interval = fields.String(required=True)
    metric_definition = fields.String(required=True)
    points = fields.List(fields.Nested(TrendPoint), required=True)


@dataclass(frozen=True)
class Schemas:
    """One app's schema instances: argument schemas bound to its settings, response schemas shared."""

    escalation_args: EscalationArgs
    trend_args: TrendArgs
    handoffs_args: HandoffsArgs
    psa_args: PsaMetricsArgs
    escalation_metrics: EscalationMetrics
    escalation_trend: EscalationTrend
    handoff_page: HandoffPage
    psa_metrics: EnhancedPsaMetrics

    @classmethod
    def build(cls, settings: Settings, decode_cursor: t.Callable[[str], t.Any]) -> Schemas:
        days = settings.max_range_days
        return cls(
            escalation_args=EscalationArgs(max_range_days=days),
            trend_args=TrendArgs(max_range_days=days),
            handoffs_args=HandoffsArgs(
                max_range_days=days, bucket_count=len(settings.bucket_edges) + 1, decode_cursor=decode_cursor
            ),
            psa_args=PsaMetricsArgs(max_range_days=days),
            escalation_metrics=EscalationMetrics(),
            escalation_trend=EscalationTrend(),
            handoff_page=HandoffPage(),
            psa_metrics=EnhancedPsaMetrics(),
        )

    def for_route(self, route: str) -> tuple[Schema, Schema]:
        """The query and body schemas of a report route (a :data:`REPORT_ROUTES` ``route``)."""
        return {
            "escalations": (self.escalation_args, self.escalation_metrics),
            "escalation_trend": (self.trend_args, self.escalation_trend),
            "escalation_handoffs": (self.handoffs_args, self.handoff_page),
            "psa_metrics": (self.psa_args, self.psa_metrics),
        }[route]


class ReportRoute(t.NamedTuple):
    """One report route of the blueprint, as both the views and the OpenAPI document know it."""

    path: str  # under <prefix>/analytics/flowpilot/
    route: str  # its endpoint, rate-limit and cache key
    role_route: str  # whose minimum role it follows (FLOWPILOT_ANALYTICS_ROUTE_ROLES)
    args: type[Schema]
    body: type[Schema]
    csv: bool
    summary: str


REPORT_ROUTES: tuple[ReportRoute, ...] = (
    ReportRoute(
        "escalations",
        "escalations",
        "escalations",
        EscalationArgs,
        EscalationMetrics,
        False,
        "Time from an escalation claim to the first action after it",
    ),
    ReportRoute(
        "escalations/trend",
        "escalation_trend",
        "escalations",
        TrendArgs,
        EscalationTrend,
        True,
        "The escalation metric per local day or ISO week, with attainment of a response target",
    ),
    ReportRoute(
        "escalations/handoffs",
        "escalation_handoffs",
        "escalations",
        HandoffsArgs,
        HandoffPage,
        True,
        "The handoffs behind the escalation number, newest claim first (paged, or CSV)",
    ),
    ReportRoute(
        "psa-metrics",
        "psa_metrics",
        "psa_metrics",
        PsaMetricsArgs,
        EnhancedPsaMetrics,
        True,
        "Time entries, documentation funnel and daily trend",
    ),
)
