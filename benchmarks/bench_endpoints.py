#!/usr/bin/env python
"""Benchmark of flowpilot_analytics' two endpoints against the best hand-written SQL (issue 4).

A report, not a test: it never asserts. It

1. builds (or reuses) the PostgreSQL database ``fpa_bench``: the host tables exactly as
   ``tests/host.py`` declares them plus the plugin's ``psa_activity_logs`` (``db.create_all()`` after
   ``init_app``), 50 accounts, 250,000 sessions, 5,000,000 steps, ~100,000 handoffs (~90 % claimed),
   ~300,000 PSA activities over the 365 days before ``NOW``, account 1 holding ~20 % of everything;
2. measures, for account 1 and ``period=90d``, each endpoint through the Flask test client against the
   best SQL computing the same numbers on the same engine (median of interleaved rounds), and checks
   that the numbers agree;
3. with ``--scale-others``: copies the database to ``fpa_bench_10x``, adds 10x more rows to the other
   accounts and compares account 1's latency on both;
4. measures SQLite at demo size (20,000 handoffs) and a repeated call within the cache TTL;
5. prints a summary table (figure, measured, target, PASS/FAIL).

Only the plugin's public API is used: ``FlowpilotAnalytics().init_app``, its HTTP routes and its settings.
Run ``.venv/bin/python benchmarks/bench_endpoints.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import typing as t
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import FlowpilotAnalytics, Identity, sqlite_transactional

# --------------------------------------------------------------------------------------------------
# Fixed facts of the dataset
# --------------------------------------------------------------------------------------------------

#: The data's reference "now" and the app's clock, so that the windows never move.
NOW = datetime(2026, 11, 15, 12, 0, 0, tzinfo=timezone.utc)
NOW_SQL = "TIMESTAMP '2026-11-15 12:00:00'"  # the same instant, naive UTC, for the generators
ACCOUNT = 1
PERIOD = "90d"
PERIOD_DAYS = 90
TZ = "America/New_York"

N_ACCOUNTS = 50
N_SESSIONS = 250_000
N_STEPS = 5_000_000
N_HANDOFFS = 100_000
BIG_SHARE = 0.20
DATASET_VERSION = "fpa_bench v2"  # bump when the generators change, so that old databases are rebuilt

BASE_DB = "fpa_bench"
SCALED_DB = "fpa_bench_10x"
SCALE_COPIES = 10  # rows added to the other accounts: 10x what they hold in fpa_bench
#: id offsets of the copies (copy k gets id + k * offset); all stay inside int4.
SESSION_ID_OFFSET = 1_000_000
STEP_ID_OFFSET = 10_000_000
HANDOFF_ID_OFFSET = 1_000_000

ESCALATIONS_URL = f"/api/v1/analytics/flowpilot/escalations?period={PERIOD}"
PSA_URL = f"/api/v1/analytics/flowpilot/psa-metrics?period={PERIOD}&tz={TZ}"
HOST_TABLES = ("ai_sessions", "ai_session_steps", "session_handoffs", "psa_activity_logs")

IDENTITY = Identity(user_id=1, account_id=ACCOUNT, role="admin")

# --------------------------------------------------------------------------------------------------
# The host: its tables exactly as tests/host.py declares them (copied, so that edits there do not
# change what is measured), and an app factory that registers the plugin.
# --------------------------------------------------------------------------------------------------

# The host is the test suite's own (tests/host.py): the same models, indexes and SQLite setup.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.host import db  # noqa: E402


def make_app(uri: str, *, cache_ttl: int = 0) -> Flask:
    """A host app on ``uri`` with the plugin registered; account 1's admin is always signed in."""
    app = Flask("fpa_bench_host")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=uri,
        TESTING=True,
        FLOWPILOT_ANALYTICS_CACHE_TTL=cache_ttl,
        FLOWPILOT_ANALYTICS_PSA_METRICS_LIMIT="1000000 per minute",
        FLOWPILOT_ANALYTICS_ESCALATIONS_LIMIT="1000000 per minute",
        FLOWPILOT_ANALYTICS_HANDOFFS_LIMIT="1000000 per minute",
        SECRET_KEY="benchmark",
    )
    db.init_app(app)
    FlowpilotAnalytics().init_app(app, db=db, identity_loader=lambda: IDENTITY, clock=lambda: NOW)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            sqlite_transactional(db.engine)
    return app


def app_engine(app: Flask) -> sa.Engine:
    with app.app_context():
        return db.engine


def dispose(app: Flask) -> None:
    with app.app_context():
        db.engine.dispose()


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------

T0 = time.perf_counter()


def say(message: str = "") -> None:
    print(message, flush=True)


def progress(message: str) -> None:
    print(f"  [{time.perf_counter() - T0:7.1f}s] {message}", flush=True)


def admin_engine(server: str, database: str = "postgres") -> sa.Engine:
    return sa.create_engine(f"{server}/{database}", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def run_sql(conn: sa.Connection, label: str, sql: str, params: t.Mapping[str, t.Any] | None = None) -> t.Any:
    started = time.perf_counter()
    result = conn.execute(sa.text(sql), dict(params or {}))
    rows = result.rowcount if result.returns_rows is False else None
    progress(f"{label}: {time.perf_counter() - started:.1f}s" + (f" ({rows:,} rows)" if rows and rows > 0 else ""))
    return result


def database_exists(server: str, name: str) -> bool:
    engine = admin_engine(server)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    engine.dispose()
    return found is not None


def database_comment(server: str, name: str) -> dict[str, t.Any] | None:
    """What the last complete build wrote on the database (``COMMENT ON DATABASE``), if anything."""
    engine = admin_engine(server)
    with engine.connect() as conn:
        text = conn.execute(
            sa.text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"), {"n": name}
        ).scalar()
    engine.dispose()
    if not text or not text.startswith(DATASET_VERSION + " "):
        return None
    return t.cast(dict[str, t.Any], json.loads(text[len(DATASET_VERSION) + 1 :]))


def row_counts(server: str, name: str) -> dict[str, int]:
    engine = admin_engine(server, name)
    with engine.connect() as conn:
        counts = {
            table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() or 0) for table in HOST_TABLES
        }
        counts["account_1_sessions"] = int(
            conn.execute(sa.text("SELECT count(*) FROM ai_sessions WHERE account_id = 1")).scalar() or 0
        )
    engine.dispose()
    return counts


def recreate_database(server: str, name: str, template: str | None = None) -> None:
    engine = admin_engine(server)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if template:
            run_sql(
                conn,
                f"CREATE DATABASE {name} TEMPLATE {template}",
                f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY = FILE_COPY',
            )
        else:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def write_comment(server: str, name: str, payload: dict[str, t.Any]) -> None:
    engine = admin_engine(server)
    with engine.connect() as conn:
        text = DATASET_VERSION + " " + json.dumps(payload, sort_keys=True)
        conn.execute(sa.text(f'COMMENT ON DATABASE "{name}" IS {sqlalchemy_quote(text)}'))
    engine.dispose()


def sqlalchemy_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def strip_table(conn: sa.Connection, table: str) -> tuple[list[str], list[str]]:
    """Drop a table's indexes and constraints for a bulk load; return the statements that restore them.

    The restore statements come from the catalog (``pg_get_constraintdef`` / ``pg_get_indexdef``), so the
    schema after the load is exactly what ``db.create_all()`` made. Foreign keys are returned apart: they
    are dropped first and restored last.
    """
    constraints = conn.execute(
        sa.text(
            "SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint "
            "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u', 'f') ORDER BY contype DESC"
        ),
        {"t": table},
    ).all()
    indexes = conn.execute(
        sa.text(
            "SELECT CAST(indexrelid AS regclass)::text, pg_get_indexdef(indexrelid) FROM pg_index i "
            "WHERE indrelid = CAST(:t AS regclass) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)"
        ),
        {"t": table},
    ).all()
    restore: list[str] = []
    foreign: list[str] = []
    for name, definition, kind in constraints:
        statement = f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'
        (foreign if kind == "f" else restore).append(statement)
    restore.extend(definition for _name, definition in indexes)
    return restore, foreign


def drop_for_load(conn: sa.Connection, tables: t.Sequence[str]) -> list[str]:
    """Strip every table (foreign keys first); return all restore statements in a valid order."""
    restores: list[str] = []
    foreigns: list[str] = []
    for table in tables:
        restore, foreign = strip_table(conn, table)
        restores += restore
        foreigns += foreign
    for table in tables:
        for (name,) in conn.execute(
            sa.text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype = 'f'"),
            {"t": table},
        ).all():
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    for table in tables:
        for (name,) in conn.execute(
            sa.text(
                "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u')"
            ),
            {"t": table},
        ).all():
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        for (name,) in conn.execute(
            sa.text("SELECT CAST(indexrelid AS regclass)::text FROM pg_index WHERE indrelid = CAST(:t AS regclass)"),
            {"t": table},
        ).all():
            conn.execute(sa.text(f"DROP INDEX {name}"))
    return restores + foreigns


def restore_and_vacuum(conn: sa.Connection, statements: t.Sequence[str], tables: t.Sequence[str]) -> None:
    conn.execute(sa.text("SET maintenance_work_mem = '1GB'"))
    for statement in statements:
        run_sql(conn, statement[:110], statement)
    for table in ("ai_sessions", "ai_session_steps", "session_handoffs", "psa_activity_logs"):
        conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    for table in tables:
        run_sql(conn, f"VACUUM ANALYZE {table}", f"VACUUM ANALYZE {table}")


# --------------------------------------------------------------------------------------------------
# 1. The PostgreSQL dataset
# --------------------------------------------------------------------------------------------------

#: Server-side generators. Timings are naive UTC; every session lives inside the 365 days before NOW,
#: and everything that belongs to it happens within 12 hours after it starts, so nothing is in the future.
#: Steps fall in the session's first 8 hours, denser early; handoffs are asked during its first 9 hours and
#: claimed up to 30 minutes later, so late claims wait longer and ~20 % of the claims never see a step.
BASE_LOAD: list[tuple[str, str]] = [
    ("seed", "SELECT setseed(0.42)"),
    (
        "sessions",
        f"""
        INSERT INTO ai_sessions (id, account_id, created_at, psa_ticket_id, title)
        SELECT g,
               CASE WHEN random() < {BIG_SHARE} THEN 1 ELSE 2 + floor(random() * {N_ACCOUNTS - 1})::int END,
               {NOW_SQL} - interval '12 hours' - random() * interval '364 days 12 hours',
               CASE WHEN random() < 0.7 THEN 'T-' || g END,
               'Session ' || g
        FROM generate_series(1, {N_SESSIONS}) AS g""",
    ),
    (
        "steps",
        f"""
        INSERT INTO ai_session_steps (id, account_id, session_id, created_at)
        SELECT x.g, s.account_id, s.id, s.created_at + x.r * x.r * interval '8 hours'
        FROM (SELECT g, 1 + floor(random() * {N_SESSIONS})::int AS sid, random() AS r
              FROM generate_series(1, {N_STEPS}) AS g OFFSET 0) AS x
        JOIN ai_sessions AS s ON s.id = x.sid""",
    ),
    (
        "handoffs",
        f"""
        INSERT INTO session_handoffs (id, account_id, session_id, created_at, claimed_at)
        SELECT x.g, s.account_id, s.id, s.created_at + x.r1 * interval '9 hours',
               CASE WHEN x.r2 < 0.9
                    THEN s.created_at + x.r1 * interval '9 hours' + x.r3 * x.r3 * interval '30 minutes' END
        FROM (SELECT g, 1 + floor(random() * {N_SESSIONS})::int AS sid, random() AS r1, random() AS r2,
                     random() AS r3
              FROM generate_series(1, {N_HANDOFFS}) AS g OFFSET 0) AS x
        JOIN ai_sessions AS s ON s.id = x.sid""",
    ),
    # Documentation is pushed for 75 % of the linked sessions (1-2 notes each), and time is logged
    # for 80 % of those (1-2 entries): ~300,000 activities, each stage a subset of the one before.
    (
        "pushed sessions",
        """
        CREATE TEMP TABLE pushed AS
        SELECT id, account_id, created_at, psa_ticket_id,
               1 + (random() < 0.3)::int AS notes,
               CASE WHEN random() < 0.8 THEN 1 + (random() < 0.25)::int ELSE 0 END AS entries
        FROM ai_sessions WHERE psa_ticket_id IS NOT NULL AND random() < 0.75""",
    ),
    (
        "notes",
        f"""
        INSERT INTO psa_activity_logs (account_id, session_id, activity_type, psa_ticket_id, external_id,
                                       minutes, created_at)
        SELECT p.account_id, p.id, 'note_posted', p.psa_ticket_id, 'note-' || p.id || '-' || n, NULL,
               timezone('UTC', LEAST({NOW_SQL}, p.created_at + interval '8 hours' + random() * interval '4 hours'))
        FROM pushed AS p CROSS JOIN LATERAL generate_series(1, p.notes) AS n""",
    ),
    (
        "time entries",
        f"""
        INSERT INTO psa_activity_logs (account_id, session_id, activity_type, psa_ticket_id, external_id,
                                       minutes, created_at)
        SELECT p.account_id, p.id, 'time_entry_posted', p.psa_ticket_id, 'time-' || p.id || '-' || n,
               15 * (1 + floor(random() * 8)),
               timezone('UTC', LEAST({NOW_SQL}, p.created_at + interval '8 hours' + random() * interval '4 hours'))
        FROM pushed AS p CROSS JOIN LATERAL generate_series(1, p.entries) AS n""",
    ),
]


def build_base(server: str) -> dict[str, int]:
    say(f"Building PostgreSQL database {BASE_DB} (drops and recreates it) ...")
    recreate_database(server, BASE_DB)
    app = make_app(f"{server}/{BASE_DB}")
    with app.app_context():
        db.create_all()  # the host's tables and, declared by init_app, the plugin's psa_activity_logs
    dispose(app)
    progress("tables created with db.create_all()")
    engine = admin_engine(server, BASE_DB)
    with engine.connect() as conn:
        restore = drop_for_load(conn, HOST_TABLES)
        conn.execute(sa.text("SET synchronous_commit = off"))
        for label, sql in BASE_LOAD:
            run_sql(conn, label, sql)
        restore_and_vacuum(conn, restore, HOST_TABLES)
    engine.dispose()
    counts = row_counts(server, BASE_DB)
    write_comment(server, BASE_DB, {"counts": counts, "built": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return counts


def ensure_base(server: str, rebuild: bool) -> tuple[dict[str, int], bool]:
    """The base database's row counts, and whether it was (re)built in this run."""
    if not rebuild and database_exists(server, BASE_DB):
        recorded = database_comment(server, BASE_DB)
        if recorded is not None:
            counts = row_counts(server, BASE_DB)
            expected = (
                counts == recorded["counts"]
                and counts["ai_sessions"] == N_SESSIONS
                and counts["ai_session_steps"] == N_STEPS
                and counts["session_handoffs"] == N_HANDOFFS
            )
            if expected:
                say(f"Reusing {BASE_DB} (built {recorded['built']}; row counts match; --rebuild forces a rebuild)")
                return counts, False
        say(f"{BASE_DB} exists but is incomplete or from another version: rebuilding")
    started = time.perf_counter()
    counts = build_base(server)
    say(f"Built {BASE_DB} in {time.perf_counter() - started:.0f}s")
    return counts, True


def scale_load(steps_copies: int) -> list[tuple[str, str]]:
    """Copies 1..10 of every other account's rows, with new ids and times shifted by k * 17 minutes."""
    shift = "k * interval '17 minutes'"
    return [
        (
            "sessions x10 (other accounts)",
            f"""
            INSERT INTO ai_sessions (id, account_id, created_at, psa_ticket_id, title)
            SELECT s.id + k * {SESSION_ID_OFFSET}, s.account_id, s.created_at - {shift},
                   s.psa_ticket_id || '-c' || k, s.title
            FROM ai_sessions AS s CROSS JOIN generate_series(1, {SCALE_COPIES}) AS k WHERE s.account_id <> 1""",
        ),
        (
            f"steps x{steps_copies} (other accounts)",
            f"""
            INSERT INTO ai_session_steps (id, account_id, session_id, created_at)
            SELECT s.id + k * {STEP_ID_OFFSET}, s.account_id, s.session_id + k * {SESSION_ID_OFFSET},
                   s.created_at - {shift}
            FROM ai_session_steps AS s CROSS JOIN generate_series(1, {steps_copies}) AS k
            WHERE s.account_id <> 1""",
        ),
        (
            "handoffs x10 (other accounts)",
            f"""
            INSERT INTO session_handoffs (id, account_id, session_id, created_at, claimed_at)
            SELECT h.id + k * {HANDOFF_ID_OFFSET}, h.account_id, h.session_id + k * {SESSION_ID_OFFSET},
                   h.created_at - {shift}, h.claimed_at - {shift}
            FROM session_handoffs AS h CROSS JOIN generate_series(1, {SCALE_COPIES}) AS k
            WHERE h.account_id <> 1""",
        ),
        (
            "activities x10 (other accounts)",
            f"""
            INSERT INTO psa_activity_logs (account_id, session_id, activity_type, psa_ticket_id, external_id,
                                           minutes, created_at)
            SELECT a.account_id, a.session_id + k * {SESSION_ID_OFFSET}, a.activity_type,
                   a.psa_ticket_id || '-c' || k, a.external_id || '-c' || k, a.minutes, a.created_at - {shift}
            FROM psa_activity_logs AS a CROSS JOIN generate_series(1, {SCALE_COPIES}) AS k
            WHERE a.account_id <> 1""",
        ),
    ]


def ensure_scaled(
    server: str, base_counts: dict[str, int], base_rebuilt: bool, rebuild: bool, steps_copies: int
) -> dict[str, int]:
    if not (rebuild or base_rebuilt) and database_exists(server, SCALED_DB):
        recorded = database_comment(server, SCALED_DB)
        if (
            recorded is not None
            and recorded.get("base_counts") == base_counts
            and recorded.get("steps_copies") == steps_copies
        ):
            counts = row_counts(server, SCALED_DB)
            if counts == recorded["counts"]:
                say(f"Reusing {SCALED_DB} (built {recorded['built']}; row counts match; --rebuild-10x rebuilds)")
                return counts
    say(
        f"Building {SCALED_DB}: copy of {BASE_DB}, then 10x more rows for accounts 2..{N_ACCOUNTS} "
        f"(this takes several minutes) ..."
    )
    started = time.perf_counter()
    recreate_database(server, SCALED_DB, template=BASE_DB)
    engine = admin_engine(server, SCALED_DB)
    with engine.connect() as conn:
        restore = drop_for_load(conn, HOST_TABLES)
        conn.execute(sa.text("SET synchronous_commit = off"))
        for label, sql in scale_load(steps_copies):
            run_sql(conn, label, sql)
        restore_and_vacuum(conn, restore, HOST_TABLES)
    engine.dispose()
    counts = row_counts(server, SCALED_DB)
    write_comment(
        server,
        SCALED_DB,
        {
            "counts": counts,
            "base_counts": base_counts,
            "steps_copies": steps_copies,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    say(f"Built {SCALED_DB} in {time.perf_counter() - started:.0f}s")
    return counts


# --------------------------------------------------------------------------------------------------
# 2. The best hand-written SQL
# --------------------------------------------------------------------------------------------------


def window() -> tuple[datetime, datetime]:
    return NOW - timedelta(days=PERIOD_DAYS), NOW


def naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None)


#: Each handoff's first step by a LATERAL index probe; the statistics in the same statement.
ESC_LATERAL = sa.text("""
    SELECT count(*), count(d.delta), avg(d.delta),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY d.delta),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY d.delta)
    FROM session_handoffs AS h
    LEFT JOIN LATERAL (
        SELECT date_part('epoch', s.created_at - h.claimed_at) AS delta
        FROM ai_session_steps AS s
        WHERE s.account_id = :account_id AND s.session_id = h.session_id AND s.created_at >= h.claimed_at
        ORDER BY s.created_at
        LIMIT 1) AS d ON true
    WHERE h.account_id = :account_id AND h.claimed_at >= :ws AND h.claimed_at <= :we""")

#: The same with an index-bounded scalar subquery (min() becomes a LIMIT 1 probe), fenced by a
#: MATERIALIZED CTE so that the probes run once, not once per aggregate.
ESC_FENCED = sa.text("""
    WITH d AS MATERIALIZED (
        SELECT date_part('epoch', (SELECT min(s.created_at) FROM ai_session_steps AS s
                                   WHERE s.account_id = :account_id AND s.session_id = h.session_id
                                     AND s.created_at >= h.claimed_at) - h.claimed_at) AS delta
        FROM session_handoffs AS h
        WHERE h.account_id = :account_id AND h.claimed_at >= :ws AND h.claimed_at <= :we)
    SELECT count(*), count(delta), avg(delta),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY delta),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY delta)
    FROM d""")


def escalation_sql(engine: sa.Engine, statement: sa.TextClause) -> t.Callable[[], dict[str, t.Any]]:
    start, end = window()
    params = {"account_id": ACCOUNT, "ws": naive(start), "we": naive(end)}

    def run() -> dict[str, t.Any]:
        with engine.connect() as conn:
            claimed, with_action, avg, median, p95 = conn.execute(statement, params).one()
        return {
            "n_handoffs_claimed": claimed,
            "n_handoffs_with_action": with_action,
            "avg_seconds": None if avg is None else float(avg),
            "median_seconds": None if median is None else float(median),
            "p95_seconds": None if p95 is None else float(p95),
        }

    return run


_SESSION_FLAGS = """
    SELECT s.id,
           date(timezone(CAST(:tz AS text), timezone('UTC', s.created_at))) AS day,
           s.psa_ticket_id IS NOT NULL AS linked,
           s.psa_ticket_id IS NOT NULL AND EXISTS (
               SELECT 1 FROM psa_activity_logs AS a
               WHERE a.account_id = :account_id AND a.session_id = s.id AND a.activity_type = 'note_posted'
           ) AS doc_pushed
    FROM ai_sessions AS s
    WHERE s.account_id = :account_id AND s.created_at >= :ws_naive AND s.created_at <= :we_naive
    OFFSET 0"""  # the fence: each EXISTS runs once per session, not once per aggregate that reads it

_SESSION_DAYS = f"""
    SELECT f.day, count(*) AS sessions,
           count(*) FILTER (WHERE f.linked) AS linked,
           count(*) FILTER (WHERE f.doc_pushed) AS doc_pushed,
           count(*) FILTER (WHERE f.doc_pushed AND EXISTS (
               SELECT 1 FROM psa_activity_logs AS a
               WHERE a.account_id = :account_id AND a.session_id = f.id AND a.activity_type = 'time_entry_posted'
           )) AS time_entry_logged
    FROM ({_SESSION_FLAGS}) AS f
    GROUP BY f.day"""

_ACTIVITY_DAYS = """
    SELECT date(timezone(CAST(:tz AS text), a.created_at)) AS day,
           count(*) FILTER (WHERE a.activity_type = 'note_posted') AS notes_posted,
           count(*) FILTER (WHERE a.activity_type = 'time_entry_posted') AS time_entries,
           coalesce(sum(a.minutes) FILTER (WHERE a.activity_type = 'time_entry_posted'), 0) AS minutes
    FROM psa_activity_logs AS a
    WHERE a.account_id = :account_id AND a.activity_type IN ('note_posted', 'time_entry_posted')
      AND a.created_at >= :ws AND a.created_at <= :we
    GROUP BY 1"""

#: One statement: the funnel per local day (EXISTS), the activities per local day, zero-filled days.
PSA_ONE = sa.text(f"""
    WITH sd AS ({_SESSION_DAYS}),
         ad AS ({_ACTIVITY_DAYS}),
         days AS (
             SELECT CAST(g AS date) AS day
             FROM generate_series(date(timezone(CAST(:tz AS text), CAST(:ws AS timestamptz))),
                                  date(timezone(CAST(:tz AS text), CAST(:we AS timestamptz))),
                                  interval '1 day') AS g)
    SELECT days.day, coalesce(sd.sessions, 0), coalesce(sd.linked, 0), coalesce(sd.doc_pushed, 0),
           coalesce(sd.time_entry_logged, 0), coalesce(ad.notes_posted, 0), coalesce(ad.time_entries, 0),
           coalesce(ad.minutes, 0)
    FROM days LEFT JOIN sd USING (day) LEFT JOIN ad USING (day)
    ORDER BY days.day""")

#: The same as two grouped statements on one connection; zero-filling in Python.
PSA_SESSIONS = sa.text(_SESSION_DAYS)
PSA_ACTIVITIES = sa.text(_ACTIVITY_DAYS)


def _psa_result(rows: t.Iterable[t.Sequence[t.Any]]) -> dict[str, t.Any]:
    trend = []
    totals = {"sessions": 0, "linked": 0, "doc_pushed": 0, "time_entry_logged": 0}
    count, minutes_total = 0, 0.0
    for day, sessions, linked, doc_pushed, logged, notes, entries, minutes in rows:
        totals["sessions"] += sessions
        totals["linked"] += linked
        totals["doc_pushed"] += doc_pushed
        totals["time_entry_logged"] += logged
        count += entries
        minutes_total += float(minutes)
        trend.append(
            {
                "date": day.isoformat(),
                "sessions": sessions,
                "notes_posted": notes,
                "time_entries": entries,
                "minutes": float(minutes),
            }
        )
    return {"time_entries": {"count": count, "total_minutes": minutes_total}, "funnel": totals, "daily_trend": trend}


def psa_params() -> dict[str, t.Any]:
    start, end = window()
    return {"account_id": ACCOUNT, "tz": TZ, "ws": start, "we": end, "ws_naive": naive(start), "we_naive": naive(end)}


def psa_sql_one(engine: sa.Engine) -> t.Callable[[], dict[str, t.Any]]:
    params = psa_params()

    def run() -> dict[str, t.Any]:
        with engine.connect() as conn:
            rows = conn.execute(PSA_ONE, params).all()
        return _psa_result(rows)

    return run


def psa_sql_two(engine: sa.Engine) -> t.Callable[[], dict[str, t.Any]]:
    params = psa_params()
    zone = ZoneInfo(TZ)
    start, end = window()
    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def run() -> dict[str, t.Any]:
        with engine.connect() as conn:
            sessions = {row[0]: row[1:] for row in conn.execute(PSA_SESSIONS, params)}
            activities = {row[0]: row[1:] for row in conn.execute(PSA_ACTIVITIES, params)}
        return _psa_result((day, *sessions.get(day, (0, 0, 0, 0)), *activities.get(day, (0, 0, 0))) for day in days)

    return run


# --------------------------------------------------------------------------------------------------
# Measuring and comparing
# --------------------------------------------------------------------------------------------------


def endpoint(app: Flask, url: str) -> t.Callable[[], t.Any]:
    client = app.test_client()

    def call() -> t.Any:
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} -> {response.status_code}: {response.get_data(as_text=True)[:300]}")
        return response

    return call


def captured_sql(app: Flask, call: t.Callable[[], t.Any]) -> list[tuple[str, t.Any]]:
    """The statements (with parameters) one request sends to the database, as the driver saw them."""
    engine = app_engine(app)
    seen: list[tuple[str, t.Any]] = []

    def capture(_conn: t.Any, _cursor: t.Any, statement: str, parameters: t.Any, *_rest: t.Any) -> None:
        seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return seen


def replay(engine: sa.Engine, statements: list[tuple[str, t.Any]]) -> t.Callable[[], None]:
    """Run captured statements again on one connection (rolled back): the endpoint's database time alone."""

    def run() -> None:
        with engine.connect() as conn:
            for statement, parameters in statements:
                result = conn.exec_driver_sql(statement, parameters)
                if result.returns_rows:
                    result.all()

    return run


def measure(
    contenders: dict[str, t.Callable[[], t.Any]], rounds: int, inner: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Median (and min) in ms per contender; calls interleaved, order alternating every round."""
    for _ in range(warmup):
        for call in contenders.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for number in range(rounds):
        order = names if number % 2 == 0 else names[::-1]
        for _ in range(inner):
            for name in order:
                started = time.perf_counter()
                contenders[name]()
                samples[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {"median": statistics.median(values), "min": min(values), "n": len(values)}
        for name, values in samples.items()
    }


def show(stats: dict[str, dict[str, float]]) -> None:
    width = max(len(name) for name in stats)
    for name, s in stats.items():
        say(f"    {name:<{width}}  median {s['median']:8.2f} ms   min {s['min']:8.2f} ms   (n={s['n']:.0f})")


def close(a: t.Any, b: t.Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


def compare_escalations(body: dict[str, t.Any], expected: dict[str, t.Any]) -> tuple[bool, str]:
    ok = all(close(body[key], value) for key, value in expected.items())
    got = {key: body[key] for key in expected}
    text = f"endpoint {got}" if ok else f"endpoint {got}\n        best SQL {expected}"
    return ok, text


def compare_psa(body: dict[str, t.Any], expected: dict[str, t.Any]) -> tuple[bool, str]:
    problems = []
    for key in ("count", "total_minutes"):
        if not close(body["time_entries"][key], expected["time_entries"][key]):
            problems.append(
                f"time_entries.{key}: endpoint {body['time_entries'][key]} vs SQL {expected['time_entries'][key]}"
            )
    for key, value in expected["funnel"].items():
        if not close(body["funnel"][key], value):
            problems.append(f"funnel.{key}: endpoint {body['funnel'][key]} vs SQL {value}")
    got_trend, want_trend = body["daily_trend"], expected["daily_trend"]
    if len(got_trend) != len(want_trend):
        problems.append(f"daily_trend: endpoint {len(got_trend)} days vs SQL {len(want_trend)}")
    for got, want in zip(got_trend, want_trend):
        if not all(close(got[key], value) for key, value in want.items()):
            problems.append(f"daily_trend first difference: endpoint {got} vs SQL {want}")
            break
    summary = (
        f"time_entries {{count {expected['time_entries']['count']}, total_minutes "
        f"{expected['time_entries']['total_minutes']:.1f}}}, funnel {expected['funnel']}, "
        f"daily_trend {len(want_trend)} days {want_trend[0]['date']}..{want_trend[-1]['date']}, "
        f"trend sessions sum {sum(d['sessions'] for d in want_trend)}"
    )
    if problems:
        return False, summary + "\n        " + "\n        ".join(problems)
    return True, summary


class Summary:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, figure: str, measured: str, target: str, passed: bool | None) -> None:
        verdict = "n/a" if passed is None else ("PASS" if passed else "FAIL")
        self.rows.append((figure, measured, target, verdict))

    def print(self) -> None:
        head = ("figure", "measured", "target", "result")
        widths = [max(len(row[i]) for row in [head, *self.rows]) for i in range(4)]
        line = "  ".join("-" * w for w in widths)
        say(line)
        say("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        say(line)
        for row in self.rows:
            say("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        say(line)


# --------------------------------------------------------------------------------------------------
# The PostgreSQL measurements
# --------------------------------------------------------------------------------------------------


def bench_postgres(server: str, counts: dict[str, int], args: argparse.Namespace, summary: Summary) -> None:
    app = make_app(f"{server}/{BASE_DB}")
    engine = app_engine(app)
    esc_endpoint, psa_endpoint = endpoint(app, ESCALATIONS_URL), endpoint(app, PSA_URL)
    esc_sql = {"LATERAL": escalation_sql(engine, ESC_LATERAL), "fenced subquery": escalation_sql(engine, ESC_FENCED)}
    psa_sql = {"one statement": psa_sql_one(engine), "two statements": psa_sql_two(engine)}

    say()
    say(f"== PostgreSQL {BASE_DB}: account {ACCOUNT}, period={PERIOD} ==")
    say("  rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    say(
        f"  endpoints through the Flask test client (FLOWPILOT_ANALYTICS_CACHE_TTL=0, limit 1000000/min); "
        f"SQL on a connection of the same engine; {args.rounds} interleaved rounds x {args.inner} calls"
    )

    # (c) correctness first: the endpoint's numbers against every hand-written variant.
    esc_body = esc_endpoint().get_json()
    psa_body = psa_endpoint().get_json()
    esc_ok = psa_ok = True
    say("  c. numbers:")
    for name, run in esc_sql.items():
        ok, text = compare_escalations(esc_body, run())
        esc_ok &= ok
        say(f"    escalations vs SQL ({name}): {'OK' if ok else 'MISMATCH'}  {text}")
    for name, run in psa_sql.items():
        ok, text = compare_psa(psa_body, run())
        psa_ok &= ok
        say(f"    psa-metrics vs SQL ({name}): {'OK' if ok else 'MISMATCH'}  {text}")

    # The endpoint's own statements, captured from the driver and replayed: splits the endpoint's time
    # into database time and Python/Flask time (diagnostic only).
    esc_own = replay(engine, captured_sql(app, esc_endpoint))
    psa_own = replay(engine, captured_sql(app, psa_endpoint))
    contenders: dict[str, t.Callable[[], t.Any]] = {"escalations endpoint": esc_endpoint}
    contenders |= {f"escalations SQL {name}": run for name, run in esc_sql.items()}
    contenders["escalations endpoint's own SQL replayed"] = esc_own
    contenders["psa-metrics endpoint"] = psa_endpoint
    contenders |= {f"psa-metrics SQL {name}": run for name, run in psa_sql.items()}
    contenders["psa-metrics endpoint's own SQL replayed"] = psa_own
    stats = measure(contenders, args.rounds, args.inner)
    say("  timings:")
    show(stats)

    for label, key, variants, ok in (
        ("a. escalations", "escalations", esc_sql, esc_ok),
        ("b. psa-metrics", "psa-metrics", psa_sql, psa_ok),
    ):
        best_name = min(variants, key=lambda n: stats[f"{key} SQL {n}"]["median"])
        best = stats[f"{key} SQL {best_name}"]["median"]
        mine = stats[f"{key} endpoint"]["median"]
        ratio = mine / best
        own = stats[f"{key} endpoint's own SQL replayed"]["median"]
        min_ratio = stats[f"{key} endpoint"]["min"] / stats[f"{key} SQL {best_name}"]["min"]
        say(
            f"  {label}: endpoint {mine:.2f} ms, best SQL ({best_name}) {best:.2f} ms, ratio {ratio:.2f}x "
            f"(ratio of the minimums: {min_ratio:.2f}x)"
        )
        say(
            f"     (diagnostic: the endpoint's own SQL replayed takes {own:.2f} ms = {own / best:.2f}x the best SQL; "
            f"the remaining {mine - own:.2f} ms is Flask/plugin Python)"
        )
        summary.add(
            f"PG {key} / best SQL (90d, acct 1)",
            f"{mine:.1f} / {best:.1f} ms = {ratio:.2f}x",
            "<= 1.15x",
            ratio <= 1.15,
        )
        summary.add(f"PG {key} numbers = best SQL", "OK" if ok else "MISMATCH", "OK", ok)

    # Repeated call within the cache TTL on the big dataset.
    cached_app = make_app(f"{server}/{BASE_DB}", cache_ttl=60)
    for key, url in (("escalations", ESCALATIONS_URL), ("psa-metrics", PSA_URL)):
        cached(cached_app, url, f"PG {key}", summary, args)
    dispose(cached_app)
    dispose(app)


def cached(app: Flask, url: str, label: str, summary: Summary, args: argparse.Namespace) -> None:
    """A repeated call within FLOWPILOT_ANALYTICS_CACHE_TTL=60, or a note that there is no cache."""
    call = endpoint(app, url)
    started = time.perf_counter()
    first = call()
    first_ms = (time.perf_counter() - started) * 1000
    second = call()
    header = second.headers.get("Cache-Control", "")
    if app.config.get("FLOWPILOT_ANALYTICS_CACHE_TTL", 0) <= 0:
        say(f"  {label}: cache not available (FLOWPILOT_ANALYTICS_CACHE_TTL=0); uncached first call {first_ms:.2f} ms")
        summary.add(f"{label} repeated call within TTL", "cache not available", "< 5 ms", None)
        return
    same = second.get_data() == first.get_data()
    stats = measure({"hit": call}, args.rounds, max(args.inner, 3), warmup=1)["hit"]
    say(
        f"  {label} with FLOWPILOT_ANALYTICS_CACHE_TTL=60: first call {first_ms:.2f} ms, repeated call median "
        f"{stats['median']:.3f} ms (min {stats['min']:.3f}), same body: {same}, Cache-Control: {header}"
    )
    summary.add(
        f"{label} repeated call within TTL", f"{stats['median']:.2f} ms", "< 5 ms", stats["median"] < 5 and same
    )


def bench_scaled(
    server: str, base_counts: dict[str, int], scaled_counts: dict[str, int], args: argparse.Namespace, summary: Summary
) -> None:
    say()
    say(f"== 10x more rows in the other accounts: {BASE_DB} vs {SCALED_DB} (account {ACCOUNT}, {PERIOD}) ==")
    say("  rows: " + ", ".join(f"{k} {base_counts[k]:,} -> {scaled_counts[k]:,}" for k in HOST_TABLES))
    if args.steps_copies != SCALE_COPIES:
        say(
            f"  NOTE: steps were scaled only {args.steps_copies}x for the other accounts (--steps-copies); "
            f"sessions, handoffs and activities 10x. The steps figure is NOT a full 10x."
        )
    else:
        say(
            f"  every table of accounts 2..{N_ACCOUNTS} got {SCALE_COPIES} more copies of its rows "
            f"(10x more rows added); account {ACCOUNT}'s rows are identical in both databases"
        )
    base_app, scaled_app = make_app(f"{server}/{BASE_DB}"), make_app(f"{server}/{SCALED_DB}")
    contenders = {
        f"escalations @ {BASE_DB}": endpoint(base_app, ESCALATIONS_URL),
        f"escalations @ {SCALED_DB}": endpoint(scaled_app, ESCALATIONS_URL),
        f"psa-metrics @ {BASE_DB}": endpoint(base_app, PSA_URL),
        f"psa-metrics @ {SCALED_DB}": endpoint(scaled_app, PSA_URL),
    }
    same = (
        contenders[f"escalations @ {BASE_DB}"]().get_json() == contenders[f"escalations @ {SCALED_DB}"]().get_json()
        and contenders[f"psa-metrics @ {BASE_DB}"]().get_json() == contenders[f"psa-metrics @ {SCALED_DB}"]().get_json()
    )
    say(f"  account {ACCOUNT}'s answers identical on both databases: {same}")
    stats = measure(contenders, args.rounds, args.inner)
    show(stats)
    for key in ("escalations", "psa-metrics"):
        base = stats[f"{key} @ {BASE_DB}"]["median"]
        scaled = stats[f"{key} @ {SCALED_DB}"]["median"]
        ratio = scaled / base
        min_ratio = stats[f"{key} @ {SCALED_DB}"]["min"] / stats[f"{key} @ {BASE_DB}"]["min"]
        say(f"  {key}: {base:.2f} ms -> {scaled:.2f} ms, ratio {ratio:.2f}x (ratio of the minimums: {min_ratio:.2f}x)")
        note = "" if args.steps_copies == SCALE_COPIES else f" (steps x{args.steps_copies} only)"
        summary.add(
            f"PG {key}: 10x other accounts / base{note}",
            f"{base:.1f} -> {scaled:.1f} ms = {ratio:.2f}x",
            "< 1.20x",
            ratio < 1.20 and same,
        )
    dispose(base_app)
    dispose(scaled_app)


# --------------------------------------------------------------------------------------------------
# 4. SQLite at demo size
# --------------------------------------------------------------------------------------------------

SQLITE_SESSIONS = 50_000
SQLITE_STEPS = 400_000
SQLITE_HANDOFFS = 20_000


def stamp(value: datetime) -> str:
    """How SQLAlchemy's DateTime stores a naive UTC value on SQLite."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def build_sqlite(path: str, spread_days: int) -> dict[str, int]:
    """20,000 handoffs (90 % claimed), 50,000 sessions, 400,000 steps, all of account 1's, with sessions
    spread over the ``spread_days`` before NOW (90: every handoff is inside the 90d window), plus a few
    PSA activities."""
    app = make_app(f"sqlite:///{path}")
    with app.app_context():
        db.create_all()
    dispose(app)
    rng = random.Random(42)
    now = naive(NOW)
    sessions, steps, handoffs, activities = [], [], [], []
    opened_at: list[datetime] = []
    for sid in range(1, SQLITE_SESSIONS + 1):
        opened = now - timedelta(hours=12) - timedelta(days=rng.uniform(0, spread_days - 1))
        opened_at.append(opened)
        sessions.append((sid, ACCOUNT, stamp(opened), f"T-{sid}" if rng.random() < 0.7 else None, f"Session {sid}"))
    for step_id in range(1, SQLITE_STEPS + 1):
        sid = rng.randint(1, SQLITE_SESSIONS)
        r = rng.random()
        steps.append((step_id, ACCOUNT, sid, stamp(opened_at[sid - 1] + timedelta(hours=8 * r * r))))
    for hid in range(1, SQLITE_HANDOFFS + 1):
        sid = rng.randint(1, SQLITE_SESSIONS)
        asked = opened_at[sid - 1] + timedelta(hours=9 * rng.random())
        claimed = asked + timedelta(minutes=30 * rng.random() ** 2) if rng.random() < 0.9 else None
        handoffs.append((hid, ACCOUNT, sid, stamp(asked), None if claimed is None else stamp(claimed)))
    for sid, _account, _opened, ticket, _title in sessions[:2000]:
        if ticket:
            activities.append(
                (
                    ACCOUNT,
                    sid,
                    "note_posted",
                    ticket,
                    f"note-{sid}",
                    None,
                    stamp(opened_at[sid - 1] + timedelta(hours=9)),
                )
            )
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO ai_sessions (id, account_id, created_at, psa_ticket_id, title) VALUES (?, ?, ?, ?, ?)",
            sessions,
        )
        conn.executemany(
            "INSERT INTO ai_session_steps (id, account_id, session_id, created_at) VALUES (?, ?, ?, ?)", steps
        )
        conn.executemany(
            "INSERT INTO session_handoffs (id, account_id, session_id, created_at, claimed_at) VALUES (?, ?, ?, ?, ?)",
            handoffs,
        )
        conn.executemany(
            "INSERT INTO psa_activity_logs (account_id, session_id, activity_type, psa_ticket_id, "
            "external_id, minutes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            activities,
        )
    conn.execute("ANALYZE")
    conn.close()
    return {
        "ai_sessions": len(sessions),
        "ai_session_steps": len(steps),
        "session_handoffs": len(handoffs),
        "claimed": sum(1 for h in handoffs if h[4] is not None),
    }


def bench_sqlite(args: argparse.Namespace, summary: Summary) -> None:
    say()
    say("== SQLite at demo size (20,000 handoffs, one account) ==")
    directory = tempfile.mkdtemp(prefix="fpa_bench_sqlite_")
    try:
        for spread_days, label in ((PERIOD_DAYS, "all 20,000 in the 90d window"), (365, "20,000 over 365 days")):
            path = os.path.join(directory, f"demo_{spread_days}.sqlite")
            started = time.perf_counter()
            counts = build_sqlite(path, spread_days)
            say(
                f"  [{label}] built {path} in {time.perf_counter() - started:.1f}s: "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items())
                + f", sessions over the last {spread_days} days"
            )
            app = make_app(f"sqlite:///{path}")
            call = endpoint(app, ESCALATIONS_URL)
            body = call().get_json()
            say(
                f"    escalations answer: n_handoffs_claimed {body['n_handoffs_claimed']}, with_action "
                f"{body['n_handoffs_with_action']}, median {body['median_seconds']}, p95 {body['p95_seconds']}"
            )
            stats = measure({"escalations endpoint (SQLite)": call}, args.rounds, args.inner)
            show(stats)
            median = stats["escalations endpoint (SQLite)"]["median"]
            summary.add(
                f"SQLite escalations 90d, {label} ({body['n_handoffs_claimed']:,} claimed in window)",
                f"{median:.1f} ms",
                "< 150 ms",
                median < 150,
            )
            if spread_days == PERIOD_DAYS:
                cached_app = make_app(f"sqlite:///{path}", cache_ttl=60)
                cached(cached_app, ESCALATIONS_URL, "SQLite escalations", summary, args)
                dispose(cached_app)
            dispose(app)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("FPA_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432"),
        help="SQLAlchemy URL of the PostgreSQL server, without a database (env FPA_BENCH_PG)",
    )
    parser.add_argument("--rebuild", action="store_true", help=f"drop and rebuild {BASE_DB} (and {SCALED_DB})")
    parser.add_argument(
        "--scale-others",
        action="store_true",
        help=f"also build/reuse {SCALED_DB} (10x more rows in the other accounts) and compare",
    )
    parser.add_argument("--rebuild-10x", action="store_true", help=f"rebuild {SCALED_DB} even if it is complete")
    parser.add_argument(
        "--steps-copies",
        type=int,
        default=SCALE_COPIES,
        help="copies of the other accounts' steps added in the 10x database (default 10; "
        "lower only if 45M steps is too slow to build, the output then says so)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--inner", type=int, default=5, help="calls per contender per round (default 5)")
    parser.add_argument("--skip-postgres", action="store_true", help="only the SQLite part")
    parser.add_argument("--skip-sqlite", action="store_true", help="no SQLite part")
    args = parser.parse_args(argv)

    say(
        f"flowpilot_analytics endpoint benchmark; clock NOW = {NOW.isoformat()}, account {ACCOUNT}, period {PERIOD}, "
        f"tz {TZ}"
    )
    summary = Summary()
    if not args.skip_postgres:
        base_counts, rebuilt = ensure_base(args.server, args.rebuild)
        scaled_counts = None
        if args.scale_others:
            scaled_counts = ensure_scaled(
                args.server, base_counts, rebuilt, args.rebuild or args.rebuild_10x, args.steps_copies
            )
        bench_postgres(args.server, base_counts, args, summary)
        if scaled_counts is not None:
            bench_scaled(args.server, base_counts, scaled_counts, args, summary)
        else:
            summary.add("PG: 10x other accounts / base", "not run (--scale-others)", "< 1.20x", None)
    if not args.skip_sqlite:
        bench_sqlite(args, summary)
    say()
    say(f"== Summary (total {time.perf_counter() - T0:.0f}s) ==")
    summary.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
