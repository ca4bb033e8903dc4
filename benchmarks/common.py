"""What every benchmark shares: the dataset's fixed facts, the host app (the test suite's own),
output and timing."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import typing as t
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import Identity

# The host is the test suite's own (tests/host.py): the same models, indexes, SQLite setup and app
# factory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import host
from tests.host import db

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
DATASET_VERSION = (
    "fpa_bench v2"  # bump when the generators change, so that old databases are rebuilt
)

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


UNLIMITED = "1000000 per minute"


def make_app(uri: str, *, cache_ttl: int = 0) -> Flask:
    """The test host on ``uri`` with the plugin registered; account 1's admin is always signed
    in."""
    return host.create_app(
        uri,
        identity_loader=lambda: IDENTITY,
        clock=lambda: NOW,
        FLOWPILOT_ANALYTICS_CACHE_TTL=cache_ttl,
        FLOWPILOT_ANALYTICS_LIMITS=dict.fromkeys(
            ("psa_metrics", "escalations", "escalation_handoffs"), UNLIMITED
        ),
    )


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
    return sa.create_engine(
        f"{server}/{database}", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )


def run_sql(
    conn: sa.Connection, label: str, sql: str, params: t.Mapping[str, t.Any] | None = None
) -> t.Any:
    started = time.perf_counter()
    result = conn.execute(sa.text(sql), dict(params or {}))
    rows = result.rowcount if result.returns_rows is False else None
    progress(
        f"{label}: {time.perf_counter() - started:.1f}s"
        + (f" ({rows:,} rows)" if rows and rows > 0 else "")
    )
    return result


def database_exists(server: str, name: str) -> bool:
    engine = admin_engine(server)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).first()
    engine.dispose()
    return found is not None


def database_comment(server: str, name: str) -> dict[str, t.Any] | None:
    """What the last complete build wrote on the database (``COMMENT ON DATABASE``), if anything."""
    engine = admin_engine(server)
    with engine.connect() as conn:
        text = conn.execute(
            sa.text(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"
            ),
            {"n": name},
        ).scalar()
    engine.dispose()
    if not text or not text.startswith(DATASET_VERSION + " "):
        return None
    return t.cast(dict[str, t.Any], json.loads(text[len(DATASET_VERSION) + 1 :]))


def row_counts(server: str, name: str) -> dict[str, int]:
    engine = admin_engine(server, name)
    with engine.connect() as conn:
        counts = {
            table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() or 0)
            for table in HOST_TABLES
        }
        counts["account_1_sessions"] = int(
            conn.execute(sa.text("SELECT count(*) FROM ai_sessions WHERE account_id = 1")).scalar()
            or 0
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
    """Drop a table's indexes and constraints for a bulk load; return the statements that restore
    them.

    The restore statements come from the catalog (``pg_get_constraintdef`` / ``pg_get_indexdef``),
    so the schema after the load is exactly what ``db.create_all()`` made. Foreign keys are returned
    apart: they are dropped first and restored last.
    """
    constraints = conn.execute(
        sa.text(
            "SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint "
            "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u', 'f') "
            "ORDER BY contype DESC"
        ),
        {"t": table},
    ).all()
    indexes = conn.execute(
        sa.text(
            "SELECT CAST(indexrelid AS regclass)::text, pg_get_indexdef(indexrelid) "
            "FROM pg_index i WHERE indrelid = CAST(:t AS regclass) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c "
            "WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)"
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
            sa.text(
                "SELECT conname FROM pg_constraint "
                "WHERE conrelid = CAST(:t AS regclass) AND contype = 'f'"
            ),
            {"t": table},
        ).all():
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    for table in tables:
        for (name,) in conn.execute(
            sa.text(
                "SELECT conname FROM pg_constraint "
                "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u')"
            ),
            {"t": table},
        ).all():
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        for (name,) in conn.execute(
            sa.text(
                "SELECT CAST(indexrelid AS regclass)::text FROM pg_index "
                "WHERE indrelid = CAST(:t AS regclass)"
            ),
            {"t": table},
        ).all():
            conn.execute(sa.text(f"DROP INDEX {name}"))
    return restores + foreigns


def restore_and_vacuum(
    conn: sa.Connection, statements: t.Sequence[str], tables: t.Sequence[str]
) -> None:
    conn.execute(sa.text("SET maintenance_work_mem = '1GB'"))
    for statement in statements:
        run_sql(conn, statement[:110], statement)
    for table in ("ai_sessions", "ai_session_steps", "session_handoffs", "psa_activity_logs"):
        conn.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        )
    for table in tables:
        run_sql(conn, f"VACUUM ANALYZE {table}", f"VACUUM ANALYZE {table}")


# --------------------------------------------------------------------------------------------------
# Measuring and comparing
# --------------------------------------------------------------------------------------------------


def endpoint(app: Flask, url: str) -> t.Callable[[], t.Any]:
    client = app.test_client()

    def call() -> t.Any:
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(
                f"GET {url} -> {response.status_code}: {response.get_data(as_text=True)[:300]}"
            )
        return response

    return call


def captured_sql(app: Flask, call: t.Callable[[], t.Any]) -> list[tuple[str, t.Any]]:
    """The statements (with parameters) one request sends to the database, as the driver saw
    them."""
    engine = app_engine(app)
    seen: list[tuple[str, t.Any]] = []

    def capture(
        _conn: t.Any, _cursor: t.Any, statement: str, parameters: t.Any, *_rest: t.Any
    ) -> None:
        seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return seen


def replay(engine: sa.Engine, statements: list[tuple[str, t.Any]]) -> t.Callable[[], None]:
    """Run captured statements again on one connection (rolled back): the endpoint's database time
    alone."""

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
        say(
            f"    {name:<{width}}  median {s['median']:8.2f} ms   min {s['min']:8.2f} ms   "
            f"(n={s['n']:.0f})"
        )


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
                f"time_entries.{key}: endpoint {body['time_entries'][key]} vs SQL "
                f"{expected['time_entries'][key]}"
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
