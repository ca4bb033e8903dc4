"""The OpenAPI 3 document of the plugin's routes, generated from the route declarations and their
marshmallow schemas with apispec.

The schemas are the single source of every bound: a parameter or a body field documents exactly what
its validators accept (a ``Range`` that leaves out its end says so), and a route whose schema
depends on the app's settings (the drill-down's buckets) is documented from that app's instance.
"""

from __future__ import annotations

import re
import typing as t

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import make_schema_key, resolve_schema_instance
from apispec.ext.marshmallow.field_converter import FieldConverterMixin
from marshmallow import Schema, fields, validate

from . import reports
from .business_hours import iana_zones
from .reports import CALENDAR, Route
from .schemas import ErrorEnvelope, ZoneField

if t.TYPE_CHECKING:
    from .state import AnalyticsState

try:
    from importlib.metadata import version as _version

    VERSION = _version("flowpilot_analytics")
except Exception:  # pragma: no cover - running from a source tree without metadata
    VERSION = "0"

#: A part of the document (its JSON objects).
Part = dict[str, object]

_UNKNOWN_PARAMETER = (
    "a parameter the route does not take (`invalid_parameter`; `details.fields` names each bad or "
    "unknown parameter)"
)
_ERRORS = {
    "400": (
        f"A query parameter is not valid, or {_UNKNOWN_PARAMETER}; group_by=engineer on a host "
        "without a claimer column (`unsupported_grouping`), or client= on a host whose sessions "
        "have no client column (`unsupported_filter`; `details.setting` names the mapping)."
    ),
    "401": (
        "Nobody is signed in (`unauthenticated`; `details` is `{}`), or the host's identity loader "
        "returned an identity without a field (`details.missing`, `details.identity_type`)."
    ),
    "403": (
        "The role is below the route's minimum or unknown (`forbidden`, `unknown_role`; "
        "`details.allowed_roles`)."
    ),
    "500": (
        "A table or column is missing or unreadable (`schema_missing`; `details.table` names it "
        "and `details.command` the command that checks the schema), or an unexpected failure "
        "(`internal_error`; `details` is `{}`); logged, no internals in the body."
    ),
    "503": "The database failed (`database_unavailable`; `details` is `{}`); logged.",
}
#: A Flask path part ``<name>``, written ``{name}`` in OpenAPI.
_PATH_PART = re.compile(r"<(\w+)>")
#: The IANA zone names, once: every ``tz`` parameter refers to this component.
ZONE = "Zone"
#: The name of the security scheme: the host's sign-in (``FLOWPILOT_ANALYTICS_OPENAPI_SECURITY``).
SECURITY = "host"
#: The document's tags, each with its description and the route-role keys of its operations.
TAGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "escalations",
        "Time from an escalation claim to the first action: the report, its trend, and the "
        "handoffs behind it.",
        ("escalations",),
    ),
    ("psa", "Time entries and the documentation funnel of the PSA pushes.", ("psa_metrics",)),
    (
        "business hours",
        "The account's business-hours calendar, which clock=business measures on.",
        ("business_hours", "business_hours_write"),
    ),
    (
        "baseline and savings",
        "The stopwatch baseline of the old process, and the savings claim measured against it.",
        ("baseline", "baseline_write", "savings"),
    ),
    ("openapi", "This document.", ()),
)
#: Each route-role key's tag.
_TAG_OF = {key: name for name, _, keys in TAGS for key in keys}


def _zone_reference(
    converter: FieldConverterMixin, field: fields.Field[object], **kwargs: object
) -> Part:
    """apispec attribute function: a :class:`~.schemas.ZoneField`, or a field whose metadata says
    it holds a zone name, names the ``Zone`` component."""
    if isinstance(field, ZoneField) or field.metadata.get("zone") is True:
        return {"allOf": [{"$ref": f"#/components/schemas/{ZONE}"}]}
    return {}


def _exclusive_bounds(
    converter: FieldConverterMixin, field: fields.Field[object], **kwargs: object
) -> Part:
    """apispec attribute function: a ``Range`` that leaves out its end (``min_inclusive=False``)
    says so with OpenAPI 3.0's ``exclusiveMinimum``/``exclusiveMaximum``; apispec gives only the
    numbers, so ``target_seconds=0`` would read as allowed."""
    found: Part = {}
    for validator in field.validators:
        if not isinstance(validator, validate.Range):
            continue
        if validator.min is not None and not validator.min_inclusive:
            found["exclusiveMinimum"] = True
        if validator.max is not None and not validator.max_inclusive:
            found["exclusiveMaximum"] = True
    return found


def _error(description: str) -> Part:
    return {
        "description": description,
        "content": {"application/json": {"schema": "ErrorEnvelope"}},
    }


def _operations(route: Route, parameters: list[Part], minimum_role: str) -> Part:
    """The operations of one route declaration, ``parameters`` its query or path parameters."""
    content: Part = {"application/json": {"schema": route.body.__name__}}
    if route.csv is not None:
        content["text/csv"] = {"schema": {"type": "string"}}
    descriptions = {201: "Created.", 204: "Done; no body."}
    success: Part = {"description": descriptions.get(route.status, "The report.")}
    if route.status != 204:
        success["content"] = content
    if route.cached:
        success["headers"] = {
            "ETag": {"schema": {"type": "string"}},
            "Cache-Control": {"schema": {"type": "string"}},
        }
    responses: Part = {str(route.status): success}
    if route.cached:
        responses["304"] = {"description": "Not modified: the `If-None-Match` ETag still matches."}
    responses.update({code: _error(text) for code, text in _ERRORS.items()})
    if CALENDAR in route.depends_on:
        responses["409"] = _error(
            "clock=business for an account with no business-hours version (`no_business_hours`; "
            "`details.route`), or a stored version this server cannot read "
            "(`calendar_unreadable`; `details.version_id`)."
        )
    responses["429"] = {
        **_error(
            "Over the per-user rate limit (`rate_limited`; `details.limit`, "
            "`details.retry_after_seconds`)."
        ),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
    operation: Part = {
        "tags": [_TAG_OF[route.role_key]],
        "summary": route.summary,
        "description": (
            f"Needs the role `{minimum_role}` or above. A query parameter not listed here is a "
            "400 that names it."
        ),
        "responses": responses,
    }
    if route.source == "json":
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.args}},
        }
        responses["400"] = _error(
            "The body is not a valid JSON object for this route (`invalid_body`; "
            "`details.fields` names each bad field), or the request has a query parameter, which "
            "this route takes none of (`invalid_parameter`; `details.fields` names it); nothing "
            "was stored."
        )
        responses["415"] = _error(
            "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`; "
            "`details.content_type`)."
        )
    elif route.source == "path":
        operation["parameters"] = parameters
        responses["400"] = _error(
            "The request has a query parameter, which this route takes none of "
            "(`invalid_parameter`; `details.fields` names it)."
        )
        responses["404"] = _error(
            "No such item of the caller's account, or a path that names none (`not_found`; "
            "`details.sample_id`)."
        )
    elif parameters:
        operation["parameters"] = parameters
    return {method.lower(): operation for method in route.methods}


def _refused(route: Route) -> Part:
    """The methods a route refuses for good, documented as ``405`` (with its ``Allow`` header,
    and no sign-in: the refusal comes before any)."""
    allow = {
        "description": "The methods the route takes, e.g. `GET, POST`.",
        "schema": {"type": "string"},
    }
    operation = {
        "tags": [_TAG_OF[route.role_key]],
        "summary": f"Not allowed: {route.refused_why}",
        "security": [],
        "responses": {
            "405": {
                **_error("Never allowed here (`method_not_allowed`; `details.allowed`)."),
                "headers": {"Allow": allow},
            }
        },
    }
    return {method.lower(): operation for method in route.refused}


def build_document(state: AnalyticsState) -> Part:
    """The whole document for one app's registration: its URL prefix, role minimums, sign-in and
    its own instances of the query schemas."""
    settings = state.settings
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="flowpilot_analytics",
        version=VERSION,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={
            "description": (
                "Escalation and PSA analytics. Every error is "
                '`{"error": {"code", "message", "details"}}`, `details` `{}` when there is nothing '
                "more to say. A query parameter a route does not take is a 400 "
                "(`invalid_parameter`) whose `details.fields` names it, on every route."
            )
        },
        security=[{SECURITY: []}],
    )
    assert plugin.converter is not None  # made by APISpec
    for function in (_zone_reference, _exclusive_bounds):
        plugin.converter.add_attribute_function(function)  # type: ignore[no-untyped-call]
    spec.components.security_scheme(SECURITY, dict(settings.openapi_security))
    for name, description, _ in TAGS:
        spec.tag({"name": name, "description": description})
    zones = {
        "type": "string",
        "enum": sorted(iana_zones()),
        "description": "An IANA time zone name.",
    }
    spec.components.schema(ZONE, zones)
    components: list[type[Schema]] = [
        *(route.body for route in reports.REPORT_ROUTES),
        ErrorEnvelope,
    ]
    for schema in dict.fromkeys(components):  # each once, in order
        if make_schema_key(resolve_schema_instance(schema)) not in plugin.converter.refs:
            spec.components.schema(schema.__name__, schema=schema)
    base = settings.url_prefix.rstrip("/") + "/analytics/flowpilot"
    paths: dict[str, Part] = {}
    for route in reports.REPORT_ROUTES:
        operations = paths.setdefault(route.path, {})
        # the app's own instance (its buckets), converted here: apispec copies what it is given,
        # and an app-bound schema holds the app's state
        parameters: list[Part] = (
            []
            if route.source == "json"
            else plugin.converter.schema2parameters(route.args_schema(state), location=route.source)
        )
        minimum = settings.route_roles[route.role_key]
        operations.update(_operations(route, parameters, minimum))
        operations.update(_refused(route))
    for path, operations in paths.items():
        spec.path(path=base + "/" + _PATH_PART.sub(r"{\1}", path), operations=operations)
    spec.path(
        path=f"{base}/openapi.json",
        operations={
            "get": {
                "tags": ["openapi"],
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document",
                        "content": {"application/json": {}},
                    }
                },
            }
        },
    )
    return spec.to_dict()
