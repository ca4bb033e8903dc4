#!/usr/bin/env python
"""Benchmark of the per-client reports (``client=<id>``, ``group_by=client``) against the
unfiltered ones.

A report, not a test: it never asserts and always exits 0. On ``fpa_bench_clients``, a copy of the
PostgreSQL dataset ``fpa_bench`` (built or reused as ``bench_endpoints.py`` does: 50 accounts, 5M
steps, ~100k handoffs; ``fpa_bench`` itself is never altered) it

1. creates the copy (``CREATE DATABASE ... TEMPLATE fpa_bench``) unless one whose
   ``COMMENT ON DATABASE`` matches this generator and ``fpa_bench``'s build exists, adds
   ``ai_sessions.client_id integer`` and fills it: 20 clients per account with Zipf sizes (the
   largest ~28 % of an account's sessions with a client, the smallest ~1.4 %), 10 % of the
   sessions without a client; ids ``account_id * 100 + rank``, so globally unique; then the index
   ``flask flowpilot-analytics doctor`` recommends, ``ai_sessions (account_id, client_id,
   created_at)``, and ``VACUUM (FULL)`` + ``VACUUM ANALYZE`` of ``ai_sessions``;
2. checks the answers: each filtered report counts no more than the unfiltered one, the
   ``group_by=client`` groups add up to the unfiltered report and the large client's group equals
   its ``client=`` report;
3. measures, for account 1 and ``period=90d`` with the cache off, ``escalations``,
   ``escalations/trend`` (daily, ``tz=America/New_York``), the first ``escalations/handoffs`` page
   and ``psa-metrics``, each unfiltered, for the account's largest client and for its smallest
   (interleaved rounds, after a warm-up), plus ``group_by=client`` on ``escalations`` and
   ``psa-metrics``; prints the medians side by side with the ratio filtered / unfiltered (target
   from issue 21: <= 1.0x, no slower, within noise) and the ratio of the minimums;
4. for each filtered report that misses the target (all of them with ``--explain``): the captured
   statements of the unfiltered and the filtered request under ``EXPLAIN (ANALYZE, BUFFERS)``.

Run ``.venv/bin/python benchmarks/bench_clients.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import typing as t
from datetime import timedelta

import sqlalchemy as sa
from common import (
    ACCOUNT,
    BASE_DB,
    NOW,
    PERIOD,
    PERIOD_DAYS,
    T0,
    TZ,
    Summary,
    admin_engine,
    app_engine,
    captured_sql,
    database_comment,
    database_exists,
    dispose,
    endpoint,
    make_app,
    measure,
    recreate_database,
    row_counts,
    run_sql,
    say,
    show,
    write_comment,
)
from dataset import ensure_base

CLIENTS_DB = "fpa_bench_clients"
CLIENTS_VERSION = "fpa_bench_clients v2"  # bump when the client fill changes
N_CLIENTS = 20
NULL_SHARE = 0.10
INDEX = "ix_ai_sessions_account_id_client_id_created_at_id"  # the name doctor's fix would give it

API = "/api/v1/analytics/flowpilot"
REPORTS = {
    "escalations": f"{API}/escalations?period={PERIOD}",
    "trend": f"{API}/escalations/trend?period={PERIOD}&tz={TZ}",
    "handoffs page 1": f"{API}/escalations/handoffs?period={PERIOD}",
    "psa-metrics": f"{API}/psa-metrics?period={PERIOD}&tz={TZ}",
}
GROUPED = ("escalations", "psa-metrics")
TARGET_RATIO = 1.0
#: The noise band: a median ratio up to this passes when the minimums' ratio is <= 1.0.
NOISE_RATIO = 1.05

# Zipf weights 1/rank over N_CLIENTS ranks; two independent uniforms per session from the
# session id (hashint4extended with two seeds), so the fill is deterministic.
FILL = [
    ("add ai_sessions.client_id", "ALTER TABLE ai_sessions ADD COLUMN client_id integer"),
    (
        "fill client_id (Zipf over 20 clients per account, 10 % NULL)",
        f"""
        WITH w AS (
            SELECT r, sum(1.0 / r) OVER (ORDER BY r) / sum(1.0 / r) OVER () AS upto
            FROM generate_series(1, {N_CLIENTS}) AS r),
        u AS (
            SELECT id,
                   (hashint4extended(id, 1) & 2147483647)::float8 / 2147483648 AS u1,
                   (hashint4extended(id, 2) & 2147483647)::float8 / 2147483648 AS u2
            FROM ai_sessions)
        UPDATE ai_sessions AS s
        SET client_id = CASE WHEN u.u1 < {NULL_SHARE} THEN NULL
                             ELSE s.account_id * 100
                                  + (SELECT min(w.r) FROM w WHERE w.upto >= u.u2) END
        FROM u WHERE u.id = s.id""",
    ),
    ("VACUUM FULL ai_sessions", "VACUUM (FULL) ai_sessions"),
    (
        f"CREATE INDEX {INDEX}",
        f"CREATE INDEX {INDEX} ON ai_sessions (account_id, client_id, created_at, id)",
    ),
    ("VACUUM ANALYZE ai_sessions", "VACUUM ANALYZE ai_sessions"),
]


# --------------------------------------------------------------------------------------------------
# The copy of fpa_bench with a client column
# --------------------------------------------------------------------------------------------------


def ensure_clients_db(server: str, rebuild: bool) -> dict[str, int]:
    base = database_comment(server, BASE_DB)
    assert base is not None
    wanted = {"generator": CLIENTS_VERSION, "base_built": base["built"]}
    if not rebuild and database_exists(server, CLIENTS_DB):
        recorded = database_comment(server, CLIENTS_DB)
        if recorded is not None and all(recorded.get(k) == v for k, v in wanted.items()):
            counts = row_counts(server, CLIENTS_DB)
            if counts == recorded["counts"]:
                say(
                    f"Reusing {CLIENTS_DB} ({CLIENTS_VERSION}, copy of {BASE_DB} built "
                    f"{base['built']}; row counts match; --rebuild forces a rebuild)"
                )
                return counts
        say(f"{CLIENTS_DB} exists but is incomplete or stale: rebuilding")
    started = time.perf_counter()
    # TEMPLATE needs nobody connected to fpa_bench (ensure_base's engines are all disposed)
    recreate_database(server, CLIENTS_DB, template=BASE_DB)
    engine = admin_engine(server, CLIENTS_DB)
    with engine.connect() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '512MB'"))
        for label, sql in FILL:
            run_sql(conn, label, sql)
    engine.dispose()
    counts = row_counts(server, CLIENTS_DB)
    write_comment(
        server,
        CLIENTS_DB,
        {**wanted, "counts": counts, "built": time.strftime("%Y-%m-%dT%H:%M:%S")},
    )
    say(f"Built {CLIENTS_DB} in {time.perf_counter() - started:.0f}s")
    return counts


def account_clients(server: str) -> list[tuple[int | None, int, int]]:
    """Account 1's clients: (client_id, sessions in the 90-day window, handoffs claimed in it),
    largest first."""
    engine = admin_engine(server, CLIENTS_DB)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                """
                SELECT s.client_id,
                       count(*) FILTER (WHERE s.created_at >= :start) AS sessions,
                       (SELECT count(*) FROM session_handoffs AS h
                        JOIN ai_sessions AS x ON x.id = h.session_id
                        WHERE h.account_id = :a AND h.claimed_at >= :start
                          AND x.client_id IS NOT DISTINCT FROM s.client_id) AS handoffs
                FROM ai_sessions AS s WHERE s.account_id = :a
                GROUP BY s.client_id ORDER BY sessions DESC"""
            ),
            {"a": ACCOUNT, "start": NOW.replace(tzinfo=None) - timedelta(days=PERIOD_DAYS)},
        ).all()
    engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------


def headline(report: str, body: dict[str, t.Any]) -> int:
    """The number a report is about: handoffs claimed, items on the page, sessions."""
    if report == "escalations":
        return int(body["n_handoffs_claimed"])
    if report == "trend":
        return sum(int(p["n_handoffs_claimed"]) for p in body["points"])
    if report == "handoffs page 1":
        return len(body["items"])
    return int(body["funnel"]["sessions"])


def check_answers(
    calls: dict[str, t.Callable[[], t.Any]], large: int, small: int
) -> tuple[bool, dict[str, int]]:
    body = {name: call().get_json() for name, call in calls.items()}
    counts: dict[str, int] = {}
    checks: dict[str, bool] = {}
    for report in REPORTS:
        whole = headline(report, body[f"{report} all"])
        big = headline(report, body[f"{report} large"])
        little = headline(report, body[f"{report} small"])
        counts |= {f"{report} all": whole, f"{report} large": big, f"{report} small": little}
        checks[f"{report}: small <= large <= all ({little:,} <= {big:,} <= {whole:,})"] = (
            little <= big <= whole
        )
    esc_groups = {g["client"]: g for g in body["escalations group_by=client"]["groups"]}
    psa_groups = {g["client"]: g for g in body["psa-metrics group_by=client"]["groups"]}
    counts["escalations groups"] = len(esc_groups)
    counts["psa-metrics groups"] = len(psa_groups)
    checks["escalations group_by=client: groups add up to the unfiltered report"] = (
        sum(g["n_handoffs_claimed"] for g in esc_groups.values())
        == body["escalations all"]["n_handoffs_claimed"]
    )
    checks["escalations group_by=client: the large client's group = its client= report"] = all(
        esc_groups.get(large, {}).get(key) == body["escalations large"][key]
        for key in ("n_handoffs_claimed", "n_handoffs_with_action", "median_seconds")
    )
    checks["psa-metrics group_by=client: groups' sessions add up to the unfiltered report"] = (
        sum(g["funnel"]["sessions"] for g in psa_groups.values())
        == body["psa-metrics all"]["funnel"]["sessions"]
    )
    checks["psa-metrics group_by=client: the small client's group = its client= report"] = (
        psa_groups.get(small, {}).get("funnel") == body["psa-metrics small"]["funnel"]
        and psa_groups.get(small, {}).get("time_entries")
        == body["psa-metrics small"]["time_entries"]
    )
    for name, ok in checks.items():
        say(f"    {'OK      ' if ok else 'MISMATCH'} {name}")
    return all(checks.values()), counts


# --------------------------------------------------------------------------------------------------
# EXPLAIN of a request's statements
# --------------------------------------------------------------------------------------------------


def explain(app: t.Any, name: str, call: t.Callable[[], t.Any]) -> None:
    statements = captured_sql(app, call)
    engine = app_engine(app)
    with engine.connect() as conn:
        for number, (statement, parameters) in enumerate(statements, 1):
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters
            ).all()
            say(f"  -- {name}: statement {number} of {len(statements)}")
            for (line,) in plan:
                say("    " + line)
        conn.rollback()


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
    parser.add_argument(
        "--rebuild", action="store_true", help=f"drop and rebuild {CLIENTS_DB} (not {BASE_DB})"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--inner", type=int, default=3, help="calls per contender per round (default 3)"
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="EXPLAIN (ANALYZE, BUFFERS) every report's statements, not only the slower ones",
    )
    args = parser.parse_args(argv)

    say(
        f"flowpilot_analytics per-client reports vs unfiltered; clock NOW = {NOW.isoformat()}, "
        f"account {ACCOUNT}, period {PERIOD}, tz {TZ}, cache off"
    )
    ensure_base(args.server, False)
    counts = ensure_clients_db(args.server, args.rebuild)
    clients = account_clients(args.server)
    named = [c for c in clients if c[0] is not None]
    large, small = named[0], named[-1]
    nulls = next((c for c in clients if c[0] is None), (None, 0, 0))
    say(
        f"  account {ACCOUNT}: {len(named)} clients; in the 90-day window the largest, "
        f"{large[0]}, has {large[1]:,} sessions ({large[2]:,} handoffs claimed), the smallest, "
        f"{small[0]}, {small[1]:,} ({small[2]:,}); no client: {nulls[1]:,} ({nulls[2]:,}); all: "
        f"{sum(c[1] for c in clients):,} ({sum(c[2] for c in clients):,})"
    )
    app = make_app(f"{args.server}/{CLIENTS_DB}")

    say()
    say(
        f"== PostgreSQL {CLIENTS_DB}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + " =="
    )
    variants = {"all": "", "large": f"&client={large[0]}", "small": f"&client={small[0]}"}
    calls = {
        f"{report} {variant}": endpoint(app, url + suffix)
        for report, url in REPORTS.items()
        for variant, suffix in variants.items()
    }
    calls |= {
        f"{report} group_by=client": endpoint(app, REPORTS[report] + "&group_by=client")
        for report in GROUPED
    }
    say("  answers:")
    consistent, answers = check_answers(calls, large[0], small[0])
    say(
        "  counted (escalations and trend: handoffs claimed; page: items; psa-metrics: sessions): "
        + json.dumps(answers)
    )

    say(f"  timings ({args.rounds} interleaved rounds x {args.inner} calls, after a warm-up):")
    stats = measure(calls, args.rounds, args.inner)
    show(stats)

    say()
    say(
        "  report           unfiltered ms   large ms  large/all   small ms  small/all   "
        "group_by ms  group/all   (ratios of the minimums)"
    )
    summary = Summary()
    slower: list[tuple[str, str]] = []
    for report in REPORTS:
        base = stats[f"{report} all"]
        cells = [f"  {report:<16} {base['median']:13.2f}"]
        mins = []
        for variant in ("large", "small"):
            s = stats[f"{report} {variant}"]
            ratio, low = s["median"] / base["median"], s["min"] / base["min"]
            cells.append(f"{s['median']:9.2f} {ratio:9.2f}x")
            mins.append(f"{variant} {low:.2f}x")
            passed = ratio <= TARGET_RATIO or (ratio <= NOISE_RATIO and low <= TARGET_RATIO)
            summary.add(
                f"PG {report} 90d, client={variant} / all",
                f"{s['median']:.1f} / {base['median']:.1f} ms = {ratio:.2f}x (min {low:.2f}x)",
                f"<= {TARGET_RATIO}x",
                passed and consistent,
            )
            if not passed or args.explain:
                slower.append((report, variant))
        if report in GROUPED:
            g = stats[f"{report} group_by=client"]
            ratio, low = g["median"] / base["median"], g["min"] / base["min"]
            cells.append(f"{g['median']:11.2f} {ratio:9.2f}x")
            mins.append(f"group {low:.2f}x")
            summary.add(
                f"PG {report} 90d, group_by=client / all",
                f"{g['median']:.1f} / {base['median']:.1f} ms = {ratio:.2f}x (min {low:.2f}x)",
                "(none)",
                None,
            )
        else:
            cells.append(f"{'-':>11} {'-':>10}")
        say("  ".join(cells) + f"   ({', '.join(mins)})")
    summary.add("answers consistent", "OK" if consistent else "MISMATCH", "OK", consistent)

    if slower:
        say()
        say("== EXPLAIN (ANALYZE, BUFFERS) ==")
        for report in dict.fromkeys(r for r, _ in slower):
            explain(app, f"{report} all", calls[f"{report} all"])
        for report, variant in slower:
            explain(app, f"{report} {variant}", calls[f"{report} {variant}"])
    dispose(app)

    say()
    say(f"== Summary (total {time.perf_counter() - T0:.0f}s) ==")
    summary.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
