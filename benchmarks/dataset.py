"""The PostgreSQL datasets: ``fpa_bench`` (50 accounts, 5M steps) and ``fpa_bench_10x`` (10x the
other accounts), built server-side and reused while their recorded version and row counts match."""

from __future__ import annotations

import time

import sqlalchemy as sa
from common import (
    BASE_DB,
    BIG_SHARE,
    HANDOFF_ID_OFFSET,
    HOST_TABLES,
    N_ACCOUNTS,
    N_HANDOFFS,
    N_SESSIONS,
    N_STEPS,
    NOW_SQL,
    SCALE_COPIES,
    SCALED_DB,
    SESSION_ID_OFFSET,
    STEP_ID_OFFSET,
    admin_engine,
    database_comment,
    database_exists,
    db,
    dispose,
    drop_for_load,
    make_app,
    progress,
    recreate_database,
    restore_and_vacuum,
    row_counts,
    run_sql,
    say,
    write_comment,
)

# --------------------------------------------------------------------------------------------------
# 1. The PostgreSQL dataset
# --------------------------------------------------------------------------------------------------

#: Server-side generators. Timings are naive UTC; every session lives inside the 365 days before
#: NOW, and everything that belongs to it happens within 12 hours after it starts, so nothing is in
#: the future. Steps fall in the session's first 8 hours, denser early; handoffs are asked during
#: its first 9 hours and claimed up to 30 minutes later, so late claims wait longer and ~20 % of the
#: claims never see a step.
BASE_LOAD: list[tuple[str, str]] = [
    ("seed", "SELECT setseed(0.42)"),
    (
        "sessions",
        f"""
        INSERT INTO ai_sessions (id, account_id, created_at, psa_ticket_id, title)
        SELECT g,
               CASE WHEN random() < {BIG_SHARE} THEN 1
                    ELSE 2 + floor(random() * {N_ACCOUNTS - 1})::int END,
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
                    THEN s.created_at + x.r1 * interval '9 hours'
                         + x.r3 * x.r3 * interval '30 minutes' END
        FROM (SELECT g, 1 + floor(random() * {N_SESSIONS})::int AS sid, random() AS r1,
                     random() AS r2, random() AS r3
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
        INSERT INTO psa_activity_logs (account_id, session_id, activity_type, psa_ticket_id,
                                       external_id, minutes, created_at)
        SELECT p.account_id, p.id, 'note_posted', p.psa_ticket_id,
               'note-' || p.id || '-' || n, NULL,
               timezone('UTC', LEAST({NOW_SQL}, p.created_at + interval '8 hours'
                                                + random() * interval '4 hours'))
        FROM pushed AS p CROSS JOIN LATERAL generate_series(1, p.notes) AS n""",
    ),
    (
        "time entries",
        f"""
        INSERT INTO psa_activity_logs (account_id, session_id, activity_type, psa_ticket_id,
                                       external_id, minutes, created_at)
        SELECT p.account_id, p.id, 'time_entry_posted', p.psa_ticket_id,
               'time-' || p.id || '-' || n,
               15 * (1 + floor(random() * 8)),
               timezone('UTC', LEAST({NOW_SQL}, p.created_at + interval '8 hours'
                                                + random() * interval '4 hours'))
        FROM pushed AS p CROSS JOIN LATERAL generate_series(1, p.entries) AS n""",
    ),
]


def build_base(server: str) -> dict[str, int]:
    say(f"Building PostgreSQL database {BASE_DB} (drops and recreates it) ...")
    recreate_database(server, BASE_DB)
    app = make_app(f"{server}/{BASE_DB}")
    with app.app_context():
        # the host's tables and, declared by init_app, the plugin's psa_activity_logs
        db.create_all()
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
                say(
                    f"Reusing {BASE_DB} (built {recorded['built']}; row counts match; --rebuild "
                    "forces a rebuild)"
                )
                return counts, False
        say(f"{BASE_DB} exists but is incomplete or from another version: rebuilding")
    started = time.perf_counter()
    counts = build_base(server)
    say(f"Built {BASE_DB} in {time.perf_counter() - started:.0f}s")
    return counts, True


def scale_load(steps_copies: int) -> list[tuple[str, str]]:
    """Copies 1..10 of every other account's rows, with new ids and times shifted by k * 17
    minutes."""
    shift = "k * interval '17 minutes'"
    return [
        (
            "sessions x10 (other accounts)",
            f"""
            INSERT INTO ai_sessions (id, account_id, created_at, psa_ticket_id, title)
            SELECT s.id + k * {SESSION_ID_OFFSET}, s.account_id, s.created_at - {shift},
                   s.psa_ticket_id || '-c' || k, s.title
            FROM ai_sessions AS s CROSS JOIN generate_series(1, {SCALE_COPIES}) AS k
            WHERE s.account_id <> 1""",
        ),
        (
            f"steps x{steps_copies} (other accounts)",
            f"""
            INSERT INTO ai_session_steps (id, account_id, session_id, created_at)
            SELECT s.id + k * {STEP_ID_OFFSET}, s.account_id,
                   s.session_id + k * {SESSION_ID_OFFSET}, s.created_at - {shift}
            FROM ai_session_steps AS s CROSS JOIN generate_series(1, {steps_copies}) AS k
            WHERE s.account_id <> 1""",
        ),
        (
            "handoffs x10 (other accounts)",
            f"""
            INSERT INTO session_handoffs (id, account_id, session_id, created_at, claimed_at)
            SELECT h.id + k * {HANDOFF_ID_OFFSET}, h.account_id,
                   h.session_id + k * {SESSION_ID_OFFSET}, h.created_at - {shift},
                   h.claimed_at - {shift}
            FROM session_handoffs AS h CROSS JOIN generate_series(1, {SCALE_COPIES}) AS k
            WHERE h.account_id <> 1""",
        ),
        (
            "activities x10 (other accounts)",
            f"""
            INSERT INTO psa_activity_logs (account_id, session_id, activity_type, psa_ticket_id,
                                           external_id, minutes, created_at)
            SELECT a.account_id, a.session_id + k * {SESSION_ID_OFFSET}, a.activity_type,
                   a.psa_ticket_id || '-c' || k, a.external_id || '-c' || k, a.minutes,
                   a.created_at - {shift}
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
                say(
                    f"Reusing {SCALED_DB} (built {recorded['built']}; row counts match; "
                    "--rebuild-10x rebuilds)"
                )
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
