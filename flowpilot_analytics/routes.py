"""The blueprint: each route validates its query with a schema, reads, and dumps with a schema."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import typing as t

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from marshmallow import Schema, ValidationError

from . import reports
from .cli import register_commands
from .errors import ApiError, logger, register_error_handlers
from .extension import current_state
from .config import BUCKET_EDGES_SECONDS, MAX_RANGE_DAYS, URL_PREFIX
from .openapi import build_document
from .periods import PERIODS
from .schemas import (EnhancedPsaMetrics, EscalationArgs, EscalationMetrics, HandoffPage, HandoffsArgs,
                      PsaMetricsArgs, query_args)


# Schemas hold no per-request state, so one instance of each serves every request.
ESCALATION_METRICS = EscalationMetrics()
ENHANCED_PSA_METRICS = EnhancedPsaMetrics()
HANDOFF_PAGE = HandoffPage()


def load_query(schema: Schema) -> dict[str, t.Any]:
    """Validate the query string; a 400 JSON error lists what is wrong and what is allowed."""
    try:
        return t.cast(dict[str, t.Any], schema.load(query_args(request.args)))
    except ValidationError as exc:
        raise ApiError(400, "invalid_parameter", "The query string is not valid.",
                       details={"fields": exc.normalized_messages(), "allowed_periods": list(PERIODS)}) from None


def cached_json(route: str, account_id: t.Any, args: t.Mapping[str, t.Any],
                compute: t.Callable[[], t.Mapping[str, t.Any]]) -> Response:
    """Serve the account's cached body for these parameters, or compute and cache it.

    Every answer carries ``Cache-Control: private, no-cache`` (a browser must ask again each time, so a
    shared browser never shows one user's answer to the next), ``Vary`` on the credential headers, and an
    ``ETag``: a matching ``If-None-Match`` gets a 304. Authorization and the rate limit ran before this,
    so cached answers still count against the limit.
    """
    state = current_state()
    key = state.cache.key(route, account_id, args)
    body = state.cache.lookup(key)
    if body is None:
        body = (json.dumps(compute(), allow_nan=False, separators=(",", ":"), sort_keys=True, default=str)
                + "\n").encode()
        state.cache.store(key, body)
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["Cache-Control"] = "private, no-cache"
    for header in state.vary_headers:
        response.vary.add(header)
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    return response.make_conditional(request)


def escalations_view() -> Response:
    """``GET /analytics/flowpilot/escalations``: time from a claim to the first action after it."""
    state = current_state()
    identity = state.authorize("escalations")
    args = load_query(state.once("args:escalations",
                                 lambda: EscalationArgs(max_range_days=state.config[MAX_RANGE_DAYS])))
    return cached_json("escalations", identity.account_id, args, lambda: t.cast(t.Mapping[str, t.Any], (
        ESCALATION_METRICS.dump(reports.escalation_report(state, identity.account_id, args)))))


def wants_csv(args: t.Mapping[str, t.Any]) -> bool:
    """``format=csv``, or no ``format`` and an ``Accept`` that prefers ``text/csv`` to JSON."""
    if "format" in args:
        return bool(args["format"] == "csv")
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"


#: A cell a spreadsheet would run as a formula starts with one of these (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: t.Any) -> t.Any:
    """A text cell that would start a formula gets a leading ``'`` (OWASP); numbers stay numbers."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_response(filename: str, header: list[str], rows: t.Iterable[list[t.Any]]) -> Response:
    """Stream a CSV with a header row; rows are produced while the response is sent, cells neutralised."""

    rows = ([neutralise(cell) for cell in row] for row in rows)
    first = next(rows, None)  # the first query runs now, so a failure is still a JSON error, not a cut stream

    def generate() -> t.Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)  # RFC 4180: CRLF rows; a cell holding CR or LF is quoted
        try:
            for row in itertools.chain([header], [] if first is None else [first], rows):
                writer.writerow(row)
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        except Exception:
            logger.error("flowpilot_analytics: CSV export %s failed mid-stream; the file is incomplete", filename,
                         exc_info=True)
            raise

    response = current_app.response_class(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _iso(value: t.Any) -> str:
    return "" if value is None else value.isoformat()


def handoffs_view() -> Response:
    """``GET /analytics/flowpilot/escalations/handoffs``: the handoffs behind the number, paged or as CSV."""
    state = current_state()
    identity = state.authorize("escalations", limit="escalation_handoffs")
    args = load_query(state.once("args:handoffs", lambda: HandoffsArgs(
        max_range_days=state.config[MAX_RANGE_DAYS], bucket_count=len(state.config[BUCKET_EDGES_SECONDS]) + 1)))
    if wants_csv(args):
        rows = reports.iter_handoffs(state, identity.account_id, args)
        return csv_response("escalation_handoffs.csv",
                            ["handoff_id", "session_id", "claimed_at_utc", "first_action_at_utc", "seconds", "bucket"],
                            ([r["handoff_id"], r["session_id"], _iso(r["claimed_at"]), _iso(r["first_action_at"]),
                              "" if r["seconds"] is None else r["seconds"],
                              "no_action" if r["bucket"] is None else r["bucket"]] for r in rows))
    return cached_json("escalation_handoffs", identity.account_id,
                       {**args, "user": str(identity.user_id)},  # cursors are the user's own
                       lambda: t.cast(t.Mapping[str, t.Any], HANDOFF_PAGE.dump(
                           reports.handoff_page(state, identity, args))))


def psa_metrics_view() -> Response:
    """``GET /analytics/flowpilot/psa-metrics``: time entries, documentation funnel, daily trend."""
    state = current_state()
    identity = state.authorize("psa_metrics")
    args = load_query(state.once("args:psa", lambda: PsaMetricsArgs(max_range_days=state.config[MAX_RANGE_DAYS])))
    if wants_csv(args):
        body = reports.psa_report(state, identity.account_id, {**args, "compare": None})
        return csv_response("psa_daily_trend.csv",
                            [f"date ({args['tz']})", "sessions", "notes_posted", "time_entries", "minutes"],
                            ([row["date"].isoformat(), row["sessions"], row["notes_posted"], row["time_entries"],
                              row["minutes"]] for row in body["daily_trend"]))
    return cached_json("psa_metrics", identity.account_id, args, lambda: t.cast(t.Mapping[str, t.Any], (
        ENHANCED_PSA_METRICS.dump(reports.psa_report(state, identity.account_id, args)))))


def openapi_view() -> Response:
    """``GET /analytics/flowpilot/openapi.json``: the contract, generated from the schemas (no identity needed)."""
    state = current_state()
    return jsonify(state.once("openapi", lambda: build_document(state.config[URL_PREFIX], state.route_roles)))


def create_blueprint() -> Blueprint:
    """A fresh blueprint per registration, so that apps never share handlers or state."""
    blueprint = Blueprint("flowpilot_analytics", __name__, cli_group="flowpilot-analytics")
    blueprint.add_url_rule("/analytics/flowpilot/escalations", "escalations", escalations_view, methods=["GET"])
    blueprint.add_url_rule("/analytics/flowpilot/escalations/handoffs", "escalation_handoffs", handoffs_view,
                           methods=["GET"])
    blueprint.add_url_rule("/analytics/flowpilot/psa-metrics", "psa_metrics", psa_metrics_view, methods=["GET"])
    blueprint.add_url_rule("/analytics/flowpilot/openapi.json", "openapi", openapi_view, methods=["GET"])
    register_error_handlers(blueprint)
    register_commands(blueprint)
    return blueprint
