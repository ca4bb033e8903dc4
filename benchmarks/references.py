"""The best hand-written SQL for each report, the contenders the endpoints are measured against."""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from common import ACCOUNT, NOW, PERIOD_DAYS, TZ

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
        WHERE s.account_id = :account_id AND s.session_id = h.session_id
          AND s.created_at >= h.claimed_at
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


# The final OFFSET 0 is the fence: each EXISTS runs once per session, not once per aggregate that
# reads it.
_SESSION_FLAGS = """
    SELECT s.id,
           date(timezone(CAST(:tz AS text), timezone('UTC', s.created_at))) AS day,
           s.psa_ticket_id IS NOT NULL AS linked,
           s.psa_ticket_id IS NOT NULL AND EXISTS (
               SELECT 1 FROM psa_activity_logs AS a
               WHERE a.account_id = :account_id AND a.session_id = s.id
                 AND a.activity_type = 'note_posted'
           ) AS doc_pushed
    FROM ai_sessions AS s
    WHERE s.account_id = :account_id AND s.created_at >= :ws_naive AND s.created_at <= :we_naive
    OFFSET 0"""

_SESSION_DAYS = f"""
    SELECT f.day, count(*) AS sessions,
           count(*) FILTER (WHERE f.linked) AS linked,
           count(*) FILTER (WHERE f.doc_pushed) AS doc_pushed,
           count(*) FILTER (WHERE f.doc_pushed AND EXISTS (
               SELECT 1 FROM psa_activity_logs AS a
               WHERE a.account_id = :account_id AND a.session_id = f.id
                 AND a.activity_type = 'time_entry_posted'
           )) AS time_entry_logged
    FROM ({_SESSION_FLAGS}) AS f
    GROUP BY f.day"""

_ACTIVITY_DAYS = """
    SELECT date(timezone(CAST(:tz AS text), a.created_at)) AS day,
           count(*) FILTER (WHERE a.activity_type = 'note_posted') AS notes_posted,
           count(*) FILTER (WHERE a.activity_type = 'time_entry_posted') AS time_entries,
           coalesce(sum(a.minutes) FILTER (WHERE a.activity_type = 'time_entry_posted'), 0)
               AS minutes
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
           coalesce(sd.time_entry_logged, 0), coalesce(ad.notes_posted, 0),
           coalesce(ad.time_entries, 0), coalesce(ad.minutes, 0)
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
    return {
        "time_entries": {"count": count, "total_minutes": minutes_total},
        "funnel": totals,
        "daily_trend": trend,
    }


def psa_params() -> dict[str, t.Any]:
    start, end = window()
    return {
        "account_id": ACCOUNT,
        "tz": TZ,
        "ws": start,
        "we": end,
        "ws_naive": naive(start),
        "we_naive": naive(end),
    }


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
        return _psa_result(
            (day, *sessions.get(day, (0, 0, 0, 0)), *activities.get(day, (0, 0, 0))) for day in days
        )

    return run
