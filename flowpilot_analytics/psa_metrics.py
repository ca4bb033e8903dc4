"""PSA metrics, whole: time-entry totals, the documentation funnel with its rates, and the daily
trend.

- ``time_entries``: the account's ``time_entry_posted`` activities created in the window; their
  minutes split by what the push said of them: ``billable_minutes`` (billable true),
  ``non_billable_minutes`` (false) and ``unclassified_minutes`` (not said), which add up to
  ``total_minutes`` (``(billable + non_billable) + unclassified``, in that order, to the last bit).
- per technician: the same activities grouped by the activity's ``user_id`` (who pushed; ``None``
  when unknown): its notes and time entries.
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


#: How activities are grouped besides day and type: by the client of their session, or by who
#: pushed them (the key is last in each row).
ActivityGroup: t.TypeAlias = 't.Literal["client", "technician"] | None'


def activities_query(
    tables: HostTables, activities: sa.Table, backend: Backend, by: ActivityGroup = None
) -> Statement:
    """The account's note and time-entry activities created in the window, grouped by day and
    type (for one client: those of its sessions), with their valid minutes split by ``billable``;
    ``by="client"`` also groups by the client of the activity's session (``None`` without a session
    or a client), ``by="technician"`` by the activity's ``user_id``."""
    a = activities
    bucket = day_bucket(a.c.created_at, backend).label("bucket")
    # NaN (PostgreSQL numeric allows it, and sorts it above every
    # number) and infinities are not minutes: they are left out of the
    # sum and counted, so one bad row never poisons an account's totals.
    valid = sa.and_(a.c.minutes >= 0, a.c.minutes < sa.literal(10**12, sa.Numeric()))

    def minutes(billable: sa.ColumnElement[bool]) -> sa.ColumnElement[t.Any]:
        return sa.func.sum(sa.case((sa.and_(valid, billable), a.c.minutes)))

    query = sa.select(
        bucket,
        a.c.activity_type,
        sa.func.count(),
        minutes(a.c.billable.is_(True)),
        minutes(a.c.billable.is_(False)),
        minutes(a.c.billable.is_(None)),
        sa.func.count(sa.case((sa.and_(a.c.minutes.is_not(None), sa.not_(valid)), 1))),
    ).where(
        a.c.account_id == sa.bindparam("account_id"),
        a.c.activity_type.in_([NOTE_POSTED, TIME_ENTRY_POSTED]),
        *in_window(a.c.created_at),
        *tables.client_scope(a.c.session_id),
    )
    if by == "technician":
        return query.add_columns(a.c.user_id).group_by(bucket, a.c.activity_type, a.c.user_id)
    if by is None:
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
    """The window's ``time_entry_posted`` activities and their minutes, split by billable."""

    count: int
    billable_minutes: float = 0.0
    non_billable_minutes: float = 0.0
    unclassified_minutes: float = 0.0

    @property
    def total_minutes(self) -> float:
        """The three parts' sum, added in this order (so a reader's sum of the parts equals it)."""
        return (self.billable_minutes + self.non_billable_minutes) + self.unclassified_minutes

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
    #: The window's ``note_posted`` activities.
    notes_posted: int = 0
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
    entries, notes, invalid = 0, 0, 0
    parts = [0.0, 0.0, 0.0]  # billable, non-billable, unclassified
    for bucket, activity_type, count, *summed, unusable in activities:
        row = day_of(bucket)
        invalid += unusable or 0
        if activity_type == NOTE_POSTED:
            row.notes_posted += count
            notes += count
            continue
        day = [float(value or 0.0) for value in summed]
        if not all(math.isfinite(value) for value in day):
            invalid += count
            day = [0.0, 0.0, 0.0]
        entries += count
        parts = [total + value for total, value in zip(parts, day)]
        row.time_entries += count
        row.minutes += (day[0] + day[1]) + day[2]
    return PsaResult(
        time_entries=TimeEntries(entries, *parts),
        funnel=Funnel(*funnel),
        daily_trend=tuple(days.values()),
        notes_posted=notes,
        invalid_minutes=invalid,
    )


def technician_order(user: str | None) -> tuple[bool, bool, int, str]:
    """Technicians in their ids' natural order (ids of digits as numbers, 7 before 10, then text);
    pushes with no known technician last."""
    if user is None:
        return True, True, 0, ""
    digits = user.isascii() and user.isdigit()
    return False, not digits, int(user) if digits else 0, user


class PsaMetrics:
    """The metric's statements for one app's tables
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
                activities_query(tables, activities, backend, by="client"),
            )
            if tables.has_client
            else None
        )
        #: The activities per technician (who pushed them).
        self.technician_statement = activities_query(tables, activities, backend, by="technician")

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

    def fold_technicians(
        self, rows: t.Sequence[Row], window: Window, zone: ZoneInfo
    ) -> dict[str | None, PsaResult]:
        """Each technician's result (notes and time entries; no sessions) from
        :attr:`technician_statement`'s rows (the user id last in each)."""
        parts: dict[str | None, list[Row]] = {}
        for row in rows:
            parts.setdefault(row[-1], []).append(row[:-1])
        return {user: summarize((), activities, window, zone) for user, activities in parts.items()}
