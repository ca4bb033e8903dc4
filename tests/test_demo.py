"""The demo host starts, seeds itself and answers with its demo credentials."""

from __future__ import annotations

import typing as t

from flowpilot_analytics import registration


def test_demo_seeds_and_answers(demo: t.Any) -> None:
    client = demo.test_client()
    body = client.get(
        "/api/v1/analytics/flowpilot/escalations?period=30d",
        headers={"Authorization": "Bearer acme-engineer"},
    ).get_json()
    assert body["n_handoffs_claimed"] > 50
    assert body["n_handoffs_with_action"] <= body["n_handoffs_claimed"]
    assert 0 < body["median_seconds"] <= body["p95_seconds"]
    small = client.get(
        "/api/v1/analytics/flowpilot/escalations?period=30d",
        headers={"Authorization": "Bearer initech-admin"},
    ).get_json()
    assert small["n_handoffs_claimed"] < body["n_handoffs_claimed"]
    assert (
        client.get(
            "/api/v1/analytics/flowpilot/escalations",
            headers={"Authorization": "Bearer acme-viewer"},
        ).status_code
        == 403
    )
    assert client.get("/api/v1/analytics/flowpilot/escalations").status_code == 401


def test_demo_psa_metrics_and_live_push(demo: t.Any) -> None:
    client = demo.test_client()
    admin = {"Authorization": "Bearer acme-team_admin"}
    before = client.get(
        "/api/v1/analytics/flowpilot/psa-metrics?period=90d&tz=Europe/Berlin", headers=admin
    )
    body = before.get_json()
    funnel = body["funnel"]
    assert (
        funnel["sessions"]
        > funnel["linked"]
        > funnel["doc_pushed"]
        > funnel["time_entry_logged"]
        > 0
    )
    assert body["time_entries"]["count"] > 0
    pushed = client.post(
        "/demo/sessions/1/push?minutes=30", headers={"Authorization": "Bearer acme-engineer"}
    )
    assert pushed.status_code == 200
    after = client.get(
        "/api/v1/analytics/flowpilot/psa-metrics?period=90d&tz=Europe/Berlin", headers=admin
    )
    assert after.get_json()["time_entries"]["count"] == body["time_entries"]["count"] + 1
    assert (
        after.get_json()["time_entries"]["total_minutes"]
        == body["time_entries"]["total_minutes"] + 30
    )
    assert registration(demo).dead_letters.pending() == []  # rows, not dead letters
