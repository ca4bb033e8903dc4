"""The OpenAPI 3 document of the plugin's routes, generated from the route declarations and their
marshmallow schemas with apispec."""

from __future__ import annotations

import re
import typing as t

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import make_schema_key, resolve_schema_instance
from apispec.ext.marshmallow.field_converter import FieldConverterMixin
from marshmallow import Schema, fields

from . import reports
from .business_hours import iana_zones
from .reports import CALENDAR, Route
from .schemas import ErrorEnvelope, ZoneField

try:
    from importlib.metadata import version as _version

    VERSION = _version("flowpilot_analytics")
except Exception:  # pragma: no cover - running from a source tree without metadata
    VERSION = "0"

#: A part of the document (its JSON objects).
Part = dict[str, object]

_ERRORS = {
    "400": (
        "A query parameter is not valid (`invalid_parameter`), group_by=engineer on a host "
        "without a claimer column (`unsupported_grouping`), or client= on a host whose sessions "
        "have no client column (`unsupported_filter`)."
    ),
    "401": "Nobody is signed in (`unauthenticated`).",
    "403": "The role is below the route's minimum or unknown (`forbidden`, `unknown_role`).",
    "500": (
        "A table or column is missing or unreadable (`schema_missing`, naming it and the command "
        "that checks the schema), or an unexpected failure (`internal_error`); logged, no "
        "internals in the body."
    ),
    "503": "The database failed (`database_unavailable`); logged.",
}
#: A Flask path part ``<name>``, written ``{name}`` in OpenAPI.
_PATH_PART = re.compile(r"<(\w+)>")
#: The IANA zone names, once: every ``tz`` parameter refers to this component.
ZONE = "Zone"


def _zone_reference(
    converter: FieldConverterMixin, field: fields.Field[object], **kwargs: object
) -> Part:
    """apispec attribute function: a :class:`~.schemas.ZoneField` names the ``Zone`` component."""
    if isinstance(field, ZoneField):
        return {"allOf": [{"$ref": f"#/components/schemas/{ZONE}"}]}
    return {}


def _error(description: str) -> Part:
    return {
        "description": description,
        "content": {"application/json": {"schema": "ErrorEnvelope"}},
    }


def _operations(route: Route, minimum_role: str) -> Part:
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
            "clock=business for an account with no business-hours version (`no_business_hours`)."
        )
    responses["429"] = {
        **_error("Over the per-user rate limit (`rate_limited`)."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
    operation: Part = {
        "summary": route.summary,
        "description": f"Needs the role `{minimum_role}` or above.",
        "responses": responses,
    }
    if route.source == "json":
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.args}},
        }
        responses["400"] = _error(
            "The body is not a valid JSON object for this route (`invalid_body`; "
            "`details.fields` names each bad field); nothing was stored."
        )
        responses["415"] = _error(
            "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)."
        )
    elif route.source == "path":
        operation["parameters"] = [{"in": "path", "schema": route.args}]
        del responses["400"]  # a path that names nothing is a 404
        responses["404"] = _error("No such item of the caller's account (`not_found`).")
    elif route.args.__name__ != "NoArgsSchema":
        operation["parameters"] = [{"in": "query", "schema": route.args}]
    return {method.lower(): operation for method in route.methods}


def _refused(route: Route) -> Part:
    """The methods a route refuses for good, documented as ``405``."""
    operation = {
        "summary": f"Not allowed: {route.refused_why}",
        "responses": {"405": _error("Never allowed here (`method_not_allowed`); see `Allow`.")},
    }
    return {method.lower(): operation for method in route.refused}


def build_document(url_prefix: str, route_roles: t.Mapping[str, str]) -> Part:
    """The whole document for one app's registration (its URL prefix and role minimums)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="flowpilot_analytics",
        version=VERSION,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={
            "description": (
                "Escalation and PSA analytics. Errors are "
                '`{"error": {"code", "message", "details"?}}`.'
            )
        },
    )
    assert plugin.converter is not None  # made by APISpec
    plugin.converter.add_attribute_function(_zone_reference)  # type: ignore[no-untyped-call]
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
    base = url_prefix.rstrip("/") + "/analytics/flowpilot"
    paths: dict[str, Part] = {}
    for route in reports.REPORT_ROUTES:
        operations = paths.setdefault(route.path, {})
        operations.update(_operations(route, route_roles[route.role_key]))
        operations.update(_refused(route))
    for path, operations in paths.items():
        spec.path(path=base + "/" + _PATH_PART.sub(r"{\1}", path), operations=operations)
    spec.path(
        path=f"{base}/openapi.json",
        operations={
            "get": {
                "summary": "This document",
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
