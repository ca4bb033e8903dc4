"""Regressions found in review: each once broke, or could have, a promise of the README."""

from __future__ import annotations

import logging
import math
import types
import typing as t
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import FlowpilotAnalytics

from . import factories as f
from . import host
from .fake_psa import FakePsaService
from .helpers import ESCALATIONS, PSA, as_user
from .host import NOW, db

URL = ESCALATIONS


@pytest.mark.parametrize("minutes", [math.nan, math.inf, -5])
def test_non_finite_or_negative_minutes_are_refused_not_stored(
    app: t.Any, client: t.Any, minutes: float, caplog: pytest.LogCaptureFixture
) -> None:
    psa = app.extensions["flowpilot_analytics"].extension.wrap_psa_service(FakePsaService())
    sess = f.session(1, f.at(days=1), ticket="T")
    f.commit()
    with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
        result = psa.push_time_entry(sess, minutes)
    assert result.minutes is minutes  # the push's own result is untouched
    f.commit()
    assert any("could not read" in r.getMessage() and "finite number" in r.getMessage() for r in caplog.records)
    body = client.get(PSA, headers=as_user(1, "admin"))
    assert body.status_code == 200 and body.get_json()["time_entries"]["count"] == 0


def test_a_service_wrapped_by_two_extension_objects_records_in_each_app(database_uri: str, make_app: t.Any) -> None:
    first = make_app(host.create_app(database_uri, analytics=FlowpilotAnalytics()))
    second = make_app(host.create_app(database_uri, analytics=FlowpilotAnalytics()))
    with first.app_context():
        db.create_all()
    service = FakePsaService()
    first.extensions["flowpilot_analytics"].extension.wrap_psa_service(service)
    second.extensions["flowpilot_analytics"].extension.wrap_psa_service(service)
    sess = types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T")
    with second.app_context():
        service.push_note(sess, "recorded by the second app")
        table = db.metadata.tables["psa_activity_logs"]
        with db.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 1
        db.session.remove()
    with first.app_context():
        db.drop_all(bind_key=None)


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS": 0.00001}])
def test_a_tiny_skew_is_valid_sql(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 3)
    f.commit()
    assert client.get(URL, headers=as_user(1)).get_json()["median_seconds"] == 3.0


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules"])
def test_non_iana_zone_names_are_refused(client: t.Any, zone: str) -> None:
    assert client.get(PSA + f"?tz={zone}", headers=as_user(1, "admin")).status_code == 400


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


def test_two_apps_on_one_redis_never_share_cached_answers(make_app: t.Any, tmp_path: t.Any, redis_url: str) -> None:
    config = {"FLOWPILOT_ANALYTICS_CACHE_TTL": 60, "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": redis_url}
    account = uuid.uuid4().int % 10**9
    full = make_app(host.create_app(f"sqlite:///{tmp_path / 'a.db'}", **config))
    empty = make_app(host.create_app(f"sqlite:///{tmp_path / 'b.db'}", **config))
    for app in (full, empty):
        with app.app_context():
            db.create_all(bind_key=None)
    with full.app_context():
        f.escalation(account, f.at(days=1), 60)
        f.commit()
        assert full.test_client().get(URL, headers=as_user(account)).get_json()["n_handoffs_claimed"] == 1
        db.session.remove()
    assert empty.test_client().get(URL, headers=as_user(account)).get_json()["n_handoffs_claimed"] == 0


@pytest.mark.parametrize("aware", [True, False])
def test_a_host_declared_activity_table_is_read_and_written_in_utc(
    database_uri: str, backend: str, aware: bool
) -> None:
    """The host declares psa_activity_logs itself (here in its own metadata, with its own timestamp type)."""
    if backend == "postgresql":
        options = {"connect_args": {"options": "-c timezone=America/New_York"}}  # a server zone that is not UTC
    else:
        options = {}
    metadata = sa.MetaData()
    sa.Table(
        "psa_activity_logs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer),
        sa.Column("session_id", sa.Integer),
        sa.Column("activity_type", sa.String(64)),
        sa.Column("psa_ticket_id", sa.String(64)),
        sa.Column("external_id", sa.String(64)),
        sa.Column("minutes", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=aware)),
        sa.Column("idempotency_key", sa.String(36), unique=True),
    )
    app = Flask(f"declared_{aware}")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri,
        SQLALCHEMY_ENGINE_OPTIONS=options,
        FLOWPILOT_ANALYTICS_CACHE_TTL=0,
        SECRET_KEY="s",
    )
    own = type(db)(metadata=metadata)
    own.init_app(app)
    late = NOW.replace(hour=23, minute=30) - timedelta(days=5)  # 23:30 UTC is the next day in Berlin
    FlowpilotAnalytics(app, db=own, identity_loader=host.load_identity, clock=lambda: late)
    assert app.extensions["flowpilot_analytics"].activity_table is metadata.tables["psa_activity_logs"]
    with app.app_context():
        own.create_all()
        host_tables = [host.AISession.__table__, host.AISessionStep.__table__, host.SessionHandoff.__table__]
        for table in host_tables:
            table.create(own.engine, checkfirst=True)
        try:
            service = app.extensions["flowpilot_analytics"].extension.wrap_psa_service(FakePsaService())
            service.push_note(types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "x")
            with own.engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT created_at FROM psa_activity_logs")).scalar()
            if backend == "postgresql" and not aware:
                assert stored == late.replace(tzinfo=None)  # naive column: UTC wall time, not New York's
            body = app.test_client().get(PSA + "?period=7d&tz=Europe/Berlin", headers=as_user(1, "admin")).get_json()
            days = {row["date"]: row["notes_posted"] for row in body["daily_trend"]}
            assert days[(late + timedelta(days=1)).date().isoformat()] == 1
        finally:
            own.session.remove()
            own.drop_all()
            for table in reversed(host_tables):
                table.drop(own.engine, checkfirst=True)
            own.engine.dispose()


def test_a_host_declared_activity_table_without_the_idempotency_key_fails_at_startup() -> None:
    metadata = sa.MetaData()
    sa.Table(
        "psa_activity_logs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer),
        sa.Column("created_at", sa.DateTime),
    )
    app = Flask("declared_old")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", SECRET_KEY="s")
    own = type(db)(metadata=metadata)
    own.init_app(app)
    with pytest.raises(ValueError, match="idempotency_key"):
        FlowpilotAnalytics(app, db=own, identity_loader=host.load_identity)
