#!/usr/bin/env python
"""Benchmark of flowpilot_analytics' two endpoints against the best hand-written SQL.

A report, not a test: it never asserts. It

1. builds (or reuses) the PostgreSQL database ``fpa_bench``: the host tables exactly as
   ``tests/host.py`` declares them plus the plugin's ``psa_activity_logs`` (``db.create_all()``
   after ``init_app``), 50 accounts, 250,000 sessions, 5,000,000 steps, ~100,000 handoffs (~90 %
   claimed), ~300,000 PSA activities over the 365 days before ``NOW``, account 1 holding ~20 % of
   everything;
2. measures, for account 1 and ``period=90d``, each endpoint through the Flask test client against
   the best SQL computing the same numbers on the same engine (median of interleaved rounds), and
   checks that the numbers agree;
3. with ``--scale-others``: copies the database to ``fpa_bench_10x``, adds 10x more rows to the
   other accounts and compares account 1's latency on both;
4. measures SQLite at demo size (20,000 handoffs) and a repeated call within the cache TTL;
5. prints a summary table (figure, measured, target, PASS/FAIL).

Only the plugin's public API is used: ``FlowpilotAnalytics().init_app``, its HTTP routes and its
settings. Run ``.venv/bin/python benchmarks/bench_endpoints.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import typing as t
from datetime import datetime, timedelta

from common import (
    ACCOUNT,
    BASE_DB,
    ESCALATIONS_URL,
    HOST_TABLES,
    N_ACCOUNTS,
    NOW,
    PERIOD,
    PERIOD_DAYS,
    PSA_URL,
    SCALE_COPIES,
    SCALED_DB,
    T0,
    TZ,
    Summary,
    app_engine,
    captured_sql,
    compare_escalations,
    compare_psa,
    db,
    dispose,
    endpoint,
    make_app,
    measure,
    replay,
    say,
    show,
)
from dataset import ensure_base, ensure_scaled
from flask import Flask
from references import ESC_FENCED, ESC_LATERAL, escalation_sql, naive, psa_sql_one, psa_sql_two

# --------------------------------------------------------------------------------------------------
# The PostgreSQL measurements
# --------------------------------------------------------------------------------------------------


def bench_postgres(
    server: str, counts: dict[str, int], args: argparse.Namespace, summary: Summary
) -> None:
    app = make_app(f"{server}/{BASE_DB}")
    engine = app_engine(app)
    esc_endpoint, psa_endpoint = endpoint(app, ESCALATIONS_URL), endpoint(app, PSA_URL)
    esc_sql = {
        "LATERAL": escalation_sql(engine, ESC_LATERAL),
        "fenced subquery": escalation_sql(engine, ESC_FENCED),
    }
    psa_sql = {"one statement": psa_sql_one(engine), "two statements": psa_sql_two(engine)}

    say()
    say(f"== PostgreSQL {BASE_DB}: account {ACCOUNT}, period={PERIOD} ==")
    say("  rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    say(
        "  endpoints through the Flask test client (FLOWPILOT_ANALYTICS_CACHE_TTL=0, limit "
        f"1000000/min); SQL on a connection of the same engine; {args.rounds} interleaved rounds x "
        f"{args.inner} calls"
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

    # The endpoint's own statements, captured from the driver and replayed: splits the endpoint's
    # time into database time and Python/Flask time (diagnostic only).
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
            f"  {label}: endpoint {mine:.2f} ms, best SQL ({best_name}) {best:.2f} ms, ratio "
            f"{ratio:.2f}x (ratio of the minimums: {min_ratio:.2f}x)"
        )
        say(
            f"     (diagnostic: the endpoint's own SQL replayed takes {own:.2f} ms = "
            f"{own / best:.2f}x the best SQL; "
            f"the remaining {mine - own:.2f} ms is Flask/plugin Python)"
        )
        summary.add(
            f"PG {key} / best SQL (90d, acct 1)",
            f"{mine:.1f} / {best:.1f} ms = {ratio:.2f}x",
            "<= 1.15x",
            ratio <= 1.15,
        )
        summary.add(f"PG {key} numbers = best SQL", "OK" if ok else "MISMATCH", "OK", ok)

    bench_trend(app, args, summary)

    # Repeated call within the cache TTL on the big dataset.
    cached_app = make_app(f"{server}/{BASE_DB}", cache_ttl=60)
    for key, url in (("escalations", ESCALATIONS_URL), ("psa-metrics", PSA_URL)):
        cached(cached_app, url, f"PG {key}", summary, args)
    dispose(cached_app)
    dispose(app)


def bench_trend(app: Flask, args: argparse.Namespace, summary: Summary) -> None:
    """366 days of daily trend points against the escalations call for the same window
    (target <= 1.5x)."""
    since = (NOW - timedelta(days=366)).isoformat().replace("+00:00", "Z")
    until = NOW.isoformat().replace("+00:00", "Z")
    window = f"since={since}&until={until}"
    contenders = {
        "escalations 366d": endpoint(
            app, f"/api/v1/analytics/flowpilot/escalations?{window}&target_seconds=900"
        ),
        "trend 366 daily points": endpoint(
            app,
            f"/api/v1/analytics/flowpilot/escalations/trend?{window}&tz={TZ}&target_seconds=900",
        ),
        "trend 53 weekly points": endpoint(
            app,
            f"/api/v1/analytics/flowpilot/escalations/trend?{window}&tz={TZ}&interval=week&target_seconds=900",
        ),
    }
    points = contenders["trend 366 daily points"]().get_json()["points"]
    headline = contenders["escalations 366d"]().get_json()
    adds_up = sum(p["n_handoffs_claimed"] for p in points) == headline["n_handoffs_claimed"]
    stats = measure(contenders, args.rounds, args.inner)
    say(
        f"  trend over 366 days ({len(points)} daily points; points add up to the headline: "
        f"{adds_up}):"
    )
    show(stats)
    ratio = stats["trend 366 daily points"]["median"] / stats["escalations 366d"]["median"]
    summary.add(
        "PG trend 366 daily points / escalations, same window",
        f"{stats['trend 366 daily points']['median']:.1f} / "
        f"{stats['escalations 366d']['median']:.1f} ms = {ratio:.2f}x",
        "<= 1.5x",
        ratio <= 1.5 and adds_up,
    )


def cached(app: Flask, url: str, label: str, summary: Summary, args: argparse.Namespace) -> None:
    """A repeated call within FLOWPILOT_ANALYTICS_CACHE_TTL=60, or a note that there is no cache."""
    call = endpoint(app, url)
    started = time.perf_counter()
    first = call()
    first_ms = (time.perf_counter() - started) * 1000
    second = call()
    header = second.headers.get("Cache-Control", "")
    if app.config.get("FLOWPILOT_ANALYTICS_CACHE_TTL", 0) <= 0:
        say(
            f"  {label}: cache not available (FLOWPILOT_ANALYTICS_CACHE_TTL=0); uncached first "
            f"call {first_ms:.2f} ms"
        )
        summary.add(f"{label} repeated call within TTL", "cache not available", "< 5 ms", None)
        return
    same = second.get_data() == first.get_data()
    stats = measure({"hit": call}, args.rounds, max(args.inner, 3), warmup=1)["hit"]
    say(
        f"  {label} with FLOWPILOT_ANALYTICS_CACHE_TTL=60: first call {first_ms:.2f} ms, repeated "
        f"call median {stats['median']:.3f} ms (min {stats['min']:.3f}), same body: {same}, "
        f"Cache-Control: {header}"
    )
    summary.add(
        f"{label} repeated call within TTL",
        f"{stats['median']:.2f} ms",
        "< 5 ms",
        stats["median"] < 5 and same,
    )


def bench_scaled(
    server: str,
    base_counts: dict[str, int],
    scaled_counts: dict[str, int],
    args: argparse.Namespace,
    summary: Summary,
) -> None:
    say()
    say(
        f"== 10x more rows in the other accounts: {BASE_DB} vs {SCALED_DB} (account {ACCOUNT}, "
        f"{PERIOD}) =="
    )
    say(
        "  rows: "
        + ", ".join(f"{k} {base_counts[k]:,} -> {scaled_counts[k]:,}" for k in HOST_TABLES)
    )
    if args.steps_copies != SCALE_COPIES:
        say(
            f"  NOTE: steps were scaled only {args.steps_copies}x for the other accounts "
            "(--steps-copies); "
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
        contenders[f"escalations @ {BASE_DB}"]().get_json()
        == contenders[f"escalations @ {SCALED_DB}"]().get_json()
        and contenders[f"psa-metrics @ {BASE_DB}"]().get_json()
        == contenders[f"psa-metrics @ {SCALED_DB}"]().get_json()
    )
    say(f"  account {ACCOUNT}'s answers identical on both databases: {same}")
    stats = measure(contenders, args.rounds, args.inner)
    show(stats)
    for key in ("escalations", "psa-metrics"):
        base = stats[f"{key} @ {BASE_DB}"]["median"]
        scaled = stats[f"{key} @ {SCALED_DB}"]["median"]
        ratio = scaled / base
        min_ratio = stats[f"{key} @ {SCALED_DB}"]["min"] / stats[f"{key} @ {BASE_DB}"]["min"]
        say(
            f"  {key}: {base:.2f} ms -> {scaled:.2f} ms, ratio {ratio:.2f}x (ratio of the "
            f"minimums: {min_ratio:.2f}x)"
        )
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
    """20,000 handoffs (90 % claimed), 50,000 sessions, 400,000 steps, all of account 1's, with
    sessions spread over the ``spread_days`` before NOW (90: every handoff is inside the 90d
    window), plus a few PSA activities."""
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
        sessions.append(
            (
                sid,
                ACCOUNT,
                stamp(opened),
                f"T-{sid}" if rng.random() < 0.7 else None,
                f"Session {sid}",
            )
        )
    for step_id in range(1, SQLITE_STEPS + 1):
        sid = rng.randint(1, SQLITE_SESSIONS)
        r = rng.random()
        steps.append(
            (step_id, ACCOUNT, sid, stamp(opened_at[sid - 1] + timedelta(hours=8 * r * r)))
        )
    for hid in range(1, SQLITE_HANDOFFS + 1):
        sid = rng.randint(1, SQLITE_SESSIONS)
        asked = opened_at[sid - 1] + timedelta(hours=9 * rng.random())
        claimed = asked + timedelta(minutes=30 * rng.random() ** 2) if rng.random() < 0.9 else None
        handoffs.append(
            (hid, ACCOUNT, sid, stamp(asked), None if claimed is None else stamp(claimed))
        )
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
            "INSERT INTO ai_sessions (id, account_id, created_at, psa_ticket_id, title) "
            "VALUES (?, ?, ?, ?, ?)",
            sessions,
        )
        conn.executemany(
            "INSERT INTO ai_session_steps (id, account_id, session_id, created_at) "
            "VALUES (?, ?, ?, ?)",
            steps,
        )
        conn.executemany(
            "INSERT INTO session_handoffs (id, account_id, session_id, created_at, claimed_at) "
            "VALUES (?, ?, ?, ?, ?)",
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
        for spread_days, label in (
            (PERIOD_DAYS, "all 20,000 in the 90d window"),
            (365, "20,000 over 365 days"),
        ):
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
                f"    escalations answer: n_handoffs_claimed {body['n_handoffs_claimed']}, "
                f"with_action {body['n_handoffs_with_action']}, median {body['median_seconds']}, "
                f"p95 {body['p95_seconds']}"
            )
            stats = measure({"escalations endpoint (SQLite)": call}, args.rounds, args.inner)
            show(stats)
            median = stats["escalations endpoint (SQLite)"]["median"]
            summary.add(
                f"SQLite escalations 90d, {label} ({body['n_handoffs_claimed']:,} claimed in "
                "window)",
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
    parser.add_argument(
        "--rebuild", action="store_true", help=f"drop and rebuild {BASE_DB} (and {SCALED_DB})"
    )
    parser.add_argument(
        "--scale-others",
        action="store_true",
        help=f"also build/reuse {SCALED_DB} (10x more rows in the other accounts) and compare",
    )
    parser.add_argument(
        "--rebuild-10x", action="store_true", help=f"rebuild {SCALED_DB} even if it is complete"
    )
    parser.add_argument(
        "--steps-copies",
        type=int,
        default=SCALE_COPIES,
        help="copies of the other accounts' steps added in the 10x database (default 10; "
        "lower only if 45M steps is too slow to build, the output then says so)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--inner", type=int, default=5, help="calls per contender per round (default 5)"
    )
    parser.add_argument("--skip-postgres", action="store_true", help="only the SQLite part")
    parser.add_argument("--skip-sqlite", action="store_true", help="no SQLite part")
    args = parser.parse_args(argv)

    say(
        f"flowpilot_analytics endpoint benchmark; clock NOW = {NOW.isoformat()}, account "
        f"{ACCOUNT}, period {PERIOD}, tz {TZ}"
    )
    summary = Summary()
    if not args.skip_postgres:
        base_counts, rebuilt = ensure_base(args.server, args.rebuild)
        scaled_counts = None
        if args.scale_others:
            scaled_counts = ensure_scaled(
                args.server,
                base_counts,
                rebuilt,
                args.rebuild or args.rebuild_10x,
                args.steps_copies,
            )
        bench_postgres(args.server, base_counts, args, summary)
        if scaled_counts is not None:
            bench_scaled(args.server, base_counts, scaled_counts, args, summary)
        else:
            summary.add(
                "PG: 10x other accounts / base", "not run (--scale-others)", "< 1.20x", None
            )
    if not args.skip_sqlite:
        bench_sqlite(args, summary)
    say()
    say(f"== Summary (total {time.perf_counter() - T0:.0f}s) ==")
    summary.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
