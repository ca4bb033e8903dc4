"""PSA metrics, whole: time-entry totals, the documentation funnel and the daily trend.

- ``time_entries``: the account's ``time_entry_posted`` activities created in the window.
- ``funnel``: sessions created in the window -> with a ``psa_ticket_id`` (linked) -> linked with at
  least one ``note_posted`` activity at any time (doc_pushed) -> doc_pushed with at least one
  ``time_entry_posted`` (time_entry_logged). Each stage is a subset of the previous one.
- ``daily_trend``: one row per calendar day in the caller's zone, from the local day of the window's
  start to that of its end, zero-filled; rows count sessions and activities created that local day
  inside the window. Local days are computed in Python with ``zoneinfo``, so DST days (23 or 25
  hours) are right on every database.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .periods import Window
from .tables import HostTables, as_utc, instant

NOTE_POSTED = "note_posted"
TIME_ENTRY_POSTED = "time_entry_posted"


def _in_window(column: sa.ColumnElement[t.Any]) -> list[sa.ColumnElement[bool]]:
    return [
        instant(column) >= instant(sa.bindparam("window_start", type_=column.type)),
        instant(column) <= instant(sa.bindparam("window_end", type_=column.type)),
    ]


def build_sessions_query(tables: HostTables, activities: sa.Table) -> sa.Select[t.Any]:
    """The account's sessions created in the window, each with its funnel flags.

    Bound parameters: ``account_id``, ``window_start``, ``window_end``.
    """
    s, a = tables.sessions, activities
    account = sa.bindparam("account_id")

    def has(activity_type: str) -> sa.Exists:
        return sa.exists().where(a.c.account_id == account, a.c.session_id == s.c.id,
                                 a.c.activity_type == activity_type)

    linked = s.c.psa_ticket_id.is_not(None)
    return sa.select(
        s.c.created_at,
        linked.label("linked"),
        sa.and_(linked, has(NOTE_POSTED)).label("doc_pushed"),
        sa.and_(linked, has(NOTE_POSTED), has(TIME_ENTRY_POSTED)).label("time_entry_logged"),
    ).where(s.c.account_id == account, *_in_window(s.c.created_at))


def build_activities_query(activities: sa.Table) -> sa.Select[t.Any]:
    """The account's note and time-entry activities created in the window."""
    a = activities
    return sa.select(a.c.created_at, a.c.activity_type, a.c.minutes).where(
        a.c.account_id == sa.bindparam("account_id"),
        a.c.activity_type.in_([NOTE_POSTED, TIME_ENTRY_POSTED]),
        *_in_window(a.c.created_at),
    )


@dataclass
class DayRow:
    """One local day of the trend."""

    date: date
    sessions: int = 0
    notes_posted: int = 0
    time_entries: int = 0
    minutes: float = 0.0


@dataclass
class PsaResult:
    """The numbers behind one ``EnhancedPsaMetrics`` response."""

    time_entry_count: int = 0
    total_minutes: float = 0.0
    sessions: int = 0
    linked: int = 0
    doc_pushed: int = 0
    time_entry_logged: int = 0
    daily_trend: list[DayRow] = field(default_factory=list)


def rate(part: int, whole: int) -> float | None:
    """Conversion from one funnel stage to the next; ``None`` when the previous stage is empty."""
    return part / whole if whole else None


def local_days(window: Window, zone: ZoneInfo) -> list[date]:
    """Every calendar day in ``zone`` from the window's start to its end, inclusive."""
    first, last = window.start.astimezone(zone).date(), window.end.astimezone(zone).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def summarize(sessions: t.Iterable[t.Any], activities: t.Iterable[t.Any], window: Window,
              zone: ZoneInfo) -> PsaResult:
    """Fold the two queries' rows into totals, funnel and zero-filled trend."""
    days = {day: DayRow(day) for day in local_days(window, zone)}
    result = PsaResult(daily_trend=list(days.values()))

    def day_of(moment: datetime) -> DayRow:
        return days[t.cast(datetime, as_utc(moment)).astimezone(zone).date()]

    for created_at, linked, doc_pushed, time_entry_logged in sessions:
        result.sessions += 1
        result.linked += bool(linked)
        result.doc_pushed += bool(doc_pushed)
        result.time_entry_logged += bool(time_entry_logged)
        day_of(created_at).sessions += 1
    for created_at, activity_type, minutes in activities:
        row = day_of(created_at)
        if activity_type == NOTE_POSTED:
            row.notes_posted += 1
        else:
            result.time_entry_count += 1
            result.total_minutes += minutes or 0.0
            row.time_entries += 1
            row.minutes += minutes or 0.0
    return result

