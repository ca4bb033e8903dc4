"""An independent reference for business hours, written from the contract and not from the plugin:
it never imports :mod:`flowpilot_analytics.business_hours`.

A calendar version is the JSON body POSTed to ``business-hours``. Its business time is built from
plain :mod:`zoneinfo` datetimes (``fold=0``, the default): each weekday interval of each local day
becomes a UTC ``[open, close)`` (an end at or before its start, or ``24:00``, on the next day), each
holiday a closed UTC ``[00:00, 24:00)`` of its local day. The business seconds of ``[claim,
action)`` are then counted by cutting the span at every open, close and holiday boundary inside it
and adding each piece whose first instant is open and not on a holiday: no union, no subtraction,
no bisect (the plugin's way), so the two can disagree.

The figures (statistics with numpy's percentiles, buckets, target counts, trend points) are computed
from measured handoffs the same way the existing references of the wall clock are.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

from .escalation_reference import wilson

UTC = timezone.utc
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EDGES = (60.0, 300.0, 900.0, 3600.0, 14400.0)
ONE_DAY = timedelta(days=1)
ONE_SECOND = timedelta(seconds=1)

Body = t.Mapping[str, t.Any]
Span = tuple[datetime, datetime]


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def local_instant(day: date, hhmm: str, zone: ZoneInfo) -> datetime:
    """The UTC instant of the wall time ``hhmm`` on ``day`` in ``zone`` (``24:00``: the next day's
    00:00), as ``datetime(..., tzinfo=zone)`` reads it (fold=0)."""
    if hhmm == "24:00":
        day, hhmm = day + ONE_DAY, "00:00"
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=zone).astimezone(UTC)


class Hours:
    """One calendar version's business time."""

    def __init__(self, body: Body) -> None:
        self.zone = ZoneInfo(body["timezone"])
        self.weekly: dict[str, list[list[str]]] = dict(body.get("weekly") or {})
        self.holidays = {date.fromisoformat(d) for d in body.get("holidays") or ()}
        self.start = datetime.combine(
            date.fromisoformat(body["effective_from"]), time(), tzinfo=self.zone
        ).astimezone(UTC)
        self._shifts: dict[date, tuple[Span, ...]] = {}

    def shifts(self, day: date) -> tuple[Span, ...]:
        """The open spans of the intervals that start on local ``day``."""
        if day in self._shifts:
            return self._shifts[day]
        found = []
        for start, end in self.weekly.get(DAYS[day.weekday()]) or ():
            end_day = day if _minutes(end) > _minutes(start) else day + ONE_DAY
            opens, closes = (
                local_instant(day, start, self.zone),
                local_instant(end_day, end, self.zone),
            )
            if opens < closes:
                found.append((opens, closes))
        self._shifts[day] = tuple(found)
        return self._shifts[day]

    def holiday(self, day: date) -> Span | None:
        if day not in self.holidays:
            return None
        return local_instant(day, "00:00", self.zone), local_instant(day, "24:00", self.zone)

    def seconds(self, claim: datetime, action: datetime) -> float:
        """Business seconds of ``[claim, action)`` (aware datetimes); 0 when action <= claim."""
        if action <= claim:
            return 0.0
        first = claim.astimezone(self.zone).date() - 2 * ONE_DAY
        last = action.astimezone(self.zone).date() + ONE_DAY
        days = [first + i * ONE_DAY for i in range((last - first).days + 1)]
        opened = [span for day in days for span in self.shifts(day)]
        closed = [span for day in days if (span := self.holiday(day)) is not None]
        cuts = sorted(
            {claim, action}
            | {edge for span in opened + closed for edge in span if claim < edge < action}
        )
        total = timedelta(0)
        for low, high in zip(cuts, cuts[1:]):
            # every boundary is a cut, so the whole piece [low, high) is open or closed like low
            is_open = any(a <= low < b for a, b in opened)
            if is_open and not any(a <= low < b for a, b in closed):
                total += high - low
        return total / ONE_SECOND


class Calendar:
    """An account's versions, in creation order."""

    def __init__(self, bodies: t.Sequence[Body]) -> None:
        self.hours = [Hours(body) for body in bodies]

    def index_at(self, instant: datetime) -> int:
        """The version in effect at ``instant``: the latest start at or before it, the newest
        created between equal starts; before every start, the earliest starting one."""
        starts = [(hours.start, index) for index, hours in enumerate(self.hours)]
        started = [pair for pair in starts if pair[0] <= instant]
        if started:
            return max(started)[1]
        earliest = min(start for start, _ in starts)
        return max(index for start, index in starts if start == earliest)

    def seconds(self, claim: datetime, action: datetime) -> float:
        return self.hours[self.index_at(claim)].seconds(claim, action)


@dataclass(frozen=True)
class Seeded:
    """A handoff as the test stored it (aware UTC times)."""

    handoff_id: int
    session_id: int
    claimed_at: datetime
    action_at: datetime | None
    engineer: int | None

    @property
    def wall(self) -> float | None:
        return None if self.action_at is None else (self.action_at - self.claimed_at) / ONE_SECOND


@dataclass(frozen=True)
class Measured:
    """A handoff on one clock: its seconds to the first action (``None``: none) and, with none, its
    seconds from the claim to the report's now."""

    handoff: Seeded
    seconds: float | None
    elapsed: float


def measure(
    handoffs: t.Iterable[Seeded], calendar: Calendar | None, now: datetime
) -> list[Measured]:
    """Each handoff on the business clock of ``calendar``, or on the wall clock (``None``)."""

    def clock(start: datetime, end: datetime) -> float:
        if calendar is None:
            return max(0.0, (end - start) / ONE_SECOND)
        return calendar.seconds(start, end)

    return [
        Measured(
            h,
            None if h.action_at is None else clock(h.claimed_at, h.action_at),
            0.0 if h.action_at is not None else clock(h.claimed_at, now),
        )
        for h in handoffs
    ]


def bucket_of(seconds: float, edges: t.Sequence[float] = EDGES) -> int:
    return sum(seconds >= edge for edge in edges)


def stats(group: t.Sequence[Measured], target: float | None) -> dict[str, t.Any]:
    """The statistics block of a figure (``EscalationStats``)."""
    values = [m.seconds for m in group if m.seconds is not None]
    figures: dict[str, t.Any] = {
        "n_handoffs_claimed": len(group),
        "n_handoffs_with_action": len(values),
        "avg_seconds": float(np.mean(values)) if values else None,
        "median_seconds": float(np.percentile(values, 50)) if values else None,
        "p90_seconds": float(np.percentile(values, 90)) if values else None,
        "p95_seconds": float(np.percentile(values, 95)) if values else None,
        "target": None,
    }
    if target is not None:
        within = sum(1 for m in group if m.seconds is not None and m.seconds <= target)
        late = sum(1 for m in group if m.seconds is not None and m.seconds > target)
        overdue = sum(1 for m in group if m.seconds is None and m.elapsed >= target)
        breached = late + overdue
        figures["target"] = {
            "seconds": float(target),
            "n_within": within,
            "n_breached": breached,
            "n_pending": len(group) - within - breached,
            "n_overdue": overdue,
            "attainment": within / (within + breached) if within + breached else None,
            "attainment_interval": wilson(within, within + breached),
        }
    return figures


def distribution(group: t.Sequence[Measured], edges: t.Sequence[float] = EDGES) -> dict[str, t.Any]:
    counts = [0] * (len(edges) + 1)
    for m in group:
        if m.seconds is not None:
            counts[bucket_of(m.seconds, edges)] += 1
    lows, highs = (0.0, *edges), (*edges, None)
    return {
        "buckets": [
            {"min_seconds": low, "max_seconds": high, "count": count}
            for low, high, count in zip(lows, highs, counts)
        ],
        "no_action": sum(1 for m in group if m.seconds is None),
    }


def in_window(measured: t.Iterable[Measured], start: datetime, end: datetime) -> list[Measured]:
    return [m for m in measured if start <= m.handoff.claimed_at <= end]


def groups(group: t.Sequence[Measured], target: float | None) -> list[dict[str, t.Any]]:
    """Per engineer, ids in order, no claimer last."""
    engineers = sorted({m.handoff.engineer for m in group}, key=lambda e: (e is None, e or 0))
    return [
        {"engineer": e, **stats([m for m in group if m.handoff.engineer == e], target)}
        for e in engineers
    ]


def trend(
    measured: t.Sequence[Measured],
    start: datetime,
    end: datetime,
    zone_name: str,
    week: bool,
    target: float | None,
) -> list[dict[str, t.Any]]:
    """A point per local day (or ISO week, keyed by its Monday) of the claim in ``zone_name``."""
    zone = ZoneInfo(zone_name)

    def key(moment: datetime) -> date:
        local = moment.astimezone(zone).date()
        return local - timedelta(days=local.weekday()) if week else local

    first, last = key(start), key(end)
    step = 7 if week else 1
    inside = in_window(measured, start, end)
    return [
        {
            "start": day.isoformat(),
            **stats([m for m in inside if key(m.handoff.claimed_at) == day], target),
        }
        for day in (first + timedelta(days=i) for i in range(0, (last - first).days + 1, step))
    ]


def same(actual: t.Any, expected: t.Any) -> bool:
    """Equal, floats within 1e-6 (relative above 1)."""
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(same(actual[k], expected[k]) for k in expected)
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(same(a, e) for a, e in zip(actual, expected))
        )
    if isinstance(expected, float):
        return (
            isinstance(actual, (int, float))
            and not isinstance(actual, bool)
            and abs(actual - expected) <= 1e-6 * max(1.0, abs(expected))
        )
    return bool(actual == expected and type(actual) is type(expected))
