"""The reports as data: what the routes serve and the CLI prints, computed the same way for both."""

from __future__ import annotations

import base64
import itertools
import json
import typing as t
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from . import config as cfg
from . import escalations, psa_metrics
from .errors import ApiError
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
    return psa_metrics.summarize(state.read(sessions_query, params), state.read(activities_query, params),
                                 window, ZoneInfo(zone_name))


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


def encode_cursor(sort_key: t.Any, handoff_id: t.Any) -> str:
    """An opaque ``next_cursor``: the last row's stored claim and id."""
    key = sort_key.isoformat() if isinstance(sort_key, datetime) else str(sort_key)
    raw = json.dumps({"k": key, "id": handoff_id}, default=str, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, dialect: str) -> tuple[t.Any, t.Any]:
    """The keyset a ``next_cursor`` stands for, checked; a 400 for anything this API did not return."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key, handoff_id = data["k"], data["id"]
        if not isinstance(key, str) or len(key) > 64:
            raise ValueError("key")
        if isinstance(handoff_id, bool) or not isinstance(handoff_id, (int, str)) or (
                isinstance(handoff_id, int) and not -2**63 <= handoff_id < 2**63):
            raise ValueError("id")
        if dialect.startswith("sqlite"):
            return key, handoff_id
        moment = datetime.fromisoformat(key)
        if not 1900 <= moment.year <= 9000:
            raise ValueError("year")
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)), handoff_id
    except Exception:
        raise ApiError(400, "invalid_parameter", "The cursor is not one this API returned.",
                       details={"fields": {"cursor": ["Not a valid cursor."]}}) from None


def bucket_filter(value: str | None, edges: t.Sequence[float]) -> tuple[bool, int | None]:
    """``(filtering, bucket)``: no filter, a bucket index, or ``(True, None)`` for no action."""
    if value is None:
        return False, None
    if value == "no_action":
        return True, None
    if value.isascii() and value.isdigit() and int(value) <= len(edges):
        return True, int(value)
    raise ApiError(400, "invalid_parameter", "bucket is a distribution bucket index or no_action.",
                   details={"fields": {"bucket": [f"One of 0..{len(edges)} or no_action."]}})


def iter_handoffs(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any],
                  after: tuple[t.Any, t.Any] | None = None) -> t.Iterator[dict[str, t.Any]]:
    """Every handoff in scope after the keyset ``after``, newest first, filtered by bucket, in chunks."""
    edges = list(state.config[cfg.BUCKET_EDGES_SECONDS])
    filtering, wanted = bucket_filter(args.get("bucket"), edges)
    window = window_from_args(args, state.clock())
    tables = state.host_tables()
    first, following = (state.once(f"escalation_handoffs:{more}", lambda more=more: (
        escalations.build_handoffs_query(tables, state.dialect, state.skew_seconds, after=more)))
        for more in (False, True))
    chunk = 500
    while True:
        params = {**_params(account_id, window), "page_size": chunk}
        if after is not None:
            params.update(after_key=after[0], after_id=after[1])
        rows = state.read(first if after is None else following, params).all()
        for handoff_id, session_id, claimed_at, first_step_at, sort_key in rows:
            seconds = escalations.delta_seconds(claimed_at, first_step_at)
            bucket = None if seconds is None else escalations.bucket_index(seconds, edges)
            if not filtering or bucket == wanted:
                yield {"handoff_id": handoff_id, "session_id": session_id, "claimed_at": claimed_at,
                       "first_action_at": first_step_at, "seconds": seconds, "bucket": bucket,
                       "sort_key": sort_key}
        if len(rows) < chunk:
            return
        after = (rows[-1][4], rows[-1][0])


def handoff_page(state: AnalyticsState, account_id: t.Any, args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """One ``HandoffPage``: up to ``limit`` items and the cursor of the next page (``None`` at the end)."""
    window = window_from_args(args, state.clock())
    after = decode_cursor(args["cursor"], state.dialect) if args.get("cursor") else None
    items = list(itertools.islice(iter_handoffs(state, account_id, args, after), args["limit"] + 1))
    more = len(items) > args["limit"]
    items = items[: args["limit"]]
    return {"period": window.period, "window_start": window.start, "window_end": window.end, "items": items,
            "next_cursor": encode_cursor(items[-1]["sort_key"], items[-1]["handoff_id"]) if more else None}
