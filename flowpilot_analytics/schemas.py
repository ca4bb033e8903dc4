"""The JSON contract: marshmallow schemas for every query string the routes accept and every body
they return.

Argument schemas load into the typed, frozen queries below (one per report); response schemas dump
the reports' dataclasses as they are. The OpenAPI document is generated from these classes, and the
CSV exports and the command line's tables flatten bodies by them (:func:`flat_columns`,
:func:`flat_values`).
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_dump,
    post_load,
    validate,
    validates_schema,
)
from werkzeug.datastructures import MultiDict

from .baselines import MAX_NOTE_LENGTH, MAX_SAMPLE_SECONDS, MAX_SAMPLES_PER_REQUEST, NewSample
from .business_hours import DAYS, CalendarError, CalendarVersion, iana_zones, parse_version
from .escalations import CLOCKS, MAX_TARGET_SECONDS, Clock
from .periods import DEFAULT_PERIOD, MAX_RANGE_DAYS, PERIODS, Span

#: What marshmallow hands a schema's hooks: the fields loaded so far, by name.
Loaded: t.TypeAlias = "dict[str, t.Any]"
#: A report's ``format``: JSON, or the route's CSV export.
Format = t.Literal["json", "csv"]
#: The drill-down's bucket filter: an index, the handoffs with no action, or none.
BucketFilter: t.TypeAlias = 'int | t.Literal["no_action"] | None'

# -- typed queries ---------------------------------------------------------------------------------


class Cursor(t.NamedTuple):
    """A decoded ``next_cursor``: the keyset of the last
    row examined, and the digest of whom it was issued to."""

    key: datetime | str
    handoff_id: object
    caller: str


@dataclass(frozen=True, kw_only=True)
class Args:
    """What a route's validated input loads into (its query string, or its JSON body)."""

    def parts(self) -> dict[str, object]:
        """The values by name (cache keys, span attributes)."""
        return dict(vars(self))


@dataclass(frozen=True, kw_only=True)
class Query(Args):
    """What every report's query has: the window it asks for."""

    span: Span

    def parts(self) -> dict[str, object]:
        """The query's values by name, the span's among them (cache keys, span attributes)."""
        parts = {**vars(self.span), **vars(self)}
        del parts["span"]
        return parts


@dataclass(frozen=True, kw_only=True)
class NoArgs(Args):
    """A route that takes no parameters (``GET business-hours``)."""


@dataclass(frozen=True, kw_only=True)
class NewBaseline(Args):
    """``POST escalations/baseline``: the validated samples, all of them."""

    samples: tuple[NewSample, ...]


@dataclass(frozen=True, kw_only=True)
class SampleRef(Args):
    """``DELETE escalations/baseline/<id>``: the sample's id, ``None`` when it cannot be one."""

    sample_id: int | None


@dataclass(frozen=True, kw_only=True)
class SavingsQuery(Query):
    """``GET escalations/savings``: the window of the in-product sample."""


@dataclass(frozen=True, kw_only=True)
class CalendarQuery(Args):
    """``GET business-hours``: the account's own versions, or one client's."""

    client: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewCalendarVersion(Args):
    """``POST business-hours``: the validated version (its holiday calendar expanded)."""

    version: CalendarVersion


@dataclass(frozen=True, kw_only=True)
class EscalationQuery(Query):
    """``GET escalations``: the window, the previous one, per engineer, a response target."""

    compare: t.Literal["previous"] | None = None
    group_by: t.Literal["engineer", "client"] | None = None
    target_seconds: float | None = None
    clock: Clock = "wall"
    client: str | None = None
    format: str | None = None


@dataclass(frozen=True, kw_only=True)
class TrendQuery(Query):
    """``GET escalations/trend``: the window, the zone of its days, day or week, a response
    target."""

    tz: str = "UTC"
    interval: t.Literal["day", "week"] = "day"
    target_seconds: float | None = None
    format: Format | None = None
    clock: Clock = "wall"
    client: str | None = None


@dataclass(frozen=True, kw_only=True)
class HandoffQuery(Query):
    """``GET escalations/handoffs``: the window, a bucket filter, the page (size and cursor)."""

    bucket: BucketFilter = None
    limit: int = 50
    cursor: Cursor | None = None
    format: Format | None = None
    clock: Clock = "wall"
    client: str | None = None


@dataclass(frozen=True, kw_only=True)
class PsaQuery(Query):
    """``GET psa-metrics``: the window, the zone of the daily trend, the previous window."""

    tz: str = "UTC"
    compare: t.Literal["previous"] | None = None
    format: Format | None = None
    client: str | None = None
    group_by: t.Literal["client", "technician"] | None = None


# -- shared fields ---------------------------------------------------------------------------------


class ZoneField(fields.String):
    """An IANA zone name (:func:`iana_zones`; the list is read at the first use, not at import). The
    OpenAPI document names the list once, as the ``Zone`` component."""

    def _deserialize(
        self, value: object, attr: str | None, data: t.Mapping[str, object] | None, **kwargs: object
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text not in iana_zones():
            shown = text if len(text) <= 64 else text[:64] + "…"  # never echo a huge value whole
            raise ValidationError(
                f"{shown!r} is not an IANA time zone name (e.g. 'Europe/Berlin')."
            )
        return text


def _zone() -> ZoneField:
    return ZoneField(
        load_default="UTC", metadata={"description": "An IANA time zone name, e.g. Europe/Berlin."}
    )


def _format(description: str) -> fields.String:
    return fields.String(
        validate=validate.OneOf(["json", "csv"]), metadata={"description": description}
    )


#: A query string's number as the document types it: ASCII digits only, no spaces (``int()`` and
#: ``float()`` would also take other scripts' digits and surrounding blanks).
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _plain(field: fields.Field[t.Any], value: object, pattern: re.Pattern[str]) -> None:
    """Refuse query text a number field's parser would take but ``pattern`` does not."""
    if isinstance(value, str) and not pattern.fullmatch(value):
        raise field.make_error("invalid")


class QueryInteger(fields.Integer):
    """An integer query parameter, in ASCII digits (``limit=٥`` or ``limit= 5`` is a 400)."""

    def _deserialize(
        self, value: object, attr: str | None, data: t.Mapping[str, object] | None, **kwargs: object
    ) -> int:
        _plain(self, value, _INTEGER_TEXT)
        return super()._deserialize(value, attr, data, **kwargs)


class QueryNumber(fields.Float):
    """A number query parameter, written as a plain decimal (ASCII digits, an optional exponent)."""

    def _deserialize(
        self, value: object, attr: str | None, data: t.Mapping[str, object] | None, **kwargs: object
    ) -> float:
        _plain(self, value, _NUMBER_TEXT)
        return super()._deserialize(value, attr, data, **kwargs)


def _target() -> fields.Float:
    return QueryNumber(
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_TARGET_SECONDS),
        metadata={
            "description": "Response target in seconds (above 0, at most 7 days): adds `target` "
            "attainment. Default: FLOWPILOT_ANALYTICS_TARGET_SECONDS."
        },
    )


def _clock() -> fields.String:
    return fields.String(
        load_default="wall",
        validate=validate.OneOf(list(CLOCKS)),
        metadata={
            "description": "wall (default): wall-clock seconds. business: business seconds on the "
            "account's business hours (409 no_business_hours without a calendar)."
        },
    )


def _client() -> fields.String:
    return fields.String(
        # the column's own length is checked against the host's column when the report runs
        validate=validate.Length(min=1, max=1000),
        metadata={
            "description": "Only the sessions of this client (the host's sessions.client_id); a "
            "host without that column answers 400 unsupported_filter."
        },
    )


#: The longest ``cursor`` read (the API's own are about 200 characters).
MAX_CURSOR_LENGTH = 1000


class CursorField(fields.Field[Cursor]):
    """A signed ``next_cursor``, decoded by the schema's
    ``decode_cursor`` (which raises ``ValueError``). It documents as a string of at most
    :data:`MAX_CURSOR_LENGTH` characters: apispec maps only the fields it knows, so the type and
    the bound are given in the metadata (a ``fields.String`` subclass could not return a
    :class:`Cursor`, and a validator sees the decoded cursor, not its text)."""

    def __init__(self, **kwargs: t.Any) -> None:
        metadata = {"type": "string", "maxLength": MAX_CURSOR_LENGTH, **kwargs.get("metadata", {})}
        super().__init__(**{**kwargs, "metadata": metadata})

    def _deserialize(
        self, value: object, attr: str | None, data: t.Mapping[str, object] | None, **kwargs: object
    ) -> Cursor:
        if not isinstance(value, str):
            raise ValidationError("Not a valid string.")
        decode = getattr(self.parent, "decode_cursor", None)
        if len(value) > MAX_CURSOR_LENGTH or decode is None:
            raise ValidationError("Not a cursor this API returned.")
        try:
            return t.cast(Cursor, decode(value))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


# -- argument schemas ------------------------------------------------------------------------------


class _Args(Schema):
    """A route's query string. A parameter the route does not take is refused (a 400 naming it, the
    same on every route), so a typo is never silently a different report and ``account_id=`` can
    never change the scope."""

    class Meta:
        unknown = RAISE


class NoArgsSchema(_Args):
    """A route without parameters: any parameter is refused."""

    @post_load
    def _args(self, data: Loaded, **kwargs: object) -> NoArgs:
        return NoArgs()


class PeriodArgs(_Args):
    """``?period=7d|30d|90d`` (default ``30d``), or
    ``?since=&until=`` (ISO 8601), and ``compare=previous``."""

    period = fields.String(
        validate=validate.OneOf(list(PERIODS)),
        metadata={"default": DEFAULT_PERIOD, "description": "Not with since/until."},
    )
    since = fields.DateTime(
        format="iso",
        metadata={
            "description": "Start of a custom range (ISO 8601; no offset means UTC; years 1970 to "
            "9000); needs until."
        },
    )
    until = fields.DateTime(
        format="iso",
        metadata={
            "description": "End of a custom range (inclusive; years 1970 to 9000); needs since, "
            f"after it by at most {MAX_RANGE_DAYS} days."
        },
    )
    compare = fields.String(
        validate=validate.OneOf(["previous"]),
        metadata={
            "description": "previous: add the same figures for the equal-length window just before."
        },
    )

    @validates_schema
    def _check_range(self, data: Loaded, **kwargs: object) -> None:
        since, until = data.get("since"), data.get("until")
        if since is None or until is None:
            if (since is None) != (until is None):
                raise ValidationError(
                    "since and until go together.", "since" if since is None else "until"
                )
            return
        if "period" in data:
            raise ValidationError("Give either period or since/until, not both.", "period")
        if not (1970 <= since.year <= 9000 and 1970 <= until.year <= 9000):
            raise ValidationError(
                "since and until must lie between the years 1970 and 9000.", "since"
            )
        since, until = _utc(since), _utc(until)
        if since >= until:
            raise ValidationError("since must be before until.", "until")
        if until - since > timedelta(days=MAX_RANGE_DAYS):
            raise ValidationError(f"The range may span at most {MAX_RANGE_DAYS} days.", "until")

    @staticmethod
    def span(data: Loaded) -> Span:
        """The window part of a loaded query."""
        if "since" in data:
            return Span(None, _utc(data["since"]), _utc(data["until"]))
        return Span(data.get("period", DEFAULT_PERIOD))


def _utc(moment: datetime) -> datetime:
    return (
        moment.replace(tzinfo=timezone.utc)
        if moment.tzinfo is None
        else moment.astimezone(timezone.utc)
    )


class EscalationArgs(PeriodArgs):
    """The escalation route's query: the window, ``compare``,
    ``group_by=engineer`` and ``target_seconds``."""

    format = _format(
        "csv: the window's figures as one row, or with group_by one row per group (Accept: "
        "text/csv works too)."
    )
    target_seconds = _target()
    clock = _clock()
    client = _client()
    group_by = fields.String(
        validate=validate.OneOf(["engineer", "client"]),
        metadata={
            "description": "engineer: one group per claimer (the handoffs' claimed_by column); "
            "client: one group per client of the handoffs' sessions (sessions.client_id; null "
            "for sessions without one)."
        },
    )

    @post_load
    def _query(self, data: Loaded, **kwargs: object) -> EscalationQuery:
        return EscalationQuery(
            span=self.span(data),
            compare=data.get("compare"),
            group_by=data.get("group_by"),
            target_seconds=data.get("target_seconds"),
            clock=data["clock"],
            client=data.get("client"),
            format=data.get("format"),
        )


class TrendArgs(PeriodArgs):
    """The trend's query: the window, ``tz``, ``interval``, ``target_seconds``, ``format``."""

    class Meta(_Args.Meta):
        exclude = ("compare",)

    tz = _zone()
    interval = fields.String(
        load_default="day",
        validate=validate.OneOf(["day", "week"]),
        metadata={"description": "day, or week (ISO weeks, keyed by their Monday)."},
    )
    target_seconds = _target()
    clock = _clock()
    client = _client()
    format = _format("csv: one row per point (Accept: text/csv works too).")

    @post_load
    def _query(self, data: Loaded, **kwargs: object) -> TrendQuery:
        return TrendQuery(
            span=self.span(data),
            tz=data["tz"],
            interval=data["interval"],
            target_seconds=data.get("target_seconds"),
            format=data.get("format"),
            clock=data["clock"],
            client=data.get("client"),
        )


class HandoffsArgs(PeriodArgs):
    """The drill-down's query: the window, a bucket filter, the page, and the format."""

    class Meta(_Args.Meta):
        exclude = ("compare",)

    bucket = fields.String(
        metadata={
            "description": "A distribution bucket index (0 = fastest; as many as the app's "
            "FLOWPILOT_ANALYTICS_BUCKET_EDGES_SECONDS make) or no_action."
        },
    )
    limit = QueryInteger(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = CursorField(
        metadata={
            "description": (
                "next_cursor of the previous page (signed; valid for the user it was returned to)."
            )
        }
    )
    format = _format("csv streams every matching handoff (no paging); Accept: text/csv works too.")
    clock = _clock()
    client = _client()

    def __init__(
        self, *, bucket_count: int = 6, decode_cursor: t.Callable[[str], Cursor] | None = None
    ) -> None:
        super().__init__()
        self.decode_cursor = decode_cursor
        # the app's buckets, as a validator of this instance, so that the OpenAPI document lists
        # exactly the values accepted
        buckets = [str(index) for index in range(bucket_count)] + ["no_action"]
        self.fields["bucket"].validators = [
            validate.OneOf(buckets, error=f"One of 0..{bucket_count - 1} or no_action.")
        ]

    @post_load
    def _query(self, data: Loaded, **kwargs: object) -> HandoffQuery:
        bucket = data.get("bucket")
        return HandoffQuery(
            span=self.span(data),
            bucket=bucket if bucket in (None, "no_action") else int(bucket),
            limit=data["limit"],
            cursor=data.get("cursor"),
            format=data.get("format"),
            clock=data["clock"],
            client=data.get("client"),
        )


class BusinessHoursArgs(_Args):
    """``GET business-hours``: ``client`` lists that client's versions instead of the account's."""

    client = fields.String(
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "A client's id: its own versions (sessions.client_id)."},
    )

    @post_load
    def _query(self, data: Loaded, **kwargs: object) -> CalendarQuery:
        return CalendarQuery(client=data.get("client"))


class SavingsArgs(PeriodArgs):
    """The savings report's query: the window of the in-product sample."""

    class Meta(_Args.Meta):
        exclude = ("compare",)

    @post_load
    def _query(self, data: Loaded, **kwargs: object) -> SavingsQuery:
        return SavingsQuery(span=self.span(data))


class SampleIdArgs(Schema):
    """``<id>`` of ``DELETE escalations/baseline/<id>``."""

    class Meta:
        unknown = RAISE

    sample_id = fields.String(
        required=True,
        metadata={
            "description": "The sample's id; anything else is a 404.",
            "pattern": "^[0-9]{1,18}$",
        },
    )

    @post_load
    def _ref(self, data: Loaded, **kwargs: object) -> SampleRef:
        text = data["sample_id"]
        fits = text.isascii() and text.isdigit() and len(text) <= 18
        return SampleRef(sample_id=int(text) if fits else None)


def _storable(text: str) -> bool:
    """Text every database stores as given: valid UTF-8 (no lone surrogate) without NUL, which
    PostgreSQL's text cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Not valid Unicode text (a lone surrogate).") from None
    if "\x00" in text:
        raise ValidationError("Must not contain the NUL character (U+0000).")
    return True


class JsonNumber(fields.Float):
    """A JSON number, finite: a string, a boolean or NaN/Infinity is refused (``allow_nan`` off)."""

    def _deserialize(
        self, value: object, attr: str | None, data: t.Mapping[str, object] | None, **kwargs: object
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a number.")
        return super()._deserialize(value, attr, data, **kwargs)


class BaselineSampleBody(Schema):
    """One stopwatch sample as POSTed."""

    class Meta:
        unknown = RAISE

    seconds = JsonNumber(
        required=True,
        allow_nan=False,
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_SAMPLE_SECONDS),
        metadata={
            "description": "Seconds from handoff to first action in the old process, by "
            "stopwatch: above 0, at most 7 days."
        },
    )
    measured_at = fields.DateTime(
        required=True,
        format="iso",
        metadata={
            "description": "When it was measured (ISO 8601; no offset means UTC; years 1970 to "
            "9000)."
        },
    )
    note = fields.String(
        allow_none=True,
        validate=[validate.Length(max=MAX_NOTE_LENGTH), lambda text: _storable(text)],
        metadata={
            "description": "Free text (at most 1,000 characters, no NUL character); stored, never "
            "logged."
        },
    )

    @validates_schema
    def _check_year(self, data: Loaded, **kwargs: object) -> None:
        measured = data.get("measured_at")
        if measured is not None and not 1970 <= _utc(measured).year <= 9000:
            raise ValidationError("Must lie between the years 1970 and 9000.", "measured_at")

    @post_load
    def _sample(self, data: Loaded, **kwargs: object) -> NewSample:
        return NewSample(
            seconds=float(data["seconds"]),
            measured_at=_utc(data["measured_at"]),
            note=data.get("note"),
        )


class BaselineBody(Schema):
    """``POST escalations/baseline``: 1 to 1,000 samples, stored all or none."""

    class Meta:
        unknown = RAISE

    samples = fields.List(
        fields.Nested(BaselineSampleBody),
        required=True,
        validate=validate.Length(min=1, max=MAX_SAMPLES_PER_REQUEST),
    )

    @post_load
    def _baseline(self, data: Loaded, **kwargs: object) -> NewBaseline:
        return NewBaseline(samples=tuple(data["samples"]))


class PsaMetricsArgs(PeriodArgs):
    """``?period=7d|30d|90d&tz=<IANA zone>`` (defaults
    ``30d`` and ``UTC``), ``format=csv`` for the trend."""

    format = _format(
        "csv: the daily trend as CSV, or with group_by one row per group (Accept: text/csv works "
        "too)."
    )
    tz = _zone()
    client = _client()
    group_by = fields.String(
        validate=validate.OneOf(["client", "technician"]),
        metadata={
            "description": "client: add one group per client of the sessions (sessions.client_id; "
            "null for sessions without one, and activities without a session). technician: one "
            "group per user who pushed (the activities' user_id; null when unknown)."
        },
    )

    @post_load
    def _query(self, data: Loaded, **kwargs: object) -> PsaQuery:
        return PsaQuery(
            span=self.span(data),
            tz=data["tz"],
            compare=data.get("compare"),
            format=data.get("format"),
            client=data.get("client"),
            group_by=data.get("group_by"),
        )


# -- response schemas ------------------------------------------------------------------------------


class _Body(Schema):
    """A response part, dumped from a dataclass: an optional part the query did not ask for
    (``None``) is left out, not sent as ``null``."""

    @post_dump
    def _leave_out_absent(self, data: Loaded, **kwargs: object) -> Loaded:
        return {k: v for k, v in data.items() if v is not None or self.fields[k].required}


class HandoffItem(_Body):
    handoff_id = fields.Raw(required=True)
    session_id = fields.Raw(required=True)
    claimed_at = fields.AwareDateTime(format="iso", required=True)
    first_action_at = fields.AwareDateTime(format="iso", required=True, allow_none=True)
    seconds = fields.Float(
        required=True,
        allow_none=True,
        metadata={"description": "Claim to first action on the requested clock; null: no action."},
    )
    wall_seconds = fields.Float(
        required=True,
        allow_none=True,
        metadata={"description": "The same on the wall clock, whatever the clock asked for."},
    )
    client = fields.Raw(
        required=True,
        allow_none=True,
        metadata={
            "description": "The client of the handoff's session (sessions.client_id); null "
            "without one, or on a host without that column."
        },
    )
    bucket = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "The distribution bucket of seconds; null: no action yet."},
    )


class BusinessHoursUsed(_Body):
    """The calendar versions the figures were measured on (``clock=business``)."""

    version_ids = fields.List(fields.Integer(), required=True)


def _clock_fields() -> tuple[fields.String, fields.Nested]:
    clock = fields.String(required=True, metadata={"description": "wall or business."})
    used = fields.Nested(
        BusinessHoursUsed,
        required=True,
        allow_none=True,
        metadata={
            "description": "The business-hours versions the counted handoffs used, each on the "
            "version in effect at its claim; null on the wall clock."
        },
    )
    return clock, used


class HandoffPage(_Body):
    """Response of ``GET /analytics/flowpilot/escalations/handoffs``: newest claim first."""

    period = fields.String(required=True)
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    clock, business_hours = _clock_fields()
    items = fields.List(fields.Nested(HandoffItem), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class Bucket(_Body):
    min_seconds = fields.Float(required=True)
    max_seconds = fields.Float(required=True, allow_none=True)
    count = fields.Integer(required=True)


class Distribution(_Body):
    """Handoffs by time to first action: ``[min_seconds,
    max_seconds)`` buckets, then those with none."""

    buckets = fields.List(fields.Nested(Bucket), required=True)
    no_action = fields.Integer(required=True)


class TargetAttainment(_Body):
    """Attainment of the response target over the figure's claimed handoffs (pending ones apart)."""

    seconds = fields.Float(required=True)
    n_within = fields.Integer(
        required=True, metadata={"description": "First action within the target."}
    )
    n_breached = fields.Integer(
        required=True,
        metadata={"description": "First action after the target, or none and older than it."},
    )
    n_pending = fields.Integer(
        required=True, metadata={"description": "No action yet, younger than the target."}
    )
    n_overdue = fields.Integer(
        required=True,
        metadata={
            "description": "The breached ones with no action yet (the target passed at the "
            "report's now): the still-open part of n_breached."
        },
    )
    attainment = fields.Float(
        required=True,
        allow_none=True,
        metadata={"description": "n_within / (n_within + n_breached); null if 0."},
    )
    attainment_interval = fields.List(
        fields.Float(),
        required=True,
        allow_none=True,
        validate=validate.Length(equal=2),
        metadata={
            "description": "[low, high]: the 95 % Wilson score interval of attainment over "
            "n_within + n_breached handoffs; null when attainment is.",
            # flattened into ``attainment_interval_low`` and ``_high`` (CSV, CLI tables)
            "columns": ["low", "high"],
        },
    )


class EscalationStats(_Body):
    """The counts and statistics every escalation figure has (the account, a
    window, an engineer, a point): :class:`~.escalations.EscalationResult`."""

    n_handoffs_claimed = fields.Integer(required=True)
    n_handoffs_with_action = fields.Integer(required=True)
    avg_seconds = fields.Float(required=True, allow_none=True)
    median_seconds = fields.Float(required=True, allow_none=True)
    p90_seconds = fields.Float(required=True, allow_none=True)
    p95_seconds = fields.Float(required=True, allow_none=True)
    target = fields.Nested(
        TargetAttainment,
        required=True,
        allow_none=True,
        metadata={"description": "null when no target is in force."},
    )


class EscalationFigures(EscalationStats):
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)


def _keep_group_key(
    schema: Schema, data: Loaded, original: object, keys: t.Sequence[str]
) -> Loaded:
    """As every part leaves out what is absent, but a group's own key (one of ``keys`` that the
    dumped object has) is kept even when ``null``."""
    kept = {k: v for k, v in data.items() if v is not None or schema.fields[k].required}
    for key in keys:
        if hasattr(original, key):
            kept[key] = data.get(key)
    return kept


class EngineerGroup(EscalationStats):
    """One group's figures: ``engineer`` with group_by=engineer, ``client`` with group_by=client
    (``null``: no claimer, or sessions without a client)."""

    engineer = fields.Raw(allow_none=True, metadata={"description": "The claimer's id."})
    client = fields.Raw(allow_none=True, metadata={"description": "The client's id."})

    @post_dump(pass_original=True)
    def _leave_out_absent(self, data: Loaded, original: object, **kwargs: object) -> Loaded:
        return _keep_group_key(self, data, original, ("engineer", "client"))


class EscalationMetrics(EscalationFigures):
    """Response of ``GET /analytics/flowpilot/escalations``."""

    period = fields.String(required=True)
    metric_definition = fields.String(required=True)
    clock, business_hours = _clock_fields()
    distribution = fields.Nested(Distribution)
    previous = fields.Nested(EscalationFigures, metadata={"description": "With compare=previous."})
    groups = fields.List(
        fields.Nested(EngineerGroup), metadata={"description": "With group_by=engineer."}
    )


class TrendPoint(EscalationStats):
    start = fields.Date(
        required=True, metadata={"description": "The local day, or the Monday of the ISO week."}
    )


class EscalationTrend(_Body):
    """Response of ``GET /analytics/flowpilot/escalations/trend``:
    the metric per local day or ISO week."""

    period = fields.String(required=True)
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    timezone = fields.String(required=True)
    interval = fields.String(required=True)
    metric_definition = fields.String(required=True)
    clock, business_hours = _clock_fields()
    points = fields.List(fields.Nested(TrendPoint), required=True)


class TimeEntryTotals(_Body):
    """The window's time entries; the three minute parts add up to ``total_minutes``."""

    count = fields.Integer(required=True)
    total_minutes = fields.Float(required=True)
    total_hours = fields.Float(required=True)
    billable_minutes = fields.Float(
        required=True, metadata={"description": "Minutes of entries pushed as billable."}
    )
    non_billable_minutes = fields.Float(
        required=True, metadata={"description": "Minutes of entries pushed as not billable."}
    )
    unclassified_minutes = fields.Float(
        required=True,
        metadata={"description": "Minutes of entries whose push did not say (billable unknown)."},
    )


class PsaFunnel(_Body):
    """Sessions -> linked to a ticket -> documentation
    pushed -> time entry logged, with stage-to-stage rates."""

    sessions = fields.Integer(required=True)
    linked = fields.Integer(required=True)
    doc_pushed = fields.Integer(required=True)
    time_entry_logged = fields.Integer(required=True)
    linked_rate = fields.Float(required=True, allow_none=True)
    doc_pushed_rate = fields.Float(required=True, allow_none=True)
    time_entry_logged_rate = fields.Float(required=True, allow_none=True)


class PsaDailyTrend(_Body):
    date = fields.Date(required=True)
    sessions = fields.Integer(required=True)
    notes_posted = fields.Integer(required=True)
    time_entries = fields.Integer(required=True)
    minutes = fields.Float(required=True)


class PsaFigures(_Body):
    """The totals and funnel of one window (the report's own, or the previous one)."""

    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    time_entries = fields.Nested(TimeEntryTotals, required=True)
    funnel = fields.Nested(PsaFunnel, required=True)


class PsaClientGroup(_Body):
    """One client's time entries and funnel (``client``: ``null`` for sessions without one)."""

    client = fields.Raw(
        required=True, allow_none=True, metadata={"description": "The client's id."}
    )
    time_entries = fields.Nested(TimeEntryTotals, required=True)
    funnel = fields.Nested(PsaFunnel, required=True)


class PsaTechnicianGroup(_Body):
    """One technician's pushes (``technician``: ``null`` for pushes with no known user)."""

    technician = fields.Raw(
        required=True,
        allow_none=True,
        metadata={"description": "The pushing user's id, as text (the activities' user_id)."},
    )
    notes_posted = fields.Integer(required=True)
    time_entries = fields.Nested(TimeEntryTotals, required=True)


class PsaGroup(_Body):
    """One group of ``psa-metrics``: a client's time entries and funnel (group_by=client), or a
    technician's notes and time entries (group_by=technician)."""

    client = fields.Raw(allow_none=True, metadata={"description": "With group_by=client."})
    technician = fields.Raw(
        allow_none=True, metadata={"description": "With group_by=technician (text)."}
    )
    notes_posted = fields.Integer(metadata={"description": "With group_by=technician."})
    time_entries = fields.Nested(TimeEntryTotals, required=True)
    funnel = fields.Nested(PsaFunnel, metadata={"description": "With group_by=client."})

    @post_dump(pass_original=True)
    def _leave_out_absent(self, data: Loaded, original: object, **kwargs: object) -> Loaded:
        return _keep_group_key(self, data, original, ("client", "technician"))


class EnhancedPsaMetrics(PsaFigures):
    """Response of ``GET /analytics/flowpilot/psa-metrics``:
    the window's figures, the zone and the trend."""

    period = fields.String(required=True)
    timezone = fields.String(required=True)
    daily_trend = fields.List(fields.Nested(PsaDailyTrend), required=True)
    previous = fields.Nested(
        PsaFigures, metadata={"description": "With compare=previous (no trend)."}
    )
    groups = fields.List(
        fields.Nested(PsaGroup), metadata={"description": "With group_by=client or technician."}
    )


# -- the savings claim -----------------------------------------------------------------------------


class BaselineSample(_Body):
    """A stored stopwatch sample."""

    id = fields.Integer(required=True)
    seconds = fields.Float(required=True)
    measured_at = fields.AwareDateTime(format="iso", required=True)
    note = fields.String(required=True, allow_none=True)
    measured_by = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Who recorded it: a user id, as text; null from the CLI."},
    )
    created_at = fields.AwareDateTime(format="iso", required=True)


class BaselineSamples(_Body):
    """Response of ``GET`` and ``POST escalations/baseline``."""

    samples = fields.List(fields.Nested(BaselineSample), required=True)


def _interval(description: str) -> fields.List[t.Any]:
    return fields.List(
        fields.Float(),
        required=True,
        validate=validate.Length(equal=2),
        metadata={"description": description, "columns": ["low", "high"]},
    )


class BaselineSummary(_Body):
    """The account's stopwatch samples, whatever the window."""

    n = fields.Integer(required=True)
    median_seconds = fields.Float(required=True, allow_none=True)
    mean_seconds = fields.Float(required=True, allow_none=True)
    first_measured_at = fields.AwareDateTime(format="iso", required=True, allow_none=True)
    last_measured_at = fields.AwareDateTime(format="iso", required=True, allow_none=True)


class InProductSummary(_Body):
    """The window's claimed handoffs with a first action, on the wall clock."""

    n = fields.Integer(required=True)
    median_seconds = fields.Float(required=True, allow_none=True)
    mean_seconds = fields.Float(required=True, allow_none=True)


class SavingsDifference(_Body):
    """Baseline minus in-product (positive: a first action sooner in FlowPilot)."""

    median_seconds = fields.Float(required=True)
    median_interval = _interval("[low, high] of the difference of medians (percentile bootstrap).")
    mean_seconds = fields.Float(required=True)
    mean_interval = _interval("[low, high] of the difference of means (bootstrap-t).")
    confidence = fields.Float(required=True)
    method = fields.String(required=True)


class SavingsExtrapolated(_Body):
    """The mean difference times the window's handoffs: an extrapolation, not a measurement."""

    handoffs = fields.Integer(required=True)
    total_seconds = fields.Float(required=True)
    total_interval = _interval("mean_interval times handoffs.")


class SavingsReport(_Body):
    """Response of ``GET /analytics/flowpilot/escalations/savings``."""

    period = fields.String(required=True)
    window_start = fields.AwareDateTime(format="iso", required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    metric_definition = fields.String(required=True)
    baseline = fields.Nested(BaselineSummary, required=True)
    in_product = fields.Nested(InProductSummary, required=True)
    difference = fields.Nested(
        SavingsDifference,
        required=True,
        allow_none=True,
        metadata={
            "description": "null below FLOWPILOT_ANALYTICS_BASELINE_MIN_SAMPLES baseline samples "
            "or without an in-product handoff with an action."
        },
    )
    extrapolated = fields.Nested(SavingsExtrapolated, required=True, allow_none=True)
    claim = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "One sentence; null unless median_interval excludes 0."},
    )
    reason = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Why there is no claim; null when there is one."},
    )


# -- business hours --------------------------------------------------------------------------------


_INTERVALS = {
    "type": "array",
    "items": {
        "type": "array",
        "items": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"},
        "minItems": 2,
        "maxItems": 2,
    },
    "maxItems": 10,
}


class HolidayCalendarCodes(_Body):
    country = fields.String(
        required=True, metadata={"description": "ISO 3166-1 alpha-2 code, e.g. US."}
    )
    subdivision = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "A subdivision code of the country, e.g. NY; null: none."},
    )


class WeeklyHours(Schema):
    """Each weekday's open intervals ``["HH:MM", "HH:MM"]``; an end before its start runs past
    midnight (an end equal to its start is refused); ``24:00`` is allowed as an end; a missing day
    is closed."""

    mon, tue, wed, thu, fri, sat, sun = (
        fields.List(fields.List(fields.String()), metadata=dict(_INTERVALS)) for _ in DAYS
    )


class CalendarVersionBody(Schema):
    """``POST business-hours``: one calendar version. Validated whole by
    :func:`~.business_hours.parse_version` (a 400 names the bad field; nothing is stored)."""

    class Meta:
        unknown = RAISE

    timezone = fields.Raw(
        required=True,
        metadata={
            "type": "string",
            # documented as the Zone component, the names a ZoneField accepts
            "zone": True,
            "description": "An IANA time zone name, e.g. America/New_York.",
        },
    )
    effective_from = fields.Raw(
        required=True,
        metadata={
            "type": "string",
            "format": "date",
            "description": "The version takes effect at 00:00 of this date in its zone (years "
            "1970 to 9000).",
        },
    )
    weekly = fields.Raw(
        required=True,
        metadata={
            "type": "object",
            "properties": {day: {**_INTERVALS, "nullable": True} for day in DAYS},
            "additionalProperties": False,
            "description": "At least one day with an open interval; a missing or null day is "
            "closed.",
        },
    )
    holidays = fields.Raw(
        allow_none=True,
        metadata={
            "type": "array",
            "items": {"type": "string", "format": "date"},
            "maxItems": 5000,
            "description": "Whole local days (00:00-24:00) closed.",
        },
    )
    client_id = fields.Raw(
        allow_none=True,
        metadata={
            "description": "A client's id (the host's sessions.client_id): the version belongs "
            "to that client, whose handoffs are measured on its own history; a host without the "
            "column refuses it."
        },
    )
    holiday_calendar = fields.Raw(
        allow_none=True,
        metadata={
            "type": "object",
            "properties": {
                "country": {"type": "string"},
                "subdivision": {"type": "string", "nullable": True},
            },
            "required": ["country"],
            "additionalProperties": False,
            "description": "Expanded once, at creation, into explicit holidays for ten years "
            "from effective_from's year (the holidays package).",
        },
    )

    @post_load(pass_original=True)
    def _version(self, data: Loaded, original: object, **kwargs: object) -> NewCalendarVersion:
        try:
            version = parse_version(t.cast(t.Mapping[str, object], original))
        except CalendarError as exc:
            raise ValidationError(exc.message, exc.field) from None
        return NewCalendarVersion(version=version)


class StoredCalendarVersion(_Body):
    """A stored calendar version: all seven days, the holidays sorted (expanded from the holiday
    calendar, if one was given)."""

    id = fields.Integer(required=True)
    created_at = fields.AwareDateTime(format="iso", required=True)
    timezone = fields.String(required=True)
    effective_from = fields.Date(required=True)
    weekly = fields.Nested(WeeklyHours, required=True)
    holidays = fields.List(fields.Date(), required=True)
    holiday_calendar = fields.Nested(HolidayCalendarCodes, required=True, allow_none=True)
    client_id = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "The client the version belongs to (as text); null: the account's."
        },
    )


class BusinessHoursVersions(_Body):
    """Response of ``GET business-hours``."""

    versions = fields.List(
        fields.Nested(StoredCalendarVersion),
        required=True,
        metadata={"description": "The account's versions, in creation order."},
    )
    in_effect = fields.Nested(
        StoredCalendarVersion,
        required=True,
        allow_none=True,
        metadata={"description": "The version in effect now; null without one."},
    )


class ErrorBody(Schema):
    code = fields.String(
        required=True, metadata={"description": "What went wrong, stable and machine-readable."}
    )
    message = fields.String(
        required=True, metadata={"description": "What went wrong and what to do, for a person."}
    )
    details = fields.Dict(
        keys=fields.String(),
        required=True,
        metadata={
            "description": "What the error is about, by name (e.g. `fields` of a 400, "
            "`allowed_roles` of a 403, `retry_after_seconds` of a 429); `{}` when there is "
            "nothing more to say."
        },
    )


class ErrorEnvelope(Schema):
    """Every error: ``{"error": {"code", "message", "details"}}``, ``details`` ``{}`` when there is
    nothing more to say."""

    error = fields.Nested(ErrorBody, required=True)


# -- requests and flattened bodies -----------------------------------------------------------------


def query_args(args: MultiDict[str, str]) -> dict[str, str | list[str]]:
    """A request's query string as a dict; a repeated
    key keeps all its values (and so fails validation)."""
    return {key: values[0] if len(values) == 1 else values for key, values in args.lists()}


def _list_columns(field: fields.Field[t.Any]) -> list[str] | None:
    """The column names of a fixed-size list of scalars (its ``columns`` metadata), or ``None``."""
    if isinstance(field, fields.List) and not isinstance(field.inner, fields.Nested):
        columns = field.metadata.get("columns")
        return list(columns) if columns else None
    return None


def flat_columns(schema: Schema, sep: str = "_") -> list[str]:
    """A body part's scalar fields in order, a nested part's joined to its name with ``sep``
    (``target_seconds``), a fixed-size list's items likewise (``attainment_interval_low``, from its
    ``columns`` metadata); other lists are left out."""
    names: list[str] = []
    for name, field in schema.fields.items():
        listed = _list_columns(field)
        if isinstance(field, fields.Nested):
            names += [f"{name}{sep}{inner}" for inner in flat_columns(field.schema, sep)]
        elif listed is not None:
            names += [f"{name}{sep}{item}" for item in listed]
        elif not isinstance(field, fields.List):
            names.append(name)
    return names


def flat_values(schema: Schema, dumped: t.Mapping[str, object]) -> list[object]:
    """The values of :func:`flat_columns`, in its order,
    from a dumped part (a null nested part: nulls)."""
    values: list[object] = []
    for name, field in schema.fields.items():
        value = dumped.get(name)
        listed = _list_columns(field)
        if isinstance(field, fields.Nested):
            inner = field.schema
            values += (
                flat_values(inner, value)
                if isinstance(value, t.Mapping)
                else [None] * len(flat_columns(inner))
            )
        elif listed is not None:
            items = list(value) if isinstance(value, (list, tuple)) else []
            values += items + [None] * (len(listed) - len(items))
        elif not isinstance(field, fields.List):
            values.append(value)
    return values
