"""The demo host starts, seeds itself (acme's business hours included) and answers with its demo
credentials."""

from __future__ import annotations

import re
import typing as t
from datetime import date, datetime, timedelta, timezone

from flowpilot_analytics import registration

from .helpers import load_demo_module


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


API = "/api/v1/analytics/flowpilot/"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_demo_account_has_business_hours(demo: t.Any, tmp_path: t.Any) -> None:
    """acme's calendar: 09:00-17:00 New York on weekdays, US holidays, in effect before any demo
    data; globex and initech have none; a restart on the same database adds no second version."""
    client = demo.test_client()
    body = client.get(API + "business-hours", headers=bearer("acme-engineer")).get_json()
    (version,) = body["versions"]
    assert body["in_effect"] == version
    assert version["timezone"] == "America/New_York"
    assert version["weekly"] == {
        **{day: [["09:00", "17:00"]] for day in WEEKDAYS},
        "sat": [],
        "sun": [],
    }
    assert version["holiday_calendar"] == {"country": "US", "subdivision": None}
    today = datetime.now(timezone.utc).date()
    assert {f"{today.year}-07-04", f"{today.year}-12-25"} <= set(version["holidays"])
    assert date.fromisoformat(version["effective_from"]) <= today - timedelta(days=91)
    for other in ("globex-engineer", "initech-engineer"):
        listed = client.get(API + "business-hours", headers=bearer(other)).get_json()
        assert listed == {"versions": [], "in_effect": None}

    module = load_demo_module("app")
    again = module.create_app(f"sqlite:///{tmp_path / 'demo.sqlite'}")
    try:
        listed = again.test_client().get(API + "business-hours", headers=bearer("acme-engineer"))
        assert [v["id"] for v in listed.get_json()["versions"]] == [version["id"]]
    finally:
        with again.app_context():
            module.db.engine.dispose()


def test_the_business_clock_gives_other_figures(demo: t.Any) -> None:
    client = demo.test_client()
    acme = bearer("acme-engineer")
    listed = client.get(API + "business-hours", headers=acme).get_json()
    used = {"version_ids": [v["id"] for v in listed["versions"]]}

    wall = client.get(API + "escalations?period=30d", headers=acme).get_json()
    answer = client.get(API + "escalations?period=30d&clock=business", headers=acme)
    assert answer.status_code == 200
    business = answer.get_json()
    assert (wall["clock"], wall["business_hours"]) == ("wall", None)
    assert (business["clock"], business["business_hours"]) == ("business", used)
    # the same handoffs, measured in fewer seconds: after-hours time no longer counts
    assert business["n_handoffs_claimed"] == wall["n_handoffs_claimed"] > 50
    assert business["avg_seconds"] < wall["avg_seconds"]
    assert business["median_seconds"] < wall["median_seconds"]
    assert business["target"]["n_within"] > wall["target"]["n_within"]
    for figures in (wall, business):
        target = figures["target"]
        low, high = target["attainment_interval"]
        assert 0 <= low <= target["attainment"] <= high <= 1

    query = "escalations/trend?period=30d&tz=America/New_York&interval=week"
    wall_trend = client.get(API + query, headers=acme).get_json()
    business_trend = client.get(API + query + "&clock=business", headers=acme).get_json()
    assert (business_trend["clock"], business_trend["business_hours"]) == ("business", used)
    assert [(p["start"], p["n_handoffs_claimed"]) for p in business_trend["points"]] == [
        (p["start"], p["n_handoffs_claimed"]) for p in wall_trend["points"]
    ]
    assert [p["avg_seconds"] for p in business_trend["points"]] != [
        p["avg_seconds"] for p in wall_trend["points"]
    ]

    page = client.get(
        API + "escalations/handoffs?period=30d&limit=500&clock=business", headers=acme
    ).get_json()
    assert (page["clock"], page["business_hours"]) == ("business", used)
    timed = [i for i in page["items"] if i["seconds"] is not None]
    assert timed and all(i["seconds"] <= i["wall_seconds"] + 1e-6 for i in timed)
    assert any(i["seconds"] < i["wall_seconds"] for i in timed)
    assert any(i["seconds"] == i["wall_seconds"] > 0 for i in timed)  # inside office hours


def test_without_business_hours_the_business_clock_is_a_409(demo: t.Any) -> None:
    client = demo.test_client()
    globex = bearer("globex-engineer")
    for route in ("escalations", "escalations/trend", "escalations/handoffs"):
        refused = client.get(f"{API}{route}?clock=business", headers=globex)
        assert refused.status_code == 409, route
        assert refused.get_json()["error"]["code"] == "no_business_hours"
        assert client.get(f"{API}{route}?clock=wall", headers=globex).status_code == 200


def test_the_page_has_the_clock_switch_and_no_inline_script(demo: t.Any) -> None:
    with demo.test_client().get("/") as page:  # a file response: closed, not left to the GC
        html = page.get_data(as_text=True)
    assert 'id="clock-switch"' in html
    assert 'data-clock="wall"' in html and 'data-clock="business"' in html
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/dashboard.js">']
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)  # no inline event handlers


def test_the_demo_account_has_a_stopwatch_baseline(demo: t.Any, tmp_path: t.Any) -> None:
    """acme's 25 stopwatch samples of the old, verbal handoff: roughly 10-40 minutes, measured
    before the demo's sessions, most with a note; globex and initech have none; a restart on the
    same database adds none."""
    client = demo.test_client()
    admin = bearer("acme-team_admin")
    listed = client.get(API + "escalations/baseline", headers=admin)
    assert listed.status_code == 200
    samples = listed.get_json()["samples"]
    assert len(samples) == 25
    minutes = sorted(s["seconds"] / 60 for s in samples)
    assert minutes[0] >= 8 and minutes[-1] <= 50 and 10 <= minutes[12] <= 30
    measured = [datetime.fromisoformat(s["measured_at"]) for s in samples]
    assert measured == sorted(measured)  # oldest first
    assert all(m.utcoffset() == timedelta(0) for m in measured)
    # over a few weeks, before the first day of the demo's sessions
    trend = client.get(API + "psa-metrics?period=90d&tz=UTC", headers=admin).get_json()
    first_day = min(date.fromisoformat(d["date"]) for d in trend["daily_trend"] if d["sessions"])
    assert measured[-1].date() < first_day - timedelta(days=5)
    assert timedelta(days=14) < measured[-1] - measured[0] < timedelta(days=28)
    assert sum(s["note"] is not None for s in samples) > 15
    module = load_demo_module("app")
    assert {s["measured_by"] for s in samples} == {str(module.TOKENS["acme-team_admin"].user_id)}
    for other in ("globex-team_admin", "initech-team_admin"):
        assert client.get(API + "escalations/baseline", headers=bearer(other)).get_json() == {
            "samples": []
        }

    again = module.create_app(f"sqlite:///{tmp_path / 'demo.sqlite'}")
    try:
        relisted = again.test_client().get(API + "escalations/baseline", headers=admin)
        assert relisted.get_json()["samples"] == samples
    finally:
        with again.app_context():
            module.db.engine.dispose()


def consistent(body: dict[str, t.Any]) -> None:
    """A claim exactly when the interval of the difference in medians excludes 0, else a reason."""
    difference = body["difference"]
    if difference is None:
        assert body["claim"] is None and body["extrapolated"] is None and body["reason"]
        return
    low, high = difference["median_interval"]
    assert low <= high
    if low <= 0 <= high:
        assert body["claim"] is None and "includes 0" in body["reason"]
    else:
        assert body["reason"] is None and body["claim"]
        assert "minutes recovered" not in body["claim"]


def test_savings_claim_for_acme_and_reasons_for_the_others(demo: t.Any) -> None:
    client = demo.test_client()
    acme = bearer("acme-team_admin")
    for period in ("7d", "30d", "90d"):
        answer = client.get(API + f"escalations/savings?period={period}", headers=acme)
        assert answer.status_code == 200, period
        body = answer.get_json()
        consistent(body)
        assert body["baseline"]["n"] == 25
        # the in-product side is the escalation report's, on the wall clock
        wall = client.get(API + f"escalations?period={period}", headers=acme).get_json()
        assert body["in_product"]["n"] == wall["n_handoffs_with_action"]
        assert body["in_product"]["median_seconds"] == wall["median_seconds"]
        assert body["metric_definition"] == wall["metric_definition"]
    # about 19 minutes by stopwatch against about a minute and a half: the data support a claim
    body = client.get(API + "escalations/savings?period=30d", headers=acme).get_json()
    low, high = body["difference"]["median_interval"]
    assert 0 < low <= body["difference"]["median_seconds"] <= high
    assert body["claim"] and body["reason"] is None
    assert body["extrapolated"]["handoffs"] == body["in_product"]["n"]
    # the business clock does not apply: savings are always on the wall clock
    refused = client.get(API + "escalations/savings?period=30d&clock=business", headers=acme)
    assert refused.status_code == 400

    for other in ("globex-team_admin", "initech-admin"):
        body = client.get(API + "escalations/savings?period=30d", headers=bearer(other)).get_json()
        consistent(body)
        assert body["baseline"] == {
            "n": 0,
            "median_seconds": None,
            "mean_seconds": None,
            "first_measured_at": None,
            "last_measured_at": None,
        }
        assert body["claim"] is None and body["difference"] is None
        assert "needs at least 20 baseline samples; has 0" in body["reason"]
    # savings follow psa_metrics: team admins and admins, not engineers
    engineer = client.get(API + "escalations/savings", headers=bearer("acme-engineer"))
    assert engineer.status_code == 403


def test_the_page_has_the_savings_card(demo: t.Any) -> None:
    with demo.test_client().get("/") as page:
        html = page.get_data(as_text=True)
    assert 'id="savings"' in html and "Savings, measured" in html
    definition = re.search(r'id="savings-definition">(.*?)</p>', html, re.DOTALL)
    assert definition and "NOT 'minutes recovered'" in definition.group(1)
    assert "extrapolated" in definition.group(1)


def test_the_demo_sessions_belong_to_named_clients(demo: t.Any) -> None:
    """Each account's sessions are spread over its few clients, a small share without one; the host
    lists them (ids from the data, names from its own map) for the page's picker."""
    module = load_demo_module("app")
    client = demo.test_client()
    for account, name in module.ACCOUNTS.items():
        admin = bearer(f"{name}-team_admin")
        listed = client.get("/demo/clients", headers=admin).get_json()
        names = module.CLIENTS[account]
        assert listed == [{"id": i, "name": names[i]} for i in sorted(names)]
        body = client.get(API + "psa-metrics?period=90d&group_by=client", headers=admin)
        assert body.status_code == 200
        groups = {g["client"]: g["funnel"]["sessions"] for g in body.get_json()["groups"]}
        assert list(groups) == [*sorted(names), None]
        total = body.get_json()["funnel"]["sessions"]
        assert sum(groups.values()) == total
        assert 0 < groups[None] < 0.2 * total  # a small share without a client
        assert all(groups[i] > 0 for i in names)
    assert client.get("/demo/clients").status_code == 401


def test_client_filters_every_route_and_the_clients_add_up(demo: t.Any) -> None:
    """``client=`` answers 200 on the escalation routes and psa-metrics; each client's figures equal
    its ``group_by=client`` group, and the clients plus the sessions without one add up to the
    account's figures."""
    module = load_demo_module("app")
    client = demo.test_client()
    for account, name in module.ACCOUNTS.items():
        admin = bearer(f"{name}-team_admin")
        everyone = client.get(API + "escalations?period=30d&group_by=client", headers=admin)
        assert everyone.status_code == 200
        body = everyone.get_json()
        groups = {g["client"]: g for g in body["groups"]}
        psa_all = client.get(API + "psa-metrics?period=30d&group_by=client", headers=admin)
        psa_groups = {g["client"]: g for g in psa_all.get_json()["groups"]}
        # the sessions without a client (client= cannot ask for them): their group
        claimed = groups[None]["n_handoffs_claimed"] if None in groups else 0
        sessions = psa_groups[None]["funnel"]["sessions"]
        entries = psa_groups[None]["time_entries"]["count"]
        for client_id in module.CLIENTS[account]:
            query = f"period=30d&client={client_id}"
            alone = client.get(API + f"escalations?{query}", headers=admin)
            assert alone.status_code == 200, (name, client_id)
            figures = alone.get_json()
            group = groups.get(client_id)
            if group is None:  # no handoff of that client in the window
                assert figures["n_handoffs_claimed"] == 0
            else:
                for key in ("n_handoffs_claimed", "n_handoffs_with_action", "median_seconds"):
                    assert figures[key] == group[key], (name, client_id, key)
                assert figures["target"] == group["target"]
            claimed += figures["n_handoffs_claimed"]
            trend = client.get(API + f"escalations/trend?{query}&tz=UTC", headers=admin)
            assert trend.status_code == 200
            points = trend.get_json()["points"]
            assert sum(p["n_handoffs_claimed"] for p in points) == figures["n_handoffs_claimed"]
            page = client.get(API + f"escalations/handoffs?{query}&limit=500", headers=admin)
            assert page.status_code == 200
            assert len(page.get_json()["items"]) == figures["n_handoffs_claimed"]
            csv = client.get(API + f"escalations/handoffs?{query}&format=csv", headers=admin)
            assert csv.status_code == 200
            assert len(csv.get_data(as_text=True).splitlines()) - 1 == figures["n_handoffs_claimed"]
            psa = client.get(API + f"psa-metrics?{query}", headers=admin)
            assert psa.status_code == 200
            assert psa.get_json()["funnel"] == psa_groups[client_id]["funnel"]
            sessions += psa.get_json()["funnel"]["sessions"]
            entries += psa.get_json()["time_entries"]["count"]
        assert claimed == body["n_handoffs_claimed"] > 0, name
        assert sessions == psa_all.get_json()["funnel"]["sessions"] > 0, name
        assert entries == psa_all.get_json()["time_entries"]["count"], name
    # another account's client is nobody's here
    other = client.get(API + "escalations?period=30d&client=201", headers=bearer("acme-engineer"))
    assert other.status_code == 200 and other.get_json()["n_handoffs_claimed"] == 0


def test_a_demo_database_from_before_clients_gets_them(tmp_path: t.Any) -> None:
    """A demo database made before ``ai_sessions.client_id`` still starts: the column (and its
    index) is added and the sessions get the same clients as a fresh seed gives them."""
    import sqlalchemy as sa

    module = load_demo_module("app")
    uri = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    first = module.create_app(uri)
    with first.app_context():
        engine = module.db.engine
        with engine.begin() as connection:
            fresh = connection.execute(sa.text("SELECT id, client_id FROM ai_sessions")).all()
            connection.execute(sa.text("DROP INDEX ix_ai_sessions_account_client_created"))
            connection.execute(sa.text("ALTER TABLE ai_sessions DROP COLUMN client_id"))
        engine.dispose()
    assert {row.client_id for row in fresh} >= {101, 201, 301, None}
    again = module.create_app(uri)
    try:
        with again.app_context():
            engine = module.db.engine
            with engine.connect() as connection:
                upgraded = connection.execute(
                    sa.text("SELECT id, client_id FROM ai_sessions")
                ).all()
            indexes = {i["name"] for i in sa.inspect(engine).get_indexes("ai_sessions")}
        assert sorted(upgraded) == sorted(fresh)
        assert "ix_ai_sessions_account_client_created" in indexes
        answer = again.test_client().get(
            API + "escalations?period=30d&client=101", headers=bearer("acme-engineer")
        )
        assert answer.status_code == 200 and answer.get_json()["n_handoffs_claimed"] > 0
    finally:
        with again.app_context():
            module.db.engine.dispose()


def test_the_page_has_the_client_picker_and_the_by_client_table(demo: t.Any) -> None:
    with demo.test_client().get("/") as page:
        html = page.get_data(as_text=True)
    assert re.search(r'<select id="client"><option value="">All clients</option></select>', html)
    assert 'id="by-client"' in html and ">By client" in html
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/dashboard.js">']
    with demo.test_client().get("/static/dashboard.js") as script:
        js = script.get_data(as_text=True)
    # the client names come from the host's data: written as text, never as markup
    by_client = js[
        js.index("async function loadByClient") : js.index("function drawEscalationTrend")
    ]
    picker = js[js.index("async function loadClients") : js.index("async function start")]
    for part in (by_client, picker):
        assert "innerHTML" not in part and "textContent" in part
