"""PSA metrics, whole: time-entry totals, the documentation funnel with its rates, and the daily
trend.

- ``time_entries``: the account's ``time_entry_posted`` activities created in the window.
- ``funnel``: sessions created in the window -> with a ``psa_ticket_id`` (linked) -> linked with at
  least one ``note_posted`` activity at any time (doc_pushed) -> doc_pushed with at least one
  ``time_entry_posted`` (time_entry_logged). Each stage is a subset of the previous one.
- ``daily_trend``: one row per calendar day in the caller's zone, from the local day of the window's
  start to that of its end, zero-filled; rows count sessions and activities created that local day
  inside the window. Local days come from the database's zone rules on PostgreSQL and from
  ``zoneinfo`` elsewhere, so DST days (23 or 25 hours) are right on every database.
- Stored minutes that are not a finite number >= 0 (NaN, infinities) are left out of the totals and
  counted.
"""

from __future__ import annotations

import math
import typing as t
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .periods import Window
from .tables import HostTables
from .timeutil import Backend, Expr, as_utc, in_window, local_date, local_days

NOTE_POSTED = "note_posted"
TIME_ENTRY_POSTED = "time_entry_posted"
#: A statement of the metric (each builder says its columns and bound parameters).
Statement: t.TypeAlias = "sa.Select[t.Any]"
#: A result row: the values of a statement's columns, of the database's column types.
Row: t.TypeAlias = "t.Sequence[t.Any]"


def day_bucket(column: Expr, backend: Backend) -> Expr:
    """What rows are grouped by: the local date on PostgreSQL (zone bound as ``tz``), else the
    timestamp.

    SQLite knows no IANA zones, so there the grouping is by timestamp and :func:`summarize` maps
    each one to its local day; on PostgreSQL ``timezone(tz, …)`` does it, DST included.
    """
    return local_date(column) if backend.aggregates_in_sql else column


def sessions_query(
    tables: HostTables, activities: sa.Table, backend: Backend, by_client: bool = False
) -> Statement:
    """The account's sessions created in the window, grouped by day, with the funnel counts; with
    ``by_client``, by day and client (the client last in each row).

    Bound parameters: ``account_id``, ``window_start``, ``window_end`` (and ``tz`` on PostgreSQL).
    """
    s, a = tables.sessions, activities
    account: sa.BindParameter[object] = sa.bindparam("account_id")

    def has(activity_type: str) -> sa.Exists:
        return sa.exists().where(
            a.c.account_id == account, a.c.session_id == s.c.id, a.c.activity_type == activity_type
        )

    linked = s.c.psa_ticket_id.is_not(None)
    # One row per session with its flags, each EXISTS probe evaluated
    # at most once (and only for linked sessions); OFFSET 0 keeps
    # PostgreSQL from flattening the subquery and repeating the probes.
    flags = (
        sa.select(
            day_bucket(s.c.created_at, backend).label("bucket"),
            sa.case((linked, 1), else_=0).label("linked"),
            sa.case((linked, sa.case((has(NOTE_POSTED), 1), else_=0)), else_=0).label("noted"),
            sa.case((linked, sa.case((has(TIME_ENTRY_POSTED), 1), else_=0)), else_=0).label(
                "timed"
            ),
            (s.c.client_id if by_client else sa.null()).label("client"),
        )
        .where(s.c.account_id == account, *in_window(s.c.created_at), *one_client(tables, s))
        .offset(0)
        .subquery("session_flags")
    )
    counts = sa.select(
        flags.c.bucket,
        sa.func.count(),
        sa.func.sum(flags.c.linked),
        sa.func.sum(flags.c.noted),
        sa.func.sum(flags.c.noted * flags.c.timed),
    )
    if by_client:
        return counts.add_columns(flags.c.client).group_by(flags.c.bucket, flags.c.client)
    return counts.group_by(flags.c.bucket)


def one_client(tables: HostTables, sessions: sa.Table) -> list[sa.ColumnElement[bool]]:
    """With tables for one client, the condition that a session row is the bound client's."""
    if not tables.one_client:
        return []
    return [sessions.c.client_id == sa.bindparam("client_id", type_=sessions.c.client_id.type)]


def activities_query(
    tables: HostTables, activities: sa.Table, backend: Backend, by_client: bool = False
) -> Statement:
    """The account's note and time-entry activities created in the window, grouped by day and
    type (for one client: those of its sessions); with ``by_client``, also by the client of the
    activity's session (last in each row; ``None`` without a session or a client)."""
    a = activities
    bucket = day_bucket(a.c.created_at, backend).label("bucket")
    # NaN (PostgreSQL numeric allows it, and sorts it above every
    # number) and infinities are not minutes: they are left out of the
    # sum and counted, so one bad row never poisons an account's totals.
    valid = sa.and_(a.c.minutes >= 0, a.c.minutes < sa.literal(10**12, sa.Numeric()))
    query = sa.select(
        bucket,
        a.c.activity_type,
        sa.func.count(),
        sa.func.sum(sa.case((valid, a.c.minutes))),
        sa.func.count(sa.case((sa.and_(a.c.minutes.is_not(None), sa.not_(valid)), 1))),
    ).where(
        a.c.account_id == sa.bindparam("account_id"),
        a.c.activity_type.in_([NOTE_POSTED, TIME_ENTRY_POSTED]),
        *in_window(a.c.created_at),
        *tables.client_scope(a.c.session_id),
    )
    if not by_client:
        return query.group_by(bucket, a.c.activity_type)
    s = tables.sessions
    source = a.outerjoin(s, sa.and_(s.c.id == a.c.session_id, s.c.account_id == a.c.account_id))
    return (
        query.add_columns(s.c.client_id)
        .select_from(source)
        .group_by(bucket, a.c.activity_type, s.c.client_id)
    )


@dataclass
class DayRow:
    """One local day of the trend (counted up while the rows are folded)."""

    date: date
    sessions: int = 0
    notes_posted: int = 0
    time_entries: int = 0
    minutes: float = 0.0


@dataclass(frozen=True)
class TimeEntries:
    """The window's ``time_entry_posted`` activities and their minutes."""

    count: int
    total_minutes: float

    @property
    def total_hours(self) -> float:
        return round(self.total_minutes / 60, 4)


@dataclass(frozen=True)
class Funnel:
    """Sessions -> linked to a ticket -> documentation pushed -> time entry logged, with the rates
    from each stage to the next (``None`` when the previous stage is empty)."""

    sessions: int
    linked: int
    doc_pushed: int
    time_entry_logged: int

    @property
    def linked_rate(self) -> float | None:
        return rate(self.linked, self.sessions)

    @property
    def doc_pushed_rate(self) -> float | None:
        return rate(self.doc_pushed, self.linked)

    @property
    def time_entry_logged_rate(self) -> float | None:
        return rate(self.time_entry_logged, self.doc_pushed)


@dataclass(frozen=True, kw_only=True)
class PsaResult:
    """The numbers of one window: totals, funnel and the daily trend (the schemas dump it as it
    is)."""

    time_entries: TimeEntries
    funnel: Funnel
    daily_trend: tuple[DayRow, ...]
    #: Stored minutes that are not a finite number >= 0 (skipped in the totals, and logged).
    invalid_minutes: int = 0


def rate(part: int, whole: int) -> float | None:
    """Conversion from one funnel stage to the next; ``None`` when the previous stage is empty."""
    return part / whole if whole else None


def summarize(
    sessions: t.Iterable[Row], activities: t.Iterable[Row], window: Window, zone: ZoneInfo
) -> PsaResult:
    """Fold the two grouped queries' rows into totals, funnel and the zero-filled trend."""
    days = {day: DayRow(day) for day in local_days(window.start, window.end, zone)}
    spare = DayRow(
        date.min
    )  # absorbs a row whose local day the window does not list (zone data skew)

    def day_of(bucket: date | datetime | str) -> DayRow:
        if isinstance(bucket, (datetime, str)):
            bucket = t.cast(datetime, as_utc(bucket)).astimezone(zone).date()
        return days.get(bucket, spare)

    funnel = [0, 0, 0, 0]  # sessions, linked, doc pushed, time entry logged
    for bucket, *counts in sessions:
        funnel = [total + (count or 0) for total, count in zip(funnel, counts)]
        day_of(bucket).sessions += counts[0]
    entries, total_minutes, invalid = 0, 0.0, 0
    for bucket, activity_type, count, summed, unusable in activities:
        row = day_of(bucket)
        invalid += unusable or 0
        if activity_type == NOTE_POSTED:
            row.notes_posted += count
            continue
        minutes = float(summed or 0.0)
        if not math.isfinite(minutes):
            invalid += count
            minutes = 0.0
        entries += count
        total_minutes += minutes
        row.time_entries += count
        row.minutes += minutes
    return PsaResult(
        time_entries=TimeEntries(entries, total_minutes),
        funnel=Funnel(*funnel),
        daily_trend=tuple(days.values()),
        invalid_minutes=invalid,
    )


class PsaMetrics:
    """The metric's two statements for one app's tables
    and backend, built once at the first request."""

    def __init__(self, tables: HostTables, activities: sa.Table, backend: Backend) -> None:
        self.statements = (
            sessions_query(tables, activities, backend),
            activities_query(tables, activities, backend),
        )
        #: The same per client, when the host's sessions have a client column.
        self.client_statements = (
            (
                sessions_query(tables, activities, backend, by_client=True),
                activities_query(tables, activities, backend, by_client=True),
            )
            if tables.has_client
            else None
        )

    def fold(self, rows: t.Sequence[t.Sequence[Row]], window: Window, zone: ZoneInfo) -> PsaResult:
        """The result from the two statements' rows (in :attr:`statements` order)."""
        sessions, activities = rows
        return summarize(sessions, activities, window, zone)

    def fold_clients(
        self, rows: t.Sequence[t.Sequence[Row]], window: Window, zone: ZoneInfo
    ) -> dict[object, PsaResult]:
        """Each client's result from :attr:`client_statements`' rows (the client last in each)."""
        parts: dict[object, tuple[list[Row], list[Row]]] = {}
        for side, found in enumerate(rows):
            for row in found:
                parts.setdefault(row[-1], ([], []))[side].append(row[:-1])
        return {
            client: summarize(sessions, activities, window, zone)
            for client, (sessions, activities) in parts.items()
        }
