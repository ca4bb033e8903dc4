"""OpenTelemetry: each counter moves exactly when its event happens; spans carry no personal data.

The SDK (in-memory reader and exporter) is configured once for the test session, as a host would
configure it; the plugin itself only uses the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import typing as t

import pytest
import sqlalchemy as sa

from flowpilot_analytics import registration

from . import factories as f
from . import host
from .helpers import ESCALATIONS, PSA, as_user
from .helpers import METRIC_READER as _READER
from .helpers import SPAN_EXPORTER as _SPANS
from .host import db


def points(name: str) -> list[t.Any]:
    data = _READER.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == f"flowpilot_analytics.{name}":
                    found += list(metric.data.data_points)
    return found


def total(name: str, **attributes: t.Any) -> float:
    """The counter's (or histogram's count) current value over the points with these attributes."""
    value = 0.0
    for point in points(name):
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            value += getattr(point, "value", None) if hasattr(point, "value") else point.count
    return value


class Delta:
    """Counters' changes across a block."""

    def __init__(self, *names: tuple[str, dict[str, t.Any]]) -> None:
        self.names = names

    def __enter__(self) -> Delta:
        self.before = [total(name, **attrs) for name, attrs in self.names]
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.after = [total(name, **attrs) for name, attrs in self.names]

    @property
    def changes(self) -> list[float]:
        return [a - b for a, b in zip(self.after, self.before)]


NOTE = {"activity_type": "note_posted"}


def test_recording_counters_move_exactly_with_their_events(app: t.Any) -> None:
    psa = app.extensions["test_psa"]
    session = types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T")
    watched = [
        ("activities.recorded", NOTE),
        ("activities.duplicate", NOTE),
        ("activities.dead_lettered", NOTE),
        ("activities.failed", NOTE),
        ("activities.replayed", {**NOTE, "outcome": "written"}),
    ]
    with Delta(*watched) as delta:
        psa.fixed_id = "N-1"
        psa.push_note(session, "x")
    assert delta.changes == [1, 0, 0, 0, 0]
    with Delta(*watched) as delta:
        psa.push_note(session, "retry")
    assert delta.changes == [0, 1, 0, 0, 0]
    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)
    try:
        with Delta(*watched) as delta:
            psa.fixed_id = "N-2"
            psa.push_note(session, "the table is gone")
        assert delta.changes == [0, 0, 1, 0, 0]
    finally:
        db.metadata.tables["psa_activity_logs"].create(db.engine)
    with Delta(*watched) as delta:
        psa.push_note(types.SimpleNamespace(id=1), "no account: unreadable")
    assert delta.changes == [0, 0, 0, 1, 0]
    with Delta(*watched) as delta:
        result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "replay-activities"])
    assert "written 1" in result.output and delta.changes == [0, 0, 0, 0, 1]


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
            "FLOWPILOT_ANALYTICS_LIMITS": {"psa_metrics": "1 per minute"},
        }
    ],
)
def test_report_cache_and_limit_counters(client: t.Any, backend: str) -> None:
    dialect = "postgresql" if backend == "postgresql" else "sqlite"
    route = {"route": "escalations"}
    watched = [
        ("cache.misses", route),
        ("cache.hits", route),
        ("report.duration", {**route, "backend": dialect}),
        ("rate_limited", {"route": "psa_metrics"}),
    ]
    with Delta(*watched) as delta:
        assert client.get(ESCALATIONS + "?period=7d", headers=as_user(41)).status_code == 200
    assert delta.changes == [1, 0, 1, 0]
    with Delta(*watched) as delta:
        assert client.get(ESCALATIONS + "?period=7d", headers=as_user(41)).status_code == 200
    assert delta.changes == [0, 1, 0, 0]
    with Delta(*watched) as delta:
        assert client.get(PSA, headers=as_user(41, "admin", 7)).status_code == 200
        assert client.get(PSA, headers=as_user(41, "admin", 7)).status_code == 429
    assert delta.changes == [0, 0, 0, 1]


def test_the_backlog_gauge_counts_dead_letters(app: t.Any) -> None:
    store = registration(app).dead_letters

    def backlog() -> float:
        mine = [
            p.value
            for p in points("dead_letters.backlog")
            if p.attributes.get("location") == store.location
        ]
        return sum(mine)

    before = backlog()
    store.append(
        {
            "account_id": 1,
            "session_id": 1,
            "activity_type": "note_posted",
            "psa_ticket_id": None,
            "external_id": "B-1",
            "minutes": None,
            "created_at": "2026-11-15T12:00:00+00:00",
            "idempotency_key": "b-1",
        }
    )
    assert backlog() == before + 1


def test_spans_carry_the_route_and_no_personal_data(app: t.Any, client: t.Any) -> None:
    f.escalation(512, f.at(days=1), 30)
    f.commit()
    _SPANS.clear()
    assert (
        client.get(
            ESCALATIONS + "?period=30d&group_by=engineer", headers=as_user(512, "engineer", 9001)
        ).status_code
        == 200
    )
    app.extensions["test_psa"].push_note(
        types.SimpleNamespace(id=77, account_id=512, psa_ticket_id="T"), "Customer secret note"
    )
    spans = {span.name: span for span in _SPANS.get_finished_spans()}
    report = spans["flowpilot_analytics.report escalations"]
    assert report.attributes["flowpilot_analytics.route"] == "escalations"
    assert report.attributes["flowpilot_analytics.period"] == "30d"
    assert report.attributes["flowpilot_analytics.group_by"] == "engineer"
    assert (
        spans["flowpilot_analytics.record"].attributes["flowpilot_analytics.outcome"] == "recorded"
    )
    every_value = " ".join(
        str(v) for span in spans.values() for v in (span.attributes or {}).values()
    )
    assert "512" not in every_value and "9001" not in every_value and "secret" not in every_value


def test_the_demo_serves_the_plugins_counters_on_metrics(tmp_path: t.Any) -> None:
    """In a process of its own (a host sets its provider once): the demo's Prometheus /metrics after
    a push."""
    demo_dir = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "demo"
    )
    script = f"""
import sys
sys.path.insert(0, {demo_dir!r})
import app as demo
application = demo.create_app({f"sqlite:///{tmp_path / 'demo.sqlite'}"!r})
client = application.test_client()
assert client.post("/demo/sessions/1/push?minutes=30",
                   headers={{"Authorization": "Bearer acme-engineer"}}).status_code == 200
assert client.get("/api/v1/analytics/flowpilot/escalations",
                  headers={{"Authorization": "Bearer acme-engineer"}}).status_code == 200
print(client.get("/metrics").get_data(as_text=True))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exposition = done.stdout
    assert 'flowpilot_analytics_activities_recorded_total{activity_type="note_posted"' in exposition
    assert (
        'flowpilot_analytics_activities_recorded_total{activity_type="time_entry_posted"'
        in exposition
    )
    assert "flowpilot_analytics_report_duration_seconds_bucket" in exposition
    assert "flowpilot_analytics_dead_letters_backlog" in exposition
    assert sa is not None


def test_a_failing_report_span_carries_no_sql_and_a_lost_push_is_counted(
    app: t.Any, client: t.Any
) -> None:
    import threading

    assert (
        client.get(ESCALATIONS + "?period=30d", headers=as_user(4242)).status_code == 200
    )  # tables reflected
    _SPANS.clear()
    db.session.rollback()
    host.SessionHandoff.__table__.drop(db.engine)
    try:
        assert client.get(ESCALATIONS + "?period=7d", headers=as_user(4242)).status_code == 500
    finally:
        db.session.rollback()
        host.SessionHandoff.__table__.create(db.engine)
    (span,) = [
        s for s in _SPANS.get_finished_spans() if s.name.startswith("flowpilot_analytics.report")
    ]
    assert span.status.description in ("ProgrammingError", "OperationalError") and not span.events
    with Delta(
        ("activities.failed", {"activity_type": "note_posted", "reason": "no_app_context"})
    ) as delta:
        session = types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T")
        worker = threading.Thread(target=lambda: app.extensions["test_psa"].push_note(session, "x"))
        worker.start()
        worker.join()
    assert delta.changes == [1]
