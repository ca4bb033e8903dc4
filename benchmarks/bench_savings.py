#!/usr/bin/env python
"""Benchmark of the savings report: ``GET escalations/savings`` with 20,000 in-product handoffs and
1,000 stopwatch baseline samples.

A report, not a test: it never asserts and always exits 0. It

1. builds (or reuses, while its recorded generator and row counts match) a dedicated PostgreSQL
   database ``fpa_bench_savings``, server-side with ``generate_series``: account 1 has exactly
   20,000 handoffs claimed in the 30 days before the fixed clock with a first action (lognormal
   delays, median ~4.5 min), plus 2,000 claimed in the window with no action, 4,000 claimed before
   it and 1,000 never claimed; nine other accounts hold 27,000 handoffs over 90 days. Every session
   has 4 steps before its claim and, when acted on, 4 from the first action on (~400,000 steps);
2. creates the plugin's tables there if missing (``db.create_all()``: missing tables only) and gives
   account 1 its 1,000 baseline samples (a fixed lognormal, median ~14 min) through the route:
   ``POST escalations/baseline`` in batches of at most 1,000 as a ``team_admin`` (reused when the
   account's samples are exactly these);
3. checks the answer (in-product n and median against ``escalations`` for the same window, baseline
   n and median against the samples posted, the same body twice) and prints the claim or reason;
4. measures, cache off, ``escalations/savings?period=30d`` next to ``escalations?period=30d`` (the
   same handoffs aggregated in SQL) and the savings request's own statements replayed (interleaved
   rounds after a warm-up): median, p95 and minimum; target from the issue: the savings report
   under 300 ms; then ``POST escalations/baseline`` with 1,000 samples, to a scratch account;
5. splits one savings request into its phases (in-product rows in the database and their fetch, the
   baseline read, ``flowpilot_analytics.savings.savings(...)`` (the bootstrap), the schema dump,
   ``json.dumps``), each run next to a call of the endpoint (and the same call with the garbage
   collector off); then ``savings.savings`` alone on in-product samples of 20 to 20,000;
6. with ``--profile``: cProfile of 20 savings requests (top functions by own time).

Run ``.venv/bin/python benchmarks/bench_savings.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import statistics
import sys
import time
import typing as t
from collections import defaultdict

import numpy as np
import sqlalchemy as sa
from common import (
    ACCOUNT,
    IDENTITY,
    NOW,
    NOW_SQL,
    T0,
    UNLIMITED,
    Summary,
    admin_engine,
    app_engine,
    captured_sql,
    database_comment,
    database_exists,
    db,
    dispose,
    endpoint,
    host,
    make_app,
    progress,
    recreate_database,
    replay,
    run_sql,
    say,
    write_comment,
)
from flask import Flask, request

from flowpilot_analytics import baselines, reports
from flowpilot_analytics import savings as sv
from flowpilot_analytics.state import current_state
from flowpilot_analytics.tables import BASELINE_TABLE

API = "/api/v1/analytics/flowpilot"
SAVINGS_DB = "fpa_bench_savings"
#: Bump when the generator below changes, so that an old database is rebuilt.
GENERATOR = "savings v1"
PERIOD = "30d"
PERIOD_DAYS = 30

#: Account 1's handoffs, by kind (ids in this order from 1).
IN_WINDOW_WITH_ACTION = 20_000
IN_WINDOW_NO_ACTION = 2_000
BEFORE_WINDOW = 4_000
NEVER_CLAIMED = 1_000
ACCOUNT_1_HANDOFFS = IN_WINDOW_WITH_ACTION + IN_WINDOW_NO_ACTION + BEFORE_WINDOW + NEVER_CLAIMED
OTHER_ACCOUNTS = 9
OTHER_HANDOFFS = 27_000
N_HANDOFFS = ACCOUNT_1_HANDOFFS + OTHER_HANDOFFS
TABLES = ("ai_sessions", "ai_session_steps", "session_handoffs")

#: The stopwatch baseline: a fixed lognormal sample (median 14 min, sigma 0.6), measured in
#: May-June 2026, before the rollout.
BASELINE_SAMPLES = 1_000
BASELINE_MEDIAN = 840.0
BASELINE_SIGMA = 0.6
BASELINE_SEED = 2020
BATCH = 1_000  # most samples one POST accepts

SAVINGS_URL = f"{API}/escalations/savings?period={PERIOD}"
ESCALATIONS_URL = f"{API}/escalations?period={PERIOD}"
TARGET_MS = 300.0

#: A team_admin of account 1 (the least role that may write baseline samples), for the POSTs.
TEAM_ADMIN = {"X-Role": "team_admin", "X-Account": str(ACCOUNT), "X-User": "7"}


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------


def _kind(g: str) -> str:
    a, b, c, d = (
        IN_WINDOW_WITH_ACTION,
        IN_WINDOW_WITH_ACTION + IN_WINDOW_NO_ACTION,
        IN_WINDOW_WITH_ACTION + IN_WINDOW_NO_ACTION + BEFORE_WINDOW,
        ACCOUNT_1_HANDOFFS,
    )
    return (
        f"CASE WHEN {g} <= {a} THEN 'action' WHEN {g} <= {b} THEN 'open' "
        f"WHEN {g} <= {c} THEN 'earlier' WHEN {g} <= {d} THEN 'unclaimed' "
        "WHEN random() < 0.9 THEN 'action' ELSE 'open' END"
    )


#: Server-side generators, naive UTC. Claims in account 1's window lie in [NOW - 30 days + 1 h,
#: NOW - 7 h] (the window is [NOW - 30 days, NOW]), the earlier ones 31 to 90 days back, the other
#: accounts' over 90 days; a first action comes a lognormal delay after the claim (median 270 s,
#: sigma 0.9, capped at 4 h), so every step lies before NOW. Sessions start 20 min to 3 h 20 min
#: before the claim, with 4 steps before it.
LOAD: list[tuple[str, str]] = [
    ("seed", "SELECT setseed(0.2020)"),
    (
        "plan",
        f"""
        CREATE TEMP TABLE plan AS
        SELECT g AS id,
               CASE WHEN g <= {ACCOUNT_1_HANDOFFS} THEN {ACCOUNT}
                    ELSE 2 + g % {OTHER_ACCOUNTS} END AS account_id,
               k.kind,
               k.claimed_at,
               CASE WHEN k.kind = 'action' THEN LEAST(14400.0, exp(ln(270.0) + 0.9
                    * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))) END AS delay,
               k.claimed_at - interval '20 minutes' - random() * interval '3 hours' AS started,
               k.claimed_at - random() * interval '15 minutes' AS asked
        FROM generate_series(1, {N_HANDOFFS}) AS g
        CROSS JOIN LATERAL (
            SELECT x.kind,
                   CASE WHEN g > {ACCOUNT_1_HANDOFFS}
                        THEN {NOW_SQL} - interval '7 hours' - random() * interval '89 days 17 hours'
                        WHEN x.kind = 'earlier'
                        THEN {NOW_SQL} - interval '31 days' - random() * interval '59 days'
                        ELSE {NOW_SQL} - interval '7 hours'
                             - random() * interval '{PERIOD_DAYS - 1} days 16 hours' END
                   AS claimed_at
            FROM (SELECT {_kind("g")} AS kind) AS x) AS k""",
    ),
    (
        "sessions",
        """
        INSERT INTO ai_sessions (id, account_id, created_at, psa_ticket_id, title)
        SELECT id, account_id, started, 'T-' || id, 'Session ' || id FROM plan""",
    ),
    (
        "handoffs",
        """
        INSERT INTO session_handoffs (id, account_id, session_id, created_at, claimed_at,
                                      claimed_by)
        SELECT id, account_id, id, asked,
               CASE WHEN kind <> 'unclaimed' THEN claimed_at END,
               CASE WHEN kind <> 'unclaimed' THEN 100 + id % 25 END
        FROM plan""",
    ),
    (
        "steps before the claims",
        """
        INSERT INTO ai_session_steps (account_id, session_id, created_at)
        SELECT p.account_id, p.id,
               p.started + random() * (p.claimed_at - interval '1 minute' - p.started)
        FROM plan AS p CROSS JOIN generate_series(1, 4) AS n""",
    ),
    (
        "first actions",
        """
        INSERT INTO ai_session_steps (account_id, session_id, created_at)
        SELECT account_id, id, claimed_at + delay * interval '1 second'
        FROM plan WHERE delay IS NOT NULL""",
    ),
    (
        "later steps",
        """
        INSERT INTO ai_session_steps (account_id, session_id, created_at)
        SELECT p.account_id, p.id,
               p.claimed_at + p.delay * interval '1 second' + random() * interval '2 hours'
        FROM plan AS p CROSS JOIN generate_series(1, 3) AS n WHERE p.delay IS NOT NULL""",
    ),
]

#: Account 1's handoffs claimed in the window with a step at or after the claim: must be exactly
#: :data:`IN_WINDOW_WITH_ACTION`.
WITH_ACTION_SQL = f"""
    SELECT count(*) FROM session_handoffs AS h
    WHERE h.account_id = {ACCOUNT} AND h.claimed_at IS NOT NULL
      AND h.claimed_at BETWEEN {NOW_SQL} - interval '{PERIOD_DAYS} days' AND {NOW_SQL}
      AND EXISTS (SELECT 1 FROM ai_session_steps AS s
                  WHERE s.account_id = h.account_id AND s.session_id = h.session_id
                    AND s.created_at >= h.claimed_at)"""


def counts_of(server: str) -> dict[str, int]:
    engine = admin_engine(server, SAVINGS_DB)
    with engine.connect() as conn:
        counts = {
            table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() or 0)
            for table in TABLES
        }
        counts["account_1_in_window_with_action"] = int(
            conn.execute(sa.text(WITH_ACTION_SQL)).scalar() or 0
        )
    engine.dispose()
    return counts


def make_savings_app(uri: str) -> Flask:
    """``common.make_app``'s host (account 1's admin signed in, clock ``NOW``, cache off), with the
    savings and baseline routes unlimited too, and the test host's header login (``X-Role`` ...)
    when a request sends one (the POSTs, as a team_admin)."""

    def identity() -> t.Any:
        return host.load_identity() if "X-Role" in request.headers else IDENTITY

    return host.create_app(
        uri,
        identity_loader=identity,
        clock=lambda: NOW,
        FLOWPILOT_ANALYTICS_CACHE_TTL=0,
        FLOWPILOT_ANALYTICS_LIMITS=dict.fromkeys(
            (
                "psa_metrics",
                "escalations",
                "escalation_handoffs",
                "savings",
                "baseline",
                "baseline_write",
            ),
            UNLIMITED,
        ),
    )


def build(server: str) -> dict[str, int]:
    say(f"Building PostgreSQL database {SAVINGS_DB} (drops and recreates it) ...")
    recreate_database(server, SAVINGS_DB)
    app = make_app(f"{server}/{SAVINGS_DB}")
    with app.app_context():
        db.create_all()  # the host's tables and the plugin's
    dispose(app)
    progress("tables created with db.create_all()")
    engine = admin_engine(server, SAVINGS_DB)
    with engine.connect() as conn:
        conn.execute(sa.text("SET synchronous_commit = off"))
        for label, sql in LOAD:
            run_sql(conn, label, sql)
        for table in TABLES:
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
            run_sql(conn, f"VACUUM ANALYZE {table}", f"VACUUM ANALYZE {table}")
    engine.dispose()
    counts = counts_of(server)
    write_comment(
        server,
        SAVINGS_DB,
        {"generator": GENERATOR, "counts": counts, "built": time.strftime("%Y-%m-%dT%H:%M:%S")},
    )
    return counts


def ensure_visible(server: str) -> float:
    """VACUUM the tables until their pages are all-visible (a VACUUM that runs while another
    transaction is open leaves the new rows' pages unmarked, and every first-step probe then reads
    the heap: 20,000 heap fetches); the all-visible fraction of their pages."""
    engine = admin_engine(server, SAVINGS_DB)
    fraction = 0.0
    with engine.connect() as conn:
        for attempt in range(10):
            pages, visible = conn.execute(
                sa.text(
                    "SELECT sum(relpages), sum(relallvisible) FROM pg_class "
                    "WHERE relname = ANY(:tables)"
                ),
                {"tables": list(TABLES)},
            ).one()
            fraction = float(visible) / max(1.0, float(pages))
            if fraction >= 0.99:
                break
            if attempt:
                time.sleep(1.0)
            for table in TABLES:
                conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
    engine.dispose()
    return fraction


def ensure_database(server: str, rebuild: bool) -> dict[str, int]:
    if not rebuild and database_exists(server, SAVINGS_DB):
        recorded = database_comment(server, SAVINGS_DB)
        if recorded is not None and recorded.get("generator") == GENERATOR:
            counts = counts_of(server)
            if (
                counts == recorded["counts"]
                and counts["session_handoffs"] == N_HANDOFFS
                and counts["account_1_in_window_with_action"] == IN_WINDOW_WITH_ACTION
            ):
                say(
                    f"Reusing {SAVINGS_DB} (built {recorded['built']}; row counts match; "
                    "--rebuild forces a rebuild)"
                )
                return counts
        say(f"{SAVINGS_DB} exists but is incomplete or from another generator: rebuilding")
    started = time.perf_counter()
    counts = build(server)
    say(f"Built {SAVINGS_DB} in {time.perf_counter() - started:.0f}s")
    return counts


# --------------------------------------------------------------------------------------------------
# The baseline: 1,000 stopwatch samples, POSTed through the route
# --------------------------------------------------------------------------------------------------


def baseline_samples(n: int) -> list[dict[str, t.Any]]:
    """The benchmark's stopwatch samples: seconds to 0.1 s, measured on weekdays of May-June 2026
    between 09:00 and 17:00 UTC; every tenth one with a note."""
    rng = np.random.default_rng(BASELINE_SEED)
    seconds = np.round(rng.lognormal(math.log(BASELINE_MEDIAN), BASELINE_SIGMA, n), 1)
    days = rng.integers(0, 40, n)  # 40 weekdays from Monday 2026-05-04
    minutes = rng.integers(9 * 60, 17 * 60, n)
    samples = []
    for i in range(n):
        week, weekday = divmod(int(days[i]), 5)
        day = 4 + 7 * week + weekday  # days after 2026-04-30
        month, mday = (5, day) if day <= 31 else (6, day - 31)
        hour, minute = divmod(int(minutes[i]), 60)
        samples.append(
            {
                "seconds": max(0.1, float(seconds[i])),
                "measured_at": f"2026-{month:02d}-{mday:02d}T{hour:02d}:{minute:02d}:00Z",
                "note": f"verbal handoff #{i + 1}, stopwatch" if i % 10 == 0 else None,
            }
        )
    return samples


def _same_samples(stored: list[dict[str, t.Any]], wanted: list[dict[str, t.Any]]) -> bool:
    def key(sample: dict[str, t.Any]) -> tuple[float, str]:
        return (float(sample["seconds"]), str(sample["measured_at"])[:16])

    return sorted(map(key, stored)) == sorted(map(key, wanted))


def post_samples(app: Flask, account: int, samples: list[dict[str, t.Any]]) -> list[float]:
    """POST the samples in batches of :data:`BATCH` as a team_admin of ``account``; each request's
    time in ms."""
    client = app.test_client()
    headers = {**TEAM_ADMIN, "X-Account": str(account)}
    times = []
    for start in range(0, len(samples), BATCH):
        batch = samples[start : start + BATCH]
        started = time.perf_counter()
        response = client.post(
            f"{API}/escalations/baseline", json={"samples": batch}, headers=headers
        )
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 201 or len(response.get_json()["samples"]) != len(batch):
            raise RuntimeError(
                f"POST escalations/baseline -> {response.status_code}: "
                f"{response.get_data(as_text=True)[:300]}"
            )
    return times


def ensure_baseline(app: Flask, n: int) -> list[dict[str, t.Any]]:
    """Account 1's samples: reused when they are exactly the benchmark's, else the account's
    samples are deleted (in this benchmark's own database) and the benchmark's POSTed."""
    wanted = baseline_samples(n)
    listing = app.test_client().get(f"{API}/escalations/baseline")
    if listing.status_code != 200:
        raise RuntimeError(f"GET escalations/baseline -> {listing.status_code}: {listing.data!r}")
    stored = listing.get_json()["samples"]
    if len(stored) == n and _same_samples(stored, wanted):
        say(f"  reusing account {ACCOUNT}'s {n:,} baseline samples")
        return wanted
    if stored:
        say(
            f"  account {ACCOUNT} has {len(stored):,} baseline samples that are not the "
            "benchmark's: deleting them"
        )
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM flowpilot_baseline_samples WHERE account_id = :a"),
                {"a": ACCOUNT},
            )
    times = post_samples(app, ACCOUNT, wanted)
    say(
        f"  POSTed account {ACCOUNT}'s {n:,} baseline samples as a team_admin in {len(times)} "
        f"request(s) of <= {BATCH:,}: " + ", ".join(f"{ms:.1f} ms" for ms in times)
    )
    return wanted


def bench_post(app: Flask, samples: list[dict[str, t.Any]], runs: int) -> list[float]:
    """POST the same 1,000 samples ``runs`` times to a scratch account (deleted afterwards)."""
    scratch = 999_999
    try:
        times = [post_samples(app, scratch, samples[:BATCH])[0] for _ in range(runs)]
    finally:
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM flowpilot_baseline_samples WHERE account_id = :a"),
                {"a": scratch},
            )
    return times


# --------------------------------------------------------------------------------------------------
# The answer
# --------------------------------------------------------------------------------------------------


def _close(a: t.Any, b: t.Any, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-6)


def _percentile_cont(values: t.Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def check_answer(
    savings_call: t.Callable[[], t.Any],
    escalations_call: t.Callable[[], t.Any],
    samples: list[dict[str, t.Any]],
    min_samples: int,
) -> tuple[bool, dict[str, t.Any]]:
    """The consistency checks, printed; whether all passed, and the body."""
    body = savings_call().get_json()
    again = savings_call().get_json()
    esc = escalations_call().get_json()
    seconds = [s["seconds"] for s in samples]
    measured = sorted(s["measured_at"][:16] for s in samples)
    base, product = body["baseline"], body["in_product"]
    difference = body["difference"]
    checks = {
        f"in_product.n = escalations' n_handoffs_with_action = {IN_WINDOW_WITH_ACTION:,}": (
            product["n"] == esc["n_handoffs_with_action"] == IN_WINDOW_WITH_ACTION
        ),
        "in_product.median_seconds = escalations' median_seconds": _close(
            product["median_seconds"], esc["median_seconds"]
        ),
        "in_product.mean_seconds = escalations' avg_seconds (float rounding)": _close(
            product["mean_seconds"], esc["avg_seconds"]
        ),
        "same window as escalations": (body["window_start"], body["window_end"])
        == (esc["window_start"], esc["window_end"]),
        f"baseline: n = {len(samples):,}, median and mean of the samples POSTed": (
            base["n"] == len(samples)
            and _close(base["median_seconds"], _percentile_cont(seconds, 0.5))
            and _close(base["mean_seconds"], math.fsum(seconds) / len(seconds))
        ),
        "baseline: first/last_measured_at of the samples POSTed": (
            str(base["first_measured_at"])[:16],
            str(base["last_measured_at"])[:16],
        )
        == (measured[0], measured[-1]),
        f"a difference (baseline n >= {min_samples})": difference is not None,
        "extrapolated.handoffs = in_product.n": (
            body["extrapolated"] is not None and body["extrapolated"]["handoffs"] == product["n"]
        ),
        "a claim and no reason, or a reason and no claim": (body["claim"] is None)
        != (body["reason"] is None),
        "no 'minutes recovered' in the claim": "minutes recovered" not in (body["claim"] or ""),
        "deterministic: the same body twice": body == again,
    }
    for name, ok in checks.items():
        say(f"    {'OK      ' if ok else 'MISMATCH'} {name}")
    say(
        f"    baseline:   n {base['n']:,}, median {base['median_seconds']:.1f} s, "
        f"mean {base['mean_seconds']:.1f} s ({base['first_measured_at']} .. "
        f"{base['last_measured_at']})"
    )
    say(
        f"    in product: n {product['n']:,}, median {product['median_seconds']:.1f} s, "
        f"mean {product['mean_seconds']:.1f} s (escalations: {esc['n_handoffs_claimed']:,} "
        f"claimed, {esc['n_handoffs_with_action']:,} with an action)"
    )
    if difference is not None:
        say(
            f"    difference: median {difference['median_seconds']:.1f} s "
            f"[{difference['median_interval'][0]:.1f}, {difference['median_interval'][1]:.1f}], "
            f"mean {difference['mean_seconds']:.1f} s [{difference['mean_interval'][0]:.1f}, "
            f"{difference['mean_interval'][1]:.1f}], confidence {difference['confidence']}"
        )
        say(f"    method:     {difference['method']}")
    say(f"    claim:      {body['claim']}")
    say(f"    reason:     {body['reason']}")
    return all(checks.values()), body


# --------------------------------------------------------------------------------------------------
# Timings
# --------------------------------------------------------------------------------------------------


def measure_all(
    contenders: dict[str, t.Callable[[], t.Any]], rounds: int, inner: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Every call's time in ms per contender; calls interleaved, order alternating every round
    (``common.measure``, keeping the samples for the p95)."""
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
    return samples


def p95(values: t.Sequence[float]) -> float:
    return float(np.percentile(values, 95))


def show_all(samples: dict[str, list[float]]) -> None:
    width = max(len(name) for name in samples)
    for name, values in samples.items():
        say(
            f"    {name:<{width}}  median {statistics.median(values):8.2f} ms   "
            f"p95 {p95(values):8.2f} ms   min {min(values):8.2f} ms   (n={len(values)})"
        )


# --------------------------------------------------------------------------------------------------
# Where the savings report's time goes
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


BASELINE_DB = "baseline: database (count-only replay)"
BASELINE_READ = "baseline read as the report does (SQL + StoredSample)"
ROWS_DB = "in-product rows: database (count-only replay)"
ROWS_FETCHED = "in-product rows: fetched as the report does"
SAVINGS = "savings.savings(...) (sort, figures, bootstrap, words)"
#: Sub-phases of ``savings.savings``, timed apart (not summed).
INSIDE = ("  inside: _ordered + _summary (both samples)", "  inside: _difference (bootstraps)")


def savings_route() -> t.Any:
    return next(route for route in reports.REPORT_ROUTES if route.endpoint == "savings")


def savings_request(app: Flask, phases: Phases) -> str:
    """One savings request computed phase by phase as ``reports.savings_report`` and
    ``routes.cached_json`` compute it; returns the JSON body. Each statement is timed twice: wrapped
    in ``count()`` (database time without fetching or decoding), then as the report reads it."""
    route = savings_route()
    with app.test_request_context():
        state = current_state()
        query = route.args_schema(state).load({"period": PERIOD})
        metric = state.prepared().escalations
        clock = Stopwatch(phases)
        ctx = reports.ReportContext.start(state, IDENTITY.account_id, IDENTITY.user_id)
        window = query.span.window(ctx.now)
        listed = baselines.samples_query(state.baseline_io).subquery()
        counted_samples = sa.select(sa.func.count(listed.c.seconds), sa.func.count(listed.c.note))
        state.read_all([counted_samples], {"account_id": ctx.account_id}, ctx.reads)
        clock.lap(BASELINE_DB)
        samples = state.baseline(ctx.account_id, ctx.reads)
        clock.lap(BASELINE_READ)
        statement = metric.deltas_statement()
        inner = statement.subquery()
        # the array's length: the same probes and aggregate, without transferring the array
        ctx.read(sa.select(sa.func.cardinality(list(inner.c)[0])), window)
        clock.lap(ROWS_DB)
        rows = ctx.read(statement, window)
        clock.lap(ROWS_FETCHED)
        deltas = metric.deltas(rows)
        clock.lap("deltas (array -> floats)")
        baseline = [sample.seconds for sample in samples]
        found = sv.savings(baseline, deltas, min_samples=state.settings.baseline_min_samples)
        clock.lap(SAVINGS)
        measured = [sample.measured_at for sample in samples]
        document = reports.SavingsReport(
            period=window.period,
            window_start=window.start,
            window_end=window.end,
            baseline=reports.BaselineSummary(
                n=found.baseline.n,
                median_seconds=found.baseline.median_seconds,
                mean_seconds=found.baseline.mean_seconds,
                first_measured_at=min(measured, default=None),
                last_measured_at=max(measured, default=None),
            ),
            in_product=found.in_product,
            difference=found.difference,
            extrapolated=found.extrapolated,
            claim=found.claim,
            reason=found.reason,
        )
        dumped = route.body().dump(document)
        clock.lap("report objects + schema dump")
        text = json.dumps(
            dumped, allow_nan=False, separators=(",", ":"), sort_keys=True, default=str
        )
        clock.lap("json.dumps")
        # inside savings.savings, timed apart
        base, product = sv._ordered(baseline, "baseline"), sv._ordered(deltas, "in_product")
        sv._summary(base), sv._summary(product)
        clock.lap(INSIDE[0])
        sv._difference(base, product, sv.CONFIDENCE)
        clock.lap(INSIDE[1])
    return text


def bench_split(app: Flask, runs: int) -> dict[str, float]:
    """The phases, each run interleaved with a call of the endpoint itself (so that the total and
    the phases see the same load); returns the SQL / Python split."""
    call = endpoint(app, SAVINGS_URL)
    phases = _phases()
    text = savings_request(app, phases)  # warm-up, and the exactness check
    same = json.loads(text) == call().get_json()
    phases = _phases()
    totals, quiet = [], []
    for _ in range(runs):
        # each run starts from a full collection, so that no run pays for another's garbage (the
        # timings above keep the collections a steady stream of requests sets off)
        gc.collect()
        savings_request(app, phases)
        gc.collect()
        started = time.perf_counter()
        call()
        totals.append((time.perf_counter() - started) * 1000)
        gc.collect()
        gc.disable()  # the same request without the cyclic garbage collector's passes
        try:
            started = time.perf_counter()
            call()
            quiet.append((time.perf_counter() - started) * 1000)
        finally:
            gc.enable()
    medians = {name: statistics.median(values) for name, values in phases.items()}

    def decode(fetched: str, database: str) -> float:
        # the fetch and decode alone: the median of each run's difference (steadier than the
        # difference of the medians on a loaded machine)
        return statistics.median(max(0.0, a - b) for a, b in zip(phases[fetched], phases[database]))

    rows_decode = decode(ROWS_FETCHED, ROWS_DB)
    base_decode = decode(BASELINE_READ, BASELINE_DB)
    rows_db = medians[ROWS_FETCHED] - rows_decode
    base_db = medians[BASELINE_READ] - base_decode
    sql = rows_db + base_db
    summed = (BASELINE_DB, BASELINE_READ, ROWS_DB, ROWS_FETCHED)
    python = (
        rows_decode
        + base_decode
        + sum(v for n, v in medians.items() if n not in summed and not n.startswith("  "))
    )
    total = statistics.median(totals)
    say(f"  the replica's body equals the endpoint's: {same}; medians of {runs} runs:")
    width = max(len(name) for name in medians)
    for name, value in medians.items():
        note = ""
        if name == ROWS_FETCHED:
            note = f"  (= {rows_db:.2f} database + {rows_decode:.2f} fetch/decode)"
        elif name == BASELINE_READ:
            note = f"  (= {base_db:.2f} database + {base_decode:.2f} fetch/decode)"
        say(f"    {name:<{width}}  {value:8.2f} ms{note}")
    say(f"    {'the endpoint, interleaved':<{width}}  {total:8.2f} ms")
    say(
        f"    {'the endpoint, gc disabled, interleaved':<{width}}  "
        f"{statistics.median(quiet):8.2f} ms  (the difference: collections set off by the rows' "
        "objects' young generations)"
    )
    say(
        f"    => SQL {sql:.2f} ms ({sql / (sql + python):.0%}: the rows' and the samples' "
        f"statements in the database), Python {python:.2f} ms ({python / (sql + python):.0%}: "
        f"fetch/decode onwards; savings.savings alone {medians[SAVINGS]:.2f} ms); the endpoint's "
        f"other {total - sql - python:.2f} ms are Flask, auth, limiter, test client (and noise)"
    )
    return {
        "sql": sql,
        "python": python,
        "total": total,
        "gc_off": statistics.median(quiet),
        "rows_db": rows_db,
        "rows_decode": rows_decode + medians["deltas (array -> floats)"],
        "baseline": medians[BASELINE_READ],
        "savings": medians[SAVINGS],
        "dump": medians["report objects + schema dump"] + medians["json.dumps"],
        "same": float(same),
    }


def _phases() -> Phases:
    return defaultdict(list)


def bench_function(samples: list[dict[str, t.Any]], runs: int) -> dict[int, float]:
    """``savings.savings`` alone, on the benchmark's baseline and synthetic in-product deltas of
    several sizes (its work is not monotonic in n: up to ``EXACT_MEAN_LIMIT`` handoffs the means are
    resampled one by one, above it by their normal limit); interleaved, medians in ms."""
    baseline = np.array([s["seconds"] for s in samples], dtype=np.float64)
    rng = np.random.default_rng(BASELINE_SEED + 1)
    sizes = (20, 500, sv.EXACT_MEAN_LIMIT, sv.EXACT_MEAN_LIMIT + 1, IN_WINDOW_WITH_ACTION)
    products = {n: rng.lognormal(math.log(270.0), 0.9, n) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for number in range(runs):
        for n in sizes if number % 2 == 0 else sizes[::-1]:
            started = time.perf_counter()
            sv.savings(baseline, products[n])
            times[n].append((time.perf_counter() - started) * 1000)
    medians = {n: statistics.median(values) for n, values in times.items()}
    say(
        f"  savings.savings(...) alone, {len(baseline):,} baseline samples, medians of {runs} runs "
        "(in-product n: ms):"
    )
    say(
        "    "
        + ", ".join(
            f"{n:,}{' (exact means)' if n <= sv.EXACT_MEAN_LIMIT else ''}: {ms:.1f}"
            for n, ms in medians.items()
        )
    )
    return medians


def profile(app: Flask, calls: int, top: int) -> None:
    call = endpoint(app, SAVINGS_URL)
    call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    say(f"  cProfile of {calls} savings requests (by own time):")
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
    parser.add_argument("--rebuild", action="store_true", help=f"drop and rebuild {SAVINGS_DB}")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument(
        "--inner", type=int, default=3, help="calls per contender per round (default 3)"
    )
    parser.add_argument(
        "--split-runs", type=int, default=15, help="runs of each phase for the split (default 15)"
    )
    parser.add_argument(
        "--post-runs",
        type=int,
        default=5,
        help="POSTs of 1,000 samples to a scratch account, timed (default 5; 0 skips)",
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile the savings request")
    args = parser.parse_args(argv)

    say(
        f"flowpilot_analytics savings report; clock NOW = {NOW.isoformat()}, account {ACCOUNT}, "
        f"period {PERIOD}, cache off"
    )
    counts = ensure_database(args.server, args.rebuild)
    visible = ensure_visible(args.server)
    say(f"  all-visible pages (index-only probes without heap fetches): {visible:.1%}")
    app = make_savings_app(f"{args.server}/{SAVINGS_DB}")
    with app.app_context():
        created = not sa.inspect(db.engine).has_table(BASELINE_TABLE)
        db.create_all()  # the plugin's tables the database lacks (missing tables only)
    if created:
        say(f"  created {BASELINE_TABLE} in {SAVINGS_DB} (db.create_all, missing tables)")
    samples = ensure_baseline(app, BASELINE_SAMPLES)
    with app.test_request_context():
        min_samples = current_state().settings.baseline_min_samples

    say()
    say(
        f"== PostgreSQL {SAVINGS_DB}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + " =="
    )
    savings_call = endpoint(app, SAVINGS_URL)
    escalations_call = endpoint(app, ESCALATIONS_URL)
    started = time.perf_counter()
    savings_call()
    first = (time.perf_counter() - started) * 1000
    say(
        f"  the app's first savings request: {first:.1f} ms (statements built, numpy's lazy "
        "imports and first-touched arrays; once per process)"
    )
    say("  answer:")
    consistent, _body = check_answer(savings_call, escalations_call, samples, min_samples)

    own_sql = replay(app_engine(app), captured_sql(app, savings_call))
    contenders = {
        "savings 30d": savings_call,
        "escalations 30d (same handoffs, aggregated in SQL)": escalations_call,
        "savings: its own statements replayed": own_sql,
    }
    say(f"  timings ({args.rounds} interleaved rounds x {args.inner} calls, after a warm-up):")
    timed = measure_all(contenders, args.rounds, args.inner)
    show_all(timed)
    savings_ms = timed["savings 30d"]
    median, high = statistics.median(savings_ms), p95(savings_ms)

    summary = Summary()
    summary.add(
        f"PG savings {PERIOD}: {IN_WINDOW_WITH_ACTION:,} handoffs, {BASELINE_SAMPLES:,} samples",
        f"median {median:.1f} ms, p95 {high:.1f} ms",
        f"< {TARGET_MS:.0f} ms",
        median < TARGET_MS and consistent,
    )
    escalations_ms = statistics.median(timed["escalations 30d (same handoffs, aggregated in SQL)"])
    summary.add(
        "PG escalations 30d, same handoffs (reference)",
        f"median {escalations_ms:.1f} ms",
        "",
        None,
    )
    summary.add("answer consistent", "OK" if consistent else "MISMATCH", "OK", consistent)

    if args.post_runs:
        posts = bench_post(app, samples, args.post_runs)
        say(
            f"  POST escalations/baseline with {BATCH:,} samples (scratch account, deleted after): "
            f"median {statistics.median(posts):.1f} ms, min {min(posts):.1f} ms "
            f"(n={len(posts)})"
        )
        summary.add(
            f"POST {BATCH:,} baseline samples (one request)",
            f"median {statistics.median(posts):.1f} ms",
            "",
            None,
        )

    say()
    say("== Where the savings report's time goes ==")
    split = bench_split(app, args.split_runs)
    summary.add(
        "savings: SQL / Python (split)",
        f"{split['sql']:.1f} / {split['python']:.1f} ms",
        "",
        None,
    )
    summary.add(
        "  rows db / rows decode / baseline / savings() / dump",
        f"{split['rows_db']:.1f} / {split['rows_decode']:.1f} / {split['baseline']:.1f} / "
        f"{split['savings']:.1f} / {split['dump']:.1f} ms",
        "",
        None,
    )
    function = bench_function(samples, args.split_runs)
    summary.add(
        f"savings() alone: in-product n {sv.EXACT_MEAN_LIMIT:,} / {IN_WINDOW_WITH_ACTION:,}",
        f"{function[sv.EXACT_MEAN_LIMIT]:.1f} / {function[IN_WINDOW_WITH_ACTION]:.1f} ms",
        "",
        None,
    )
    summary.add(
        "savings endpoint in the split / with gc disabled",
        f"{split['total']:.1f} / {split['gc_off']:.1f} ms",
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
