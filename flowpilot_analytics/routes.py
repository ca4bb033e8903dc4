"""The blueprint: each route authorizes, validates its query with a schema, reads, and dumps with a schema."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import typing as t

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from marshmallow import Schema, ValidationError

from . import reports, telemetry
from .config import Settings
from .errors import InvalidQuery
from .identity import IdentityLike
from .openapi import build_document
from .periods import PERIODS
from .schemas import REPORT_ROUTES, Schemas, query_args
from .state import AnalyticsState, caught_up, current_state, start_report

logger = logging.getLogger(__name__)

Body = t.Mapping[str, t.Any]
#: A report's body for the state, the caller and the validated query.
Compute = t.Callable[[AnalyticsState, IdentityLike, t.Mapping[str, t.Any]], Body]
#: A CSV export: the file name, the header, and the rows (produced while the response is sent).
CsvExport = t.Callable[
    [AnalyticsState, IdentityLike, t.Mapping[str, t.Any]], tuple[str, list[str], t.Iterable[list[t.Any]]]
]

#: A cell a spreadsheet would run as a formula starts with one of these (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def load_query(schema: Schema) -> dict[str, t.Any]:
    """Validate the query string; an :class:`~.errors.InvalidQuery` lists what is wrong and what is allowed."""
    try:
        return t.cast(dict[str, t.Any], schema.load(query_args(request.args)))
    except ValidationError as exc:
        raise InvalidQuery(
            "The query string is not valid.",
            details={
                "fields": exc.normalized_messages(),  # type: ignore[no-untyped-call]
                "allowed_periods": list(PERIODS),
            },
        ) from None


def cached_json(route: str, key_parts: t.Mapping[str, t.Any], compute: t.Callable[[], Body]) -> Response:
    """Serve the cached body for these key parts (account, parameters...), or compute and cache it.

    Every answer carries ``Cache-Control: private, no-cache`` (a browser must ask again each time, so a
    shared browser never shows one user's answer to the next), ``Vary`` on the credential headers, and an
    ``ETag``: a matching ``If-None-Match`` gets a 304. Authorization and the rate limit ran before this,
    so cached answers still count against the limit.
    """
    state = current_state()
    key = state.cache.key(route, key_parts["account_id"], key_parts)
    body = state.cache.lookup(key)
    if body is None:
        telemetry.cache_misses.add(1, {"route": route})
        attributes = {name: key_parts.get(name) for name in ("period", "interval", "group_by", "compare")}
        start_report()
        with telemetry.report_span(route, state.prepared().backend.name, attributes):
            body = (
                json.dumps(compute(), allow_nan=False, separators=(",", ":"), sort_keys=True, default=str) + "\n"
            ).encode()
        # a standby that has not replayed the latest recorded activity answers now, but is not cached
        if state.settings.bind is None or caught_up(state.cache.required_position(route, key_parts["account_id"])):
            state.cache.store(key, body)
    else:
        telemetry.cache_hits.add(1, {"route": route})
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["Cache-Control"] = "private, no-cache"
    for header in state.settings.vary_headers:
        response.vary.add(header)
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    return t.cast(Response, response.make_conditional(request))


def wants_csv(args: t.Mapping[str, t.Any]) -> bool:
    """``format=csv``, or no ``format`` and an ``Accept`` that prefers ``text/csv`` to JSON."""
    if "format" in args:
        return bool(args["format"] == "csv")
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"


def neutralise(cell: t.Any) -> t.Any:
    """A text cell that would start a formula gets a leading ``'`` (OWASP); numbers stay numbers."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_response(filename: str, header: list[str], rows: t.Iterable[list[t.Any]]) -> Response:
    """Stream a CSV with a header row (RFC 4180: CRLF rows, a cell holding CR or LF quoted), cells neutralised.

    The first row is produced now, so a failing first query is still a JSON error, not a cut stream.
    """
    neutralised = ([neutralise(cell) for cell in row] for row in rows)
    first = next(neutralised, None)

    def generate() -> t.Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        try:
            for row in itertools.chain([header], [] if first is None else [first], neutralised):
                writer.writerow(row)
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        except Exception:
            logger.error("CSV export %s failed mid-stream; the file is incomplete", filename, exc_info=True)
            raise

    response = current_app.response_class(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def report_view(
    route: str,
    role_route: str,
    schema: Schema,
    body_schema: Schema,
    compute: Compute,
    export: CsvExport | None = None,
    per_user: bool = False,
) -> t.Callable[[], Response]:
    """A report route: authorize (role of ``role_route``, limit of ``route``), validate, then JSON or CSV."""

    def view() -> Response:
        state = current_state()
        identity = state.authorize(role_route, limit=route)
        args = load_query(schema)
        if export is not None and wants_csv(args):
            with telemetry.report_span(route, state.prepared().backend.name, {"format": "csv"}):
                return csv_response(*export(state, identity, args))
        key = {**args, "account_id": identity.account_id, **({"user": str(identity.user_id)} if per_user else {})}
        return cached_json(route, key, lambda: t.cast(Body, body_schema.dump(compute(state, identity, args))))

    view.__name__ = route
    return view


def _iso(value: t.Any) -> str:
    return "" if value is None else value.isoformat()


def _handoffs_csv(
    state: AnalyticsState, identity: IdentityLike, args: t.Mapping[str, t.Any]
) -> tuple[str, list[str], t.Iterable[list[t.Any]]]:
    rows = reports.iter_handoffs(state, identity.account_id, args)
    return (
        "escalation_handoffs.csv",
        ["handoff_id", "session_id", "claimed_at_utc", "first_action_at_utc", "seconds", "bucket"],
        (
            [
                r["handoff_id"],
                r["session_id"],
                _iso(r["claimed_at"]),
                _iso(r["first_action_at"]),
                "" if r["seconds"] is None else r["seconds"],
                "no_action" if r["bucket"] is None else r["bucket"],
            ]
            for r in rows
        ),
    )


def _trend_csv(
    state: AnalyticsState, identity: IdentityLike, args: t.Mapping[str, t.Any]
) -> tuple[str, list[str], t.Iterable[list[t.Any]]]:
    body = reports.escalation_trend(state, identity.account_id, args)
    figures = ["n_handoffs_claimed", "n_handoffs_with_action", "avg_seconds", "median_seconds", "p95_seconds"]
    target = ["target_seconds", "target_n_within", "target_n_breached", "target_n_pending", "target_attainment"]

    def row(point: dict[str, t.Any]) -> list[t.Any]:
        met = point["target"] or {}
        return [
            point["start"].isoformat(),
            *("" if point[k] is None else point[k] for k in figures),
            *(
                "" if met.get(k) is None else met[k]
                for k in ("seconds", "n_within", "n_breached", "n_pending", "attainment")
            ),
        ]

    return (
        f"escalation_trend_{args['interval']}.csv",
        [f"{args['interval']} ({args['tz']})", *figures, *target],
        (row(point) for point in body["points"]),
    )


def _psa_csv(
    state: AnalyticsState, identity: IdentityLike, args: t.Mapping[str, t.Any]
) -> tuple[str, list[str], t.Iterable[list[t.Any]]]:
    body = reports.psa_report(state, identity.account_id, {**args, "compare": None})
    return (
        "psa_daily_trend.csv",
        [f"date ({args['tz']})", "sessions", "notes_posted", "time_entries", "minutes"],
        (
            [row["date"].isoformat(), row["sessions"], row["notes_posted"], row["time_entries"], row["minutes"]]
            for row in body["daily_trend"]
        ),
    )


def create_blueprint(settings: Settings, schemas: Schemas, cursors: reports.CursorCodec) -> Blueprint:
    """A fresh blueprint per registration, so that apps never share views, schemas or state."""
    blueprint = Blueprint("flowpilot_analytics", __name__, cli_group="flowpilot-analytics")
    base = "/analytics/flowpilot"
    reports_by_route: dict[str, tuple[Compute, CsvExport | None]] = {
        "escalations": (
            lambda state, identity, args: reports.escalation_report(state, identity.account_id, args),
            None,
        ),
        "escalation_trend": (
            lambda state, identity, args: reports.escalation_trend(state, identity.account_id, args),
            _trend_csv,
        ),
        "escalation_handoffs": (
            lambda state, identity, args: reports.handoff_page(state, identity, args, cursors),
            _handoffs_csv,
        ),
        "psa_metrics": (lambda state, identity, args: reports.psa_report(state, identity.account_id, args), _psa_csv),
    }
    for report in REPORT_ROUTES:
        compute, export = reports_by_route[report.route]
        query, body = schemas.for_route(report.route)
        view = report_view(
            report.route,
            report.role_route,
            query,
            body,
            compute,
            export=export,
            per_user=report.route == "escalation_handoffs",
        )  # drill-down cursors are the user's own
        blueprint.add_url_rule(f"{base}/{report.path}", view_func=view, methods=["GET"])
    document = build_document(settings.url_prefix, settings.route_roles)
    blueprint.add_url_rule(f"{base}/openapi.json", "openapi", lambda: jsonify(document), methods=["GET"])
    return blueprint
