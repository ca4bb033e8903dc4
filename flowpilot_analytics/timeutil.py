"""Time handling and what the database can do: every timestamp is an instant in UTC.

Naive stored values are UTC and aware ones are converted. PostgreSQL compares its own ``timestamp``
/ ``timestamptz`` types (a naive column next to an aware one is brought to naive UTC). SQLite keeps
the text SQLAlchemy's ``DateTime`` writes (``YYYY-MM-DD HH:MM:SS.ffffff``, naive UTC), whose text
order is the instants' order, so it is compared as text: exact to the microsecond and
index-friendly.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

#: A SQL expression of any type (SQLAlchemy's own generic, left open).
Expr: t.TypeAlias = "ColumnElement[t.Any]"

UTC = timezone.utc
#: Length of SQLAlchemy's own SQLite timestamp text, ``YYYY-MM-DD HH:MM:SS.ffffff``.
SQLALCHEMY_TEXT_LENGTH = 26


@dataclass(frozen=True)
class Backend:
    """What the analytics database can do, decided once per app from its dialect."""

    name: str
    #: The statistics, the first-step probe and local days run in SQL (LATERAL, ``percentile_cont``,
    #: ``timezone()``); elsewhere one row per handoff comes back and Python folds them.
    aggregates_in_sql: bool
    #: Timestamps are stored, ordered and compared as UTC text (SQLite).
    timestamps_as_text: bool

    @classmethod
    def for_dialect(cls, name: str) -> Backend:
        return cls(
            name=name, aggregates_in_sql=name == "postgresql", timestamps_as_text=name == "sqlite"
        )


def as_utc(value: datetime | str | None) -> datetime | None:
    """Read a stored timestamp as an aware UTC datetime (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def naive_utc(value: object) -> datetime:
    """A stored timestamp as a naive UTC datetime; SQLAlchemy's own SQLite text takes the fast
    path."""
    if isinstance(value, str) and len(value) == SQLALCHEMY_TEXT_LENGTH and value[10] == " ":
        return datetime.fromisoformat(value)
    return t.cast(datetime, as_utc(t.cast("datetime | str | None", value))).replace(tzinfo=None)


class _SQLiteRawDateTime(sqlite.DATETIME):
    """SQLite DATETIME that hands back the stored text, so an offset in it is not dropped."""

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> None:
        return None


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A DateTime that always yields aware UTC values and binds UTC in the column's own kind."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[datetime]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteRawDateTime())  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(sa.DateTime(timezone=is_aware_type(self)))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        value = as_utc(value)
        if value is not None and (dialect.name == "sqlite" or not is_aware_type(self)):
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: t.Any, dialect: sa.Dialect) -> datetime | None:
        return as_utc(value)


def is_aware_type(column_type: object) -> bool:
    """Whether a timestamp type carries a time zone (``timestamptz``), seen through a
    TypeDecorator."""
    return bool(getattr(getattr(column_type, "impl", column_type), "timezone", False))


def is_aware(column: Expr) -> bool:
    """Whether a timestamp column is stored with a time zone."""
    return is_aware_type(column.type)


class instant(FunctionElement[t.Any]):
    """A timestamp as a number of days on SQLite (``julianday``), for arithmetic; itself
    elsewhere."""

    inherit_cache = True
    name = "instant"


@compiles(instant)
def _instant_default(element: instant, compiler: t.Any, **kw: t.Any) -> str:
    return t.cast(str, compiler.process(list(element.clauses)[0], **kw))


@compiles(instant, "sqlite")
def _instant_sqlite(element: instant, compiler: t.Any, **kw: t.Any) -> str:
    return f"julianday({compiler.process(list(element.clauses)[0], **kw)})"


def in_window(column: Expr) -> list[ColumnElement[bool]]:
    """``window_start <= column <= window_end``, the bounds bound as parameters of the column's
    type."""
    return [
        column >= sa.bindparam("window_start", type_=column.type),
        column <= sa.bindparam("window_end", type_=column.type),
    ]


def at_or_after(
    later: Expr, earlier: Expr, skew_seconds: float, backend: Backend
) -> ColumnElement[bool]:
    """``later >= earlier - skew``: with no skew a plain comparison (text on SQLite); with a skew,
    an interval on PostgreSQL and ``julianday()`` arithmetic on SQLite."""
    if not skew_seconds:
        return later >= earlier
    if backend.timestamps_as_text:
        return instant(later) >= instant(earlier) - sa.literal_column(
            f"{skew_seconds / 86400.0:.12f}"
        )
    return later >= earlier - sa.literal_column(
        f"interval '{skew_seconds:.6f} seconds'", type_=sa.Interval()
    )


def local_date(column: Expr, week: bool = False) -> Expr:
    """PostgreSQL: the calendar date of ``column`` in the zone bound as ``tz`` (DST included by the
    database's zone rules); with ``week``, the Monday of its ISO week."""
    utc = column if is_aware(column) else sa.func.timezone("UTC", column)
    local = sa.func.timezone(sa.bindparam("tz", type_=sa.String()), utc)
    return sa.func.date(sa.func.date_trunc("week", local) if week else local)


def monday(day: date) -> date:
    """The Monday of ``day``'s ISO week."""
    return day - timedelta(days=day.weekday())


def local_days(start: datetime, end: datetime, zone: tzinfo, week: bool = False) -> list[date]:
    """Every calendar day (or every ISO week's Monday) in ``zone`` from ``start``'s to ``end``'s,
    inclusive."""
    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    if week:
        first, last = monday(first), monday(last)
    step = 7 if week else 1
    return [first + timedelta(days=i) for i in range(0, (last - first).days + 1, step)]


def comparable(expr: Expr, other_is_aware: bool, backend: Backend) -> Expr:
    """On PostgreSQL, bring a ``timestamptz`` column to naive UTC when compared with a naive one."""
    if backend.name == "postgresql" and is_aware(expr) and not other_is_aware:
        return sa.func.timezone("UTC", expr)
    return expr
