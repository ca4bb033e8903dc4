"""The escalation metric over time and the response target, against a reference computed here, not
by the plugin."""

from __future__ import annotations

import csv
import io
import json
import random
import typing as t
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from . import factories as f
from .escalation_reference import wilson
from .helpers import ESCALATIONS, as_user
from .host import NOW

TREND = ESCALATIONS + "/trend"
UTC = timezone.utc


def seed(
    rng: random.Random, account: int = 1, count: int = 160
) -> list[tuple[datetime, float | None]]:
    """Handoffs over 40 days (so across New York's DST change on 2026-11-01), some without an
    action, a few claimed in the last hour; returns ``(claimed_at aware UTC, delta or None)`` for
    every one of them."""
    truth: list[tuple[datetime, float | None]] = []
    for i in range(count):
        ago = rng.uniform(0, 40 * 86400) if i % 10 else rng.uniform(0, 3600)
        claimed = NOW - timedelta(seconds=ago)
        naive = claimed.replace(tzinfo=None)
        sess = f.session(account, naive - timedelta(hours=1))
        f.handoff(sess, naive)
        f.step(sess, naive - timedelta(seconds=30))  # before the claim: never the first action
        delta: float | None = None
        if rng.random() < 0.8:
            delta = round(rng.lognormvariate(5, 1.2), 6)
            f.step(sess, naive + timedelta(seconds=delta))
            f.step(sess, naive + timedelta(seconds=delta + 50))
        truth.append((claimed, delta))
    f.commit()
    return truth


def reference(
    handoffs: t.Sequence[tuple[datetime, float | None]],
    start: datetime,
    end: datetime,
    zone: str,
    week: bool,
    target: float | None,
) -> list[dict[str, t.Any]]:
    """Points computed from the handoffs themselves, with numpy's percentiles."""
    tz = ZoneInfo(zone)

    def key(moment: datetime) -> date:
        local = moment.astimezone(tz).date()
        return local - timedelta(days=local.weekday()) if week else local

    first, last = key(start), key(end)
    step = 7 if week else 1
    keys = [first + timedelta(days=i) for i in range(0, (last - first).days + 1, step)]
    points = []
    for day in keys:
        group = [(c, d) for c, d in handoffs if start <= c <= end and key(c) == day]
        deltas = [d for _, d in group if d is not None]
        point: dict[str, t.Any] = {
            "start": day.isoformat(),
            "n_handoffs_claimed": len(group),
            "n_handoffs_with_action": len(deltas),
            "avg_seconds": float(np.mean(deltas)) if deltas else None,
            "median_seconds": float(np.percentile(deltas, 50)) if deltas else None,
            "p95_seconds": float(np.percentile(deltas, 95)) if deltas else None,
            "p90_seconds": float(np.percentile(deltas, 90)) if deltas else None,
            "target": None,
        }
        if target is not None:
            within = sum(1 for _, d in group if d is not None and d <= target)
            breached = sum(
                1
                for c, d in group
                if (d is not None and d > target)
                or (d is None and (NOW - c).total_seconds() >= target)
            )
            pending = len(group) - within - breached
            overdue = sum(1 for c, d in group if d is None and (NOW - c).total_seconds() >= target)
            point["target"] = {
                "seconds": target,
                "n_within": within,
                "n_breached": breached,
                "n_pending": pending,
                "attainment": within / (within + breached) if within + breached else None,
                "n_overdue": overdue,
                "attainment_interval": wilson(within, within + breached),
            }
        points.append(point)
    return points


def same(actual: t.Any, expected: t.Any) -> bool:
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(same(actual[k], expected[k]) for k in expected)
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(same(a, e) for a, e in zip(actual, expected))
        )
    if isinstance(expected, float):
        return actual is not None and abs(actual - expected) <= 1e-6 * max(1.0, abs(expected))
    return bool(actual == expected)


@pytest.mark.parametrize(
    ("zone", "interval", "target"),
    [
        ("UTC", "day", None),
        ("America/New_York", "day", 300.0),
        ("America/New_York", "week", 600.0),
        ("Asia/Kolkata", "day", 120.0),
        ("Asia/Kolkata", "week", None),
    ],
)
def test_points_match_the_reference_and_add_up_to_the_headline(
    client: t.Any, zone: str, interval: str, target: float | None
) -> None:
    handoffs = seed(random.Random(hash((zone, interval)) % 1000))
    f.escalation(2, f.at(days=2), 10)  # another account: never counted
    f.commit()
    query = f"?period=30d&tz={zone}&interval={interval}" + (
        f"&target_seconds={target:g}" if target else ""
    )
    response = client.get(TREND + query, headers=as_user(1))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    start, end = (
        datetime.fromisoformat(body["window_start"]),
        datetime.fromisoformat(body["window_end"]),
    )
    assert (start, end) == (NOW - timedelta(days=30), NOW)
    assert (body["timezone"], body["interval"]) == (zone, interval)
    expected = reference(handoffs, start, end, zone, interval == "week", target)
    assert same(body["points"], expected), json.dumps([body["points"], expected], default=str)[
        :3000
    ]
    headline = client.get(
        ESCALATIONS + "?period=30d" + (f"&target_seconds={target:g}" if target else ""),
        headers=as_user(1),
    ).get_json()
    assert sum(p["n_handoffs_claimed"] for p in body["points"]) == headline["n_handoffs_claimed"]
    assert (
        sum(p["n_handoffs_with_action"] for p in body["points"])
        == headline["n_handoffs_with_action"]
    )
    if target:
        for key in ("n_within", "n_breached", "n_pending", "n_overdue"):
            assert sum(p["target"][key] for p in body["points"]) == headline["target"][key]
    else:
        assert headline["target"] is None and all(p["target"] is None for p in body["points"])


def test_every_day_is_a_point_even_without_handoffs(client: t.Any) -> None:
    body = client.get(TREND + "?period=7d&tz=America/New_York", headers=as_user(1)).get_json()
    days = [p["start"] for p in body["points"]]
    assert (
        days[0]
        == (NOW - timedelta(days=7)).astimezone(ZoneInfo("America/New_York")).date().isoformat()
    )
    assert days[-1] == NOW.astimezone(ZoneInfo("America/New_York")).date().isoformat()
    assert len(days) == len(set(days)) == 8
    assert all(p["n_handoffs_claimed"] == 0 and p["median_seconds"] is None for p in body["points"])
    weeks = client.get(TREND + "?period=30d&interval=week", headers=as_user(1)).get_json()["points"]
    assert all(date.fromisoformat(p["start"]).weekday() == 0 for p in weeks)


def test_pending_handoffs_near_now_and_the_target_setting(client: t.Any, make_app: t.Any) -> None:
    f.escalation(
        1, f.at(seconds_ago=100)
    )  # no action, claimed 100 s ago: pending under a 300 s target
    f.escalation(1, f.at(seconds_ago=400))  # no action, 400 s ago: breached
    f.escalation(1, f.at(seconds_ago=5000), 200)  # within
    f.escalation(1, f.at(seconds_ago=5000), 301)  # breached
    f.commit()
    body = client.get(ESCALATIONS + "?target_seconds=300", headers=as_user(1)).get_json()
    assert body["target"] == {
        "seconds": 300.0,
        "n_within": 1,
        "n_breached": 2,
        "n_pending": 1,
        "attainment": pytest.approx(1 / 3),
        "n_overdue": 1,
        "attainment_interval": [pytest.approx(a) for a in wilson(1, 3)],
    }
    assert client.get(ESCALATIONS, headers=as_user(1)).get_json()["target"] is None
    grouped = client.get(
        ESCALATIONS + "?target_seconds=300&compare=previous&group_by=engineer", headers=as_user(1)
    ).get_json()
    assert (
        grouped["previous"]["target"]["n_within"] == 0
        and grouped["groups"][0]["target"]["n_pending"] == 1
    )
    defaulted = make_app(FLOWPILOT_ANALYTICS_TARGET_SECONDS=300)
    with defaulted.app_context():
        assert (
            defaulted.test_client()
            .get(ESCALATIONS, headers=as_user(1))
            .get_json()["target"]["n_within"]
            == 1
        )


@pytest.mark.parametrize(
    "query",
    [
        "?interval=month",
        "?tz=Nowhere/Town",
        "?tz=CET",
        "?target_seconds=0",
        "?target_seconds=-5",
        "?target_seconds=604801",
        "?target_seconds=abc",
        "?target_seconds=nan",
        "?foo=1",
        "?account_id=2",
        "?compare=previous",
        "?period=7d&since=2026-11-01T00:00:00&until=2026-11-02T00:00:00",
        "?since=2026-11-01T00:00:00",
        "?period=1y",
        "?interval=day&interval=week",
    ],
)
def test_every_bad_input_is_a_400(client: t.Any, query: str) -> None:
    response = client.get(TREND + query, headers=as_user(1))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_parameter"


def test_role_gate_and_account_scope(client: t.Any) -> None:
    f.escalation(2, f.at(days=1), 60)
    f.commit()
    assert client.get(TREND).status_code == 401
    assert client.get(TREND, headers=as_user(1, "viewer")).status_code == 403
    mine = client.get(TREND + "?period=7d", headers=as_user(1)).get_json()
    theirs = client.get(TREND + "?period=7d", headers=as_user(2)).get_json()
    assert sum(p["n_handoffs_claimed"] for p in mine["points"]) == 0
    assert sum(p["n_handoffs_claimed"] for p in theirs["points"]) == 1


def test_csv_cache_and_cli_agree_with_the_json(app: t.Any, client: t.Any) -> None:
    seed(random.Random(5), count=40)
    query = "?period=30d&tz=Asia/Kolkata&interval=week&target_seconds=300"
    body = client.get(TREND + query, headers=as_user(1)).get_json()
    export = client.get(TREND + query + "&format=csv", headers=as_user(1))
    assert export.status_code == 200 and export.mimetype == "text/csv"
    table = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
    assert table[0][0] == "week (Asia/Kolkata)" and len(table) == len(body["points"]) + 1
    assert table[0][1:] == [
        "n_handoffs_claimed",
        "n_handoffs_with_action",
        "avg_seconds",
        "median_seconds",
        "p90_seconds",
        "p95_seconds",
        "target_seconds",
        "target_n_within",
        "target_n_breached",
        "target_n_pending",
        "target_n_overdue",
        "target_attainment",
        "target_attainment_interval_low",
        "target_attainment_interval_high",
    ]
    for row, point in zip(table[1:], body["points"]):
        interval = point["target"]["attainment_interval"]
        cells = [float(cell) if cell else None for cell in row[-2:]]
        assert cells == (interval if interval is not None else [None, None])
    assert [row[0] for row in table[1:]] == [p["start"] for p in body["points"]]
    assert [int(row[1]) for row in table[1:]] == [p["n_handoffs_claimed"] for p in body["points"]]
    first = client.get(TREND + query, headers=as_user(1))
    again = client.get(
        TREND + query, headers={**as_user(1), "If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304
    result = app.test_cli_runner().invoke(
        args=[
            "flowpilot-analytics",
            "escalation-trend",
            "--account",
            "1",
            "--period",
            "30d",
            "--tz",
            "Asia/Kolkata",
            "--interval",
            "week",
            "--target-seconds",
            "300",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == body
    table_output = app.test_cli_runner().invoke(
        args=["flowpilot-analytics", "escalation-trend", "--account", "1"]
    )
    assert table_output.exit_code == 0 and "attainment" in table_output.output
