"""Business hours over HTTP: the calendar versions (``business-hours``) and ``clock=business`` on
the escalation reports, against the reference of :mod:`tests.business_reference` (written from the
contract, never importing the plugin's rules), on every database."""

from __future__ import annotations

import csv
import io
import json
import random
import typing as t
import uuid
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays as holiday_package
import pytest
import redis

from . import factories as f
from .business_reference import (
    DAYS,
    EDGES,
    Body,
    Calendar,
    Measured,
    Seeded,
    bucket_of,
    distribution,
    groups,
    in_window,
    measure,
    same,
    stats,
    trend,
)
from .helpers import BASE, ESCALATIONS, HANDOFFS, as_user
from .host import NOW, db

BUSINESS_HOURS = BASE + "/business-hours"
TREND = ESCALATIONS + "/trend"
UTC = timezone.utc
NEW_YORK = "America/New_York"
CACHED = {"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}
STAT_KEYS = (
    "n_handoffs_claimed",
    "n_handoffs_with_action",
    "avg_seconds",
    "median_seconds",
    "p90_seconds",
    "p95_seconds",
    "target",
)


# -- helpers ---------------------------------------------------------------------------------------


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A local wall time in ``zone`` (fold=0) as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def office(
    zone: str, since: str, hours: t.Sequence[tuple[str, str]], days: t.Sequence[str] = DAYS[:5]
) -> dict[str, t.Any]:
    """A calendar version open ``hours`` on ``days``."""
    return {
        "timezone": zone,
        "effective_from": since,
        "weekly": {day: [list(pair) for pair in hours] for day in days},
    }


def around_the_clock(zone: str, since: str) -> dict[str, t.Any]:
    return office(zone, since, [("00:00", "24:00")], DAYS)


def store(
    account: int, claimed: datetime, action: datetime | None, engineer: int | None = None
) -> Seeded:
    """One claimed handoff in its own session: a step 30 min before the claim (never its first
    action), then the action and a step after it."""
    sess = f.session(account, naive(claimed) - timedelta(hours=1))
    row = f.handoff(sess, naive(claimed), claimed_by=engineer)
    f.step(sess, naive(claimed) - timedelta(minutes=30))
    if action is not None:
        f.step(sess, naive(action))
        f.step(sess, naive(action) + timedelta(minutes=7))
    db.session.flush()
    return Seeded(row.id, sess.id, claimed, action, engineer)


def seed(
    rng: random.Random, account: int, count: int, start: datetime, now: datetime
) -> list[Seeded]:
    """``count`` handoffs claimed in ``[start, now)``, gaps from seconds to days (so across nights,
    weekends and holidays); 15 % have no action, as have those whose action would be after
    ``now``."""
    made = []
    span = (now - start).total_seconds()
    for _ in range(count):
        claimed = start + timedelta(seconds=rng.uniform(1, span - 1))
        gap = rng.uniform(0, rng.choice([120, 1200, 4 * 3600, 20 * 3600, 3 * 86400]))
        action: datetime | None = claimed + timedelta(seconds=gap)
        if rng.random() < 0.15 or t.cast(datetime, action) > now:
            action = None
        made.append(store(account, claimed, action, rng.choice([7, 8, None])))
    f.commit()
    return made


def post_version(client: t.Any, body: Body, account: int = 1, user: int = 1) -> dict[str, t.Any]:
    response = client.post(BUSINESS_HOURS, json=body, headers=as_user(account, "team_admin", user))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "private, no-store"
    return t.cast(dict[str, t.Any], response.get_json())


def get_json(client: t.Any, url: str, account: int = 1, user: int = 1) -> dict[str, t.Any]:
    response = client.get(url, headers=as_user(account, "engineer", user))
    assert response.status_code == 200, (url, response.get_data(as_text=True))
    return t.cast(dict[str, t.Any], response.get_json())


def window(body: t.Mapping[str, t.Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(body["window_start"]), datetime.fromisoformat(body["window_end"])


def dump(actual: object, expected: object) -> str:
    return json.dumps({"actual": actual, "expected": expected}, default=str)[:4000]


def check_figures(
    body: t.Mapping[str, t.Any], measured: t.Sequence[Measured], target: float | None
) -> None:
    """An escalation body's statistics, distribution, target and, when present, engineer groups and
    previous window, against the reference."""
    inside = in_window(measured, *window(body))
    expected = stats(inside, target)
    actual = {key: body[key] for key in STAT_KEYS}
    assert same(actual, expected), dump(actual, expected)
    assert same(body["distribution"], distribution(inside)), dump(
        body["distribution"], distribution(inside)
    )
    if "groups" in body:
        picked = [{k: g[k] for k in ("engineer", *STAT_KEYS)} for g in body["groups"]]
        assert same(picked, groups(inside, target)), dump(picked, groups(inside, target))
    if "previous" in body:
        before = in_window(measured, *window(body["previous"]))
        earlier = {key: body["previous"][key] for key in STAT_KEYS}
        assert same(earlier, stats(before, target)), dump(earlier, stats(before, target))


def all_items(
    client: t.Any, query: t.Mapping[str, str], account: int = 1, user: int = 1, limit: int = 9
) -> list[dict[str, t.Any]]:
    """Every drill-down item, following ``next_cursor`` page after page."""
    items: list[dict[str, t.Any]] = []
    cursor = None
    for _ in range(100):
        params = {**query, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = client.get(
            HANDOFFS, query_string=params, headers=as_user(account, "engineer", user)
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        assert page["clock"] == query.get("clock", "wall")
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the drill-down never ended")


def expected_items(
    measured: t.Sequence[Measured], start: datetime, end: datetime
) -> list[dict[str, t.Any]]:
    """The drill-down items of the window on the measured clock, newest claim first."""
    inside = sorted(
        in_window(measured, start, end),
        key=lambda m: (m.handoff.claimed_at, m.handoff.handoff_id),
        reverse=True,
    )
    return [
        {
            "handoff_id": m.handoff.handoff_id,
            "session_id": m.handoff.session_id,
            "claimed_at": m.handoff.claimed_at,
            "first_action_at": m.handoff.action_at,
            "seconds": m.seconds,
            "bucket": None if m.seconds is None else bucket_of(m.seconds),
            "wall_seconds": m.handoff.wall,
            "client": None,  # this host's sessions have no client column
        }
        for m in inside
    ]


def parsed_items(items: t.Sequence[t.Mapping[str, t.Any]]) -> list[dict[str, t.Any]]:
    """Drill-down items with their timestamps parsed (to compare instants, not spellings)."""

    def instant(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text)

    return [
        {
            **item,
            "claimed_at": instant(item["claimed_at"]),
            "first_action_at": instant(item["first_action_at"]),
        }
        for item in items
    ]


def business_seconds(
    client: t.Any, account: int = 1, period: str = "90d"
) -> dict[int, float | None]:
    """Each handoff's business seconds, by id, as the drill-down reports them."""
    items = all_items(client, {"clock": "business", "period": period}, account, limit=100)
    return {item["handoff_id"]: item["seconds"] for item in items}


# -- 1. US Eastern office hours, Thanksgiving ------------------------------------------------------

AFTER_THANKSGIVING = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)  # a Wednesday, 13:00 in New York
US_OFFICE = {
    **office(NEW_YORK, "2026-01-01", [("09:00", "17:00")]),
    "holidays": ["2026-11-26"],
}


def test_us_eastern_office_hours_with_thanksgiving(app: t.Any, make_app: t.Any) -> None:
    now = AFTER_THANKSGIVING
    client = make_app(clock=lambda: now).test_client()
    rng = random.Random(1126)
    handoffs = seed(rng, 1, 170, now - timedelta(days=60), now)
    thanksgiving = store(1, local(NEW_YORK, 2026, 11, 25, 16), local(NEW_YORK, 2026, 11, 27, 10), 7)
    across_dst = store(
        1, local(NEW_YORK, 2026, 10, 30, 16, 30), local(NEW_YORK, 2026, 11, 2, 9, 30), 8
    )
    pending = store(1, local(NEW_YORK, 2026, 12, 2, 12, 30), None)  # 30 business min ago
    overdue = store(1, local(NEW_YORK, 2026, 12, 1, 16, 30), None, 7)  # 30 min + 4 h ago
    store(2, now - timedelta(days=3), now - timedelta(days=2))  # another account's: never counted
    f.commit()
    version = post_version(client, US_OFFICE)
    assert version["holidays"] == ["2026-11-26"] and version["holiday_calendar"] is None
    calendar = Calendar([US_OFFICE])
    handoffs += [thanksgiving, across_dst, pending, overdue]
    measured = measure(handoffs, calendar, now)
    # the reference itself, by hand: Wed 16-17 + Fri 9-10 (Thanksgiving closed); Fri 16:30-17 +
    # Mon 9-9:30 across the end of DST
    assert (
        calendar.seconds(thanksgiving.claimed_at, t.cast(datetime, thanksgiving.action_at)) == 7200
    )
    assert calendar.seconds(across_dst.claimed_at, t.cast(datetime, across_dst.action_at)) == 3600

    query = "?clock=business&target_seconds=3600&compare=previous&group_by=engineer"
    body = get_json(client, ESCALATIONS + query)
    assert body["clock"] == "business"
    assert body["business_hours"] == {"version_ids": [version["id"]]}
    assert window(body) == (now - timedelta(days=30), now)
    check_figures(body, measured, 3600.0)
    assert body["target"]["n_pending"] >= 1 and body["target"]["n_overdue"] >= 1
    # the business clock really is another clock than the wall one
    wall = get_json(client, ESCALATIONS + "?target_seconds=3600")
    assert (wall["clock"], wall["business_hours"]) == ("wall", None)
    check_figures(wall, measure(handoffs, None, now), 3600.0)
    assert wall["avg_seconds"] > body["avg_seconds"]
    seconds = business_seconds(client)
    assert seconds[thanksgiving.handoff_id] == 7200.0
    assert seconds[across_dst.handoff_id] == 3600.0
    assert seconds[pending.handoff_id] is None
    # the 90 days reach back to the end of DST: the whole set against the reference
    long = get_json(client, ESCALATIONS + "?clock=business&period=90d&target_seconds=600")
    check_figures(long, measured, 600.0)


# -- 2. A split shift in India, six days a week ----------------------------------------------------

KOLKATA = "Asia/Kolkata"
SPLIT_SHIFT = office(KOLKATA, "2026-06-01", [("14:00", "18:30"), ("09:00", "13:00")], DAYS[:6])


def test_split_shift_in_kolkata_six_days_a_week(client: t.Any) -> None:
    rng = random.Random(1830)
    handoffs = seed(rng, 1, 160, NOW - timedelta(days=60), NOW)
    lunch = store(1, local(KOLKATA, 2026, 11, 9, 12, 30), local(KOLKATA, 2026, 11, 9, 14, 30), 7)
    evening = store(1, local(KOLKATA, 2026, 11, 13, 18), local(KOLKATA, 2026, 11, 14, 9, 45), 8)
    closed = store(1, local(KOLKATA, 2026, 11, 14, 18, 45), local(KOLKATA, 2026, 11, 15, 12))
    sunday = store(1, local(KOLKATA, 2026, 11, 15, 10), None)  # nothing open since: pending
    f.commit()
    version = post_version(client, SPLIT_SHIFT)
    assert version["weekly"]["mon"] == [["09:00", "13:00"], ["14:00", "18:30"]]
    assert version["weekly"]["sun"] == []
    handoffs += [lunch, evening, closed, sunday]
    measured = measure(handoffs, Calendar([SPLIT_SHIFT]), NOW)

    body = get_json(
        client,
        ESCALATIONS + "?clock=business&target_seconds=1800&compare=previous&group_by=engineer",
    )
    check_figures(body, measured, 1800.0)
    seconds = business_seconds(client)
    assert (seconds[lunch.handoff_id], seconds[evening.handoff_id]) == (3600.0, 4500.0)
    assert (seconds[closed.handoff_id], seconds[sunday.handoff_id]) == (0.0, None)
    assert body["target"]["n_pending"] >= 1  # the Sunday claim, 7.5 h old on the wall clock
    weekly = get_json(client, TREND + "?clock=business&tz=Asia/Kolkata&interval=week&period=90d")
    start, end = window(weekly)
    expected = trend(measured, start, end, KOLKATA, True, None)
    points = [{k: p[k] for k in ("start", *STAT_KEYS)} for p in weekly["points"]]
    assert same(points, expected), dump(points, expected)


# -- 3. A night shift in London, across the end of DST, with a holiday -----------------------------

LONDON = "Europe/London"
NIGHT_SHIFT = {
    "timezone": LONDON,
    "effective_from": "2026-01-01",
    "weekly": {
        "mon": [["22:00", "06:00"]],
        "tue": [["22:00", "06:00"]],
        "wed": [["22:00", "06:00"]],
        "thu": [["22:00", "06:00"]],
        "fri": [["22:00", "06:00"], ["23:00", "02:00"]],  # inside the first: merges
        "sat": [["00:00", "07:00"], ["22:00", "06:00"]],  # overlaps Friday night's: merges
    },
    "holidays": ["2026-11-11", "2026-10-28"],
}


def test_night_shift_in_london_across_dst_with_a_holiday(client: t.Any) -> None:
    rng = random.Random(2510)
    handoffs = seed(rng, 1, 160, NOW - timedelta(days=45), NOW)
    # Saturday 22:00 BST (21:00Z) to Sunday 06:00 GMT: a nine-hour night as clocks go back
    dst_night = store(
        1, datetime(2026, 10, 24, 20, tzinfo=UTC), datetime(2026, 10, 25, 7, tzinfo=UTC)
    )
    # Tuesday's night stops at 00:00 of Wednesday 28 October, a holiday: 2 h
    cut = store(1, datetime(2026, 10, 27, 21, tzinfo=UTC), datetime(2026, 10, 28, 12, tzinfo=UTC))
    # the holiday's own night starts again at 00:00 of Thursday: 6 h
    after = store(1, datetime(2026, 10, 28, 12, tzinfo=UTC), datetime(2026, 10, 29, 12, tzinfo=UTC))
    # Friday 22:00 to Saturday 07:00, counted once however the intervals overlap: 9 h
    merged = store(1, datetime(2026, 10, 30, 21, tzinfo=UTC), datetime(2026, 10, 31, 9, tzinfo=UTC))
    f.commit()
    version = post_version(client, NIGHT_SHIFT)
    assert version["holidays"] == ["2026-10-28", "2026-11-11"]
    assert version["weekly"]["sun"] == [] and version["weekly"]["mon"] == [["22:00", "06:00"]]
    calendar = Calendar([NIGHT_SHIFT])
    handoffs += [dst_night, cut, after, merged]
    for handoff, hours in ((dst_night, 9), (cut, 2), (after, 6), (merged, 9)):
        action = t.cast(datetime, handoff.action_at)
        assert calendar.seconds(handoff.claimed_at, action) == hours * 3600  # the reference
    measured = measure(handoffs, calendar, NOW)

    body = get_json(
        client,
        ESCALATIONS + "?clock=business&target_seconds=7200&compare=previous&group_by=engineer",
    )
    check_figures(body, measured, 7200.0)
    seconds = business_seconds(client)
    for handoff, hours in ((dst_night, 9), (cut, 2), (after, 6), (merged, 9)):
        assert seconds[handoff.handoff_id] == hours * 3600.0, (handoff, seconds[handoff.handoff_id])
    daily = get_json(client, TREND + "?clock=business&tz=Europe/London&target_seconds=7200")
    expected = trend(measured, *window(daily), LONDON, False, 7200.0)
    points = [{k: p[k] for k in ("start", *STAT_KEYS)} for p in daily["points"]]
    assert same(points, expected), dump(points, expected)


# -- 4. Versions: each handoff on the version in effect at its claim -------------------------------

ALWAYS = around_the_clock("UTC", "2020-01-01")
#: Twenty days before NOW; 00:00 in Berlin is 2026-10-25T23:00Z (CET, DST ended that morning).
BERLIN_OFFICE = office("Europe/Berlin", "2026-10-26", [("09:00", "17:00")])
SHORTER = office("Europe/Berlin", "2026-10-26", [("10:00", "16:00")])
FUTURE = office("Europe/Berlin", "2026-12-01", [("08:00", "20:00")])


def test_each_handoff_is_measured_on_the_version_in_effect_at_its_claim(client: t.Any) -> None:
    handoffs = seed(random.Random(26), 1, 140, NOW - timedelta(days=30), NOW)
    start = datetime(2026, 10, 25, 23, tzinfo=UTC)
    straddles = store(1, start - timedelta(hours=1), datetime(2026, 10, 26, 10, tzinfo=UTC))
    just_before = store(
        1, start - timedelta(microseconds=1), datetime(2026, 10, 26, 10, tzinfo=UTC)
    )
    at_start = store(1, start, datetime(2026, 10, 26, 10, tzinfo=UTC))
    f.commit()
    handoffs += [straddles, just_before, at_start]
    first = post_version(client, ALWAYS)
    second = post_version(client, BERLIN_OFFICE)

    measured = measure(handoffs, Calendar([ALWAYS, BERLIN_OFFICE]), NOW)
    body = get_json(client, ESCALATIONS + "?clock=business&target_seconds=900&group_by=engineer")
    assert body["business_hours"] == {"version_ids": [first["id"], second["id"]]}
    check_figures(body, measured, 900.0)
    seconds = business_seconds(client)
    assert seconds[straddles.handoff_id] == 12 * 3600.0  # all of it on the old version
    assert seconds[just_before.handoff_id] == pytest.approx(39600.000001, rel=0, abs=1e-8)
    assert seconds[at_start.handoff_id] == 2 * 3600.0  # Monday 09:00-11:00 in Berlin
    recent = get_json(client, ESCALATIONS + "?clock=business&period=7d&target_seconds=900")
    assert recent["business_hours"] == {"version_ids": [second["id"]]}
    check_figures(recent, measured, 900.0)

    # the same start, created later: the newest wins from then on
    third = post_version(client, SHORTER)
    measured = measure(handoffs, Calendar([ALWAYS, BERLIN_OFFICE, SHORTER]), NOW)
    body = get_json(client, ESCALATIONS + "?clock=business&target_seconds=900&group_by=engineer")
    assert body["business_hours"] == {"version_ids": [first["id"], third["id"]]}
    check_figures(body, measured, 900.0)
    assert business_seconds(client)[at_start.handoff_id] == 3600.0
    # a version starting after now changes nothing yet
    fourth = post_version(client, FUTURE)
    again = get_json(client, ESCALATIONS + "?clock=business&target_seconds=900&group_by=engineer")
    assert same({k: again[k] for k in STAT_KEYS}, {k: body[k] for k in STAT_KEYS})
    listing = get_json(client, BUSINESS_HOURS)
    assert [v["id"] for v in listing["versions"]] == [
        v["id"] for v in (first, second, third, fourth)
    ]
    assert listing["versions"] == [first, second, third, fourth]
    assert listing["in_effect"] == third
    assert [v["effective_from"] for v in listing["versions"]] == [
        "2020-01-01",
        "2026-10-26",
        "2026-10-26",
        "2026-12-01",
    ]


def test_a_claim_before_every_start_uses_the_earliest_starting_version(client: t.Any) -> None:
    later = around_the_clock("UTC", "2026-11-12")
    earlier = office("UTC", "2026-11-10", [("09:00", "10:00")], DAYS)
    early = store(5, datetime(2026, 11, 1, 8, tzinfo=UTC), datetime(2026, 11, 1, 12, tzinfo=UTC))
    between = store(
        5, datetime(2026, 11, 11, 8, tzinfo=UTC), datetime(2026, 11, 11, 12, tzinfo=UTC)
    )
    late = store(5, datetime(2026, 11, 13, 8, tzinfo=UTC), datetime(2026, 11, 13, 12, tzinfo=UTC))
    f.commit()
    made_first = post_version(client, later, account=5)
    made_second = post_version(client, earlier, account=5)
    seconds = business_seconds(client, account=5)
    assert seconds == {
        early.handoff_id: 3600.0,
        between.handoff_id: 3600.0,
        late.handoff_id: 14400.0,
    }
    body = get_json(client, ESCALATIONS + "?clock=business", account=5)
    assert body["business_hours"] == {"version_ids": sorted([made_first["id"], made_second["id"]])}
    assert get_json(client, BUSINESS_HOURS, account=5)["in_effect"] == made_first
    # only claims before its start: the one version is what a claim now is measured on
    only = post_version(client, office("UTC", "2027-01-01", [("09:00", "10:00")], DAYS), account=6)
    store(6, datetime(2026, 11, 2, 8, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC))
    f.commit()
    assert list(business_seconds(client, account=6).values()) == [3600.0]
    assert get_json(client, BUSINESS_HOURS, account=6) == {"versions": [only], "in_effect": only}


def test_equal_starts_are_instants_not_dates(client: t.Any) -> None:
    """London is on GMT in November: its 1 November starts with UTC's, so the newer one wins; New
    York's 1 November starts four hours later, so until then the UTC version measures."""
    utc = around_the_clock("UTC", "2026-11-01")
    london = office(LONDON, "2026-11-01", [("09:00", "10:00")], DAYS)
    new_york = office(NEW_YORK, "2026-11-01", [("09:00", "10:00")], DAYS)
    early = store(7, datetime(2026, 11, 1, 2, tzinfo=UTC), datetime(2026, 11, 1, 3, tzinfo=UTC))
    later = store(7, datetime(2026, 11, 1, 5, tzinfo=UTC), datetime(2026, 11, 1, 15, tzinfo=UTC))
    f.commit()
    post_version(client, utc, account=7)
    ny = post_version(client, new_york, account=7)
    seconds = business_seconds(client, account=7)
    # 02:00Z is before New York's 00:00 (04:00Z): round the clock; 05:00Z: New York's 09:00-10:00
    # EST (14:00Z-15:00Z)
    assert (seconds[early.handoff_id], seconds[later.handoff_id]) == (3600.0, 3600.0)
    replacing = post_version(client, london, account=7)
    seconds = business_seconds(client, account=7)
    # the same instant as UTC's start, created later: London's 09:00-10:00 from the start; New
    # York's still wins from 04:00Z, being the latest start
    assert (seconds[early.handoff_id], seconds[later.handoff_id]) == (0.0, 3600.0)
    assert get_json(client, BUSINESS_HOURS, account=7)["in_effect"]["timezone"] == NEW_YORK
    body = get_json(client, ESCALATIONS + "?clock=business", account=7)
    assert body["business_hours"] == {"version_ids": [ny["id"], replacing["id"]]}


# -- 5. Round the clock is the wall clock, across DST ---------------------------------------------

ROUND_THE_CLOCK = {
    **around_the_clock(NEW_YORK, "2026-01-01"),
    # the same hours, as touching and overlapping intervals
    "weekly": {
        **around_the_clock(NEW_YORK, "2026-01-01")["weekly"],
        "mon": [["00:00", "12:00"], ["12:00", "24:00"]],
        "sun": [["00:00", "06:00"], ["05:00", "24:00"]],
    },
}


def without_clock(body: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {k: v for k, v in body.items() if k not in ("clock", "business_hours")}


def test_round_the_clock_equals_the_wall_clock_across_dst(client: t.Any) -> None:
    handoffs = seed(random.Random(1101), 1, 150, NOW - timedelta(days=60), NOW)
    # 23:30 EDT on Saturday 31 October to 03:30 EST: five hours, one of them repeated
    handoffs.append(
        store(1, datetime(2026, 11, 1, 3, 30, tzinfo=UTC), datetime(2026, 11, 1, 8, 30, tzinfo=UTC))
    )
    f.commit()
    version = post_version(client, ROUND_THE_CLOCK)
    used = {"version_ids": [version["id"]]}
    measured = measure(handoffs, None, NOW)
    for query, target in (
        ("?target_seconds=900&compare=previous&group_by=engineer", 900.0),
        ("?period=90d&target_seconds=3600", 3600.0),
    ):
        wall = get_json(client, ESCALATIONS + query)
        business = get_json(client, ESCALATIONS + query + "&clock=business")
        assert (business["clock"], business["business_hours"]) == ("business", used)
        assert same(without_clock(business), without_clock(wall)), dump(business, wall)
        check_figures(business, measured, target)
    for query in (
        "?tz=America/New_York&target_seconds=900",
        "?tz=America/New_York&interval=week&period=90d",
    ):
        wall = get_json(client, TREND + query)
        business = get_json(client, TREND + query + "&clock=business")
        assert (business["clock"], business["business_hours"]) == ("business", used)
        assert same(without_clock(business), without_clock(wall)), dump(business, wall)
    items = all_items(client, {"clock": "business", "period": "90d"}, limit=40)
    assert len(items) == len(handoffs)
    assert all(
        item["seconds"] == pytest.approx(item["wall_seconds"], abs=1e-6)
        if item["wall_seconds"] is not None
        else item["seconds"] is None
        for item in items
    )
    wall_items = all_items(client, {"period": "90d"}, limit=40)
    assert [(i["handoff_id"], i["bucket"]) for i in items] == [
        (i["handoff_id"], i["bucket"]) for i in wall_items
    ]
    assert all(i["seconds"] == i["wall_seconds"] for i in wall_items)


# -- 6. Trend, drill-down and CSV on the business clock --------------------------------------------

NY_OFFICE = {**office(NEW_YORK, "2026-01-01", [("09:00", "17:00")]), "holidays": ["2026-11-11"]}


def test_trend_drilldown_and_csv_on_the_business_clock(client: t.Any) -> None:
    handoffs = seed(random.Random(611), 1, 150, NOW - timedelta(days=40), NOW)
    version = post_version(client, NY_OFFICE)
    measured = measure(handoffs, Calendar([NY_OFFICE]), NOW)
    used = {"version_ids": [version["id"]]}

    for interval, target in (("day", 1800.0), ("week", None)):
        query = f"?clock=business&tz=Asia/Tokyo&interval={interval}" + (
            f"&target_seconds={target:g}" if target else ""
        )
        body = get_json(client, TREND + query)
        assert (body["clock"], body["business_hours"], body["timezone"]) == (
            "business",
            used,
            "Asia/Tokyo",
        )
        expected = trend(measured, *window(body), "Asia/Tokyo", interval == "week", target)
        points = [{k: p[k] for k in ("start", *STAT_KEYS)} for p in body["points"]]
        assert same(points, expected), dump(points, expected)
        export = client.get(TREND + query + "&format=csv", headers=as_user(1))
        assert export.status_code == 200 and export.mimetype == "text/csv"
        assert "_business" in export.headers["Content-Disposition"]
        table = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
        assert table[0][:3] == [
            f"{interval} (Asia/Tokyo)",
            "n_handoffs_claimed",
            "n_handoffs_with_action",
        ]
        column = table[0].index("median_seconds")
        assert [row[0] for row in table[1:]] == [p["start"] for p in expected]
        medians = [float(row[column]) if row[column] else None for row in table[1:]]
        assert same(medians, [p["median_seconds"] for p in expected])

    start, end = window(get_json(client, ESCALATIONS + "?clock=business"))
    everything = expected_items(measured, start, end)
    items = all_items(client, {"clock": "business"}, limit=8)
    assert same(parsed_items(items), everything), dump(items[:3], everything[:3])
    assert any(i["seconds"] != i["wall_seconds"] for i in items if i["seconds"] is not None)
    for user, bucket in enumerate([*map(str, range(len(EDGES) + 1)), "no_action"], start=10):
        wanted = [
            i for i in everything if i["bucket"] == (None if bucket == "no_action" else int(bucket))
        ]
        found = all_items(client, {"clock": "business", "bucket": bucket}, user=user, limit=5)
        assert same(parsed_items(found), wanted), (bucket, dump(found[:3], wanted[:3]))
    # on the wall clock the same filter picks by wall seconds
    wall_fast = all_items(client, {"bucket": "0"}, user=30, limit=50)
    assert {i["handoff_id"] for i in wall_fast} == {
        i["handoff_id"]
        for i in everything
        if i["wall_seconds"] is not None and i["wall_seconds"] < 60
    }

    export = client.get(HANDOFFS + "?clock=business&format=csv", headers=as_user(1))
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert "escalation_handoffs_business" in export.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
    assert table[0] == [
        "handoff_id",
        "session_id",
        "claimed_at_utc",
        "first_action_at_utc",
        "seconds",
        "bucket",
        "wall_seconds",
        "clock",
        "client",
    ]

    def row(item: t.Mapping[str, t.Any]) -> list[t.Any]:
        return [
            item["handoff_id"],
            item["session_id"],
            item["claimed_at"],
            item["first_action_at"],
            item["seconds"],
            "no_action" if item["bucket"] is None else item["bucket"],
            item["wall_seconds"],
            "business",
            "",  # no client column on this host
        ]

    def read(cells: list[str]) -> list[t.Any]:
        def number(cell: str) -> float | None:
            return float(cell) if cell else None

        def moment(cell: str) -> datetime | None:
            return datetime.fromisoformat(cell) if cell else None

        bucket = cells[5] if cells[5] == "no_action" else int(cells[5])
        return [
            int(cells[0]),
            int(cells[1]),
            moment(cells[2]),
            moment(cells[3]),
            number(cells[4]),
            bucket,
            number(cells[6]),
            cells[7],
            cells[8],
        ]

    assert same([read(r) for r in table[1:]], [row(i) for i in everything])
    slow = client.get(HANDOFFS + "?clock=business&format=csv&bucket=3", headers=as_user(1))
    rows = [read(r) for r in list(csv.reader(io.StringIO(slow.get_data(as_text=True))))[1:]]
    assert rows and same(rows, [row(i) for i in everything if i["bucket"] == 3])


# -- 7. Bad calendars ------------------------------------------------------------------------------

VALID = office("Europe/Berlin", "2026-11-01", [("09:00", "17:00")])


def _with(**changes: t.Any) -> dict[str, t.Any]:
    return {**VALID, **changes}


def _without(key: str) -> dict[str, t.Any]:
    return {k: v for k, v in VALID.items() if k != key}


def _days(count: int, first: date = date(1990, 1, 1)) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range(count)]


BAD_CALENDARS: list[tuple[str, object, str]] = [
    ("unknown key", _with(colour="blue"), "colour"),
    ("client_id on a host without a client column", _with(client_id="c-1"), "client_id"),
    ("unknown zone", _with(timezone="Nowhere/Town"), "timezone"),
    ("CET is refused", _with(timezone="CET"), "timezone"),
    ("an offset is not a zone", _with(timezone="+01:00"), "timezone"),
    ("zone not a string", _with(timezone=1), "timezone"),
    ("no zone", _without("timezone"), "timezone"),
    ("no weekly", _without("weekly"), "weekly"),
    ("no date", _without("effective_from"), "effective_from"),
    ("no such day", _with(effective_from="2026-02-30"), "effective_from"),
    ("a datetime", _with(effective_from="2026-11-01T00:00:00"), "effective_from"),
    ("not a date", _with(effective_from="1 November"), "effective_from"),
    ("short date", _with(effective_from="2026-1-1"), "effective_from"),
    ("date not a string", _with(effective_from=20261101), "effective_from"),
    ("before 1970", _with(effective_from="1969-12-31"), "effective_from"),
    ("after 9000", _with(effective_from="9001-01-01"), "effective_from"),
    ("24:01", _with(weekly={"mon": [["09:00", "24:01"]]}), "weekly.mon[0][1]"),
    ("9:00", _with(weekly={"mon": [["9:00", "17:00"]]}), "weekly.mon[0][0]"),
    ("25:00", _with(weekly={"tue": [["09:00", "12:00"], ["13:00", "25:00"]]}), "weekly.tue[1][1]"),
    (
        "minute 60",
        _with(weekly={"mon": [["09:00", "12:00"], ["12:60", "13:00"]]}),
        "weekly.mon[1][0]",
    ),
    ("24:00 as a start", _with(weekly={"wed": [["24:00", "06:00"]]}), "weekly.wed[0][0]"),
    ("time not a string", _with(weekly={"fri": [[900, 1700]]}), "weekly.fri[0][0]"),
    ("start == end", _with(weekly={"mon": [["09:00", "09:00"]]}), "weekly.mon[0]"),
    ("one time", _with(weekly={"mon": [["09:00", "12:00"], ["13:00"]]}), "weekly.mon[1]"),
    ("three times", _with(weekly={"thu": [["09:00", "12:00", "17:00"]]}), "weekly.thu[0]"),
    ("a string interval", _with(weekly={"mon": ["09:00-17:00"]}), "weekly.mon[0]"),
    ("a string day", _with(weekly={"mon": "09:00-17:00"}), "weekly.mon"),
    ("unknown day", _with(weekly={"monday": [["09:00", "17:00"]]}), "weekly.monday"),
    ("weekly a list", _with(weekly=[["09:00", "17:00"]]), "weekly"),
    ("never open", _with(weekly={"mon": [], "tue": None}), "weekly"),
    (
        "11 intervals",
        _with(weekly={"sat": [[f"{h:02d}:00", f"{h:02d}:30"] for h in range(11)]}),
        "weekly.sat",
    ),
    ("holidays a string", _with(holidays="2026-12-25"), "holidays"),
    (
        "third holiday bad",
        _with(holidays=["2026-12-25", "2026-12-26", "2026-13-01"]),
        "holidays[2]",
    ),
    ("holiday a number", _with(holidays=["2026-12-25", 20261226]), "holidays[1]"),
    ("5001 holidays", _with(holidays=_days(5001)), "holidays"),
    (
        "over 5000 once expanded",
        _with(holidays=_days(4999), holiday_calendar={"country": "US"}),
        "holidays",
    ),
    ("unknown country", _with(holiday_calendar={"country": "XX"}), "holiday_calendar.country"),
    ("country not a string", _with(holiday_calendar={"country": 1}), "holiday_calendar.country"),
    (
        "unknown subdivision",
        _with(holiday_calendar={"country": "US", "subdivision": "ZZ"}),
        "holiday_calendar.subdivision",
    ),
    (
        "unknown calendar key",
        _with(holiday_calendar={"country": "US", "state": "NY"}),
        "holiday_calendar.state",
    ),
    ("calendar a string", _with(holiday_calendar="US"), "holiday_calendar"),
    ("not JSON", "{'timezone': 'UTC'", "_schema"),
    ("a JSON array", json.dumps([VALID]), "_schema"),
    ("a JSON string", json.dumps("UTC"), "_schema"),
    ("null", "null", "_schema"),
    ("empty", "", "_schema"),
]


def test_bad_calendars_are_refused_naming_the_field_and_nothing_is_stored(client: t.Any) -> None:
    failures = []
    for user, (name, body, field) in enumerate(BAD_CALENDARS, start=100):
        raw = body if isinstance(body, str) else json.dumps(body)
        response = client.post(
            BUSINESS_HOURS,
            data=raw,
            content_type="application/json",
            headers=as_user(1, "team_admin", user),
        )
        error = (response.get_json(silent=True) or {}).get("error", {})
        fields = (error.get("details") or {}).get("fields") or {}
        if (
            response.status_code != 400
            or error.get("code") != "invalid_body"
            or field not in fields
        ):
            failures.append((name, response.status_code, error))
    assert not failures, json.dumps(failures, indent=1)[:4000]
    assert get_json(client, BUSINESS_HOURS) == {"versions": [], "in_effect": None}
    stored = post_version(client, VALID)  # the same route does store a good one
    assert get_json(client, BUSINESS_HOURS)["versions"] == [stored]


# -- 8. Roles, accounts, the clock parameter, methods ----------------------------------------------


def test_role_gates_on_reading_and_adding_versions(client: t.Any) -> None:
    assert client.get(BUSINESS_HOURS).status_code == 401
    assert client.post(BUSINESS_HOURS, json=VALID).status_code == 401
    assert client.get(BUSINESS_HOURS, headers=as_user(1, "viewer")).status_code == 403
    for role in ("engineer", "team_admin", "admin"):
        response = client.get(BUSINESS_HOURS, headers=as_user(1, role))
        assert response.status_code == 200 and response.get_json()["versions"] == [], role
    for role in ("viewer", "engineer"):
        refused = client.post(BUSINESS_HOURS, json=VALID, headers=as_user(1, role))
        assert refused.status_code == 403, role
        assert refused.get_json()["error"]["code"] == "forbidden"
    assert get_json(client, BUSINESS_HOURS)["versions"] == []
    made = [
        client.post(BUSINESS_HOURS, json=VALID, headers=as_user(1, role))
        for role in ("team_admin", "admin")
    ]
    assert [r.status_code for r in made] == [201, 201]
    assert [v["id"] for v in get_json(client, BUSINESS_HOURS)["versions"]] == [
        r.get_json()["id"] for r in made
    ]
    first = made[0].get_json()
    assert set(first) == {
        "id",
        "created_at",
        "timezone",
        "effective_from",
        "weekly",
        "holidays",
        "holiday_calendar",
        "client_id",
    }
    assert first["client_id"] is None  # the account's own version
    assert datetime.fromisoformat(first["created_at"]) == NOW
    assert first["weekly"] == {
        **{day: [] for day in DAYS},
        **{day: [["09:00", "17:00"]] for day in DAYS[:5]},
    }
    assert (first["holidays"], first["holiday_calendar"]) == ([], None)
    # intervals come back sorted, an end of 00:00 as 24:00, an end before its start as given
    nights = post_version(
        client, _with(weekly={"sun": [["22:00", "00:00"], ["23:00", "06:00"], ["09:00", "12:00"]]})
    )
    assert nights["weekly"]["sun"] == [["09:00", "12:00"], ["22:00", "24:00"], ["23:00", "06:00"]]
    # the escalation reports keep their own gate on the business clock
    assert (
        client.get(ESCALATIONS + "?clock=business", headers=as_user(1, "viewer")).status_code == 403
    )
    # adding versions has its own limit (30 a minute), failed attempts included
    codes = [
        client.post(BUSINESS_HOURS, json={}, headers=as_user(1, "team_admin", 77)).status_code
        for _ in range(31)
    ]
    assert codes == [400] * 30 + [429]


def test_the_route_roles_setting_moves_the_gates(client: t.Any, make_app: t.Any) -> None:
    roles = {"business_hours": "team_admin", "business_hours_write": "admin"}
    strict = make_app(FLOWPILOT_ANALYTICS_ROUTE_ROLES=roles).test_client()
    assert strict.get(BUSINESS_HOURS, headers=as_user(1, "engineer")).status_code == 403
    assert strict.get(BUSINESS_HOURS, headers=as_user(1, "team_admin")).status_code == 200
    assert (
        strict.post(BUSINESS_HOURS, json=VALID, headers=as_user(1, "team_admin")).status_code == 403
    )
    assert strict.post(BUSINESS_HOURS, json=VALID, headers=as_user(1, "admin")).status_code == 201
    assert len(get_json(client, BUSINESS_HOURS)["versions"]) == 1


def test_accounts_never_share_versions_or_handoffs(client: t.Any) -> None:
    mine = seed(random.Random(81), 1, 60, NOW - timedelta(days=30), NOW)
    seed(random.Random(82), 2, 60, NOW - timedelta(days=30), NOW)
    theirs = post_version(client, around_the_clock("UTC", "2020-01-01"), account=2)
    own = post_version(client, NY_OFFICE, account=1)
    assert get_json(client, BUSINESS_HOURS, account=1) == {"versions": [own], "in_effect": own}
    assert get_json(client, BUSINESS_HOURS, account=2) == {
        "versions": [theirs],
        "in_effect": theirs,
    }
    # a parameter naming another account is refused outright (the listing takes none)
    sneaky = client.get(BUSINESS_HOURS + "?account_id=2", headers=as_user(1))
    assert sneaky.status_code == 400
    assert sneaky.get_json()["error"]["details"]["fields"] == {"account_id": ["Unknown field."]}
    body = get_json(client, ESCALATIONS + "?clock=business&target_seconds=600&group_by=engineer")
    assert body["business_hours"] == {"version_ids": [own["id"]]}
    check_figures(body, measure(mine, Calendar([NY_OFFICE]), NOW), 600.0)
    sneaky_report = client.get(
        ESCALATIONS + "?clock=business&target_seconds=600&account_id=2", headers=as_user(1)
    )
    assert sneaky_report.status_code == 400
    assert sneaky_report.get_json()["error"]["details"]["fields"] == {
        "account_id": ["Unknown field."]
    }

    # an account with handoffs but no version: 409 on the business clock, JSON and CSV alike
    store(3, NOW - timedelta(days=1), NOW - timedelta(hours=20))
    f.commit()
    for url in (
        ESCALATIONS + "?clock=business",
        ESCALATIONS + "?clock=business&group_by=engineer&compare=previous",
        TREND + "?clock=business",
        TREND + "?clock=business&format=csv",
        HANDOFFS + "?clock=business",
        HANDOFFS + "?clock=business&format=csv",
        HANDOFFS + "?clock=business&bucket=no_action",
    ):
        response = client.get(url, headers=as_user(3))
        assert response.status_code == 409, (url, response.get_data(as_text=True))
        assert response.mimetype == "application/json"
        assert response.get_json()["error"]["code"] == "no_business_hours", url
    wall = get_json(client, ESCALATIONS, account=3)
    assert (wall["n_handoffs_claimed"], wall["clock"], wall["business_hours"]) == (1, "wall", None)
    assert get_json(client, BUSINESS_HOURS, account=3) == {"versions": [], "in_effect": None}


@pytest.mark.parametrize("url", [ESCALATIONS, TREND, HANDOFFS])
def test_the_clock_parameter(client: t.Any, url: str) -> None:
    store(1, NOW - timedelta(days=1), NOW - timedelta(hours=23))
    f.commit()
    version = post_version(client, around_the_clock("UTC", "2020-01-01"))
    default = get_json(client, url)
    assert (default["clock"], default["business_hours"]) == ("wall", None)
    explicit = get_json(client, url + "?clock=wall")
    assert (explicit["clock"], explicit["business_hours"]) == ("wall", None)
    business = get_json(client, url + "?clock=business")
    assert business["clock"] == "business"
    assert business["business_hours"] == {"version_ids": [version["id"]]}
    for query in (
        "?clock=Business",
        "?clock=",
        "?clock=biz",
        "?clock=wall&clock=business",
        "?clock=business&clock=business",
        "?clock=business&format=csv&clock=wall",
    ):
        response = client.get(url + query, headers=as_user(1))
        assert response.status_code == 400, (query, response.get_data(as_text=True))
        error = response.get_json()["error"]
        assert error["code"] == "invalid_parameter" and "clock" in error["details"]["fields"], query
    # a bad clock is a bad query even for an account without a calendar (not its 409)
    assert client.get(url + "?clock=biz", headers=as_user(9)).status_code == 400
    assert client.get(url + "?clock=business", headers=as_user(9)).status_code == 409


def test_versions_are_never_edited_or_deleted(client: t.Any) -> None:
    stored = post_version(client, VALID)
    for method in ("put", "patch", "delete"):
        response = getattr(client, method)(BUSINESS_HOURS, json=VALID, headers=as_user(1, "admin"))
        assert response.status_code == 405, method
        assert response.mimetype == "application/json"
        assert response.get_json()["error"]["code"] == "method_not_allowed"
        assert {m.strip() for m in response.headers["Allow"].split(",")} >= {"GET", "POST"}
    assert get_json(client, BUSINESS_HOURS)["versions"] == [stored]


# -- holiday calendars ---------------------------------------------------------------------------


def test_a_holiday_calendar_is_expanded_for_ten_years_and_used(client: t.Any) -> None:
    tuesday_to_thursday = store(
        1, local(NEW_YORK, 2026, 11, 10, 16), local(NEW_YORK, 2026, 11, 12, 10)
    )  # Veterans Day, Wednesday 11 November, closed
    election = store(
        1, local(NEW_YORK, 2026, 11, 2, 16, 30), local(NEW_YORK, 2026, 11, 4, 9, 30)
    )  # Election Day is a New York holiday
    f.commit()
    body = {
        **office(NEW_YORK, "2026-03-01", [("09:00", "17:00")]),
        "holidays": ["2026-12-24", "2026-11-11", "2026-12-24"],
        "holiday_calendar": {"country": "US", "subdivision": "NY"},
    }
    version = post_version(client, body)
    found = holiday_package.country_holidays("US", subdiv="NY", years=range(2026, 2036))
    expected = sorted({date(2026, 12, 24), *found})
    assert version["holidays"] == [day.isoformat() for day in expected]
    assert version["holidays"][-1].startswith("2035-") and date(2026, 11, 3) in found
    assert version["holiday_calendar"] == {"country": "US", "subdivision": "NY"}
    assert get_json(client, BUSINESS_HOURS)["versions"] == [version]
    seconds = business_seconds(client)
    assert seconds[tuesday_to_thursday.handoff_id] == 7200.0
    assert seconds[election.handoff_id] == 3600.0
    country = post_version(
        client,
        {
            **office(NEW_YORK, "2027-01-01", [("08:00", "12:00")]),
            "holiday_calendar": {"country": "US"},
        },
    )
    assert country["holiday_calendar"] == {"country": "US", "subdivision": None}
    national = holiday_package.country_holidays("US", years=range(2027, 2037))
    assert country["holidays"] == [day.isoformat() for day in sorted(national)]


# -- 9. A new version invalidates cached answers at once -------------------------------------------


def business_queries(account: int) -> dict[str, str]:
    return {
        "escalations": ESCALATIONS + "?clock=business&target_seconds=1800",
        "trend": TREND + "?clock=business&tz=America/New_York",
        "handoffs": HANDOFFS + "?clock=business&limit=500",
    }


def check_answers(
    client: t.Any,
    account: int,
    handoffs: t.Sequence[Seeded],
    bodies: t.Sequence[Body],
    ids: list[int],
    user: int = 1,
) -> dict[str, bytes]:
    """Every business answer of ``account`` (to ``user``) equals the reference on the ``bodies``
    (its versions); returns the raw answers."""
    measured = measure(handoffs, Calendar(bodies), NOW)
    raw = {}
    for name, url in business_queries(account).items():
        response = client.get(url, headers=as_user(account, "engineer", user))
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert body["business_hours"] == {"version_ids": ids}, name
        if name == "escalations":
            check_figures(body, measured, 1800.0)
        elif name == "trend":
            expected = trend(measured, *window(body), NEW_YORK, False, None)
            points = [{k: p[k] for k in ("start", *STAT_KEYS)} for p in body["points"]]
            assert same(points, expected), dump(points, expected)
        else:
            assert same(parsed_items(body["items"]), expected_items(measured, *window(body)))
        raw[name] = response.get_data()
    return raw


@pytest.mark.parametrize("app_config", [CACHED])
def test_a_new_version_invalidates_cached_answers_in_process(client: t.Any) -> None:
    refused = client.get(ESCALATIONS + "?clock=business", headers=as_user(1))
    assert refused.status_code == 409
    handoffs = seed(random.Random(91), 1, 80, NOW - timedelta(days=30), NOW)
    first = post_version(client, ALWAYS)
    assert client.get(ESCALATIONS + "?clock=business", headers=as_user(1)).status_code == 200
    before = check_answers(client, 1, handoffs, [ALWAYS], [first["id"]])
    theirs = check_answers(client, 1, handoffs, [ALWAYS], [first["id"]], user=2)
    wall = client.get(ESCALATIONS, headers=as_user(1)).get_data()
    assert json.loads(wall)["clock"] == "wall"  # not the business answer's cache entry
    # the cache is on: a new handoff stays unseen ...
    handoffs.append(store(1, NOW - timedelta(days=2), NOW - timedelta(days=2, minutes=-5)))
    f.commit()
    for name, url in business_queries(1).items():
        assert client.get(url, headers=as_user(1)).get_data() == before[name], name
        assert client.get(url, headers=as_user(1, "engineer", 2)).get_data() == theirs[name]
    assert client.get(ESCALATIONS, headers=as_user(1)).get_data() == wall
    # ... until a version is added: every answer of the account is computed again, for every user
    office_hours = office("UTC", "2020-01-01", [("09:00", "17:00")])  # same start: newest wins
    second = post_version(client, office_hours)
    listing = client.get(BUSINESS_HOURS, headers=as_user(1))
    assert listing.headers["Cache-Control"] == "private, no-store"
    assert [v["id"] for v in listing.get_json()["versions"]] == [first["id"], second["id"]]
    check_answers(client, 1, handoffs, [ALWAYS, office_hours], [second["id"]])
    check_answers(client, 1, handoffs, [ALWAYS, office_hours], [second["id"]], user=2)
    fresh = client.get(ESCALATIONS, headers=as_user(1)).get_json()
    assert fresh["n_handoffs_claimed"] == len(
        in_window(measure(handoffs, None, NOW), *window(fresh))
    )


def test_a_new_version_invalidates_cached_answers_of_every_worker(
    app: t.Any, make_app: t.Any, redis_url: str
) -> None:
    config = {**CACHED, "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": redis_url}
    one, two = make_app(**config).test_client(), make_app(**config).test_client()
    account = uuid.uuid4().int % 10**9  # no earlier run has cached answers for it
    try:
        handoffs = seed(random.Random(92), account, 60, NOW - timedelta(days=30), NOW)
        first = post_version(one, ALWAYS, account=account)
        before = check_answers(two, account, handoffs, [ALWAYS], [first["id"]])
        handoffs.append(store(account, NOW - timedelta(days=2), NOW - timedelta(days=1)))
        f.commit()
        for name, url in business_queries(account).items():
            # cached, and shared: the first worker gets the second one's answer
            assert one.get(url, headers=as_user(account)).get_data() == before[name], name
            assert two.get(url, headers=as_user(account)).get_data() == before[name], name
        office_hours = office("UTC", "2020-01-01", [("09:00", "17:00")])
        second = post_version(one, office_hours, account=account)
        check_answers(two, account, handoffs, [ALWAYS, office_hours], [second["id"]])
        check_answers(one, account, handoffs, [ALWAYS, office_hours], [second["id"]], user=2)
        shared = redis.Redis.from_url(redis_url)
        assert shared.keys(f"flowpilot_analytics:cache:*:gen:escalations:{account}")  # in Redis
        shared.close()
    finally:
        shared = redis.Redis.from_url(redis_url)
        keys = shared.keys(f"flowpilot_analytics:cache:*:{account}*")
        if keys:
            shared.delete(*keys)
        shared.close()


# -- 10. Outside hours: the count starts at the next opening ---------------------------------------


def test_a_claim_outside_hours_counts_from_the_next_opening(client: t.Any, make_app: t.Any) -> None:
    ny = NEW_YORK
    friday = store(1, local(ny, 2026, 11, 6, 17, 50), local(ny, 2026, 11, 9, 8, 10))
    saturday = store(1, local(ny, 2026, 11, 7, 11), local(ny, 2026, 11, 9, 9, 30))
    early = store(1, local(ny, 2026, 11, 10, 7), local(ny, 2026, 11, 10, 9, 15))
    late = store(1, local(ny, 2026, 11, 10, 16, 50), local(ny, 2026, 11, 11, 9, 10))
    quick = store(1, local(ny, 2026, 11, 11, 10), local(ny, 2026, 11, 11, 10, 5))
    whole_day = store(1, local(ny, 2026, 11, 12, 9), local(ny, 2026, 11, 12, 17))
    open_pending = store(1, local(ny, 2026, 11, 13, 16, 30), None)  # 30 business min by now
    open_overdue = store(1, local(ny, 2026, 11, 12, 16), None)  # 1 h + 8 h by now
    f.commit()
    version = post_version(client, office(ny, "2026-01-01", [("09:00", "17:00")]))
    seconds = business_seconds(client)
    assert seconds == {
        friday.handoff_id: 0.0,
        saturday.handoff_id: 1800.0,
        early.handoff_id: 900.0,
        late.handoff_id: 1200.0,
        quick.handoff_id: 300.0,
        whole_day.handoff_id: 28800.0,
        open_pending.handoff_id: None,
        open_overdue.handoff_id: None,
    }
    items = {i["handoff_id"]: i for i in all_items(client, {"clock": "business"})}
    assert items[friday.handoff_id]["wall_seconds"] == 62 * 3600 + 20 * 60
    assert items[friday.handoff_id]["bucket"] == 0

    business = get_json(client, ESCALATIONS + "?clock=business&target_seconds=3600")
    assert business["business_hours"] == {"version_ids": [version["id"]]}
    assert [b["count"] for b in business["distribution"]["buckets"]] == [1, 0, 1, 3, 0, 1]
    assert business["avg_seconds"] == pytest.approx(33000 / 6)
    assert business["median_seconds"] == pytest.approx(1050.0)
    target = business["target"]
    assert (target["n_within"], target["n_breached"], target["n_pending"], target["n_overdue"]) == (
        5,
        2,
        1,
        1,
    )
    wall = get_json(client, ESCALATIONS + "?target_seconds=3600")["target"]
    assert (wall["n_within"], wall["n_breached"], wall["n_pending"], wall["n_overdue"]) == (
        1,
        7,
        0,
        2,
    )
    fast = all_items(client, {"clock": "business", "bucket": "0"})
    assert [i["handoff_id"] for i in fast] == [friday.handoff_id]
    assert all_items(client, {"bucket": "0"}) == []

    # the app's own bucket edges apply to business seconds too
    edged = make_app(FLOWPILOT_ANALYTICS_BUCKET_EDGES_SECONDS=[1000, 7200]).test_client()
    body = get_json(edged, ESCALATIONS + "?clock=business")
    assert [b["count"] for b in body["distribution"]["buckets"]] == [3, 2, 1]
    middle = all_items(edged, {"clock": "business", "bucket": "1"})
    assert [i["handoff_id"] for i in middle] == [late.handoff_id, saturday.handoff_id]
    assert {i["bucket"] for i in middle} == {1}

    # a step a little before the claim (within the skew allowance) is a negative gap: 0
    skewed = make_app(FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS=120).test_client()
    claimed = local(ny, 2026, 11, 13, 11)
    sess = f.session(1, naive(claimed) - timedelta(hours=1))
    early_bird = f.handoff(sess, naive(claimed))
    f.step(sess, naive(claimed) - timedelta(seconds=60))
    f.commit()
    item = next(
        i for i in all_items(skewed, {"clock": "business"}) if i["handoff_id"] == early_bird.id
    )
    assert (item["seconds"], item["wall_seconds"], item["bucket"]) == (0.0, 0.0, 0)


# -- wall times that do not exist or happen twice --------------------------------------------------


def test_wall_times_in_dst_gaps_and_overlaps_convert_with_fold_0(client: t.Any) -> None:
    # New York, Sunday 1 November 2026: 01:30 happens twice, fold=0 is the first one (EDT), so
    # 01:30-03:00 is 05:30Z-08:00Z, 2.5 h (1.5 h on an ordinary Sunday)
    new_york = office(NEW_YORK, "2026-01-01", [("01:30", "03:00")], ["sun"])
    twice = store(1, datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 1, 12, tzinfo=UTC))
    ordinary = store(
        1, datetime(2026, 11, 7, 12, tzinfo=UTC), datetime(2026, 11, 8, 12, tzinfo=UTC)
    )
    # London, Sunday 29 March 2026: 01:00-02:00 never happens; fold=0 reads 01:30 as GMT, so
    # 00:30-01:30 is 00:30Z-01:30Z (1 h) and 01:40-02:10 (01:40Z-01:10Z) is empty (1.5 h on an
    # ordinary Sunday)
    london = office(LONDON, "2026-01-01", [("00:30", "01:30"), ("01:40", "02:10")], ["sun"])
    gap = store(2, datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 29, 12, tzinfo=UTC))
    normal = store(2, datetime(2026, 3, 21, 12, tzinfo=UTC), datetime(2026, 3, 22, 12, tzinfo=UTC))
    f.commit()
    post_version(client, new_york, account=1)
    post_version(client, london, account=2)
    expected = {twice: 9000.0, ordinary: 5400.0, gap: 3600.0, normal: 5400.0}
    for handoff, seconds in expected.items():
        body = new_york if handoff in (twice, ordinary) else london
        action = t.cast(datetime, handoff.action_at)
        assert Calendar([body]).seconds(handoff.claimed_at, action) == seconds  # the reference
    assert business_seconds(client, account=1) == {
        twice.handoff_id: 9000.0,
        ordinary.handoff_id: 5400.0,
    }
    march = {"clock": "business", "since": "2026-03-15T00:00:00Z", "until": "2026-04-01T00:00:00Z"}
    items = all_items(client, march, account=2)
    assert {i["handoff_id"]: i["seconds"] for i in items} == {
        gap.handoff_id: 3600.0,
        normal.handoff_id: 5400.0,
    }


# -- what a drill-down page says it was measured on ------------------------------------------------


def test_a_drilldown_page_lists_the_versions_its_items_used(client: t.Any) -> None:
    """Not those of the handoff read ahead to tell whether a next page exists, nor of those the
    bucket filter left out."""
    recent = store(
        1, datetime(2026, 11, 10, 10, tzinfo=UTC), datetime(2026, 11, 10, 10, 5, tzinfo=UTC)
    )
    older = store(1, datetime(2026, 10, 20, 10, tzinfo=UTC), datetime(2026, 10, 20, 12, tzinfo=UTC))
    f.commit()
    first = post_version(client, ALWAYS)
    second = post_version(client, BERLIN_OFFICE)
    page = get_json(client, HANDOFFS + "?clock=business&limit=1")
    assert [i["handoff_id"] for i in page["items"]] == [recent.handoff_id]
    assert page["next_cursor"] is not None  # the older handoff was read ahead
    assert page["business_hours"] == {"version_ids": [second["id"]]}
    both = get_json(client, HANDOFFS + "?clock=business&limit=2")
    assert both["business_hours"] == {"version_ids": [first["id"], second["id"]]}
    filtered = get_json(client, HANDOFFS + "?clock=business&bucket=4")  # 2 h, on the old version
    assert [i["handoff_id"] for i in filtered["items"]] == [older.handoff_id]
    assert filtered["business_hours"] == {"version_ids": [first["id"]]}
    empty = get_json(client, HANDOFFS + "?clock=business&bucket=0")
    assert empty["items"] == [] and empty["business_hours"] == {"version_ids": []}


def test_an_oversized_body_is_refused_and_nothing_is_stored(client: t.Any) -> None:
    body = _with(holidays=_days(4000), padding="x" * (1024 * 1024))
    response = client.post(BUSINESS_HOURS, json=body, headers=as_user(1, "team_admin"))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_body"
    assert get_json(client, BUSINESS_HOURS)["versions"] == []


# -- the worked example of docs/business-hours.md --------------------------------------------------


def test_the_documented_worked_example(app: t.Any, make_app: t.Any) -> None:
    ny = NEW_YORK
    monday = local(ny, 2026, 11, 30, 9, 30)
    client = make_app(clock=lambda: monday).test_client()
    made = [
        store(1, local(ny, 2026, 11, 13, 17, 50), local(ny, 2026, 11, 16, 8, 10)),
        store(1, local(ny, 2026, 11, 13, 16, 30), local(ny, 2026, 11, 16, 9, 45)),
        store(1, local(ny, 2026, 11, 25, 16), local(ny, 2026, 11, 27, 10)),
        store(1, local(ny, 2026, 11, 26, 11), local(ny, 2026, 11, 26, 15)),
        store(1, local(ny, 2026, 11, 27, 16, 45), None),
    ]
    f.commit()
    version = post_version(client, US_OFFICE)
    items = {i["handoff_id"]: i for i in all_items(client, {"clock": "business"})}
    assert [
        (items[h.handoff_id]["wall_seconds"], items[h.handoff_id]["seconds"]) for h in made
    ] == [
        (224400.0, 0.0),
        (234900.0, 4500.0),
        (151200.0, 7200.0),
        (14400.0, 0.0),
        (None, None),
    ]
    figures = {}
    for clock in ("wall", "business"):
        body = get_json(client, ESCALATIONS + f"?target_seconds=3600&clock={clock}")
        target = body["target"]
        figures[clock] = (
            body["n_handoffs_claimed"],
            body["n_handoffs_with_action"],
            body["median_seconds"],
            body["avg_seconds"],
            [b["count"] for b in body["distribution"]["buckets"]],
            body["distribution"]["no_action"],
            (target["n_within"], target["n_breached"], target["n_pending"], target["n_overdue"]),
            target["attainment"],
            body["business_hours"],
        )
    assert figures["wall"] == (
        5,
        4,
        187800.0,
        156225.0,
        [0, 0, 0, 0, 0, 4],
        1,
        (0, 5, 0, 1),
        0.0,
        None,
    )
    assert figures["business"] == (
        5,
        4,
        2250.0,
        2925.0,
        [2, 0, 0, 0, 2, 0],
        1,
        (2, 2, 1, 0),
        0.5,
        {"version_ids": [version["id"]]},
    )

    # (c): London night shifts, Christmas Day closed
    christmas = make_app(clock=lambda: datetime(2026, 12, 28, 12, tzinfo=UTC)).test_client()
    london = {
        **office(LONDON, "2026-01-01", [("22:00", "06:00")]),
        "holidays": ["2026-12-25"],
    }
    nights = [
        store(2, local(LONDON, 2026, 12, 21, 23), local(LONDON, 2026, 12, 22, 5)),
        store(2, local(LONDON, 2026, 12, 24, 23), local(LONDON, 2026, 12, 25, 5)),
        store(2, local(LONDON, 2026, 12, 25, 21), local(LONDON, 2026, 12, 26, 1)),
    ]
    f.commit()
    post_version(christmas, london, account=2)
    items = {i["handoff_id"]: i for i in all_items(christmas, {"clock": "business"}, account=2)}
    assert [
        (items[h.handoff_id]["wall_seconds"], items[h.handoff_id]["seconds"]) for h in nights
    ] == [
        (21600.0, 21600.0),
        (21600.0, 3600.0),
        (14400.0, 3600.0),
    ]
    without = Calendar([{**london, "holidays": []}])
    assert [without.seconds(h.claimed_at, t.cast(datetime, h.action_at)) for h in nights] == [
        21600.0,
        21600.0,
        10800.0,
    ]
