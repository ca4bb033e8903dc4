"""GET /api/v1/analytics/flowpilot/escalations through the test client, on every backend."""

from __future__ import annotations

import random
import typing as t
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from flowpilot_analytics import METRIC_DEFINITION

from . import factories as f
from .helpers import ESCALATIONS, as_user
from .host import NOW, db

URL = ESCALATIONS


def get(client: t.Any, account: int = 1, role: str = "engineer", query: str = "") -> t.Any:
    return client.get(URL + query, headers=as_user(account, role))


def test_happy_path(client: t.Any) -> None:
    f.escalation(1, f.at(days=2), 60, 3600)
    f.escalation(1, f.at(days=3), 120)
    f.escalation(1, f.at(days=4), 600, 700)
    f.commit()
    response = get(client)
    assert response.status_code == 200
    body = response.get_json()
    assert body["period"] == "30d"
    assert body["window_end"] == "2026-11-15T12:00:00+00:00"
    assert body["window_start"] == "2026-10-16T12:00:00+00:00"
    assert body["n_handoffs_claimed"] == 3
    assert body["n_handoffs_with_action"] == 3
    assert body["avg_seconds"] == pytest.approx(260.0)
    assert body["median_seconds"] == pytest.approx(120.0)
    assert body["p95_seconds"] == pytest.approx(120 + (600 - 120) * 0.9)
    assert body["p90_seconds"] == pytest.approx(120 + (600 - 120) * 0.8)
    assert body["metric_definition"] == METRIC_DEFINITION


def test_zero_data_gives_null_statistics_not_zero(client: t.Any) -> None:
    body = get(client).get_json()
    assert body["n_handoffs_claimed"] == 0
    assert body["n_handoffs_with_action"] == 0
    assert (
        body["avg_seconds"] is None
        and body["median_seconds"] is None
        and body["p95_seconds"] is None
        and body["p90_seconds"] is None
    )
    assert "NOT 'minutes recovered'" in body["metric_definition"]
    assert "baseline" in body["metric_definition"]


def test_claimed_without_action_counts_only_as_claimed(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 30)
    f.escalation(1, f.at(days=1), 90)
    f.escalation(1, f.at(days=1))  # claimed, nobody acted yet
    unclaimed = f.session(1)
    f.handoff(unclaimed, None)
    f.step(unclaimed, f.at(days=0.5))
    f.commit()
    body = get(client).get_json()
    assert (body["n_handoffs_claimed"], body["n_handoffs_with_action"]) == (3, 2)
    assert body["avg_seconds"] == pytest.approx(60.0)
    assert body["median_seconds"] == pytest.approx(60.0)


def test_only_steps_at_or_after_the_claim_count(client: t.Any) -> None:
    claimed = f.at(days=1)
    sess = f.session(1, claimed - timedelta(hours=2))
    f.handoff(sess, claimed)
    f.step(sess, claimed - timedelta(minutes=10))
    f.step(sess, claimed + timedelta(seconds=45))
    f.step(sess, claimed + timedelta(seconds=400))
    f.commit()
    body = get(client).get_json()
    assert body["median_seconds"] == pytest.approx(45.0)


def test_step_exactly_at_claim_is_zero(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 0)
    f.commit()
    body = get(client).get_json()
    assert (body["n_handoffs_with_action"], body["avg_seconds"]) == (1, 0.0)


def test_window_edges_are_inclusive(client: t.Any) -> None:
    f.escalation(1, f.at(days=30), 10)  # exactly window_start: in
    f.escalation(1, f.at(days=30, seconds_ago=1), 20)  # one second earlier: out
    f.escalation(1, f.at(0), 30)  # exactly now: in
    f.escalation(1, f.at(-1), 40)  # one second in the future: out
    f.commit()
    body = get(client).get_json()
    assert body["n_handoffs_claimed"] == 2
    assert body["avg_seconds"] == pytest.approx(20.0)


@pytest.mark.parametrize(("period", "days"), [("7d", 7), ("30d", 30), ("90d", 90)])
def test_period_sets_the_window(client: t.Any, period: str, days: int) -> None:
    for age in (3, 20, 60, 120):
        f.escalation(1, f.at(days=age), age)
    f.commit()
    body = get(client, query=f"?period={period}").get_json()
    assert body["period"] == period
    assert body["window_start"] == (NOW - timedelta(days=days)).isoformat()
    assert body["n_handoffs_claimed"] == sum(1 for age in (3, 20, 60, 120) if age <= days)


def test_each_handoff_of_a_session_gets_its_own_first_step(client: t.Any) -> None:
    sess = f.session(1, f.at(days=5))
    f.handoff(sess, f.at(days=4))
    f.handoff(sess, f.at(days=2))
    f.step(sess, f.at(days=4) + timedelta(seconds=100))
    f.step(sess, f.at(days=2) + timedelta(seconds=10))
    f.commit()
    body = get(client).get_json()
    assert body["n_handoffs_with_action"] == 2
    assert body["avg_seconds"] == pytest.approx(55.0)
    assert body["p95_seconds"] == pytest.approx(10 + 90 * 0.95)
    assert body["p90_seconds"] == pytest.approx(10 + 90 * 0.9)


def test_accounts_never_see_each_other(client: t.Any) -> None:
    for i in range(4):
        f.escalation(1, f.at(days=i + 1), 100)
        f.escalation(2, f.at(days=i + 1), 5000)
    # a step recorded under account 2 on account 1's session must not count for account 1
    sess = f.session(1, f.at(days=2))
    f.handoff(sess, f.at(days=1))
    db.session.add(
        f.AISessionStep(
            account_id=2, session_id=sess.id, created_at=f.at(days=1) + timedelta(seconds=1)
        )
    )
    f.commit()
    mine = get(client, account=1).get_json()
    assert (mine["n_handoffs_claimed"], mine["n_handoffs_with_action"], mine["avg_seconds"]) == (
        5,
        4,
        100.0,
    )
    for attempt in (
        "?account_id=2",
        "?period=30d&account_id=2",
        "?account=2&account_id=2&period=30d",
    ):
        refused = get(client, account=1, query=attempt)  # a query naming an account is refused
        assert refused.status_code == 400
        assert set(refused.get_json()["error"]["details"]["fields"]) <= {"account_id", "account"}
    theirs = get(client, account=2).get_json()
    assert (theirs["n_handoffs_claimed"], theirs["avg_seconds"]) == (4, 5000.0)
    assert get(client, account=3).get_json()["n_handoffs_claimed"] == 0


@pytest.mark.parametrize(
    ("role", "status"),
    [
        ("viewer", 403),
        ("engineer", 200),
        ("team_admin", 200),
        ("admin", 200),
        ("owner", 403),
        ("ADMIN", 403),
    ],
)
def test_roles(client: t.Any, role: str, status: int) -> None:
    response = get(client, role=role)
    assert response.status_code == status
    if status == 403:
        error = response.get_json()["error"]
        assert error["code"] == ("forbidden" if role == "viewer" else "unknown_role")
        assert error["details"]["allowed_roles"] == ["engineer", "team_admin", "admin"]


def test_anonymous_is_401_json(client: t.Any) -> None:
    response = client.get(URL)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    "query", ["?period=1d", "?period=30", "?period=30D", "?period=", "?period=7d&period=30d"]
)
def test_bad_period_is_400_with_allowed_values(client: t.Any, query: str) -> None:
    response = get(client, query=query)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["details"]["allowed_periods"] == ["7d", "30d", "90d"]
    assert "period" in error["details"]["fields"]


def test_post_is_refused_as_json(client: t.Any) -> None:
    response = client.post(URL, headers=as_user(1))
    assert response.status_code == 405


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS": 10}])
def test_clock_skew_allowance_and_floor(client: t.Any) -> None:
    claimed = f.at(days=1)
    drifted = f.session(1, claimed - timedelta(hours=1))
    f.handoff(drifted, claimed)
    f.step(drifted, claimed - timedelta(seconds=5))  # inside the allowance: counts, floored at 0
    too_early = f.session(1, claimed - timedelta(hours=1))
    f.handoff(too_early, claimed)
    f.step(too_early, claimed - timedelta(seconds=30))  # outside it: no action
    f.commit()
    body = get(client).get_json()
    assert (body["n_handoffs_claimed"], body["n_handoffs_with_action"]) == (2, 1)
    assert body["avg_seconds"] == 0.0


def test_without_skew_an_earlier_step_is_not_an_action(client: t.Any) -> None:
    claimed = f.at(days=1)
    sess = f.session(1, claimed - timedelta(hours=1))
    f.handoff(sess, claimed)
    f.step(sess, claimed - timedelta(seconds=5))
    f.commit()
    body = get(client).get_json()
    assert (body["n_handoffs_claimed"], body["n_handoffs_with_action"]) == (1, 0)


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS": 0.00001}])
def test_a_tiny_skew_is_valid_sql(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 3)
    f.commit()
    assert client.get(URL, headers=as_user(1)).get_json()["median_seconds"] == 3.0


def test_times_within_one_millisecond_are_ordered_exactly(client: t.Any) -> None:
    claimed = f.at(days=1).replace(microsecond=500_400)
    early = f.session(1, claimed - timedelta(hours=1))
    f.handoff(early, claimed)
    f.step(early, claimed - timedelta(microseconds=300))  # 0.3 ms before the claim: not an action
    start = (NOW - timedelta(days=30)).replace(tzinfo=None)
    edge = f.session(1, start - timedelta(hours=1))
    f.handoff(edge, start - timedelta(microseconds=400))  # 0.4 ms before the window: out
    f.step(edge, start + timedelta(seconds=1))
    f.commit()
    body = client.get(URL, headers=as_user(1)).get_json()
    assert (body["n_handoffs_claimed"], body["n_handoffs_with_action"]) == (1, 0)


def test_one_query_whatever_the_data_size(client: t.Any, app: t.Any) -> None:
    statements: list[str] = []

    def count(*args: t.Any) -> None:
        if args[2].strip().upper() != "BEGIN":  # the SQLite recipe's own BEGIN is not a query
            statements.append(args[2])

    get(client)  # reflection of the host tables happens once, on the first request
    engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        f.escalation(1, f.at(days=1), 5)
        f.commit()
        statements.clear()
        get(client)
        small = len(statements)
        for i in range(60):
            f.escalation(1, f.at(days=1 + i / 10), i, i + 1)
        f.commit()
        statements.clear()
        get(client)
        assert len(statements) == small == 1
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def reference(
    handoffs: list[tuple[int, int, t.Any]],
    steps: list[tuple[int, int, t.Any]],
    account: int,
    start: t.Any,
    end: t.Any,
    skew: float,
) -> dict[str, t.Any]:
    """The metric computed the slow, obvious way, with numpy for the statistics."""
    claimed = 0
    deltas = []
    for acct, sess, claimed_at in handoffs:
        if acct != account or claimed_at is None or not (start <= claimed_at <= end):
            continue
        claimed += 1
        after = [
            c
            for a, s, c in steps
            if a == acct and s == sess and c >= claimed_at - timedelta(seconds=skew)
        ]
        if after:
            deltas.append(max(0.0, (min(after) - claimed_at).total_seconds()))
    stats = (
        (
            float(np.mean(deltas)),
            float(np.percentile(deltas, 50)),
            float(np.percentile(deltas, 95)),
            float(np.percentile(deltas, 90)),
        )
        if deltas
        else (None, None, None, None)
    )
    return {
        "n_handoffs_claimed": claimed,
        "n_handoffs_with_action": len(deltas),
        "avg_seconds": stats[0],
        "median_seconds": stats[1],
        "p95_seconds": stats[2],
        "p90_seconds": stats[3],
    }


@pytest.mark.parametrize("seed", [7, 2026])
@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS": 3}])
def test_randomized_against_reference(client: t.Any, seed: int) -> None:
    rng = random.Random(seed)
    handoffs: list[tuple[int, int, t.Any]] = []
    steps: list[tuple[int, int, t.Any]] = []
    for _ in range(40):
        account = rng.choice([1, 1, 2])
        sess = f.session(account, f.at(days=rng.uniform(0, 100)))
        for _ in range(rng.randint(0, 3)):
            claimed = (
                None if rng.random() < 0.2 else f.at(seconds_ago=rng.uniform(-3600, 95 * 86400))
            )
            if claimed is not None:
                claimed = claimed.replace(microsecond=rng.randrange(1_000_000))
            f.handoff(sess, claimed)
            handoffs.append((account, sess.id, claimed))
        for _ in range(rng.randint(0, 8)):
            created = f.at(seconds_ago=rng.uniform(-3600, 100 * 86400)).replace(
                microsecond=rng.randrange(1_000_000)
            )
            f.step(sess, created)
            steps.append((account, sess.id, created))
    f.commit()
    naive_now = NOW.replace(tzinfo=None)
    for period, days in (("7d", 7), ("30d", 30), ("90d", 90)):
        for account in (1, 2):
            body = get(client, account=account, query=f"?period={period}").get_json()
            expected = reference(
                handoffs, steps, account, naive_now - timedelta(days=days), naive_now, 3
            )
            for key, value in expected.items():
                assert body[key] == (
                    pytest.approx(value, abs=1e-6) if value is not None else None
                ), (period, key)
