"""The report routes are declared once (:data:`~flowpilot_analytics.reports.REPORT_ROUTES`): every
declared route is served, role-gated and rate-limited, documented and (when it names one) a command;
adding a report takes one declaration and its compute; a report reads the clock once."""

from __future__ import annotations

import json
import re
import typing as t
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from flask import Flask
from marshmallow import Schema, fields

from flowpilot_analytics import registration, reports, schemas
from flowpilot_analytics.baselines import NewSample
from flowpilot_analytics.reports import REPORT_ROUTES, ReportContext, ReportRoute

from . import factories as f
from .helpers import BASE, OPENAPI, as_user
from .host import NOW, db

ROLES = ("viewer", "engineer", "team_admin", "admin")
ONE_PER_MINUTE = dict.fromkeys({route.limit[0] for route in REPORT_ROUTES}, "1 per minute")


def _url(route: ReportRoute[t.Any]) -> str:
    return f"{BASE}/{route.path}"


#: A valid body for each declared write route.
BODIES = {
    "add_business_hours": {
        "timezone": "UTC",
        "effective_from": "2026-01-01",
        "weekly": {"mon": [["09:00", "17:00"]]},
    },
    "add_baseline": {"samples": [{"seconds": 600.0, "measured_at": "2026-06-01T10:00:00Z"}]},
}
SUCCESS = {route.endpoint: route.status for route in REPORT_ROUTES}


def _call(client: t.Any, route: ReportRoute[t.Any], headers: dict[str, str] | None = None) -> t.Any:
    """One request of the route's own method (a write sends its valid body)."""
    method = route.methods[0]
    if method == "GET":
        return client.get(_url(route), headers=headers)
    if route.source == "path":  # a sample of account 1 to delete, stored without a request
        sample = NewSample(600.0, NOW - timedelta(days=1))
        with client.application.app_context():
            added, _ = registration(client.application).add_samples(1, [sample], NOW, None)
        path = f"{BASE}/{route.path}".replace("<sample_id>", str(added[0].id))
        return client.open(path, method=method, headers=headers)
    return client.open(_url(route), method=method, json=BODIES[route.endpoint], headers=headers)


@pytest.mark.parametrize("route", REPORT_ROUTES, ids=lambda route: route.endpoint)
def test_every_declared_route_is_role_gated(
    app: Flask, client: t.Any, route: ReportRoute[t.Any]
) -> None:
    minimum = registration(app).settings.route_roles[route.role_key]
    assert minimum != ROLES[0]  # so that some role is below it
    below = ROLES[ROLES.index(minimum) - 1]
    refused = _call(client, route, as_user(1, below))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert _call(client, route, as_user(1, minimum)).status_code == SUCCESS[route.endpoint]
    assert _call(client, route).status_code == 401


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_LIMITS": ONE_PER_MINUTE}])
@pytest.mark.parametrize("route", REPORT_ROUTES, ids=lambda route: route.endpoint)
def test_every_declared_route_is_limited_by_its_limit_key(
    client: t.Any, route: ReportRoute[t.Any]
) -> None:
    admin = as_user(1, "admin")
    assert _call(client, route, admin).status_code == SUCCESS[route.endpoint]
    limited = _call(client, route, admin)
    assert limited.status_code == 429 and limited.get_json()["error"]["code"] == "rate_limited"
    assert (
        _call(client, route, as_user(1, "admin", user=2)).status_code == SUCCESS[route.endpoint]
    )  # per user


@pytest.mark.parametrize(
    "app_config", [{"FLOWPILOT_ANALYTICS_LIMITS": {"escalations": "1 per minute"}}]
)
def test_routes_sharing_a_limit_key_are_counted_apart(client: t.Any) -> None:
    sharing = [route for route in REPORT_ROUTES if route.limit[0] == "escalations"]
    assert {route.endpoint for route in sharing} == {"escalations", "escalation_trend"}
    for route in sharing:
        assert [client.get(_url(route), headers=as_user(1)).status_code for _ in range(2)] == [
            200,
            429,
        ]


def test_declared_defaults_are_the_limits(app: Flask) -> None:
    limits = {route: str(item) for route, item in registration(app).limits.items.items()}
    assert limits == {
        "escalations": "120 per 1 minute",
        "escalation_trend": "120 per 1 minute",
        "escalation_handoffs": "120 per 1 minute",
        "psa_metrics": "15 per 1 minute",
        "business_hours": "60 per 1 minute",
        "add_business_hours": "30 per 1 minute",
        "baseline": "60 per 1 minute",
        "add_baseline": "30 per 1 minute",
        "delete_baseline": "30 per 1 minute",
        "savings": "30 per 1 minute",
    }


def test_a_limit_key_no_route_declares_is_refused_at_init_app(make_app: t.Any) -> None:
    known = (
        "known: ['baseline', 'baseline_write', 'business_hours', 'business_hours_write', "
        "'escalation_handoffs', 'escalations', 'psa_metrics', 'savings']"
    )
    with pytest.raises(ValueError, match=re.escape(f"unknown keys ['escalation']; {known}")):
        make_app(FLOWPILOT_ANALYTICS_LIMITS={"escalation": "5 per minute"})


def test_every_declared_route_is_documented_and_every_command_exists(
    app: Flask, client: t.Any
) -> None:
    document = client.get(OPENAPI).get_json()
    documented = {_url(route).replace("<", "{").replace(">", "}") for route in REPORT_ROUTES}
    assert set(document["paths"]) == documented | {OPENAPI}
    for route in REPORT_ROUTES:
        path = _url(route).replace("<", "{").replace(">", "}")
        operation = document["paths"][path][route.methods[0].lower()]
        assert operation["summary"] == route.summary
        content = operation["responses"][str(route.status)].get("content", {})
        assert ("text/csv" in content) == (route.csv is not None)
    declared = {route.command for route in REPORT_ROUTES if route.command}
    assert declared == {"escalations", "escalation-trend", "psa-metrics", "savings"}
    listed = app.test_cli_runner().invoke(args=["flowpilot-analytics", "--help"]).output
    assert all(f"  {command} " in listed for command in declared)


# -- adding a report: one declaration and its compute ----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Claimed:
    period: str
    window_end: datetime
    n_handoffs_claimed: int


class ClaimedBody(Schema):
    period = fields.String(required=True)
    window_end = fields.AwareDateTime(format="iso", required=True)
    n_handoffs_claimed = fields.Integer(required=True)


def claimed(ctx: ReportContext, query: schemas.EscalationQuery) -> Claimed:
    window = query.span.window(ctx.now)
    result = reports.escalation_report(ctx, query)
    return Claimed(
        period=window.period, window_end=window.end, n_handoffs_claimed=result.n_handoffs_claimed
    )


CLAIMED = ReportRoute(
    path="escalations/claimed",
    endpoint="escalations_claimed",
    role_key="psa_metrics",
    limit=("escalations_claimed", "2 per minute"),
    args=schemas.EscalationArgs,
    body=ClaimedBody,
    compute=claimed,
    summary="Claimed handoffs",
    command="escalations-claimed",
)


def test_a_new_report_is_one_declaration_and_its_compute(
    monkeypatch: pytest.MonkeyPatch, make_app: t.Any
) -> None:
    monkeypatch.setattr(reports, "REPORT_ROUTES", (*REPORT_ROUTES, CLAIMED))
    app = make_app()
    with app.app_context():
        db.create_all(bind_key=None)
        try:
            f.escalation(1, f.at(days=1), 30)
            f.commit()
            client = app.test_client()
            url = _url(CLAIMED)
            admin = as_user(1, "team_admin")
            assert client.get(url, headers=as_user(1, "engineer")).status_code == 403
            body = client.get(url + "?period=7d", headers=admin).get_json()
            assert body == {"period": "7d", "window_end": NOW.isoformat(), "n_handoffs_claimed": 1}
            assert [client.get(url, headers=admin).status_code for _ in range(2)] == [200, 429]
            assert url in client.get(OPENAPI).get_json()["paths"]
            printed = app.test_cli_runner().invoke(
                args=[
                    "flowpilot-analytics",
                    "escalations-claimed",
                    "--account",
                    "1",
                    "--period",
                    "7d",
                    "--json",
                ]
            )
            assert printed.exit_code == 0, printed.output
            assert json.loads(printed.output) == body
        finally:
            db.session.remove()
            db.drop_all(bind_key=None)


# -- one clock reading per report ------------------------------------------------------------------


def test_the_window_and_the_target_share_one_now(make_app: t.Any) -> None:
    """A claim 100 s old with no action is pending against a 300 s target at the window's end; had
    the target read the clock again (an hour later here), it would count as breached."""
    readings: list[datetime] = []

    def clock() -> datetime:
        readings.append(NOW if not readings else NOW + timedelta(hours=1))
        return readings[-1]

    app = make_app(clock=clock)
    with app.app_context():
        db.create_all(bind_key=None)
        try:
            f.escalation(1, f.at(100))
            f.commit()
            body = (
                app.test_client()
                .get(f"{BASE}/escalations?target_seconds=300", headers=as_user(1))
                .get_json()
            )
            assert body["window_end"] == NOW.isoformat()
            assert (body["target"]["n_pending"], body["target"]["n_breached"]) == (1, 0)
            assert len(readings) == 1
        finally:
            db.session.remove()
            db.drop_all(bind_key=None)
