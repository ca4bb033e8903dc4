"""The demo host starts, seeds itself (acme's business hours included), answers with its demo
credentials, and serves the plugin's page to a user signed in with the session cookie."""

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


def test_the_demo_pushes_have_technicians_and_a_billable_mix(demo: t.Any) -> None:
    client = demo.test_client()
    body = client.get(
        API + "psa-metrics?period=90d&group_by=technician", headers=bearer("acme-team_admin")
    ).get_json()
    entries = body["time_entries"]
    assert min(entries["billable_minutes"], entries["non_billable_minutes"]) > 0
    assert entries["unclassified_minutes"] > 0
    names = client.get("/demo/technicians", headers=bearer("acme-team_admin")).get_json()
    known = {person["id"] for person in names}
    technicians = [group["technician"] for group in body["groups"]]
    assert set(technicians) - {None} <= known and len(technicians) >= 4 and technicians[-1] is None
    # a live push is the signed-in user's, billable unless the push says otherwise
    pushed = client.post(
        "/demo/sessions/1/push?minutes=30&billable=false", headers=bearer("acme-engineer")
    )
    assert pushed.status_code == 200
    after = client.get(
        API + "psa-metrics?period=90d&group_by=technician", headers=bearer("acme-team_admin")
    ).get_json()
    engineer = next(g for g in after["groups"] if g["technician"] == "11")
    before = next(g for g in body["groups"] if g["technician"] == "11")
    moved = (
        engineer["time_entries"]["non_billable_minutes"]
        - before["time_entries"]["non_billable_minutes"]
    )
    assert moved == 30.0 and engineer["notes_posted"] == before["notes_posted"] + 1


def test_a_demo_database_from_before_the_technician_columns_gets_them(tmp_path: t.Any) -> None:
    import sqlalchemy as sa

    module = load_demo_module("app")
    uri = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    first = module.create_app(uri)
    with first.app_context():
        engine = module.db.engine
        with engine.begin() as connection:
            fresh = connection.execute(
                sa.text("SELECT id, user_id, billable FROM psa_activity_logs")
            ).all()
            for column in ("user_id", "billable"):
                connection.execute(sa.text(f"ALTER TABLE psa_activity_logs DROP COLUMN {column}"))
        engine.dispose()
    again = module.create_app(uri)
    try:
        with again.app_context(), module.db.engine.connect() as connection:
            upgraded = connection.execute(
                sa.text("SELECT id, user_id, billable FROM psa_activity_logs")
            ).all()
        assert sorted(upgraded) == sorted(fresh)
    finally:
        with again.app_context():
            module.db.engine.dispose()


def sign_in(client: t.Any, user: str) -> None:
    """Sign ``user`` in the way the browser does: ``/demo/login`` sets the session cookie."""
    answer = client.get(f"/demo/login?user={user}")
    assert answer.status_code == 302 and answer.headers["Location"] == API


def test_the_demo_signs_in_with_the_session_cookie_and_serves_the_plugins_page(demo: t.Any) -> None:
    client = demo.test_client()
    home = client.get("/")
    html = home.get_data(as_text=True)
    assert home.status_code == 200 and "Content-Security-Policy" in home.headers
    assert "<script" not in html and "style=" not in html  # the demo's own page has neither
    assert 'href="/demo/login?user=acme-admin"' in html and f'href="{API}"' in html
    assert client.get(API).status_code == 401  # nobody signed in yet: the plugin's 401 page
    assert client.get(API + "escalations").status_code == 401

    sign_in(client, "acme-engineer")
    page = client.get(API)
    assert page.status_code == 200 and f'data-api="{API.rstrip("/")}"' in page.get_data(
        as_text=True
    )
    assert client.get(API + "escalations?period=7d").status_code == 200  # the cookie alone
    assert client.get(API + "psa-metrics").status_code == 403  # an engineer: no PSA figures
    # a bearer token still wins over the cookie (curl, the tests' API calls)
    assert client.get(API + "psa-metrics", headers=bearer("acme-team_admin")).status_code == 200

    sign_in(client, "acme-viewer")
    refused = client.get(API)
    assert refused.status_code == 403 and refused.mimetype == "text/html"
    assert "needs the role engineer or above" in refused.get_data(as_text=True)

    assert client.get("/demo/logout").status_code == 302
    assert client.get(API + "escalations").status_code == 401
    assert client.get("/demo/login?user=nobody").status_code == 404
    for elsewhere in ("https://example.com/", "//example.com/", "/\\example.com"):
        answer = client.get("/demo/login", query_string={"user": "acme-admin", "next": elsewhere})
        assert answer.headers["Location"] == API  # never sent off the host
    kept = client.get(
        "/demo/login", query_string={"user": "acme-admin", "next": API + "?period=7d"}
    )
    assert kept.headers["Location"] == API + "?period=7d"
    assert client.get("/static/dashboard.js").status_code == 404  # the demo has no page of its own


def test_the_demo_has_claimed_handoffs_with_no_action_and_unclaimed_ones(demo: t.Any) -> None:
    """Within the page's shortest period: handoffs claimed with no step after the claim (some still
    inside the 15-minute target, some past it) and handoffs nobody has claimed yet."""
    import sqlalchemy as sa

    client = demo.test_client()
    for name in ("acme", "globex"):
        body = client.get(API + "escalations?period=7d", headers=bearer(f"{name}-engineer"))
        figures = body.get_json()
        open_ = figures["n_handoffs_claimed"] - figures["n_handoffs_with_action"]
        target = figures["target"]
        assert open_ >= 3 and target["n_pending"] + target["n_overdue"] == open_
        assert target["n_pending"] >= 1 and target["n_overdue"] >= 2
    since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=7)
    with demo.app_context():
        waiting = registration(demo).db.session.scalar(
            sa.text(
                "SELECT count(*) FROM session_handoffs "
                "WHERE claimed_at IS NULL AND created_at >= :since"
            ),
            {"since": since},
        )
    assert waiting >= 5


def test_the_demos_queue_page_has_the_stat_card_in_two_lines(demo: t.Any) -> None:
    with demo.test_client().get("/demo/queue") as page:
        html = page.get_data(as_text=True)
    assert f'<script src="{API}static/stat-card.js"></script>' in html
    assert '<flowpilot-queue-stat period="7d"></flowpilot-queue-stat>' in html
    assert re.findall(r"<script\b[^>]*>", html) == [f'<script src="{API}static/stat-card.js">']
