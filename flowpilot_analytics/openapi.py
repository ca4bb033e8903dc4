"""The OpenAPI 3 document of the plugin's routes, generated from the marshmallow schemas with apispec."""

from __future__ import annotations

import typing as t

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from .schemas import REPORT_ROUTES, ErrorEnvelope

try:
    from importlib.metadata import version as _version

    VERSION = _version("flowpilot_analytics")
except Exception:  # pragma: no cover - running from a source tree without metadata
    VERSION = "0"

_ERRORS = {
    "400": "A query parameter is not valid (`invalid_parameter`), or group_by=engineer on a host without a "
    "claimer column (`unsupported_grouping`).",
    "401": "Nobody is signed in (`unauthenticated`).",
    "403": "The role is below the route's minimum or unknown (`forbidden`, `unknown_role`).",
    "500": "A table or column is missing or unreadable (`schema_missing`, naming it and the command that "
    "checks the schema), or an unexpected failure (`internal_error`); logged, no internals in the body.",
    "503": "The database failed (`database_unavailable`); logged.",
}


def _error(description: str) -> dict[str, t.Any]:
    return {"description": description, "content": {"application/json": {"schema": "ErrorEnvelope"}}}


def _operation(summary: str, args: type, body: str, minimum_role: str) -> dict[str, t.Any]:
    responses: dict[str, t.Any] = {
        "200": {
            "description": "The report.",
            "content": {"application/json": {"schema": body}},
            "headers": {"ETag": {"schema": {"type": "string"}}, "Cache-Control": {"schema": {"type": "string"}}},
        },
        "304": {"description": "Not modified: the `If-None-Match` ETag still matches."},
        **{code: _error(text) for code, text in _ERRORS.items()},
        "429": {
            **_error("Over the per-user rate limit (`rate_limited`)."),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
    }
    return {
        "get": {
            "summary": summary,
            "description": f"Needs the role `{minimum_role}` or above.",
            "parameters": [{"in": "query", "schema": args}],
            "responses": responses,
        }
    }


def build_document(url_prefix: str, route_roles: t.Mapping[str, str]) -> dict[str, t.Any]:
    """The whole document for one app's registration (its URL prefix and role minimums)."""
    spec = APISpec(
        title="flowpilot_analytics",
        version=VERSION,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": 'Escalation and PSA analytics. Errors are `{"error": {"code", "message", "details"?}}`.'},
    )
    components: list[type[Schema]] = [report.body for report in REPORT_ROUTES] + [ErrorEnvelope]
    for schema in components:
        spec.components.schema(schema.__name__, schema=schema)
    base = url_prefix.rstrip("/") + "/analytics/flowpilot"
    for report in REPORT_ROUTES:
        operation = _operation(report.summary, report.args, report.body.__name__, route_roles[report.role_route])
        if report.csv:
            operation["get"]["responses"]["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
        spec.path(path=f"{base}/{report.path}", operations=operation)
    spec.path(
        path=f"{base}/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3 document", "content": {"application/json": {}}}},
            }
        },
    )
    return spec.to_dict()
