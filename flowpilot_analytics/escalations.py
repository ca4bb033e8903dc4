"""The escalation metric, whole: what it measures, which handoffs count, the queries, and the
statistics.

Definition (:data:`METRIC_DEFINITION` is the text every response carries):

- **Scope.** The caller's handoffs whose ``claimed_at`` lies in the window ``[start, end]``, both
  ends included (:func:`flowpilot_analytics.periods.window_for`: ``[now - N days, now]``, or a
  custom range).
- **First action.** The first session step of the same session (and account) created at or after the
  claim, less the clock-skew allowance (``FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS``); the handoff's
  delta is ``max(0, first_step - claimed_at)`` in seconds. A handoff with no such step counts as
  claimed only.
- **Statistics.** Average, median, p90 and p95 over the deltas, with linear interpolation between
  closest ranks (PostgreSQL's ``percentile_cont``, numpy's default); ``None`` when there is no
  delta.
- **Distribution.** Deltas counted in buckets ``[edge[i-1], edge[i])``
  (``FLOWPILOT_ANALYTICS_BUCKET_EDGES_SECONDS``), the last one open, plus the handoffs with no
  action.
- **By engineer.** The same figures per claimer (``handoffs.claimed_by``), engineers in id order.
- **Response target** (optional, ``target_seconds``). Over the claimed handoffs: *within* has a
  first action with delta <= target; *breached* has one with delta > target, or none while ``now -
  claimed_at >= target``; *pending* has none and is younger than the target. ``attainment = within /
  (within + breached)``, ``None`` when that is 0 (Zendesk's SLA achievement, pending apart), with
  its 95 % Wilson score interval (:func:`wilson_interval`); *overdue* are the breached ones with no
  action (still open).
- **Clock.** ``wall`` (the default): seconds as above. ``business``: every delta is instead the
  business seconds of ``[claimed_at, first_step)`` on the account's calendar version in effect at
  the claim (:mod:`.business_hours`), and a handoff with no action is overdue once the business
  seconds from its claim to the report's "now" reach the target; everything else is the same.
- **Over time.** The same figures per local day (or ISO week, keyed by its Monday) of ``claimed_at``
  in the caller's zone, one point for every day or week of the window, none skipped; the points add
  up to the window's figures.

On PostgreSQL one statement computes everything (:func:`aggregate_query`); elsewhere one statement
returns a row per handoff (:func:`rows_query`) and :func:`fold_rows` computes the same figures.
"""

from __future__ import annotations

import math
import typing as t
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.sql.selectable import FromClause

from .business_hours import micros
from .calendars import Calendar
from .errors import InvalidQuery
from .tables import HostTables
from .timeutil import (
    Backend,
    Expr,
    as_utc,
    at_or_after,
    comparable,
    in_window,
    is_aware,
    local_date,
    local_days,
    monday,
    naive_utc,
)

#: Sent verbatim in every response, so that no caller can present the number as a saving.
METRIC_DEFINITION = (
    "Time to first action after an escalation claim: for each session handoff claimed in the "
    "window, the seconds from claimed_at to the first AI session step recorded on the same "
    "session at or after the claim (negative gaps from clock drift count as 0). avg_seconds, "
    "median_seconds, p90_seconds and p95_seconds are taken over the handoffs that have such a step "
    "(n_handoffs_with_action); claimed handoffs with no step yet count only in "
    "n_handoffs_claimed. With clock=business the seconds are counted only inside the account's "
    "business hours (the calendar version in effect at each claim). This is NOT 'minutes "
    "recovered' and not a time saving: any savings claim must pair it with the manual baseline "
    "(the verbal-handoff stopwatch)."
)

Edges = tuple[float, ...]
#: A statement of the metric (each builder says its columns and bound parameters).
Statement: t.TypeAlias = "sa.Select[t.Any]"
#: A result row: the values of a statement's columns, of the database's column types.
Row: t.TypeAlias = "t.Sequence[t.Any]"
#: A claimer's id as the handoffs table holds it; ``None`` keys the whole account (or no claimer).
EngineerId: t.TypeAlias = object


#: How a report splits its handoffs: by claimer, by the session's client, or not.
Group: t.TypeAlias = 't.Literal["engineer", "client"] | None'


def _grouping(tables: HostTables, group: Group) -> tuple[Expr, FromClause]:
    """The expression handoffs are grouped by, and what to select them from: the claimer column,
    or the client of the handoff's session (sessions joined on id and account; a handoff whose
    session has no client, or no row, is the ``None`` group)."""
    h = tables.handoffs
    if group == "engineer":
        return h.c.claimed_by, h
    if group == "client":
        s = tables.sessions
        joined = h.outerjoin(s, sa.and_(s.c.id == h.c.session_id, s.c.account_id == h.c.account_id))
        return s.c.client_id, joined
    return sa.null(), h


#: Which clock a report measures on: wall-clock seconds, or the account's business hours.
Clock: t.TypeAlias = 't.Literal["wall", "business"]'
CLOCKS: tuple[str, ...] = ("wall", "business")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DAY_ZERO = date(1970, 1, 1)

#: Longest response target accepted, in seconds (7 days).
MAX_TARGET_SECONDS = 7 * 86400


@dataclass(frozen=True)
class TargetResult:
    """Attainment of a response target over one group of handoffs."""

    seconds: float
    n_within: int
    n_breached: int
    n_pending: int
    #: The breached ones with no action yet (still open at the report's "now").
    n_overdue: int

    @property
    def attainment(self) -> float | None:
        decided = self.n_within + self.n_breached
        return self.n_within / decided if decided else None

    @property
    def attainment_interval(self) -> tuple[float, float] | None:
        """The 95 % Wilson score interval of :attr:`attainment`; ``None`` when that is."""
        decided = self.n_within + self.n_breached
        return wilson_interval(self.n_within, decided) if decided else None


#: The two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of a proportion ``successes / trials`` (``trials >
    0``): the proportions ``p`` with ``|successes / trials - p| <= z * sqrt(p (1 - p) / trials)``.
    Unlike the normal approximation it stays inside [0, 1], and is not empty at 0 or at all
    successes."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0: {successes}/{trials}")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Target:
    """A response target in force for one request: its
    seconds, and the claims old enough to have breached it."""

    seconds: float
    #: ``now - seconds``: a handoff claimed at or before
    #: it with no action yet has breached the target.
    overdue_at_or_before: datetime

    @classmethod
    def at(cls, seconds: float, now: datetime) -> Target:
        # rounded up to the microsecond: a claim exactly
        # ``seconds`` ago is breached, a younger one pending
        return cls(float(seconds), now - timedelta(microseconds=math.ceil(seconds * 1_000_000)))

    def judge(self, claimed_at: datetime, delta: float | None) -> str:
        """``within``, ``breached`` or ``pending`` for one handoff (``claimed_at`` naive UTC)."""
        if delta is not None:
            return "within" if delta <= self.seconds else "breached"
        overdue = claimed_at <= self.overdue_at_or_before.astimezone(timezone.utc).replace(
            tzinfo=None
        )
        return "breached" if overdue else "pending"


@dataclass(frozen=True, kw_only=True)
class EscalationResult:
    """The numbers of one group of handoffs (the whole account, an engineer, a day or a week).

    The response schemas dump it as it is (``EscalationStats``); what a response adds to a figure
    (its window, its engineer, its day) is a subclass in :mod:`.reports`.
    """

    n_handoffs_claimed: int
    n_handoffs_with_action: int
    avg_seconds: float | None
    median_seconds: float | None
    p90_seconds: float | None
    p95_seconds: float | None
    #: Handoffs per time-to-first-action bucket (``len(edges) + 1`` counts; none for trend points).
    buckets: tuple[int, ...]
    #: Claimed handoffs with no action yet.
    no_action: int
    #: Attainment of the response target in force, ``None`` without one.
    target: TargetResult | None = None


@dataclass(frozen=True)
class BucketCount:
    """One distribution bucket: ``[min_seconds, max_seconds)``
    (no upper bound for the last) and its count."""

    min_seconds: float
    max_seconds: float | None
    count: int


@dataclass(frozen=True)
class Distribution:
    """Handoffs by time to first action, and those with none."""

    buckets: tuple[BucketCount, ...]
    no_action: int


def distribution(result: EscalationResult, edges: Edges) -> Distribution:
    """The result's buckets with their bounds, and its handoffs with no action."""
    bounds = bucket_bounds(edges)
    buckets = tuple(
        BucketCount(low, high, count) for (low, high), count in zip(bounds, result.buckets)
    )
    return Distribution(buckets, result.no_action)


def empty(edges: Edges, target: Target | None = None) -> EscalationResult:
    """The result of a group with no handoff in scope (an aggregate over no rows)."""
    return fold([], 0, edges, None if target is None else TargetResult(target.seconds, 0, 0, 0, 0))


def bucket_bounds(edges: Edges) -> list[tuple[float, float | None]]:
    """Each bucket's ``[min, max)`` in seconds: from 0
    to the first edge, ..., the last edge to no bound."""
    lows = (0.0, *edges)
    highs: tuple[float | None, ...] = (*edges, None)
    return list(zip(lows, highs))


def bucket_index(delta: float, edges: Edges) -> int:
    """Which bucket a delta falls in: bucket ``i`` is ``[edges[i-1], edges[i])``, the last is
    open."""
    for index, edge in enumerate(edges):
        if delta < edge:
            return index
    return len(edges)


def delta_seconds(claimed_at: object, first_step_at: object) -> float | None:
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


def fold(
    deltas: list[float], claimed: int, edges: Edges, target: TargetResult | None = None
) -> EscalationResult:
    """The figures of ``claimed`` handoffs, ``deltas`` being those of the ones with an action."""
    buckets = [0] * (len(edges) + 1)
    for delta in deltas:
        buckets[bucket_index(delta, edges)] += 1
    deltas.sort()
    return EscalationResult(
        n_handoffs_claimed=claimed,
        n_handoffs_with_action=len(deltas),
        avg_seconds=math.fsum(deltas) / len(deltas) if deltas else None,
        median_seconds=percentile(deltas, 0.5) if deltas else None,
        p90_seconds=percentile(deltas, 0.9) if deltas else None,
        p95_seconds=percentile(deltas, 0.95) if deltas else None,
        buckets=tuple(buckets),
        no_action=claimed - len(deltas),
        target=target,
    )


def fold_handoffs(
    handoffs: t.Iterable[tuple[datetime, float | None]], edges: Edges, target: Target | None
) -> EscalationResult:
    """The figures of handoffs given as ``(claimed_at as naive UTC, delta or None)``."""
    deltas: list[float] = []
    judged = {"within": 0, "breached": 0, "pending": 0}
    overdue = 0
    claimed = 0
    for claimed_at, delta in handoffs:
        claimed += 1
        if delta is not None:
            deltas.append(delta)
        if target is not None:
            verdict = target.judge(claimed_at, delta)
            judged[verdict] += 1
            if delta is None and verdict == "breached":
                overdue += 1
    attained = None
    if target is not None:
        attained = TargetResult(
            target.seconds, judged["within"], judged["breached"], judged["pending"], overdue
        )
    return fold(deltas, claimed, edges, attained)


def engineer_order(engineer: EngineerId) -> tuple[bool, str, EngineerId]:
    """Engineers in their ids' natural order (numbers as numbers); handoffs with no claimer id
    last."""
    return engineer is None, type(engineer).__name__, engineer if engineer is not None else 0


# -- the business clock ----------------------------------------------------------------------------

#: Microseconds in a second.
_MICROS = 1_000_000


@dataclass(frozen=True)
class ClockedHandoffs:
    """Handoffs measured on the business clock, as columns (one entry per handoff): vectorised, so
    a 90-day report of thousands of handoffs costs a few milliseconds of Python."""

    #: Whether the handoff has a first action.
    has_action: npt.NDArray[np.bool_]
    #: Its business seconds to the first action (0 for one without).
    seconds: npt.NDArray[np.float64]
    #: For one without an action, the business microseconds from its claim to the report's "now"
    #: (what decides whether it is overdue); 0 for the others.
    elapsed: npt.NDArray[np.int64]
    #: The claimer of each (``None`` when not grouped by engineer).
    engineers: list[EngineerId]
    #: Each claim's local day (or week's Monday) as days since 1970-01-01, when a trend asked.
    points: npt.NDArray[np.int64] | None
    #: The positions of the calendar versions used.
    used: set[int]

    def subset(self, chosen: npt.NDArray[np.intp]) -> ClockedHandoffs:
        """The handoffs at the positions ``chosen``."""
        return ClockedHandoffs(
            self.has_action[chosen], self.seconds[chosen], self.elapsed[chosen], [], None, set()
        )

    def groups(self, keys: t.Sequence[object]) -> dict[t.Any, ClockedHandoffs]:
        """The handoffs split by ``keys`` (one per handoff), in first-seen order."""
        positions: dict[object, list[int]] = {}
        for index, key in enumerate(keys):
            positions.setdefault(key, []).append(index)
        return {
            key: self.subset(np.array(found, dtype=np.intp)) for key, found in positions.items()
        }


def _micros_of(value: object) -> int:
    """A stored timestamp (or microseconds already, from PostgreSQL) as microseconds since the
    epoch."""
    if isinstance(value, int):
        return value
    return micros(naive_utc(value))


def measure_business(
    rows: t.Sequence[Row],
    calendar: Calendar | None,
    now: datetime,
    *,
    zone: tzinfo | None = None,
    week: bool = False,
    clients: t.Mapping[str, Calendar] | None = None,
) -> ClockedHandoffs:
    """The rows of :meth:`Escalations.per_handoff_statement` measured in business seconds, each on
    the version in effect at its claim of its calendar: its session's client's (``clients``, keyed
    by the client's id as text, from the rows' ``client`` column) when that client has one, else
    the account's ``calendar``; a handoff with no action is measured to ``now``. With ``zone`` (a
    trend), each claim's local day, or its week's Monday: from the rows' ``point`` column where the
    database computed it, else here."""
    claimed = [row[0] for row in rows]
    firsts = [row[1] for row in rows]
    until = micros(now)
    if not (claimed and isinstance(claimed[0], int)):  # stored timestamps, not microseconds
        claimed = [_micros_of(claim) for claim in claimed]
        firsts = [None if first is None else _micros_of(first) for first in firsts]
    claims = np.array(claimed, dtype=np.int64)
    has_action = np.array([first is not None for first in firsts], dtype=np.bool_)
    actions = np.array([until if first is None else first for first in firsts], dtype=np.int64)
    measured = np.zeros(len(rows), dtype=np.int64)
    used: set[int] = set()
    for chosen, own in _by_calendar(rows, calendar, clients or {}):
        found, positions = own.measure_micros(claims[chosen], actions[chosen])
        measured[chosen] = found
        used |= {own.versions[p].id for p in set(positions.tolist())}
    points = None
    if zone is not None:
        computed = [_column(row, "point", None) for row in rows]  # by the database's zone rules
        points = np.array(
            [
                _local_day(int(claim), zone, week) if point is None else point
                for point, claim in zip(computed, claims)
            ],
            dtype=np.int64,
        )
    return ClockedHandoffs(
        has_action=has_action,
        seconds=np.where(has_action, measured, 0) / _MICROS,
        elapsed=np.where(has_action, 0, measured),
        engineers=[row[2] for row in rows],
        points=points,
        used=used,
    )


def _column(row: Row, name: str, default: object) -> t.Any:
    """A named column of a result row, or ``default`` when the statement has none."""
    mapping = getattr(row, "_mapping", None)
    return default if mapping is None else mapping.get(name, default)


def _by_calendar(
    rows: t.Sequence[Row], calendar: Calendar | None, clients: t.Mapping[str, Calendar]
) -> list[tuple[npt.NDArray[np.intp], Calendar]]:
    """The positions of the rows measured on each calendar: a client's own for its sessions, the
    account's for the rest (``ValueError`` if some row has neither: the caller checks first)."""
    if not clients:
        if calendar is None:
            raise ValueError("No calendar for these handoffs.")
        return [(np.arange(len(rows), dtype=np.intp), calendar)]
    parts: dict[str | None, list[int]] = {}
    for index, row in enumerate(rows):
        client = _column(row, "client", None)
        key = str(client) if client is not None and str(client) in clients else None
        parts.setdefault(key, []).append(index)
    chosen = []
    for key, positions in parts.items():
        own = calendar if key is None else clients[key]
        if own is None:
            raise ValueError("No calendar for these handoffs.")
        chosen.append((np.array(positions, dtype=np.intp), own))
    return chosen


def _local_day(claim: int, zone: tzinfo, week: bool) -> int:
    """The local day (or its week's Monday) of an instant, as days since 1970-01-01."""
    local = (_EPOCH + timedelta(microseconds=claim)).astimezone(zone).date()
    return ((monday(local) if week else local) - _DAY_ZERO).days


def wall_deltas(rows: t.Iterable[Row]) -> list[float]:
    """The wall-clock delta of each handoff with a first action among
    :meth:`Escalations.per_handoff_statement`'s rows (microseconds on PostgreSQL, stored timestamps
    elsewhere), floored at 0 as everywhere."""
    deltas = []
    for row in rows:
        claim, first = row[0], row[1]
        if first is None:
            continue
        if isinstance(claim, int) and isinstance(first, int):
            deltas.append(max(0, first - claim) / _MICROS)
        else:
            deltas.append(t.cast(float, delta_seconds(claim, first)))
    return deltas


def fold_clocked(
    handoffs: ClockedHandoffs, edges: Edges, target_seconds: float | None
) -> EscalationResult:
    """The figures of handoffs measured on a clock, as :func:`fold` computes them; with a target,
    one with no action has breached it (and is overdue) once its elapsed clock time reaches the
    target (to the microsecond, as :meth:`Target.at` rounds)."""
    acted = handoffs.has_action
    deltas = handoffs.seconds[acted]
    claimed = len(acted)
    attained = None
    if target_seconds is not None:
        due = math.ceil(target_seconds * _MICROS)
        within = int(np.count_nonzero(deltas <= target_seconds))
        overdue = int(np.count_nonzero(~acted & (handoffs.elapsed >= due)))
        breached = len(deltas) - within + overdue
        attained = TargetResult(
            float(target_seconds), within, breached, claimed - within - breached, overdue
        )
    buckets = np.bincount(
        np.searchsorted(np.asarray(edges, dtype=np.float64), deltas, side="right"),
        minlength=len(edges) + 1,
    )
    ordered = [float(delta) for delta in np.sort(deltas)]
    result = fold([], claimed, edges, attained)
    if not ordered:
        return result
    return EscalationResult(
        n_handoffs_claimed=claimed,
        n_handoffs_with_action=len(ordered),
        avg_seconds=math.fsum(ordered) / len(ordered),
        median_seconds=percentile(ordered, 0.5),
        p90_seconds=percentile(ordered, 0.9),
        p95_seconds=percentile(ordered, 0.95),
        buckets=tuple(int(count) for count in buckets),
        no_action=claimed - len(ordered),
        target=attained,
    )


# -- queries ---------------------------------------------------------------------------------------


def _first_step(
    tables: HostTables, backend: Backend, skew_seconds: float
) -> tuple[Expr, Statement]:
    """The claim (comparable form) and a select of the first step of its session at or after it."""
    h, s = tables.handoffs, tables.steps
    claimed = comparable(h.c.claimed_at, is_aware(s.c.created_at), backend)
    created = comparable(s.c.created_at, is_aware(h.c.claimed_at), backend)
    first = (
        sa.select(created.label("first_step_at"))
        .where(
            s.c.account_id == sa.bindparam("account_id"),
            s.c.session_id == h.c.session_id,
            at_or_after(created, claimed, skew_seconds, backend),
        )
        .order_by(created)
        .limit(1)
    )
    return claimed, first


def _in_scope(tables: HostTables) -> list[sa.ColumnElement[bool]]:
    """The caller's handoffs claimed inside the window (of one client's sessions, for tables
    :meth:`~.tables.HostTables.for_one_client`)."""
    h = tables.handoffs
    return [
        h.c.account_id == sa.bindparam("account_id"),
        h.c.claimed_at.is_not(None),
        *in_window(h.c.claimed_at),
        *tables.client_scope(h.c.session_id),
    ]


def _lateral_delta(
    tables: HostTables, backend: Backend, skew_seconds: float
) -> tuple[FromClause, Expr]:
    """PostgreSQL: a LATERAL probe for each handoff's first step (an index probe on ``(account_id,
    session_id, created_at)``) that computes its delta once (floored at 0); and that delta column.
    ``extract`` gives the interval's exact seconds (``date_part`` adds days and time in double
    precision and misses the last bit from a day on), then one correctly rounded ``float8``, the
    value Python computes from the same microseconds."""
    claimed, first = _first_step(tables, backend, skew_seconds)
    step_at = first.selected_columns[0]
    lateral = first.add_columns(
        sa.func.greatest(
            0.0, sa.cast(sa.extract("epoch", step_at - claimed), sa.Float(precision=53))
        ).label("delta")
    ).lateral("first_step")
    return lateral, lateral.c.delta


def _aggregates(delta: Expr, claimed_at: Expr) -> list[Expr]:
    """Counts, average, median, p90, p95, and the target's within, breached and overdue counts
    (zeros with no target).

    Bound parameters besides the scope's: ``target_seconds`` and ``overdue_before`` (both ``NULL``
    without one).
    """
    target = sa.bindparam("target_seconds", type_=sa.Float())
    overdue = sa.bindparam("overdue_before", type_=claimed_at.type)
    return [
        sa.func.count(),
        sa.func.count(delta),
        sa.func.avg(delta),
        sa.func.percentile_cont(0.5).within_group(delta),
        sa.func.percentile_cont(0.9).within_group(delta),
        sa.func.percentile_cont(0.95).within_group(delta),
        sa.func.count().filter(delta <= target),
        sa.func.count().filter(
            sa.or_(delta > target, sa.and_(delta.is_(None), claimed_at <= overdue))
        ),
        sa.func.count().filter(sa.and_(delta.is_(None), claimed_at <= overdue)),
    ]


def target_params(target: Target | None) -> dict[str, object]:
    """The bound parameters of the target, for :func:`aggregate_query` and :func:`trend_query`."""
    if target is None:
        return {"target_seconds": None, "overdue_before": None}
    return {"target_seconds": target.seconds, "overdue_before": target.overdue_at_or_before}


def aggregate_query(
    tables: HostTables, backend: Backend, skew_seconds: float, edges: Edges, group: Group
) -> Statement:
    """PostgreSQL: one row per group with the counts, ``avg``, ``percentile_cont``, the target's
    counts and the bucket counts. Bound parameters: ``account_id``, ``window_start``, ``window_end``
    and :func:`target_params`.
    """
    h = tables.handoffs
    lateral, delta = _lateral_delta(tables, backend, skew_seconds)
    bucket_counts = []
    for low, high in bucket_bounds(edges):
        inside = [delta >= low] + ([delta < high] if high is not None else [])
        bucket_counts.append(sa.func.count().filter(sa.and_(*inside)))
    key, source = _grouping(tables, group)
    query = (
        sa.select(key.label("engineer"), *_aggregates(delta, h.c.claimed_at), *bucket_counts)
        .select_from(source.outerjoin(lateral, sa.true()))
        .where(*_in_scope(tables))
    )
    return query.group_by(key).order_by(key) if group is not None else query


def trend_query(tables: HostTables, backend: Backend, skew_seconds: float, week: bool) -> Statement:
    """PostgreSQL: one row per local day (or ISO week's Monday) of ``claimed_at`` in the zone bound
    as ``tz``, with :func:`aggregate_query`'s figures (no buckets). Bound parameters: those of
    :func:`aggregate_query` and ``tz``."""
    h = tables.handoffs
    lateral, delta = _lateral_delta(tables, backend, skew_seconds)
    point = local_date(h.c.claimed_at, week=week).label("point")
    return (
        sa.select(point, *_aggregates(delta, h.c.claimed_at))
        .select_from(h.outerjoin(lateral, sa.true()))
        .where(*_in_scope(tables))
        .group_by(point)
        .order_by(point)
    )


def _aggregated(row: Row, target: Target | None) -> EscalationResult:
    """An :class:`EscalationResult` from :func:`_aggregates`' columns followed by bucket counts."""
    claimed, with_action, avg, median, p90, p95, within, breached, overdue, *buckets = row
    attained = None
    if target is not None:
        decided = int(within) + int(breached)
        attained = TargetResult(
            target.seconds, int(within), int(breached), int(claimed) - decided, int(overdue)
        )
    return EscalationResult(
        n_handoffs_claimed=int(claimed),
        n_handoffs_with_action=int(with_action),
        avg_seconds=_float(avg),
        median_seconds=_float(median),
        p90_seconds=_float(p90),
        p95_seconds=_float(p95),
        buckets=tuple(int(b) for b in buckets),
        no_action=int(claimed) - int(with_action),
        target=attained,
    )


def fold_aggregates(
    rows: t.Iterable[Row], target: Target | None
) -> dict[EngineerId, EscalationResult]:
    """The groups of :func:`aggregate_query`'s rows (``None`` keys the whole account)."""
    return {row[0]: _aggregated(row[1:], target) for row in rows}


def rows_query(
    tables: HostTables,
    backend: Backend,
    skew_seconds: float,
    group: Group,
    with_client: bool = False,
) -> Statement:
    """Portable: ``(claimed_at, first_step_at, engineer)`` per handoff in scope, for
    :func:`fold_rows`.

    Timestamps come back as their raw text on SQLite (parsed by :func:`~.timeutil.naive_utc`), much
    cheaper per row than the type's processing.
    """
    h = tables.handoffs
    _, first = _first_step(tables, backend, skew_seconds)
    key, source = _grouping(tables, group)
    first_step_at = sa.type_coerce(first.correlate(h).scalar_subquery(), sa.String())
    statement = t.cast(
        Statement,
        sa.select(
            sa.type_coerce(h.c.claimed_at, sa.String()).label("claimed_at"),
            first_step_at.label("first_step_at"),
            key.label("engineer"),
            *([_session_client(tables).label("client")] if with_client else []),
        )
        .select_from(source)
        .where(*_in_scope(tables)),
    )
    return statement


def micros_rows_query(
    tables: HostTables,
    backend: Backend,
    skew_seconds: float,
    group: Group,
    point: bool | None = None,
    with_client: bool = False,
) -> Statement:
    """PostgreSQL: ``(claim, first_step, engineer)`` per handoff in scope, both instants as exact
    integer microseconds since the epoch (a naive column is UTC), so nothing is parsed per row in
    Python; with ``point`` (``False`` day, ``True`` week), the claim's local day or week's Monday
    in the zone bound as ``tz``, by the database's zone rules (as the wall trend's). Bound
    parameters: ``account_id``, ``window_start``, ``window_end`` (and ``tz``)."""
    h = tables.handoffs
    _, first = _first_step(tables, backend, skew_seconds)

    def micros_of(instant: Expr) -> Expr:
        return sa.cast(sa.extract("epoch", instant) * 1_000_000, sa.BigInteger())

    stepped = comparable(tables.steps.c.created_at, is_aware(h.c.claimed_at), backend)
    first_micros = first.with_only_columns(micros_of(stepped)).correlate(h).scalar_subquery()
    key, source = _grouping(tables, group)
    columns = [
        micros_of(h.c.claimed_at).label("claim_micros"),
        first_micros.label("first_step_micros"),
        key.label("engineer"),
    ]
    if point is not None:  # as days since 1970-01-01: an integer decodes faster than a date
        local = local_date(h.c.claimed_at, week=point)
        columns.append(
            sa.cast(local - sa.cast("1970-01-01", sa.Date()), sa.Integer()).label("point")
        )
    if with_client:  # which client's calendar measures each handoff
        columns.append(_session_client(tables).label("client"))
    return sa.select(*columns).select_from(source).where(*_in_scope(tables))


def deltas_query(tables: HostTables, backend: Backend, skew_seconds: float) -> Statement:
    """PostgreSQL: one row, the array of the deltas (seconds, floored at 0) of the handoffs in
    scope that have a first action, computed as :func:`aggregate_query` computes them (so the
    savings report's in-product sample is exactly the escalation report's). Bound parameters:
    ``account_id``, ``window_start``, ``window_end``."""
    h = tables.handoffs
    lateral, delta = _lateral_delta(tables, backend, skew_seconds)
    return (
        sa.select(sa.func.array_agg(delta))
        .select_from(h.join(lateral, sa.true()))
        .where(*_in_scope(tables))
    )


def fold_rows(
    rows: t.Iterable[Row], edges: Edges, target: Target | None
) -> dict[EngineerId, EscalationResult]:
    """The groups of :func:`rows_query`'s rows, computed as :func:`aggregate_query` computes
    them."""
    groups: dict[EngineerId, list[tuple[datetime, float | None]]] = {}
    for claimed_at, first_step_at, engineer in rows:
        delta = delta_seconds(claimed_at, first_step_at)
        groups.setdefault(engineer, []).append((naive_utc(claimed_at), delta))
    return {
        engineer: fold_handoffs(handoffs, edges, target) for engineer, handoffs in groups.items()
    }


def _float(value: t.SupportsFloat | None) -> float | None:
    return None if value is None else float(value)


# -- the drill-down --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandoffItem:
    """One drill-down item: ids, claim, first action, seconds and bucket (``None``: no action
    yet)."""

    handoff_id: object
    session_id: object
    claimed_at: datetime
    first_action_at: datetime | None
    #: On the report's clock.
    seconds: float | None
    bucket: int | None
    #: On the wall clock, whatever the report's clock.
    wall_seconds: float | None
    #: The client of the handoff's session (``None`` without one).
    client: object = None


class HandoffRow(t.NamedTuple):
    """One handoff behind the number; ``sort_key`` is the claim as stored (text on SQLite), what the
    order and keyset compare."""

    handoff_id: object
    session_id: object
    claimed_at: datetime
    first_action_at: datetime | None
    sort_key: datetime | str
    #: The client of the handoff's session (``None`` without one, or without a client column).
    client: object = None

    def describe(self, edges: Edges) -> HandoffItem:
        """The drill-down item of this row."""
        seconds = delta_seconds(self.claimed_at, self.first_action_at)
        bucket = None if seconds is None else bucket_index(seconds, edges)
        return HandoffItem(
            self.handoff_id,
            self.session_id,
            self.claimed_at,
            self.first_action_at,
            seconds,
            bucket,
            wall_seconds=seconds,
            client=self.client,
        )


def _session_client(tables: HostTables) -> Expr:
    """The client of a handoff's session (one probe on the sessions' key), or NULL without a client
    column."""
    if not tables.has_client:
        return sa.null()
    h, s = tables.handoffs, tables.sessions
    return (
        sa.select(s.c.client_id)
        .where(s.c.id == h.c.session_id, s.c.account_id == h.c.account_id)
        .correlate(h)
        .scalar_subquery()
    )


def handoffs_query(
    tables: HostTables, backend: Backend, skew_seconds: float, *, after: bool
) -> Statement:
    """The handoffs in scope, newest claim first (ties by id), one keyset page at a time.

    Bound parameters: ``account_id``, ``window_start``, ``window_end``, ``page_size`` and, with
    ``after``, the keyset of the previous page's last row: ``after_key`` (its ``sort_key``) and
    ``after_id``. Rows are :class:`HandoffRow`; ``sort_key`` is the stored claim (text on SQLite),
    so no row repeats or is lost.
    """
    h = tables.handoffs
    _, first = _first_step(tables, backend, skew_seconds)
    first_step_at = sa.type_coerce(first.correlate(h).scalar_subquery(), h.c.claimed_at.type)
    as_text = backend.timestamps_as_text
    key = sa.type_coerce(h.c.claimed_at, sa.String()) if as_text else h.c.claimed_at
    after_key = sa.bindparam("after_key", type_=sa.String() if as_text else h.c.claimed_at.type)
    after_id = sa.bindparam("after_id", type_=h.c.id.type)
    keyset = [key <= after_key, sa.tuple_(key, h.c.id) < sa.tuple_(after_key, after_id)]
    return (
        sa.select(
            h.c.id,
            h.c.session_id,
            h.c.claimed_at,
            first_step_at.label("first_step_at"),
            key.label("sort_key"),
            _session_client(tables).label("client"),
        )
        .where(*_in_scope(tables), *(keyset if after else []))
        .order_by(key.desc(), h.c.id.desc())
        .limit(sa.bindparam("page_size"))
    )


def no_client_column(asked: str, code: str, sessions: str) -> InvalidQuery:
    """The error of a client option (``asked``: ``client=``, ``group_by=client``) on a host whose
    sessions (the host's table ``sessions``) have no client column."""
    return InvalidQuery(
        f"{asked} needs the sessions' client column, which this database does not have. Add "
        f"{sessions}.client_id, or map yours with FLOWPILOT_ANALYTICS_COLUMNS = "
        "{'sessions.client_id': '<column>'}.",
        code=code,
        details={"setting": "FLOWPILOT_ANALYTICS_COLUMNS", "column": "sessions.client_id"},
    )


def unsupported_grouping(group: Group = "engineer", sessions: str = "ai_sessions") -> InvalidQuery:
    """The error of ``group_by=engineer`` (``client``) on a host whose handoffs (sessions, the
    host's table ``sessions``) have no claimer (client) column."""
    if group == "client":
        return no_client_column("group_by=client", "unsupported_grouping", sessions)
    return InvalidQuery(
        "group_by=engineer needs the handoffs' claimer column, which this database does not have. "
        "Map it with FLOWPILOT_ANALYTICS_COLUMNS = {'handoffs.claimed_by': '<column>'}.",
        code="unsupported_grouping",
        details={"setting": "FLOWPILOT_ANALYTICS_COLUMNS"},
    )


# -- the metric, prepared for one app --------------------------------------------------------------


class Escalations:
    """The metric's statements for one app's tables and backend, built once at the first request."""

    def __init__(
        self, tables: HostTables, backend: Backend, skew_seconds: float, edges: Edges
    ) -> None:
        self.tables = tables
        self.backend = backend
        self.edges = edges
        #: The groupings this host's columns allow.
        self.groups: tuple[Group, ...] = (
            None,
            *(("engineer",) if "claimed_by" in tables.handoffs.c else ()),
            *(("client",) if tables.has_client else ()),
        )
        self.can_group_by_engineer = "engineer" in self.groups
        self._grouped: dict[Group, Statement] = {}
        if backend.aggregates_in_sql:
            for group in self.groups:
                self._grouped[group] = aggregate_query(tables, backend, skew_seconds, edges, group)
            self._trend = {
                week: trend_query(tables, backend, skew_seconds, week) for week in (False, True)
            }
        else:
            for group in self.groups:
                self._grouped[group] = rows_query(tables, backend, skew_seconds, group)
            self._trend = dict.fromkeys((False, True), self._grouped[None])
        self._overall = self._grouped[None]
        #: One row per handoff, what the business clock measures: by (group, trend point, with
        #: each session's client, for clients with calendars of their own).
        self._business: dict[tuple[Group, bool | None, bool], Statement] = {}
        for group in self.groups:
            for point in (None, False, True):
                for client in (False, True) if tables.has_client else (False,):
                    if group is not None and point is not None:
                        continue
                    self._business[group, point, client] = (
                        micros_rows_query(tables, backend, skew_seconds, group, point, client)
                        if backend.aggregates_in_sql
                        else rows_query(tables, backend, skew_seconds, group, client)
                    )
        #: The deltas of the handoffs with an action: an array on PostgreSQL, rows elsewhere.
        self._deltas = (
            deltas_query(tables, backend, skew_seconds)
            if backend.aggregates_in_sql
            else self._business[None, None, False]
        )
        self.first_page = handoffs_query(tables, backend, skew_seconds, after=False)
        self.next_page = handoffs_query(tables, backend, skew_seconds, after=True)

    def statement(self, group: Group) -> Statement:
        """The statement for the whole account, or per engineer or client
        (:func:`unsupported_grouping` without the column)."""
        if group not in self._grouped:
            raise unsupported_grouping(group, self.tables.sessions.fullname)
        return self._grouped[group]

    def per_handoff_statement(
        self, group: Group, point: bool | None = None, with_client: bool = False
    ) -> Statement:
        """One row per handoff, the business clock's input (:func:`measure_business`): microseconds
        on PostgreSQL (:func:`micros_rows_query`, with the local ``point`` of a trend, ``tz``
        bound), the stored timestamps elsewhere (:func:`rows_query`); ``with_client`` adds each
        session's client."""
        if (group, point, with_client) not in self._business:
            raise unsupported_grouping(group, self.tables.sessions.fullname)
        return self._business[group, point, with_client]

    def deltas_statement(self) -> Statement:
        """The statement behind :meth:`deltas`."""
        return self._deltas

    def deltas(self, rows: t.Sequence[Row]) -> list[float]:
        """The wall-clock deltas of the window's handoffs with a first action, from
        :meth:`deltas_statement`'s rows."""
        if self.backend.aggregates_in_sql:
            return [float(delta) for delta in (rows[0][0] or [])] if rows else []
        return wall_deltas(rows)

    def fold(
        self, rows: t.Iterable[Row], target: Target | None
    ) -> dict[EngineerId, EscalationResult]:
        """The groups from :meth:`statement`'s rows."""
        if self.backend.aggregates_in_sql:
            return fold_aggregates(rows, target)
        return fold_rows(rows, self.edges, target)

    def overall(self, rows: t.Iterable[Row], target: Target | None) -> EscalationResult:
        """The whole account's result from the overall statement's rows."""
        return self.fold(rows, target).get(None) or empty(self.edges, target)

    def trend_statement(self, week: bool) -> Statement:
        """The statement behind :meth:`trend` (bound ``tz`` too on PostgreSQL)."""
        return self._trend[week]

    def trend(
        self,
        rows: t.Iterable[Row],
        start: datetime,
        end: datetime,
        zone: tzinfo,
        week: bool,
        target: Target | None,
    ) -> list[tuple[date, EscalationResult]]:
        """One point per local day (or week, keyed by its
        Monday) from ``start``'s to ``end``'s in ``zone``."""
        points: dict[date, EscalationResult]
        if self.backend.aggregates_in_sql:
            points = {row[0]: _aggregated(row[1:], target) for row in rows}
        else:
            grouped: dict[date, list[tuple[datetime, float | None]]] = {}
            for claimed_at, first_step_at, _ in rows:
                local = t.cast(datetime, as_utc(claimed_at)).astimezone(zone).date()
                key = monday(local) if week else local
                grouped.setdefault(key, []).append(
                    (naive_utc(claimed_at), delta_seconds(claimed_at, first_step_at))
                )
            points = {
                key: fold_handoffs(handoffs, self.edges, target)
                for key, handoffs in grouped.items()
            }
        quiet = empty((), target)
        return [(day, points.get(day, quiet)) for day in local_days(start, end, zone, week=week)]

    def business_trend(
        self, handoffs: ClockedHandoffs, days: list[date], target_seconds: float | None
    ) -> list[tuple[date, EscalationResult]]:
        """:meth:`trend` of handoffs measured on the business clock (with their points), one point
        for each of ``days``."""
        points: dict[date, ClockedHandoffs] = {}
        if handoffs.points is not None and len(handoffs.points):
            order = np.argsort(handoffs.points, kind="stable")
            keys, firsts = np.unique(handoffs.points[order], return_index=True)
            bounds = [*firsts.tolist(), len(order)]
            for index, key in enumerate(keys.tolist()):
                day = _DAY_ZERO + timedelta(days=key)
                points[day] = handoffs.subset(order[bounds[index] : bounds[index + 1]])
        quiet = fold(
            [], 0, (), None if target_seconds is None else TargetResult(target_seconds, 0, 0, 0, 0)
        )
        return [
            (day, fold_clocked(points[day], (), target_seconds) if day in points else quiet)
            for day in days
        ]
