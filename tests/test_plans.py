"""On PostgreSQL, the endpoints' own queries are planned on the indexes (plan shape, never
timings)."""

from __future__ import annotations

import json
import typing as t

import pytest
import sqlalchemy as sa

from . import factories as f
from .helpers import as_user
from .host import db


def captured_queries(client: t.Any, url: str, headers: dict[str, str]) -> list[tuple[str, t.Any]]:
    """The SQL (with parameters) one request runs, as the driver saw it."""
    seen: list[tuple[str, t.Any]] = []
    client.get(
        url, headers=headers
    )  # the first request reflects the host tables; capture the next one

    def capture(
        conn: t.Any, cursor: t.Any, statement: str, parameters: t.Any, *rest: t.Any
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        assert client.get(url, headers=headers).status_code == 200
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
    return seen


def plan_nodes(statement: str, parameters: t.Any) -> list[dict[str, t.Any]]:
    """Every node of the statement's plan, with sequential scans priced out so index use shows."""
    with db.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        raw = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar()
    plan = raw if isinstance(raw, list) else json.loads(raw)
    nodes: list[dict[str, t.Any]] = []
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return nodes


def index_scans(nodes: list[dict[str, t.Any]]) -> set[str]:
    """Names of the indexes the plan reads (index, index-only and bitmap index scans)."""
    return {n["Index Name"] for n in nodes if "Index Name" in n}


@pytest.fixture
def postgres_only(dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("query plans are checked on PostgreSQL, the production database")


def seed() -> None:
    for i in range(30):
        handoff = f.escalation(1, f.at(days=i + 1), 10, 20)
        for days in range(0, 400, 7):
            f.activity(1 + i % 5, handoff.session_id, "note_posted", f.at(days=days))
    f.commit()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


@pytest.mark.usefixtures("postgres_only")
def test_escalations_probe_the_step_index_per_handoff(client: t.Any) -> None:
    seed()
    queries = captured_queries(
        client, "/api/v1/analytics/flowpilot/escalations?period=90d", as_user(1)
    )
    assert len(queries) == 1
    nodes = plan_nodes(*queries[0])
    scans = index_scans(nodes)
    assert {"ix_steps_account_session_created", "ix_handoffs_account_claimed"} <= scans
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
    assert any(n["Node Type"] == "Limit" for n in nodes)  # first step: one index probe, not a scan


@pytest.mark.usefixtures("postgres_only")
def test_psa_metrics_use_session_and_activity_indexes(client: t.Any) -> None:
    seed()
    queries = captured_queries(
        client,
        "/api/v1/analytics/flowpilot/psa-metrics?period=90d&tz=Europe/Berlin",
        as_user(1, "admin"),
    )
    assert len(queries) == 2
    sessions_plan, activities_plan = (plan_nodes(*q) for q in queries)
    assert "ix_sessions_account_created" in index_scans(sessions_plan)
    # the funnel's EXISTS probes (or semi-joins) read one of the plugin's own indexes
    assert any("psa_activity_logs" in name for name in index_scans(sessions_plan))
    assert "ix_psa_activity_logs_account_created" in index_scans(activities_plan)
    assert not [n for n in sessions_plan + activities_plan if n["Node Type"] == "Seq Scan"]


@pytest.mark.usefixtures("postgres_only")
def test_drill_down_pages_are_index_ranges(client: t.Any) -> None:
    seed()
    first = client.get(
        "/api/v1/analytics/flowpilot/escalations/handoffs?period=90d&limit=5", headers=as_user(1)
    ).get_json()
    url = (
        "/api/v1/analytics/flowpilot/escalations/handoffs?period=90d&limit=5"
        f"&cursor={first['next_cursor']}"
    )
    queries = captured_queries(client, url, as_user(1))
    nodes = plan_nodes(*queries[-1])
    assert {"ix_steps_account_session_created", "ix_handoffs_account_claimed"} <= index_scans(nodes)
    bounded = [n for n in nodes if n.get("Index Name") == "ix_handoffs_account_claimed"]
    assert any(
        "<=" in n.get("Index Cond", "") for n in bounded
    )  # the keyset narrows the index scan
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
