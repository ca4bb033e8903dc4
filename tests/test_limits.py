"""Rate limits: every report route is limited per user, with defaults fit for its cost, and no two
callers share a budget by accident."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask, request

from flowpilot_analytics import Identity, registration

from .helpers import ESCALATIONS, HANDOFFS, PSA, as_user
from .host import db


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_LIMITS": {
                "escalations": "3 per minute",
                "escalation_handoffs": "2 per minute",
            }
        }
    ],
)
def test_every_report_route_has_a_per_user_limit(client: t.Any) -> None:
    assert [client.get(ESCALATIONS, headers=as_user(1)).status_code for _ in range(4)] == [
        200,
        200,
        200,
        429,
    ]
    assert [client.get(HANDOFFS, headers=as_user(1)).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    assert client.get(ESCALATIONS, headers=as_user(1, user=2)).status_code == 200  # per user
    limited = client.get(HANDOFFS, headers=as_user(1))
    assert (
        limited.get_json()["error"]["code"] == "rate_limited"
        and int(limited.headers["Retry-After"]) >= 1
    )


def test_default_limits_are_generous_for_escalations_and_strict_for_psa(app: Flask) -> None:
    limits = {route: str(limit) for route, limit in registration(app).limits.items.items()}
    assert limits["escalations"] == "120 per 1 minute"
    assert limits["escalation_handoffs"] == "120 per 1 minute"
    assert limits["psa_metrics"] == "15 per 1 minute"


def _text_identity() -> Identity | None:
    return Identity(
        user_id=request.headers["X-User"], account_id=request.headers["X-Account"], role="admin"
    )


def test_ids_with_slashes_never_share_a_budget(make_app: t.Any) -> None:
    app = make_app(
        identity_loader=_text_identity,
        FLOWPILOT_ANALYTICS_LIMITS={"psa_metrics": "2 per minute"},
        FLOWPILOT_ANALYTICS_ID_TYPE="string",
    )
    with app.app_context():
        db.create_all(bind_key=None)
    client = app.test_client()
    first = {"X-Account": "a/b", "X-User": "c"}
    second = {"X-Account": "a", "X-User": "b/c"}
    assert [client.get(PSA, headers=first).status_code == 429 for _ in range(3)] == [
        False,
        False,
        True,
    ]
    assert (
        client.get(PSA, headers=second).status_code != 429
    )  # (text ids against integer tables: no 200 here)
    with app.app_context():
        db.drop_all(bind_key=None)
