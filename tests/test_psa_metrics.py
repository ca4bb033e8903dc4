"""GET /api/v1/analytics/flowpilot/psa-metrics: totals, funnel, daily trend, zones, roles, rate
limit."""

from __future__ import annotations

import logging
import random
import typing as t
import uuid
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_limiter import Limiter

from flowpilot_analytics import FlowpilotAnalytics

from . import factories as f
from . import host
from .helpers import PSA, as_user
from .host import NOW, db

URL = PSA
UTC = timezone.utc


def get(
    client: t.Any, account: int = 1, role: str = "team_admin", query: str = "", user: int = 1
) -> t.Any:
    return client.get(URL + query, headers=as_user(account, role, user))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC).replace(tzinfo=None)


def build_funnel_fixture() -> None:
    """Four sessions in the window of account 1 (one outside it), with their activities."""
    full = f.session(1, f.at(days=2), ticket="T-1")  # linked, note, time entry
    noted = f.session(1, f.at(days=3), ticket="T-2")  # linked, note only
    f.session(1, f.at(days=4), ticket="T-3")  # linked, nothing pushed
    unlinked = f.session(1, f.at(days=5))  # note without a ticket: not doc_pushed
    old = f.session(1, f.at(days=45), ticket="T-0")  # outside 30d
    f.activity(1, full.id, "note_posted", f.at(days=2))
    f.activity(1, full.id, "time_entry_posted", f.at(days=1), minutes=30)
    f.activity(
        1, full.id, "time_entry_posted", f.at(days=40), minutes=999
    )  # outside the window: funnel only
    f.activity(1, noted.id, "note_posted", f.at(days=3))
    f.activity(1, unlinked.id, "note_posted", f.at(days=5))
    f.activity(1, unlinked.id, "time_entry_posted", f.at(days=5), minutes=45)
    f.activity(1, old.id, "note_posted", f.at(days=44))
    other = f.session(2, f.at(days=2), ticket="X")  # another account: never counted
    f.activity(2, other.id, "note_posted", f.at(days=2))
    f.activity(2, other.id, "time_entry_posted", f.at(days=2), minutes=500)
    f.commit()


def test_hand_computed_fixture(client: t.Any) -> None:
    build_funnel_fixture()
    response = get(client)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["period"], body["timezone"]) == ("30d", "UTC")
    assert body["window_end"] == "2026-11-15T12:00:00+00:00"
    assert body["window_start"] == "2026-10-16T12:00:00+00:00"
    assert body["time_entries"] == {
        "count": 2,
        "total_minutes": 75.0,
        "total_hours": 1.25,
        "billable_minutes": 0.0,
        "non_billable_minutes": 0.0,
        "unclassified_minutes": 75.0,
    }
    assert body["funnel"] == {
        "sessions": 4,
        "linked": 3,
        "doc_pushed": 2,
        "time_entry_logged": 1,
        "linked_rate": 0.75,
        "doc_pushed_rate": pytest.approx(2 / 3),
        "time_entry_logged_rate": 0.5,
    }
    trend = body["daily_trend"]
    assert [row["date"] for row in trend] == [
        (date(2026, 10, 16) + timedelta(days=i)).isoformat() for i in range(31)
    ]
    by_day = {row["date"]: row for row in trend}
    assert by_day["2026-11-13"] == {
        "date": "2026-11-13",
        "sessions": 1,
        "notes_posted": 1,
        "time_entries": 0,
        "minutes": 0.0,
    }
    assert by_day["2026-11-14"] == {
        "date": "2026-11-14",
        "sessions": 0,
        "notes_posted": 0,
        "time_entries": 1,
        "minutes": 30.0,
    }
    assert by_day["2026-11-10"]["time_entries"] == 1 and by_day["2026-11-10"]["minutes"] == 45.0
    assert sum(row["sessions"] for row in trend) == 4
    assert sum(row["minutes"] for row in trend) == body["time_entries"]["total_minutes"]


def test_empty_account_has_null_rates_and_a_zero_filled_trend(client: t.Any) -> None:
    body = get(client, query="?period=7d").get_json()
    assert body["funnel"] == {
        "sessions": 0,
        "linked": 0,
        "doc_pushed": 0,
        "time_entry_logged": 0,
        "linked_rate": None,
        "doc_pushed_rate": None,
        "time_entry_logged_rate": None,
    }
    assert body["time_entries"] == {
        "count": 0,
        "total_minutes": 0.0,
        "total_hours": 0.0,
        "billable_minutes": 0.0,
        "non_billable_minutes": 0.0,
        "unclassified_minutes": 0.0,
    }
    assert len(body["daily_trend"]) == 8
    assert all(
        row["sessions"] == row["notes_posted"] == row["time_entries"] == 0
        for row in body["daily_trend"]
    )


def test_local_days_in_a_non_utc_zone(client: t.Any) -> None:
    sess = f.session(1, utc(2026, 11, 15, 3, 0), ticket="T")  # 22:00 on the 14th in New York
    f.activity(1, sess.id, "note_posted", utc(2026, 11, 15, 5, 0))  # 00:00 on the 15th
    f.commit()
    body = get(client, query="?period=7d&tz=America/New_York").get_json()
    assert body["timezone"] == "America/New_York"
    trend = {row["date"]: row for row in body["daily_trend"]}
    assert [row["date"] for row in body["daily_trend"]][0] == "2026-11-08"  # 07:00 local on the 8th
    assert [row["date"] for row in body["daily_trend"]][
        -1
    ] == "2026-11-15"  # 07:00 local on the 15th
    assert trend["2026-11-14"]["sessions"] == 1 and trend["2026-11-15"]["sessions"] == 0
    assert trend["2026-11-15"]["notes_posted"] == 1


def test_days_across_a_dst_change(client: t.Any) -> None:
    sess = f.session(1, f.at(days=20), ticket="T")
    for moment in (
        utc(2026, 11, 1, 3, 30),  # 23:30 EDT, 31 Oct
        utc(2026, 11, 1, 4, 30),  # 00:30 EDT, 1 Nov
        utc(2026, 11, 2, 4, 30),  # 23:30 EST, 1 Nov (the 25-hour day)
        utc(2026, 11, 2, 5, 30),
    ):  # 00:30 EST, 2 Nov
        f.activity(1, sess.id, "note_posted", moment)
    f.commit()
    body = get(client, query="?tz=America/New_York").get_json()
    trend = {row["date"]: row["notes_posted"] for row in body["daily_trend"]}
    assert (trend["2026-10-31"], trend["2026-11-01"], trend["2026-11-02"]) == (1, 2, 1)
    dates = [date.fromisoformat(row["date"]) for row in body["daily_trend"]]
    assert all(b - a == timedelta(days=1) for a, b in zip(dates, dates[1:]))
    assert (dates[0], dates[-1]) == (date(2026, 10, 16), date(2026, 11, 15))


@pytest.mark.parametrize(
    "tz", ["Mars/Olympus", "", "utc", "../../etc/passwd", "+02:00", "Europe/Berlin "]
)
def test_bad_zone_is_400(client: t.Any, tz: str) -> None:
    response = get(client, query=f"?tz={tz}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_parameter" and "tz" in error["details"]["fields"]


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules"])
def test_non_iana_zone_names_are_refused(client: t.Any, zone: str) -> None:
    assert client.get(PSA + f"?tz={zone}", headers=as_user(1, "admin")).status_code == 400


@pytest.mark.parametrize("query", ["?period=14d", "?period=", "?period=90"])
def test_bad_period_is_400(client: t.Any, query: str) -> None:
    response = get(client, query=query)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["allowed_periods"] == ["7d", "30d", "90d"]


@pytest.mark.parametrize(
    ("role", "status"),
    [("viewer", 403), ("engineer", 403), ("team_admin", 200), ("admin", 200), ("root", 403)],
)
def test_roles(client: t.Any, role: str, status: int) -> None:
    assert get(client, role=role).status_code == status


def test_account_comes_from_the_identity_only(client: t.Any) -> None:
    build_funnel_fixture()
    refused = get(client, account=1, query="?account_id=2")
    assert refused.status_code == 400
    assert refused.get_json()["error"]["details"]["fields"] == {"account_id": ["Unknown field."]}
    theirs = get(client, account=2).get_json()
    assert theirs["time_entries"]["total_minutes"] == 500.0
    assert theirs["funnel"]["sessions"] == 1


def reference(
    sessions: list[tuple[int, int, datetime, str | None]],
    activities: list[tuple[int, int, str, datetime, float | None]],
    account: int,
    days: int,
    zone: ZoneInfo,
) -> dict[str, t.Any]:
    """The psa-metrics computed the obvious way, from the rows the test wrote."""
    end = NOW
    start = NOW - timedelta(days=days)

    def inside(moment: datetime) -> bool:
        return start <= moment.replace(tzinfo=UTC) <= end

    mine = [s for s in sessions if s[0] == account and inside(s[2])]
    kinds = {(a[1], a[2]) for a in activities if a[0] == account}
    linked = [s for s in mine if s[3] is not None]
    doc = [s for s in linked if (s[1], "note_posted") in kinds]
    logged = [s for s in doc if (s[1], "time_entry_posted") in kinds]
    acts = [a for a in activities if a[0] == account and inside(a[3])]
    entries = [a for a in acts if a[2] == "time_entry_posted"]
    trend: dict[str, dict[str, t.Any]] = {}
    day = start.astimezone(zone).date()
    while day <= end.astimezone(zone).date():
        trend[day.isoformat()] = {
            "date": day.isoformat(),
            "sessions": 0,
            "notes_posted": 0,
            "time_entries": 0,
            "minutes": 0.0,
        }
        day += timedelta(days=1)

    def local(moment: datetime) -> str:
        return moment.replace(tzinfo=UTC).astimezone(zone).date().isoformat()

    for s in mine:
        trend[local(s[2])]["sessions"] += 1
    for a in acts:
        row = trend[local(a[3])]
        if a[2] == "note_posted":
            row["notes_posted"] += 1
        else:
            row["time_entries"] += 1
            row["minutes"] += a[4] or 0.0
    total = sum(a[4] or 0.0 for a in entries)
    return {
        "time_entries": {
            "count": len(entries),
            "total_minutes": total,
            "total_hours": round(total / 60, 4),
        },
        "funnel": (len(mine), len(linked), len(doc), len(logged)),
        "daily_trend": list(trend.values()),
    }


@pytest.mark.parametrize("seed", [3, 11])
def test_randomized_against_reference(client: t.Any, seed: int) -> None:
    rng = random.Random(seed)
    sessions: list[tuple[int, int, datetime, str | None]] = []
    activities: list[tuple[int, int, str, datetime, float | None]] = []
    for n in range(60):
        account = rng.choice([1, 1, 2])
        created = f.at(seconds_ago=rng.uniform(-600, 100 * 86400))
        ticket = f"T{n}" if rng.random() < 0.7 else None
        sess = f.session(account, created, ticket=ticket)
        sessions.append((account, sess.id, created, ticket))
        for _ in range(rng.randint(0, 4)):
            kind = rng.choice(["note_posted", "time_entry_posted"])
            moment = f.at(seconds_ago=rng.uniform(-600, 100 * 86400))
            minutes = round(rng.uniform(1, 120), 2) if kind == "time_entry_posted" else None
            f.activity(account, sess.id, kind, moment, minutes=minutes)
            activities.append((account, sess.id, kind, moment, minutes))
    f.commit()
    for period, days in (("7d", 7), ("30d", 30), ("90d", 90)):
        for tz in ("UTC", "Asia/Kathmandu", "America/Los_Angeles", "Australia/Lord_Howe"):
            for account in (1, 2):
                body = get(client, account=account, query=f"?period={period}&tz={tz}").get_json()
                expected = reference(sessions, activities, account, days, ZoneInfo(tz))
                funnel = body["funnel"]
                got = (
                    funnel["sessions"],
                    funnel["linked"],
                    funnel["doc_pushed"],
                    funnel["time_entry_logged"],
                )
                assert got == expected["funnel"]
                assert got[0] >= got[1] >= got[2] >= got[3]  # the funnel never grows
                assert body["time_entries"]["count"] == expected["time_entries"]["count"]
                assert body["time_entries"]["total_minutes"] == pytest.approx(
                    expected["time_entries"]["total_minutes"]
                )
                assert len(body["daily_trend"]) == len(expected["daily_trend"])
                for got_row, want_row in zip(body["daily_trend"], expected["daily_trend"]):
                    assert got_row == {**want_row, "minutes": pytest.approx(want_row["minutes"])}


def hours_ago(hours: float) -> float:
    return hours * 3600


def test_stored_non_finite_minutes_are_skipped_and_counted(
    client: t.Any, dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    sess = f.session(1, f.at(days=1), ticket="T")
    f.activity(1, sess.id, "time_entry_posted", f.at(hours_ago(2)), minutes=30, external_id="ok")
    f.commit()
    table = "psa_activity_logs"
    bad = (
        ["'NaN'", "'NaN'"] if dialect == "postgresql" else ["9e999", "-9e999"]
    )  # numeric(12,2) holds NaN
    for i, value in enumerate(bad):
        db.session.execute(
            sa.text(
                f"INSERT INTO {table} "
                "(account_id, session_id, activity_type, external_id, minutes, created_at) "
                f"VALUES (1, :session, 'time_entry_posted', :ext, {value}, :at)"
            ),
            {"session": sess.id, "ext": f"bad-{i}", "at": f.at(hours_ago(1))},
        )
    f.commit()
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        response = client.get(PSA, headers=as_user(1, "admin"))
    assert response.status_code == 200
    assert response.get_json()["time_entries"] == {
        "count": 3,
        "total_minutes": 30.0,
        "total_hours": 0.5,
        "billable_minutes": 0.0,
        "non_billable_minutes": 0.0,
        "unclassified_minutes": 30.0,
    }
    assert any(
        "2 stored activities whose minutes are not a finite number" in r.getMessage()
        for r in caplog.records
    )


# -- rate limit -----------------------------------------------------------------------------------


def test_sixteenth_call_in_a_minute_is_429_per_user(app: Flask, client: t.Any) -> None:
    for _ in range(15):
        assert get(client, user=1).status_code == 200
    limited = get(client, user=1)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    error = limited.get_json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["limit"] == "15 per 1 minute"
    assert get(client, user=2).status_code == 200  # another user has their own budget
    assert get(client, user=1, account=2).status_code == 200  # user ids are per account
    assert (
        client.get(
            "/api/v1/analytics/flowpilot/escalations", headers=as_user(1, "admin")
        ).status_code
        == 200
    )
    app.extensions["test_analytics"].reset_rate_limit(1, 1)
    assert get(client, user=1).status_code == 200


@pytest.mark.parametrize(
    "app_config", [{"FLOWPILOT_ANALYTICS_LIMITS": {"psa_metrics": "2 per hour"}}]
)
def test_limit_is_configurable(client: t.Any) -> None:
    assert [get(client).status_code for _ in range(3)] == [200, 200, 429]
    assert int(get(client).headers["Retry-After"]) > 60


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "RATELIMIT_DEFAULT": "1 per minute",
            "RATELIMIT_APPLICATION": "1 per day",
            "RATELIMIT_STORAGE_URI": "memory://",
        }
    ],
)
def test_plugin_limiter_never_touches_host_routes_or_settings(app: Flask, client: t.Any) -> None:
    before = {k: v for k, v in app.config.items() if k.startswith("RATELIMIT_")}
    assert [client.get("/host/ping").status_code for _ in range(5)] == [200] * 5
    assert [get(client).status_code for _ in range(3)] == [200] * 3
    assert {k: v for k, v in app.config.items() if k.startswith("RATELIMIT_")} == before
    assert "limiter" not in app.extensions


def test_host_with_its_own_limiter(database_uri: str, make_app: t.Any) -> None:
    app = make_app(Flask("limited_host"))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri, RATELIMIT_STORAGE_URI="memory://", SECRET_KEY="s"
    )
    db.init_app(app)
    limiter = Limiter(key_func=lambda: "host-key", app=app)

    @app.get("/host/limited")
    @limiter.limit("3 per minute")
    def limited() -> dict[str, bool]:
        return {"ok": True}

    FlowpilotAnalytics(
        app, db=db, identity_loader=host.load_identity, limiter=limiter, clock=lambda: NOW
    )
    with app.app_context():
        db.create_all(bind_key=None)
    client = app.test_client()
    codes = [client.get(URL, headers=as_user(1, "admin", 9)).status_code for _ in range(16)]
    assert codes == [200] * 15 + [429]
    assert [client.get("/host/limited").status_code for _ in range(4)] == [200, 200, 200, 429]
    stats = limiter.limiter.get_window_stats(
        __import__("limits").parse("15 per minute"), "flowpilot_analytics", "psa_metrics", "1", "9"
    )
    assert stats.remaining == 0  # the plugin's count lives in the host limiter's storage


def test_two_app_instances_share_one_budget_on_redis(make_app: t.Any, redis_url: str) -> None:
    config = {"FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI": redis_url}
    first, second = make_app(**config), make_app(**config)
    with first.app_context():
        db.create_all(bind_key=None)
    user = uuid.uuid4().int % 10**9  # a user no earlier run has spent budget for
    try:
        codes = [
            (first if i % 2 else second)
            .test_client()
            .get(URL, headers=as_user(1, "admin", user))
            .status_code
            for i in range(15)
        ]
        assert codes == [200] * 15
        assert first.test_client().get(URL, headers=as_user(1, "admin", user)).status_code == 429
        assert second.test_client().get(URL, headers=as_user(1, "admin", user)).status_code == 429
    finally:
        with first.app_context():
            first.extensions["test_analytics"].reset_rate_limit(1, user)
