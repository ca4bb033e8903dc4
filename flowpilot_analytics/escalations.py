"""The escalation metric, whole: what it measures, the query, and the statistics.

For each handoff of the caller's account claimed inside the window, find the first session step
of the same session (and account) created at or after the claim (less the clock-skew
allowance); the handoff's delta is ``max(0, first_step - claimed_at)`` in seconds. Handoffs
without such a step count as claimed but not as acted upon. Average, median and p95 are taken
over the deltas, with linear interpolation between closest ranks (PostgreSQL's
``percentile_cont``, numpy's default), and are ``None`` when there is no delta. PostgreSQL computes
them in the query; other databases return one row per handoff and :func:`summarize` computes them.
"""

from __future__ import annotations

import math
import typing as t
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from .tables import HostTables, as_utc, at_or_after, comparable, in_window, instant, is_aware, seconds_before

#: Sent verbatim in every response, so that no caller can present the number as a saving.
METRIC_DEFINITION = (
    "Time to first action after an escalation claim: for each session handoff claimed in the "
    "window, the seconds from claimed_at to the first AI session step recorded on the same "
    "session at or after the claim (negative gaps from clock drift count as 0). avg_seconds, "
    "median_seconds and p95_seconds are taken over the handoffs that have such a step "
    "(n_handoffs_with_action); claimed handoffs with no step yet count only in "
    "n_handoffs_claimed. This is NOT 'minutes recovered' and not a time saving: any savings "
    "claim must pair it with the manual baseline (the verbal-handoff stopwatch)."
)


#: Default distribution bucket edges in seconds: < 1 min, 1-5, 5-15, 15-60 min, 1-4 h, > 4 h.
DEFAULT_BUCKET_EDGES: tuple[float, ...] = (60, 300, 900, 3600, 14400)


@dataclass(frozen=True)
class EscalationResult:
    """The numbers of one group of handoffs (the whole account, or one engineer)."""

    n_handoffs_claimed: int
    n_handoffs_with_action: int
    avg_seconds: float | None
    median_seconds: float | None
    p95_seconds: float | None
    #: Handoffs per time-to-first-action bucket (``len(edges) + 1`` counts), then those with no action.
    buckets: tuple[int, ...] = ()
    no_action: int = 0


def bucket_index(delta: float, edges: t.Sequence[float]) -> int:
    """Which bucket a delta falls in: bucket ``i`` is ``[edges[i-1], edges[i])``, the last is open."""
    for index, edge in enumerate(edges):
        if delta < edge:
            return index
    return len(edges)


def _first_step(tables: HostTables, dialect: str, skew_seconds: float) -> tuple[t.Any, t.Any]:
    """The claim (comparable form) and a select of the first step of its session at or after it."""
    h, s = tables.handoffs, tables.steps
    claimed = comparable(h.c.claimed_at, is_aware(s.c.created_at), dialect)
    created = comparable(s.c.created_at, is_aware(h.c.claimed_at), dialect)
    first = (
        sa.select(created.label("first_step_at"))
        .where(
            s.c.account_id == sa.bindparam("account_id"),
            s.c.session_id == h.c.session_id,
            at_or_after(created, claimed, dialect) if not skew_seconds
            else instant(created) >= seconds_before(claimed, skew_seconds, dialect),
        )
        .order_by(*((instant(created), created) if dialect == "sqlite" else (created,)))
        .limit(1)
    )
    return claimed, first


def _in_scope(tables: HostTables, dialect: str) -> list[sa.ColumnElement[bool]]:
    """The caller's handoffs claimed inside the window."""
    h = tables.handoffs
    return [
        h.c.account_id == sa.bindparam("account_id"),
        h.c.claimed_at.is_not(None),
        *in_window(h.c.claimed_at, dialect),
    ]


def build_query(tables: HostTables, dialect: str, skew_seconds: float, edges: t.Sequence[float] = DEFAULT_BUCKET_EDGES,
                group_by_engineer: bool = False) -> sa.Select[t.Any]:
    """One statement per request. Bound parameters: ``account_id``, ``window_start``, ``window_end``.

    On PostgreSQL the database does everything: a LATERAL probe finds each handoff's first step (an
    index probe on ``(account_id, session_id, created_at)``, evaluated once per handoff), and one row
    per group comes back with the counts, ``avg``, ``percentile_cont`` and the bucket counts. Elsewhere
    (SQLite has neither LATERAL nor ``percentile_cont``) it returns ``(claimed_at, first_step_at,
    engineer)`` per handoff for :func:`summarize`. With ``group_by_engineer`` the handoffs are grouped by
    the claimer column (``handoffs.claimed_by``), else the engineer is ``NULL``.
    """
    h = tables.handoffs
    engineer = h.c.claimed_by if group_by_engineer else sa.null()
    claimed, first = _first_step(tables, dialect, skew_seconds)
    if dialect != "postgresql":
        # Raw text out (parsed by naive_utc in summarize): much cheaper per row than the type's processing.
        first_step_at = sa.type_coerce(first.correlate(h).scalar_subquery(), sa.String())
        return sa.select(sa.type_coerce(h.c.claimed_at, sa.String()).label("claimed_at"),
                         first_step_at.label("first_step_at"), engineer.label("engineer")).where(
            *_in_scope(tables, dialect))
    # The delta is computed once per handoff inside the LATERAL (double precision, floored at 0), so
    # the aggregates below read a plain column instead of re-evaluating an expression each.
    step_at = first.selected_columns[0]
    lateral = first.add_columns(
        sa.func.greatest(0.0, sa.func.date_part("epoch", step_at - claimed)).label("delta")).lateral("first_step")
    delta = lateral.c.delta
    bounds = [None, *edges, None]
    bucket_counts = [
        sa.func.count().filter(sa.and_(*(c for c in (
            delta >= low if low is not None else None, delta < high if high is not None else None,
            delta.is_not(None)) if c is not None)))
        for low, high in zip(bounds, bounds[1:])
    ]
    query = (
        sa.select(
            engineer.label("engineer"),
            sa.func.count(),
            sa.func.count(delta),
            sa.func.avg(delta),
            sa.func.percentile_cont(0.5).within_group(delta),
            sa.func.percentile_cont(0.95).within_group(delta),
            *bucket_counts,
        )
        .select_from(h.outerjoin(lateral, sa.true()))
        .where(*_in_scope(tables, dialect))
    )
    return query.group_by(h.c.claimed_by).order_by(h.c.claimed_by) if group_by_engineer else query


def naive_utc(value: t.Any) -> datetime:
    """A stored timestamp as a naive UTC datetime; SQLAlchemy's own UTC text takes the fast path."""
    if isinstance(value, str) and len(value) == 26 and value[10] == " ":
        return datetime.fromisoformat(value)
    return t.cast(datetime, as_utc(value)).replace(tzinfo=None)


def build_handoffs_query(tables: HostTables, dialect: str, skew_seconds: float, *, after: bool) -> sa.Select[t.Any]:
    """The handoffs behind the number, newest claim first (ties by id), one keyset page at a time.

    Bound parameters: ``account_id``, ``window_start``, ``window_end``, ``page_size`` and, with ``after``,
    the keyset of the previous page's last row: ``after_key`` (its ``sort_key``) and ``after_id``. Each
    row: id, session id, claim, first step (``None`` when no action yet), and ``sort_key``: the claim as
    stored (text on SQLite), which is what the order and the keyset compare, so no row repeats or is lost.
    """
    h = tables.handoffs
    _, first = _first_step(tables, dialect, skew_seconds)
    first_step_at = sa.type_coerce(first.correlate(h).scalar_subquery(), h.c.claimed_at.type)
    on_sqlite = dialect.startswith("sqlite")
    key = sa.type_coerce(h.c.claimed_at, sa.String()) if on_sqlite else h.c.claimed_at
    after_key = sa.bindparam("after_key", type_=sa.String() if on_sqlite else h.c.claimed_at.type)
    after_id = sa.bindparam("after_id", type_=h.c.id.type)
    order: list[t.Any] = [key.desc(), h.c.id.desc()]
    keyset: list[sa.ColumnElement[bool]] = [key <= after_key, sa.tuple_(key, h.c.id) < sa.tuple_(after_key, after_id)]
    if dialect == "sqlite":  # instants first (text may carry offsets), then the stored text, then the id
        order.insert(0, instant(h.c.claimed_at).desc())
        keyset = [instant(h.c.claimed_at) <= instant(after_key), sa.or_(
            instant(h.c.claimed_at) < instant(after_key),
            sa.tuple_(key, h.c.id) < sa.tuple_(after_key, after_id))]
    return (
        sa.select(h.c.id, h.c.session_id, h.c.claimed_at, first_step_at.label("first_step_at"), key.label("sort_key"))
        .where(*_in_scope(tables, dialect), *(keyset if after else []))
        .order_by(*order)
        .limit(sa.bindparam("page_size"))
    )


def delta_seconds(claimed_at: t.Any, first_step_at: t.Any) -> float | None:
    """A handoff's time to first action, floored at 0; ``None`` when nothing happened yet."""
    if first_step_at is None:
        return None
    return max(0.0, (naive_utc(first_step_at) - naive_utc(claimed_at)).total_seconds())


def percentile(ordered: t.Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks of a sorted, non-empty sequence."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _float(value: t.Any) -> float | None:
    return None if value is None else float(value)


def _fold(deltas: list[float], claimed: int, edges: t.Sequence[float]) -> EscalationResult:
    buckets = [0] * (len(edges) + 1)
    for delta in deltas:
        buckets[bucket_index(delta, edges)] += 1
    if not deltas:
        return EscalationResult(claimed, 0, None, None, None, tuple(buckets), claimed)
    deltas.sort()
    return EscalationResult(
        n_handoffs_claimed=claimed,
        n_handoffs_with_action=len(deltas),
        avg_seconds=math.fsum(deltas) / len(deltas),
        median_seconds=percentile(deltas, 0.5),
        p95_seconds=percentile(deltas, 0.95),
        buckets=tuple(buckets),
        no_action=claimed - len(deltas),
    )


def summarize(result: t.Iterable[t.Sequence[t.Any]], dialect: str,
              edges: t.Sequence[float] = DEFAULT_BUCKET_EDGES) -> dict[t.Any, EscalationResult]:
    """The counts, statistics and buckets per group (``None`` keys the whole account) from :func:`build_query`."""
    groups: dict[t.Any, EscalationResult] = {}
    if dialect == "postgresql":
        for engineer, claimed, with_action, avg, median, p95, *buckets in result:
            groups[engineer] = EscalationResult(int(claimed), int(with_action), _float(avg), _float(median),
                                                _float(p95), tuple(int(b) for b in buckets),
                                                int(claimed) - int(with_action))
        return groups
    claimed: dict[t.Any, int] = {}
    deltas: dict[t.Any, list[float]] = {}
    for claimed_at, first_step_at, engineer in result:
        claimed[engineer] = claimed.get(engineer, 0) + 1
        delta = delta_seconds(claimed_at, first_step_at)
        group = deltas.setdefault(engineer, [])
        if delta is not None:
            group.append(delta)
    return {engineer: _fold(deltas[engineer], claimed[engineer], edges) for engineer in claimed}


def empty(edges: t.Sequence[float] = DEFAULT_BUCKET_EDGES) -> EscalationResult:
    """The result of an account with no handoff in scope (an aggregate over no rows)."""
    return EscalationResult(0, 0, None, None, None, (0,) * (len(edges) + 1), 0)
