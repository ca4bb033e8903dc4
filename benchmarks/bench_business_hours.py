#!/usr/bin/env python
"""Benchmark of the escalation reports on the business clock against the wall clock.

A report, not a test: it never asserts and always exits 0. On the PostgreSQL dataset ``fpa_bench``
(built or reused as ``bench_endpoints.py`` does: 50 accounts, 5M steps, ~100k handoffs) it

1. creates the plugin's calendar table ``flowpilot_business_hours`` if the database lacks it
   (``db.create_all()`` on the app's metadata: only missing tables are created) and gives account 1
   one business-hours version through the API (``POST business-hours``; reused when already there):
   America/New_York, Monday to Friday 09:00-17:00, US holidays, from 2025-01-01;
2. checks that both clocks answer for the same handoffs (counts, trend points adding up, the same
   drill-down page);
3. measures, for account 1 and ``period=90d`` with the cache off, ``escalations``,
   ``escalations/trend`` (daily, ``tz=America/New_York``) and the first ``escalations/handoffs``
   page on ``clock=wall`` and ``clock=business`` (interleaved rounds, after a warm-up), and prints
   the medians side by side with the ratio business / wall (target from the issue: <= 1.5x);
4. splits one business-clock request into its phases, timed one by one with the package's own
   functions (calendar read, the rows' SQL, ``measure_business`` (microsecond columns and the
   vectorised clock), the fold, the schema dump and ``json.dumps``), checks that the replica
   gives the endpoint's exact body, and sums them as SQL and Python;
5. with ``--profile``: cProfile of the business-clock ``escalations`` request (top functions).

Run ``.venv/bin/python benchmarks/bench_business_hours.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
import typing as t
from collections import defaultdict
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from common import (
    ACCOUNT,
    BASE_DB,
    IDENTITY,
    NOW,
    PERIOD,
    T0,
    TZ,
    Summary,
    app_engine,
    captured_sql,
    db,
    dispose,
    endpoint,
    make_app,
    measure,
    replay,
    say,
    show,
)
from dataset import ensure_base
from flask import Flask

from flowpilot_analytics import business_hours as bh
from flowpilot_analytics import escalations as esc
from flowpilot_analytics import reports, schemas
from flowpilot_analytics.state import current_state
from flowpilot_analytics.tables import BUSINESS_HOURS_TABLE
from flowpilot_analytics.timeutil import local_days

API = "/api/v1/analytics/flowpilot"
#: The calendar every business-clock figure here is measured on (the issue's example).
CALENDAR = {
    "timezone": TZ,
    "effective_from": "2025-01-01",
    "weekly": {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
    "holiday_calendar": {"country": "US"},
}
REPORTS = {
    "escalations": f"{API}/escalations?period={PERIOD}",
    "trend": f"{API}/escalations/trend?period={PERIOD}&tz={TZ}",
    "handoffs page 1": f"{API}/escalations/handoffs?period={PERIOD}",
}
TARGET_RATIO = 1.5


def url(report: str, clock: str) -> str:
    return f"{REPORTS[report]}&clock={clock}"


# --------------------------------------------------------------------------------------------------
# Setup: the calendar table and account 1's version
# --------------------------------------------------------------------------------------------------


def ensure_calendar_table(app: Flask) -> bool:
    """Create the plugin's calendar table when the database lacks it (``create_all`` only creates
    missing tables); whether it had to."""
    with app.app_context():
        existed = sa.inspect(db.engine).has_table(BUSINESS_HOURS_TABLE)
        if not existed:
            db.create_all()
    return not existed


def same_version(stored: t.Mapping[str, t.Any]) -> bool:
    """Whether a stored version (``CalendarVersionSchema``) is :data:`CALENDAR`."""
    weekly = {day: stored["weekly"].get(day, []) for day in bh.DAYS}
    wanted = {day: CALENDAR["weekly"].get(day, []) for day in bh.DAYS}
    calendar = stored.get("holiday_calendar") or {}
    return (
        stored["timezone"] == CALENDAR["timezone"]
        and stored["effective_from"] == CALENDAR["effective_from"]
        and weekly == wanted
        and calendar.get("country") == CALENDAR["holiday_calendar"]["country"]
    )


def ensure_calendar(app: Flask) -> dict[str, t.Any]:
    """Account 1's calendar: reused when its only version is :data:`CALENDAR`, else one POSTed
    (the app's identity is account 1's admin, above team_admin). Returns the version in effect."""
    client = app.test_client()
    listing = client.get(f"{API}/business-hours").get_json()
    versions = listing["versions"]
    if len(versions) == 1 and same_version(versions[0]):
        say(f"  reusing account {ACCOUNT}'s business-hours version {versions[0]['id']}")
        return t.cast(dict[str, t.Any], listing["in_effect"])
    if versions:
        say(
            f"  NOTE: account {ACCOUNT} has {len(versions)} other version(s); appending the "
            "benchmark's own (the figures below are measured on whichever is in effect)"
        )
    response = client.post(f"{API}/business-hours", json=CALENDAR)
    if response.status_code != 201:
        raise RuntimeError(f"POST business-hours -> {response.status_code}: {response.get_data()}")
    created = response.get_json()
    say(f"  POSTed account {ACCOUNT}'s business-hours version {created['id']}")
    return t.cast(dict[str, t.Any], client.get(f"{API}/business-hours").get_json()["in_effect"])


# --------------------------------------------------------------------------------------------------
# Both clocks answer for the same handoffs
# --------------------------------------------------------------------------------------------------


def check_answers(calls: dict[str, t.Callable[[], t.Any]]) -> tuple[bool, dict[str, int]]:
    """The consistency checks, printed; whether all passed, and the handoff counts."""
    body = {name: call().get_json() for name, call in calls.items()}
    wall, business = body["escalations wall"], body["escalations business"]
    counts = {
        "claimed": business["n_handoffs_claimed"],
        "with_action": business["n_handoffs_with_action"],
        "page_items": len(body["handoffs page 1 business"]["items"]),
    }
    wall_page = body["handoffs page 1 wall"]["items"]
    business_page = body["handoffs page 1 business"]["items"]
    checks = {
        "same handoffs claimed on both clocks": wall["n_handoffs_claimed"]
        == business["n_handoffs_claimed"],
        "same handoffs with an action on both clocks": wall["n_handoffs_with_action"]
        == business["n_handoffs_with_action"],
        "business trend points add up to the business headline": sum(
            p["n_handoffs_claimed"] for p in body["trend business"]["points"]
        )
        == business["n_handoffs_claimed"],
        "wall trend points add up to the wall headline": sum(
            p["n_handoffs_claimed"] for p in body["trend wall"]["points"]
        )
        == wall["n_handoffs_claimed"],
        "first page: same handoffs, same wall_seconds on both clocks": [
            (i["handoff_id"], i["wall_seconds"]) for i in wall_page
        ]
        == [(i["handoff_id"], i["wall_seconds"]) for i in business_page],
        "business seconds <= wall seconds on the first page": all(
            (b["seconds"] is None) == (w["seconds"] is None)
            and (b["seconds"] is None or b["seconds"] <= w["seconds"] + 1e-6)
            for w, b in zip(wall_page, business_page)
        ),
        "business answers name the version they used": bool(
            business["business_hours"] and business["business_hours"]["version_ids"]
        ),
    }
    for name, ok in checks.items():
        say(f"    {'OK      ' if ok else 'MISMATCH'} {name}")
    say(
        f"    wall:     median {wall['median_seconds']} s, p95 {wall['p95_seconds']} s, "
        f"avg {wall['avg_seconds']}"
    )
    say(
        f"    business: median {business['median_seconds']} s, p95 {business['p95_seconds']} s, "
        f"avg {business['avg_seconds']} (version ids {business['business_hours']['version_ids']})"
    )
    return all(checks.values()), counts


# --------------------------------------------------------------------------------------------------
# Where the business clock's time goes
# --------------------------------------------------------------------------------------------------

Phases = dict[str, list[float]]


class Stopwatch:
    """Laps of consecutive phases, in ms."""

    def __init__(self, phases: Phases) -> None:
        self.phases = phases
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name].append((now - self.last) * 1000)
        self.last = now


#: Which phases are the database's (the rest is Python in the plugin's process).
SQL_PHASES = ("calendar read (SQL + load_version)", "rows: database (count-only replay)")


def business_request(app: Flask, report: str, phases: Phases) -> tuple[int, str]:
    """One business-clock ``report`` (``escalations`` or ``trend``) computed phase by phase as
    ``reports.escalation_report`` / ``escalation_trend`` and ``routes.cached_json`` compute it;
    returns the number of handoffs measured and the JSON body. The rows' SQL is timed twice: as the
    report fetches it, and wrapped in ``count(*)`` (database time without fetching or decoding)."""
    with app.test_request_context():
        state = current_state()
        if report == "escalations":
            query = schemas.EscalationArgs().load({"period": PERIOD, "clock": "business"})
        else:
            query = schemas.TrendArgs().load({"period": PERIOD, "tz": TZ, "clock": "business"})
        metric = state.prepared().escalations
        clock = Stopwatch(phases)
        ctx = reports.ReportContext.start(state, IDENTITY.account_id, IDENTITY.user_id)
        calendar, _ = ctx.calendars()
        clock.lap(SQL_PHASES[0])
        window = query.span.window(ctx.now)
        trend = report != "escalations"
        statement = metric.per_handoff_statement(False, False if trend else None)
        params = {"tz": TZ} if trend else {}
        inner = statement.subquery()
        # counting both columns keeps the first-step probe (an unused column would be planned away)
        counted = sa.select(*(sa.func.count(column) for column in list(inner.c)[:2]))
        ctx.read(counted, window, **params)
        clock.lap(SQL_PHASES[1])
        rows = ctx.read(statement, window, **params)
        clock.lap("rows: fetched as the report does")
        handoffs = esc.measure_business(
            rows, calendar, ctx.now, zone=ZoneInfo(TZ) if trend else None, week=False
        )
        clock.lap("measure_business (columns, numpy clock)")
        used = reports.BusinessHoursUsed(tuple(sorted(handoffs.used)))
        document: t.Any
        if not trend:
            overall = esc.fold_clocked(handoffs, metric.edges, None)
            clock.lap("fold_clocked")
            document = reports.EscalationReport(
                **vars(overall),
                window_start=window.start,
                window_end=window.end,
                period=window.period,
                clock="business",
                business_hours=used,
                distribution=esc.distribution(overall, metric.edges),
            )
            dumped = schemas.EscalationMetrics().dump(document)
        else:
            days = local_days(window.start, window.end, ZoneInfo(TZ))
            points = metric.business_trend(handoffs, days, None)
            clock.lap("business_trend (fold_clocked per day)")
            document = reports.TrendReport(
                period=window.period,
                window_start=window.start,
                window_end=window.end,
                timezone=TZ,
                interval="day",
                clock="business",
                business_hours=used,
                points=tuple(reports.PointFigures(**vars(r), start=day) for day, r in points),
            )
            dumped = schemas.EscalationTrend().dump(document)
        clock.lap("report objects + schema dump")
        text = json.dumps(
            dumped, allow_nan=False, separators=(",", ":"), sort_keys=True, default=str
        )
        clock.lap("json.dumps")
    return len(rows), text


def bench_split(app: Flask, counts: dict[str, int], reps: int) -> dict[str, dict[str, float]]:
    """The phases of each business-clock report, each run interleaved with a call of the endpoint
    itself (so that the total and the phases see the same load); returns the SQL / Python split."""
    split: dict[str, dict[str, float]] = {}
    for report in ("escalations", "trend"):
        call = endpoint(app, url(report, "business"))
        phases: Phases = defaultdict(list)
        measured, text = business_request(app, report, phases)  # warm-up, and the exactness check
        same = json.loads(text) == call().get_json()
        phases.clear()
        totals = []
        for _ in range(reps):
            business_request(app, report, phases)
            started = time.perf_counter()
            call()
            totals.append((time.perf_counter() - started) * 1000)
        medians = {name: statistics.median(values) for name, values in phases.items()}
        fetched = medians["rows: fetched as the report does"]
        # the fetch and decode alone: the median of each run's difference (steadier than the
        # difference of the medians on a loaded machine)
        decode = statistics.median(
            max(0.0, a - b)
            for a, b in zip(phases["rows: fetched as the report does"], phases[SQL_PHASES[1]])
        )
        database = fetched - decode
        sql = medians[SQL_PHASES[0]] + database
        python = decode + sum(
            value
            for name, value in medians.items()
            if name not in (*SQL_PHASES, "rows: fetched as the report does")
            and not name.startswith("  ")
        )
        total = statistics.median(totals)
        say(
            f"  {report}, clock=business: {measured:,} handoffs measured; the replica's body "
            f"equals the endpoint's: {same}; medians of {reps} runs:"
        )
        width = max(len(name) for name in medians)
        for name, value in medians.items():
            note = ""
            if name == "rows: fetched as the report does":
                note = f"  (= {database:.2f} database + {decode:.2f} fetch/decode)"
            say(f"    {name:<{width}}  {value:8.2f} ms{note}")
        say(f"    {'the endpoint, interleaved':<{width}}  {total:8.2f} ms")
        say(
            f"    => SQL {sql:.2f} ms ({sql / (sql + python):.0%}: calendar read + the rows in the "
            f"database), Python {python:.2f} ms ({python / (sql + python):.0%}: fetch/decode "
            f"onwards); the endpoint's other {total - sql - python:.2f} ms are Flask, auth, "
            "limiter, test client (and noise)"
        )
        counts[f"{report} measured"] = measured
        split[report] = {"sql": sql, "python": python, "total": total}
    return split


def profile(app: Flask, calls: int, top: int) -> None:
    call = endpoint(app, url("escalations", "business"))
    call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    say(f"  cProfile of {calls} business-clock escalations requests (by own time):")
    for line in out.getvalue().splitlines():
        if line.strip() and not line.startswith(("   Ordered", "   List reduced")):
            say("    " + line.replace(os.path.dirname(os.path.dirname(__file__)) + "/", ""))


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
    parser.add_argument("--rebuild", action="store_true", help=f"drop and rebuild {BASE_DB}")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--inner", type=int, default=3, help="calls per contender per round (default 3)"
    )
    parser.add_argument(
        "--split-runs", type=int, default=15, help="runs of each phase for the split (default 15)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile the business escalations request"
    )
    args = parser.parse_args(argv)

    say(
        f"flowpilot_analytics business clock vs wall clock; clock NOW = {NOW.isoformat()}, "
        f"account {ACCOUNT}, period {PERIOD}, tz {TZ}, cache off"
    )
    counts, _rebuilt = ensure_base(args.server, args.rebuild)
    app = make_app(f"{args.server}/{BASE_DB}")
    if ensure_calendar_table(app):
        say(f"  created {BUSINESS_HOURS_TABLE} in {BASE_DB} (db.create_all, missing tables only)")
    in_effect = ensure_calendar(app)
    weekly = ", ".join(
        f"{day} " + " ".join(f"{start}-{end}" for start, end in hours)
        for day, hours in in_effect["weekly"].items()
        if hours
    )
    say(
        f"  version in effect: {in_effect['timezone']}, from {in_effect['effective_from']}, "
        f"{weekly}; {len(in_effect['holidays'])} holidays"
    )

    say()
    say(f"== PostgreSQL {BASE_DB}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + " ==")
    calls = {
        f"{report} {clock}": endpoint(app, url(report, clock))
        for report in REPORTS
        for clock in ("wall", "business")
    }
    say("  answers:")
    consistent, handoffs = check_answers(calls)
    open_ones = handoffs["claimed"] - handoffs["with_action"]
    say(
        f"  handoffs measured on the business clock: {handoffs['claimed']:,} claimed in the window "
        f"({handoffs['with_action']:,} with an action, {open_ones:,} measured to now) for "
        f"escalations and trend; first page: {handoffs['page_items']} items"
    )

    # The wall report's own SQL replayed: its database time, for the split's comparison.
    engine = app_engine(app)
    wall_sql = {
        report: replay(engine, captured_sql(app, calls[f"{report} wall"]))
        for report in ("escalations", "trend")
    }
    contenders = dict(calls)
    contenders |= {f"{report} wall: own SQL replayed": run for report, run in wall_sql.items()}
    say(f"  timings ({args.rounds} interleaved rounds x {args.inner} calls, after a warm-up):")
    stats = measure(contenders, args.rounds, args.inner)
    show(stats)

    say()
    say("  report             wall ms   business ms   business/wall   (ratio of the minimums)")
    summary = Summary()
    for report in REPORTS:
        wall, business = stats[f"{report} wall"], stats[f"{report} business"]
        ratio = business["median"] / wall["median"]
        say(
            f"  {report:<16} {wall['median']:9.2f} {business['median']:13.2f} {ratio:13.2f}x"
            f"   ({business['min'] / wall['min']:.2f}x)"
        )
        summary.add(
            f"PG {report} 90d, business / wall",
            f"{business['median']:.1f} / {wall['median']:.1f} ms = {ratio:.2f}x",
            f"<= {TARGET_RATIO}x",
            ratio <= TARGET_RATIO and consistent,
        )
    for report in wall_sql:
        own = stats[f"{report} wall: own SQL replayed"]["median"]
        say(
            f"  ({report} wall: its one statement replayed takes {own:.2f} ms, the other "
            f"{stats[f'{report} wall']['median'] - own:.2f} ms is Flask/plugin Python)"
        )
    summary.add("both clocks, same handoffs", "OK" if consistent else "MISMATCH", "OK", consistent)

    say()
    say("== Where the business clock's time goes ==")
    split = bench_split(app, handoffs, args.split_runs)
    for report, figures in split.items():
        summary.add(
            f"PG {report} business: SQL / Python (split)",
            f"{figures['sql']:.1f} / {figures['python']:.1f} ms",
            "",
            None,
        )
    if args.profile:
        profile(app, 20, 25)
    dispose(app)

    say()
    say(f"== Summary (total {time.perf_counter() - T0:.0f}s) ==")
    summary.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
