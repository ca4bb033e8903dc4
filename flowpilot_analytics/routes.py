"""The blueprint, derived from the route declarations: each view authorizes, validates its query
with a schema, computes, and dumps with a schema (as JSON, cached, or as CSV)."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import itertools
import json
import logging
import typing as t

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from marshmallow import Schema, ValidationError

from . import reports, telemetry
from .dashboard import register_dashboard
from .errors import InvalidQuery, MethodNotAllowed, UnsupportedMediaType
from .openapi import build_document
from .periods import PERIODS
from .replica import Reads
from .reports import CsvTable, ReportContext, Route
from .schemas import Args, NoArgsSchema, query_args
from .state import AnalyticsState, current_state

logger = logging.getLogger(__name__)

#: Where the routes live under the URL prefix.
BASE = "/analytics/flowpilot"
#: A cell a spreadsheet would run as a formula starts
#: with one of these (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: The query parts a report's span carries as attributes.
SPAN_ATTRIBUTES = ("period", "interval", "group_by", "compare", "clock")


def load_query(schema: Schema) -> Args:
    """Validate the query string; an :class:`~.errors.InvalidQuery`
    lists what is wrong and what is allowed."""
    try:
        return t.cast(Args, schema.load(query_args(request.args)))
    except ValidationError as exc:
        raise InvalidQuery(
            "The query string is not valid.",
            details={
                "fields": exc.normalized_messages(),  # type: ignore[no-untyped-call]
                "allowed_periods": list(PERIODS),
            },
        ) from None


#: Largest JSON body a write route reads (a calendar version with 5,000 holidays is ~75 KB).
MAX_BODY_BYTES = 1024 * 1024


def load_body(schema: Schema) -> Args:
    """Validate a JSON object body; anything else is an error that says what is wrong, and nothing
    is stored unless this passes.

    The body must be declared ``application/json`` (a cross-site form can only send
    ``text/plain``, ``multipart/form-data`` or ``application/x-www-form-urlencoded``: refusing them
    keeps another site from writing with a signed-in user's cookie), is read up to
    :data:`MAX_BODY_BYTES` whatever ``Content-Length`` says (a chunked upload has none), and may
    nest only as deep as the parser can go.
    """
    if not request.is_json:
        raise UnsupportedMediaType(
            "The body must be sent as Content-Type: application/json; nothing was stored.",
            details={"content_type": request.mimetype or None},
        )
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidQuery(
            f"The body is larger than {MAX_BODY_BYTES} bytes; nothing was stored.",
            code="invalid_body",
            details={"fields": {"_schema": [f"At most {MAX_BODY_BYTES} bytes."]}},
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser
        data = None
    if not isinstance(data, dict):
        raise InvalidQuery(
            "The body must be a JSON object.",
            code="invalid_body",
            details={"fields": {"_schema": ["Not a JSON object."]}},
        )
    try:
        return t.cast(Args, schema.load(data))
    except ValidationError as exc:
        raise InvalidQuery(
            "The body is not valid; nothing was stored.",
            code="invalid_body",
            details={"fields": exc.normalized_messages()},  # type: ignore[no-untyped-call]
        ) from None
    except RecursionError:
        raise InvalidQuery(
            "The body nests too deeply; nothing was stored.",
            code="invalid_body",
            details={"fields": {"_schema": ["Nested too deeply."]}},
        ) from None


def cached_json(
    route: str,
    key_parts: t.Mapping[str, object],
    compute: t.Callable[[], object],
    reads: Reads | None,
) -> Response:
    """Serve the cached body for these key parts (account, parameters...), or compute and cache it.

    Every answer carries ``Cache-Control: private, no-cache`` (a browser must ask again each time,
    so a shared browser never shows one user's answer to the next), ``Vary`` on the credential
    headers, and an ``ETag``: a matching ``If-None-Match`` gets a 304. Authorization and the rate
    limit ran before this, so cached answers still count against the limit. With a read replica,
    ``reads`` (filled while computing) says whether the standby had replayed the account's latest
    recorded change: if not, the answer is served but not cached.
    """
    state = current_state()
    account_id = key_parts["account_id"]
    key = state.cache.key(route, account_id, key_parts)
    body = state.cache.lookup(key)
    if body is None:
        telemetry.cache_misses.add(1, {"route": route})
        parts = {name: key_parts.get(name) for name in SPAN_ATTRIBUTES}
        attributes = {name: value for name, value in parts.items() if isinstance(value, str)}
        with telemetry.report_span(route, state.prepared().backend.name, attributes):
            text = json.dumps(
                compute(), allow_nan=False, separators=(",", ":"), sort_keys=True, default=str
            )
            body = (text + "\n").encode()
        if reads is None or reads.caught_up(state.cache.required_position(route, account_id)):
            state.cache.store(key, body)
    else:
        telemetry.cache_hits.add(1, {"route": route})
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["Cache-Control"] = "private, no-cache"
    for header in state.settings.vary_headers:
        response.vary.add(header)
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    return t.cast(Response, response.make_conditional(request))


def wants_csv(requested: object) -> bool:
    """``format=csv`` (``requested``), or no ``format``
    and an ``Accept`` that prefers ``text/csv`` to JSON."""
    if requested is not None:
        return requested == "csv"
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"


def neutralise(cell: object) -> object:
    """A text cell that would start a formula gets a leading ``'`` (OWASP); numbers stay numbers."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_response(table: CsvTable) -> Response:
    """Stream a CSV with a header row (RFC 4180: CRLF rows, a cell holding CR or LF quoted), cells
    neutralised.

    The first row is produced now, so a failing first query is still a JSON error, not a cut stream.
    """
    neutralised = ([neutralise(cell) for cell in row] for row in table.rows)
    first = next(neutralised, None)

    def generate() -> t.Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        try:
            rows: t.Iterable[t.Sequence[object]] = itertools.chain(
                [table.header], [] if first is None else [first], neutralised
            )
            for row in rows:
                writer.writerow(row)
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        except Exception:
            logger.error(
                "CSV export %s failed mid-stream; the file is incomplete",
                table.filename,
                exc_info=True,
            )
            raise

    response = current_app.response_class(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{table.filename}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def report_view(route: Route, args: Schema, body: Schema) -> t.Callable[..., Response]:
    """A report route: authorize (the role of its role
    key, its own limit), validate, then JSON or CSV."""

    def view(**path: str) -> Response:
        state = current_state()
        identity = state.authorize(route.role_key, limit=route.endpoint)
        if route.source != "query":
            load_query(NoArgsSchema())  # a write or a path route takes no query parameter either
        if route.source == "json":
            query = load_body(args)
        elif route.source == "path":
            query = t.cast(Args, args.load(path))
        else:
            query = load_query(args)
        parts = query.parts()
        context = ReportContext.start(state, identity.account_id, identity.user_id)
        if not route.cached:
            result = route.compute(context, query)
            if route.status == 204:
                response = current_app.response_class(status=204)
                del response.headers["Content-Type"]
            else:
                text = json.dumps(
                    body.dump(result),
                    allow_nan=False,
                    separators=(",", ":"),
                    sort_keys=True,
                    default=str,
                )
                response = current_app.response_class(text + "\n", mimetype="application/json")
                response.status_code = route.status
            response.headers["Cache-Control"] = "private, no-store"
            return response
        if route.csv is not None and wants_csv(parts.get("format")):
            with telemetry.report_span(
                route.endpoint, state.prepared().backend.name, {"format": "csv"}
            ):
                return csv_response(route.csv(context, query))
        key = {**parts, "account_id": identity.account_id}
        if route.per_user:
            key["user"] = str(identity.user_id)
        return cached_json(
            route.endpoint, key, lambda: body.dump(route.compute(context, query)), context.reads
        )

    return view


def _by_path(routes: t.Iterable[Route]) -> dict[str, list[Route]]:
    grouped: dict[str, list[Route]] = {}
    for route in routes:
        grouped.setdefault(route.path, []).append(route)
    return grouped


def _refuse(allowed: t.Sequence[str], why: str) -> t.Callable[[], Response]:
    """A view that answers a method the route will never take with a JSON ``405`` and ``Allow``."""

    def view() -> Response:
        raise MethodNotAllowed(request.method, allowed, why)

    return view


def create_blueprint(state: AnalyticsState) -> Blueprint:
    """A fresh blueprint per registration, so that apps never share views, schemas or state."""
    blueprint = Blueprint("flowpilot_analytics", __name__, cli_group="flowpilot-analytics")
    for route in reports.REPORT_ROUTES:
        blueprint.add_url_rule(
            f"{BASE}/{route.path}",
            endpoint=route.endpoint,
            view_func=report_view(route, route.args_schema(state), route.body()),
            methods=list(route.methods),
        )
    for path, routes in _by_path(reports.REPORT_ROUTES).items():
        refused = sorted({method for route in routes for method in route.refused})
        if refused:
            allowed = sorted({method for route in routes for method in route.methods})
            why = next(route.refused_why for route in routes if route.refused)
            blueprint.add_url_rule(
                f"{BASE}/{path}",
                endpoint=f"refused_{path.replace('/', '_').replace('-', '_')}",
                view_func=_refuse(allowed, why),
                methods=refused,
            )
    document = functools.cache(lambda: build_document(state))

    def openapi() -> Response:
        load_query(NoArgsSchema())  # the one rule: this route takes no query parameter either
        return jsonify(document())

    blueprint.add_url_rule(f"{BASE}/openapi.json", "openapi", openapi, methods=["GET"])
    if state.settings.dashboard:
        register_dashboard(blueprint, state, BASE)
    return blueprint
