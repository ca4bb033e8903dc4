"""Analyst options on both reports: custom ranges, compare=previous, group_by=engineer,
distribution, and the report commands, all against references computed in the test."""

from __future__ import annotations

import json
import random
import typing as t
from datetime import timedelta

import pytest

from . import factories as f
from .escalation_reference import UTC, reference, same, seed
from .helpers import ESCALATIONS, PSA, as_user
from .host import NOW

URL = ESCALATIONS


def test_distribution_compare_and_groups_match_the_reference(client: t.Any) -> None:
    rows = seed(random.Random(5))
    body = client.get(
        URL + "?period=30d&compare=previous&group_by=engineer", headers=as_user(1)
    ).get_json()
    start, end = NOW - timedelta(days=30), NOW
    expected = reference(rows, start, end)
    same(body, expected)
    assert [b["count"] for b in body["distribution"]["buckets"]] == expected["buckets"]
    assert body["distribution"]["no_action"] == expected["no_action"]
    assert [(b["min_seconds"], b["max_seconds"]) for b in body["distribution"]["buckets"]] == [
        (0, 60),
        (60, 300),
        (300, 900),
        (900, 3600),
        (3600, 14400),
        (14400, None),
    ]
    previous = body["previous"]
    assert previous["window_end"] < body["window_start"]
    before_end = start - timedelta(microseconds=1)
    same(previous, reference(rows, before_end - timedelta(days=30), before_end))
    groups = {g["engineer"]: g for g in body["groups"]}
    assert set(groups) == {
        r[1] for r in rows if r[0] == 1 and start <= r[2].replace(tzinfo=UTC) <= end
    }
    for engineer, group in groups.items():
        same(group, reference(rows, start, end, engineer))
    assert sum(g["n_handoffs_claimed"] for g in body["groups"]) == body["n_handoffs_claimed"]


def test_custom_range_matches_the_reference_and_the_period(client: t.Any) -> None:
    rows = seed(random.Random(9))
    since, until = NOW - timedelta(days=50), NOW - timedelta(days=10)
    query = f"?since={since.isoformat()}&until={until.isoformat()}".replace("+", "%2B")
    body = client.get(URL + query, headers=as_user(1)).get_json()
    assert body["period"] == "custom"
    assert (body["window_start"], body["window_end"]) == (since.isoformat(), until.isoformat())
    same(body, reference(rows, since, until))
    naive = client.get(
        URL
        + (
            f"?since={since.replace(tzinfo=None).isoformat()}"
            f"&until={until.replace(tzinfo=None).isoformat()}"
        ),
        headers=as_user(1),
    ).get_json()
    assert naive["n_handoffs_claimed"] == body["n_handoffs_claimed"]  # no offset means UTC
    as_period = client.get(URL + "?period=30d", headers=as_user(1)).get_json()
    as_range = client.get(
        URL
        + f"?since={(NOW - timedelta(days=30)).isoformat()}&until={NOW.isoformat()}".replace(
            "+", "%2B"
        ),
        headers=as_user(1),
    ).get_json()
    assert {k: v for k, v in as_range.items() if k != "period"} == {
        k: v for k, v in as_period.items() if k != "period"
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?since=2026-11-01T00:00:00Z", "until"),
        ("?until=2026-11-01T00:00:00Z", "since"),
        ("?since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z", "until"),
        ("?since=2024-01-01T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("?period=7d&since=2026-11-01T00:00:00Z&until=2026-11-02T00:00:00Z", "period"),
        ("?since=yesterday&until=today", "since"),
        ("?compare=next", "compare"),
        ("?group_by=team", "group_by"),
    ],
)
def test_bad_ranges_and_options_are_400(client: t.Any, query: str, field: str) -> None:
    for url in (URL, PSA):
        if "group_by" in query and url == PSA:
            continue
        response = client.get(url + query, headers=as_user(1, "admin"))
        assert response.status_code == 400, (url, query)
        assert field in response.get_json()["error"]["details"]["fields"]


def test_a_custom_range_spans_at_most_366_days(client: t.Any) -> None:
    ok = client.get(
        URL + "?since=2025-11-01T00:00:00Z&until=2026-11-02T00:00:00Z", headers=as_user(1)
    )
    too_long = client.get(
        URL + "?since=2025-11-01T00:00:00Z&until=2026-11-02T00:00:01Z", headers=as_user(1)
    )
    assert (ok.status_code, too_long.status_code) == (200, 400)
    assert "366 days" in str(too_long.get_json()["error"]["details"]["fields"])


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_BUCKET_EDGES_SECONDS": [10, 100]}])
def test_bucket_edges_are_configurable(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 5)
    f.escalation(1, f.at(days=1), 10)
    f.escalation(1, f.at(days=1), 1000)
    f.commit()
    buckets = client.get(URL, headers=as_user(1)).get_json()["distribution"]["buckets"]
    assert [(b["min_seconds"], b["max_seconds"], b["count"]) for b in buckets] == [
        (0, 10, 1),
        (10, 100, 1),
        (100, None, 1),
    ]


@pytest.mark.parametrize(
    "app_config", [{"FLOWPILOT_ANALYTICS_COLUMNS": {"handoffs.claimed_by": "owner_id"}}]
)
def test_group_by_engineer_without_the_column_is_a_clear_400(client: t.Any) -> None:
    response = client.get(URL + "?group_by=engineer", headers=as_user(1))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (
        error["code"] == "unsupported_grouping"
        and "FLOWPILOT_ANALYTICS_COLUMNS" in error["message"]
    )
    assert client.get(URL, headers=as_user(1)).status_code == 200  # the rest still works


def test_psa_compare_previous_matches_a_custom_range(client: t.Any) -> None:
    for days in (3, 20, 40, 50):
        sess = f.session(1, f.at(days=days), ticket=f"T{days}")
        f.activity(1, sess.id, "note_posted", f.at(days=days))
        f.activity(1, sess.id, "time_entry_posted", f.at(days=days), minutes=days)
    f.commit()
    body = client.get(PSA + "?period=30d&compare=previous", headers=as_user(1, "admin")).get_json()
    previous = body["previous"]
    start = previous["window_start"].replace("+", "%2B")
    end = previous["window_end"].replace("+", "%2B")
    direct = client.get(PSA + f"?since={start}&until={end}", headers=as_user(1, "admin")).get_json()
    assert (
        previous["funnel"] == direct["funnel"]
        and previous["time_entries"] == direct["time_entries"]
    )
    assert (
        previous["time_entries"]["total_minutes"] == 90.0
        and body["time_entries"]["total_minutes"] == 23.0
    )


def test_cli_prints_the_same_numbers_as_the_api(app: t.Any, client: t.Any) -> None:
    seed(random.Random(2))
    api = client.get(
        URL + "?period=90d&compare=previous&group_by=engineer", headers=as_user(1)
    ).get_json()
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "flowpilot-analytics",
            "escalations",
            "--account",
            "1",
            "--period",
            "90d",
            "--compare",
            "previous",
            "--group-by",
            "engineer",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == api
    table = runner.invoke(
        args=["flowpilot-analytics", "escalations", "--account", "1", "--period", "90d"]
    )
    assert f"n_handoffs_claimed      {api['n_handoffs_claimed']}" in table.output
    assert "NOT 'minutes recovered'" in table.output
    psa_api = client.get(
        PSA + "?period=7d&tz=Europe/Berlin", headers=as_user(1, "admin")
    ).get_json()
    psa = runner.invoke(
        args=[
            "flowpilot-analytics",
            "psa-metrics",
            "--account",
            "1",
            "--period",
            "7d",
            "--tz",
            "Europe/Berlin",
            "--json",
        ]
    )
    assert json.loads(psa.output) == psa_api
    bad = runner.invoke(
        args=["flowpilot-analytics", "escalations", "--account", "1", "--since", "2026-01-01"]
    )
    assert bad.exit_code == 2 and "until" in bad.output
