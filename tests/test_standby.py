"""The read replica against a real hot standby: a private primary, ``pg_basebackup -R`` into another
folder and port, and ``FLOWPILOT_ANALYTICS_BIND`` pointing at it. Reports read the standby, the hook
writes the primary, row-level security holds there, a lagging standby's answers are not cached, and
a standby that goes away is a 503 until it is back."""

from __future__ import annotations

import shutil
import time
import types
import typing as t

import pytest
import sqlalchemy as sa

from . import factories as f
from . import host
from .helpers import PSA, as_user, unavailable
from .host import db
from .services import PG_BIN, PrivateCluster

SETTING = "app.current_account_id"
TABLES = ("ai_sessions", "ai_session_steps", "session_handoffs", "psa_activity_logs")


@pytest.fixture(scope="module")
def clusters() -> t.Iterator[tuple[PrivateCluster, PrivateCluster]]:
    """A primary with the test host's tables, a reader role under row-level security, and its hot
    standby."""
    if not PG_BIN or not shutil.which("runuser"):
        unavailable(
            "PostgreSQL server binaries", RuntimeError("initdb/pg_ctl/pg_basebackup not found")
        )
    primary = PrivateCluster().init()
    standby: PrivateCluster | None = None
    try:
        primary.start()
        app = host.create_app(primary.url)
        with app.app_context():
            db.create_all(bind_key=None)
            with db.engine.begin() as conn:
                conn.exec_driver_sql("CREATE ROLE fpa_reader LOGIN NOSUPERUSER NOBYPASSRLS")
                for table in TABLES:
                    conn.exec_driver_sql(f"GRANT SELECT, INSERT ON {table} TO fpa_reader")
                    conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
                    conn.exec_driver_sql(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
                    conn.exec_driver_sql(
                        f"CREATE POLICY tenant ON {table} USING "
                        f"(account_id = nullif(current_setting('{SETTING}', true), '')::bigint)"
                    )
                conn.exec_driver_sql("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO fpa_reader")
            db.engine.dispose()
        standby = primary.standby()
        yield primary, standby
    finally:
        if standby is not None:
            standby.remove()
        primary.remove()


@pytest.fixture
def replicated(
    clusters: tuple[PrivateCluster, PrivateCluster], tmp_path: t.Any
) -> t.Iterator[t.Any]:
    """The test host on the primary, its analytics reads bound to the standby (as the RLS reader
    role)."""
    primary, standby = clusters
    reader = standby.url.replace("postgres@", "fpa_reader@")
    app = host.create_app(
        primary.url,
        SQLALCHEMY_BINDS={"replica": reader},
        FLOWPILOT_ANALYTICS_BIND="replica",
        FLOWPILOT_ANALYTICS_TENANT_SETTING=SETTING,
        FLOWPILOT_ANALYTICS_CACHE_TTL=60,
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(tmp_path / "dead.jsonl"),
    )
    yield app
    with app.app_context():
        with db.engine.begin() as conn:
            for table in TABLES:
                conn.exec_driver_sql(f"TRUNCATE {table} CASCADE")
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def replayed(app: t.Any) -> None:
    """Wait (bounded, by querying) until the standby has replayed everything the primary has
    written."""
    with app.app_context():
        with db.engine.connect() as primary:
            target = primary.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar()
        deadline = time.monotonic() + 60
        with db.engines["replica"].connect() as standby:
            while time.monotonic() < deadline:
                lag = standby.exec_driver_sql(
                    "SELECT pg_wal_lsn_diff(%(t)s::pg_lsn, pg_last_wal_replay_lsn())", {"t": target}
                ).scalar()
                if lag <= 0:
                    return
                standby.rollback()
        raise AssertionError("the standby did not catch up within 60 s")


def test_reports_read_the_standby_and_the_hook_writes_the_primary(replicated: t.Any) -> None:
    app = replicated
    with app.app_context():
        f.escalation(1, f.at(days=1), 45)
        f.escalation(2, f.at(days=1), 900)
        f.commit()
        replica, primary = db.engines["replica"], db.engine
        with replica.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_is_in_recovery()").scalar() is True
        with primary.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_is_in_recovery()").scalar() is False
    replayed(app)
    statements: dict[str, list[str]] = {"replica": [], "primary": []}

    def on(name: str) -> t.Callable[..., None]:
        return lambda conn, cursor, statement, *args: statements[name].append(statement)

    listeners = {"replica": on("replica"), "primary": on("primary")}
    with app.app_context():
        sa.event.listen(db.engines["replica"], "before_cursor_execute", listeners["replica"])
        sa.event.listen(db.engine, "before_cursor_execute", listeners["primary"])
    try:
        client = app.test_client()
        mine = client.get("/api/v1/analytics/flowpilot/escalations", headers=as_user(1)).get_json()
        assert (mine["n_handoffs_claimed"], mine["median_seconds"]) == (
            1,
            45.0,
        )  # row-level security on the standby
        assert (
            client.get("/api/v1/analytics/flowpilot/escalations", headers=as_user(2)).get_json()[
                "median_seconds"
            ]
            == 900.0
        )
        assert any("session_handoffs" in s for s in statements["replica"])
        assert not any("session_handoffs" in s for s in statements["primary"])
        with app.app_context():
            app.extensions["test_psa"].push_note(
                types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "x"
            )
        assert any("INSERT INTO psa_activity_logs" in s for s in statements["primary"])
        assert not any("INSERT" in s for s in statements["replica"])
    finally:
        with app.app_context():
            sa.event.remove(db.engines["replica"], "before_cursor_execute", listeners["replica"])
            sa.event.remove(db.engine, "before_cursor_execute", listeners["primary"])


def replay(standby: PrivateCluster, action: str) -> None:
    """Pause or resume the standby's replay (a superuser's function)."""
    engine = sa.create_engine(standby.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_wal_replay_{action}()")
    engine.dispose()


def test_a_lagging_standbys_answer_is_not_cached_past_the_catch_up(
    replicated: t.Any, clusters: tuple[PrivateCluster, PrivateCluster]
) -> None:
    app, client = replicated, replicated.test_client()
    admin = as_user(1, "admin")
    with app.app_context():
        sess = f.session(1, f.at(days=1), ticket="T")
        f.commit()
        session = types.SimpleNamespace(id=sess.id, account_id=1, psa_ticket_id="T")
    replayed(app)
    assert (
        client.get(PSA, headers=admin).get_json()["time_entries"]["count"] == 0
    )  # cached, with nothing
    replay(clusters[1], "pause")  # the standby stops replaying: lag, on purpose
    try:
        with app.app_context():
            app.extensions["test_psa"].push_time_entry(
                session, 30
            )  # the hook drops the cached answer
        stale = client.get(PSA, headers=admin)
        assert (
            stale.get_json()["time_entries"]["count"] == 0
        )  # the standby has not replayed the row yet ...
        again = client.get(PSA, headers={**admin, "If-None-Match": stale.headers["ETag"]})
        assert again.status_code == 304  # (same answer, still)
    finally:
        replay(clusters[1], "resume")
    replayed(app)
    fresh = client.get(PSA, headers=admin).get_json()
    assert (
        fresh["time_entries"]["count"] == 1
    )  # ... so that stale answer was not cached: the fresh one shows it


def test_a_standby_that_goes_away_is_a_503_until_it_is_back(
    replicated: t.Any, clusters: tuple[PrivateCluster, PrivateCluster]
) -> None:
    _, standby = clusters
    client = replicated.test_client()
    url = "/api/v1/analytics/flowpilot/escalations?period=7d"
    assert client.get(url, headers=as_user(3)).status_code == 200
    standby.stop()
    try:
        down = client.get(url + "&compare=previous", headers=as_user(3))
        assert (
            down.status_code == 503 and down.get_json()["error"]["code"] == "database_unavailable"
        )
    finally:
        standby.start()
    back = [
        client.get(
            url + f"&compare=previous&target_seconds={600 + i}", headers=as_user(3)
        ).status_code
        for i in range(3)
    ]
    assert back[-1] == 200 and set(back) <= {
        200,
        503,
    }  # a pooled connection cut by the stop may fail once
