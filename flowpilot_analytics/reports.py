"""The reports as data: what the routes serve and the CLI prints, computed the same way for both."""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from itsdangerous import BadSignature

from . import config as cfg
from . import escalations, psa_metrics
from .errors import ApiError, logger
from .identity import IdentityLike
from .periods import Window, previous_window, window_from_args

if t.TYPE_CHECKING:
    from .extension import AnalyticsState


def _params(account_id: t.Any, window: Window, **extra: t.Any) -> dict[str, t.Any]:
    return {"account_id": account_id, "window_start": window.start, "window_end": window.end, **extra}


def _escalation_groups(state: AnalyticsState, account_id: t.Any, window: Window,
                       by_engineer: bool) -> dict[t.Any, escalations.EscalationResult]:
    tables = state.host_tables()
    edges = state.config[cfg.BUCKET_EDGES_SECONDS]
    statement = state.once(f"escalations:{by_engineer}", lambda: escalations.build_query(
        tables, state.dialect, state.skew_seconds, edges, by_engineer))
    return escalations.summarize(state.read(statement, _params(account_id, window)), state.dialect, edges)


def _figures(result: escalations.EscalationResult) -> dict[str, t.Any]:
    return {"n_handoffs_claimed": result.n_handoffs_claimed, "n_handoffs_with_action": result.n_handoffs_with_action,
            "avg_seconds": result.avg_seconds, "median_seconds": result.median_seconds,
            "p95_seconds": result.p95_seconds}


def escalation_report(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The ``EscalationMetrics`` body for one account and validated query."""
    edges = list(state.config[cfg.BUCKET_EDGES_SECONDS])
    by_engineer = args.get("group_by") == "engineer"
    if by_engineer and "claimed_by" not in state.host_tables().handoffs.c:
        raise ApiError(400, "unsupported_grouping", "group_by=engineer needs the handoffs' claimer column, which "
                       "this database does not have. Map it with FLOWPILOT_ANALYTICS_COLUMNS = "
                       "{'handoffs.claimed_by': '<column>'}.", details={"setting": cfg.COLUMNS})
    window = window_from_args(args, state.clock())
    overall = _escalation_groups(state, account_id, window, False).get(None) or escalations.empty(edges)
    bounds = [0.0, *map(float, edges), None]
    body: dict[str, t.Any] = {
        "period": window.period, "window_start": window.start, "window_end": window.end, **_figures(overall),
        "metric_definition": escalations.METRIC_DEFINITION,
        "distribution": {"buckets": [{"min_seconds": low, "max_seconds": high, "count": count}
                                     for low, high, count in zip(bounds, bounds[1:], overall.buckets)],
                         "no_action": overall.no_action},
    }
    if args.get("compare") == "previous":
        before = previous_window(window)
        result = _escalation_groups(state, account_id, before, False).get(None) or escalations.empty(edges)
        body["previous"] = {"window_start": before.start, "window_end": before.end, **_figures(result)}
    if by_engineer:
        groups = _escalation_groups(state, account_id, window, True)
        body["groups"] = [{"engineer": engineer, **_figures(result)}
                          for engineer, result in sorted(groups.items(), key=_engineer_order)]
    return body


def _engineer_order(item: tuple[t.Any, t.Any]) -> tuple[bool, str, t.Any]:
    """Engineers in their ids' natural order (numbers as numbers), unclaimed-by-nobody last."""
    engineer = item[0]
    return engineer is None, type(engineer).__name__, engineer if engineer is not None else 0


def _psa(state: AnalyticsState, account_id: t.Any, window: Window, zone_name: str) -> psa_metrics.PsaResult:
    tables = state.host_tables()
    activities = state.activity_io
    sessions_query = state.once(
        "psa_sessions", lambda: psa_metrics.build_sessions_query(tables, activities, state.dialect))
    activities_query = state.once(
        "psa_activities", lambda: psa_metrics.build_activities_query(activities, state.dialect))
    params = _params(account_id, window, tz=zone_name)
    sessions, activities = state.read_all([sessions_query, activities_query], params)
    result = psa_metrics.summarize(sessions, activities, window, ZoneInfo(zone_name))
    if result.invalid_minutes:
        logger.warning("flowpilot_analytics: account %s has %d stored activities whose minutes are not a finite "
                       "number >= 0; they are left out of the time-entry totals", account_id,
                       result.invalid_minutes)
    return result


def _psa_figures(result: psa_metrics.PsaResult) -> dict[str, t.Any]:
    rate = psa_metrics.rate
    return {
        "time_entries": {"count": result.time_entry_count, "total_minutes": result.total_minutes,
                         "total_hours": round(result.total_minutes / 60, 4)},
        "funnel": {
            "sessions": result.sessions, "linked": result.linked, "doc_pushed": result.doc_pushed,
            "time_entry_logged": result.time_entry_logged,
            "linked_rate": rate(result.linked, result.sessions),
            "doc_pushed_rate": rate(result.doc_pushed, result.linked),
            "time_entry_logged_rate": rate(result.time_entry_logged, result.doc_pushed),
        },
    }


def psa_report(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The ``EnhancedPsaMetrics`` body for one account and validated query."""
    window = window_from_args(args, state.clock())
    result = _psa(state, account_id, window, args["tz"])
    body: dict[str, t.Any] = {
        "period": window.period, "window_start": window.start, "window_end": window.end, "timezone": args["tz"],
        **_psa_figures(result), "daily_trend": [vars(day) for day in result.daily_trend],
    }
    if args.get("compare") == "previous":
        before = previous_window(window)
        body["previous"] = {"window_start": before.start, "window_end": before.end,
                            **_psa_figures(_psa(state, account_id, before, args["tz"]))}
    return body


#: Most handoffs one drill-down page examines. A bucket filter that matches little would otherwise scan
#: the whole window for one page; past this the page ends early (even empty) with a ``next_cursor``.
MAX_SCAN_ROWS = 5000

_BAD_CURSOR = {"fields": {"cursor": ["Not a cursor this API returned to you."]}}


def encode_cursor(state: AnalyticsState, identity: IdentityLike, sort_key: t.Any, handoff_id: t.Any) -> str:
    """A signed ``next_cursor``: the last row's stored claim and id, for this account and user only."""
    key = sort_key.isoformat() if isinstance(sort_key, datetime) else str(sort_key)
    return state.cursors.dumps({"k": key, "id": handoff_id, "a": str(identity.account_id),
                                "u": str(identity.user_id)})


def _id_checker(column: t.Any) -> t.Callable[[t.Any], bool]:
    """Whether a cursor's id fits the handoffs' id column (so it never reaches the database as a bad value)."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = None
    if python_type is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63
    if python_type is str:
        length = getattr(column.type, "length", None) or 1000
        return lambda v: isinstance(v, str) and len(v) <= length
    return lambda v: (isinstance(v, str) and len(v) <= 1000) or (
        isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63)


def decode_cursor(state: AnalyticsState, identity: IdentityLike, cursor: str) -> tuple[t.Any, t.Any]:
    """The keyset a ``next_cursor`` stands for; a 400 for a cursor not signed by this app or not issued to this
    caller, or whose fields do not fit the columns they are compared with."""
    try:
        data = state.cursors.loads(cursor)
    except BadSignature:
        raise ApiError(400, "invalid_parameter", "The cursor is not one this API returned.",
                       details=_BAD_CURSOR) from None
    if not isinstance(data, dict) or (data.get("a"), data.get("u")) != (str(identity.account_id),
                                                                        str(identity.user_id)):
        raise ApiError(400, "invalid_parameter", "The cursor was issued to another user.", details=_BAD_CURSOR)
    key, handoff_id = data.get("k"), data.get("id")
    valid_id = _id_checker(state.host_tables().handoffs.c.id)
    if not isinstance(key, str) or len(key) > 64 or not valid_id(handoff_id):
        raise ApiError(400, "invalid_parameter", "The cursor is not one this API returned.", details=_BAD_CURSOR)
    if state.dialect.startswith("sqlite"):
        return key, handoff_id
    try:
        moment = datetime.fromisoformat(key)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "The cursor is not one this API returned.",
                       details=_BAD_CURSOR) from None
    if not 1900 <= moment.year <= 9000:
        raise ApiError(400, "invalid_parameter", "The cursor is not one this API returned.", details=_BAD_CURSOR)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)), handoff_id


def _scan(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any],
          after: tuple[t.Any, t.Any] | None, chunk: int) -> t.Iterator[tuple[dict[str, t.Any], bool]]:
    """Every handoff in scope after the keyset ``after``, newest first, in chunks; each with whether it
    passes the bucket filter (a validated index, ``"no_action"`` or absent)."""
    edges = list(state.config[cfg.BUCKET_EDGES_SECONDS])
    wanted = args.get("bucket")
    window = window_from_args(args, state.clock())
    tables = state.host_tables()
    first, following = (state.once(f"escalation_handoffs:{more}", lambda more=more: (
        escalations.build_handoffs_query(tables, state.dialect, state.skew_seconds, after=more)))
        for more in (False, True))
    while True:
        params = {**_params(account_id, window), "page_size": chunk}
        if after is not None:
            params.update(after_key=after[0], after_id=after[1])
        rows = state.read(first if after is None else following, params)
        for handoff_id, session_id, claimed_at, first_step_at, sort_key in rows:
            seconds = escalations.delta_seconds(claimed_at, first_step_at)
            bucket = None if seconds is None else escalations.bucket_index(seconds, edges)
            matches = wanted is None or (bucket is None if wanted == "no_action" else bucket == wanted)
            yield ({"handoff_id": handoff_id, "session_id": session_id, "claimed_at": claimed_at,
                    "first_action_at": first_step_at, "seconds": seconds, "bucket": bucket,
                    "sort_key": sort_key}, matches)
        if len(rows) < chunk:
            return
        after = (rows[-1][4], rows[-1][0])


def iter_handoffs(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any]
                  ) -> t.Iterator[dict[str, t.Any]]:
    """Every handoff in scope that passes the bucket filter, newest first (the CSV export)."""
    return (row for row, matches in _scan(state, account_id, args, None, 500) if matches)


def handoff_page(state: AnalyticsState, identity: IdentityLike, args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """One ``HandoffPage``: up to ``limit`` items and the cursor of the next page (``None`` at the end).

    A page examines at most :data:`MAX_SCAN_ROWS` handoffs; when a bucket filter leaves it short, it ends
    early with fewer items (maybe none) and a ``next_cursor`` that continues after the last one examined.
    """
    window = window_from_args(args, state.clock())
    after = decode_cursor(state, identity, args["cursor"]) if args.get("cursor") else None
    limit = args["limit"]
    chunk = 500 if args.get("bucket") is not None else limit + 1
    items: list[dict[str, t.Any]] = []
    last: dict[str, t.Any] | None = None
    scanned = 0
    exhausted = True
    for row, matches in _scan(state, identity.account_id, args, after, chunk):
        if matches:
            if len(items) == limit:  # one more exists: the page is full
                last, exhausted = items[-1], False
                break
            items.append(row)
        scanned += 1
        last = row
        if scanned >= MAX_SCAN_ROWS:
            exhausted = False
            break
    cursor = None if exhausted or last is None else encode_cursor(state, identity, last["sort_key"],
                                                                  last["handoff_id"])
    return {"period": window.period, "window_start": window.start, "window_end": window.end, "items": items,
            "next_cursor": cursor}
