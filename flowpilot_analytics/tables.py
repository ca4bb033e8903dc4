"""The tables the plugin reads (the host's, mapped by name) and the one it owns, with UTC handling.

Host tables are described here from the mapping settings and the database's own column types
(reflected once), never imported from host model classes. Every timestamp is read as UTC:
naive values are UTC, aware ones are converted. SQLite keeps text, so comparisons there go
through ``julianday()``, which also applies any ``+HH:MM`` offset stored in the text.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from . import config as cfg

UTC = timezone.utc


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


class _SQLiteRawDateTime(sqlite.DATETIME):
    """SQLite DATETIME that hands back the stored text, so an offset in it is not dropped."""

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> None:
        return None


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A DateTime that always yields aware UTC values and binds UTC in the column's own kind."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[t.Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteRawDateTime())
        return dialect.type_descriptor(sa.DateTime(timezone=self.impl.timezone))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        value = as_utc(value)
        if value is not None and (dialect.name == "sqlite" or not self.impl.timezone):
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: t.Any, dialect: sa.Dialect) -> datetime | None:
        return as_utc(value)


class instant(FunctionElement[t.Any]):
    """A timestamp expression in a form that orders and compares as an instant on every dialect."""

    inherit_cache = True
    name = "instant"


@compiles(instant)
def _instant_default(element: instant, compiler: t.Any, **kw: t.Any) -> str:
    return compiler.process(list(element.clauses)[0], **kw)


@compiles(instant, "sqlite")
def _instant_sqlite(element: instant, compiler: t.Any, **kw: t.Any) -> str:
    return "julianday(%s)" % compiler.process(list(element.clauses)[0], **kw)


def at_or_after(later: ColumnElement[t.Any], earlier: ColumnElement[t.Any], dialect: str) -> ColumnElement[bool]:
    """``later >= earlier`` as instants. SQLite's ``julianday()`` keeps only milliseconds, so two times in
    the same millisecond are told apart by their text (both in SQLAlchemy's fixed-width UTC format)."""
    if dialect != "sqlite":
        return later >= earlier
    return sa.or_(instant(later) > instant(earlier), sa.and_(instant(later) == instant(earlier), later >= earlier))


def in_window(column: ColumnElement[t.Any], dialect: str) -> list[ColumnElement[bool]]:
    """``window_start <= column <= window_end``, with the bounds bound as parameters of the column's type."""
    return [
        at_or_after(column, sa.bindparam("window_start", type_=column.type), dialect),
        at_or_after(sa.bindparam("window_end", type_=column.type), column, dialect),
    ]


def seconds_before(expr: ColumnElement[t.Any], seconds: float, dialect: str) -> ColumnElement[t.Any]:
    """``instant(expr) - seconds``, the clock-skew allowance, on the given dialect."""
    if not seconds:
        return instant(expr)
    if dialect.startswith("sqlite"):
        return instant(expr) - sa.literal_column(f"{float(seconds) / 86400.0:.12f}")
    return expr - sa.literal_column(f"interval '{float(seconds):.6f} seconds'", type_=sa.Interval())


def comparable(expr: ColumnElement[t.Any], other_is_aware: bool, dialect: str) -> ColumnElement[t.Any]:
    """On PostgreSQL, bring a timestamptz column to naive UTC when compared with a naive one."""
    if dialect == "postgresql" and is_aware(expr) and not other_is_aware:
        return sa.func.timezone("UTC", expr)
    return expr


def is_aware(column: ColumnElement[t.Any]) -> bool:
    """Whether a mapped timestamp column is stored with a time zone (``timestamptz``)."""
    column_type = column.type
    return bool(getattr(getattr(column_type, "impl", column_type), "timezone", False))


@dataclass(frozen=True)
class HostTables:
    """The host's three tables, with columns keyed by the plugin's logical names."""

    sessions: sa.Table
    steps: sa.Table
    handoffs: sa.Table


def host_table_names(config: t.Mapping[str, t.Any]) -> dict[str, str]:
    """Logical table name -> host table name, defaults merged with ``FLOWPILOT_ANALYTICS_TABLES``."""
    return {**cfg.DEFAULT_TABLES, **dict(config[cfg.TABLES])}


def host_column_name(config: t.Mapping[str, t.Any], table: str, column: str) -> str:
    """The host's name for a logical column, from ``FLOWPILOT_ANALYTICS_COLUMNS``."""
    return str(dict(config[cfg.COLUMNS]).get(f"{table}.{column}", column))


def _split(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def reflect_host_tables(connection: sa.Connection, config: t.Mapping[str, t.Any]) -> HostTables:
    """Describe the host's tables from the mapping and the database's column types.

    Only whether each timestamp column carries a time zone is taken from the database; ids
    keep whatever type they have (``NullType`` passes values through unchanged).
    """
    inspector = sa.inspect(connection)
    metadata = sa.MetaData()
    built: dict[str, sa.Table] = {}
    for logical, full_name in host_table_names(config).items():
        schema, name = _split(full_name)
        reflected = {c["name"]: c for c in inspector.get_columns(name, schema=schema)}
        columns = []
        for column in cfg.HOST_COLUMNS[logical]:
            host_name = host_column_name(config, logical, column)
            if host_name not in reflected:
                raise sa.exc.NoSuchColumnError(
                    f"column {full_name}.{host_name} (for {logical}.{column}) does not exist; "
                    f"map it with {cfg.COLUMNS}")
            if column.endswith("_at"):
                aware = bool(getattr(reflected[host_name]["type"], "timezone", False))
                col_type: sa.types.TypeEngine[t.Any] = UtcDateTime(timezone=aware)
            else:
                col_type = reflected[host_name]["type"]
            columns.append(sa.Column(host_name, col_type, key=column))
        for column in cfg.OPTIONAL_HOST_COLUMNS.get(logical, ()):
            host_name = host_column_name(config, logical, column)
            if host_name in reflected:
                columns.append(sa.Column(host_name, reflected[host_name]["type"], key=column))
        built[logical] = sa.Table(name, metadata, *columns, schema=schema)
    return HostTables(**built)


#: Indexes the plugin's queries need on the host's tables (logical names), checked by ``doctor``:
#: the first step after a claim is an index probe; the window filters are index ranges.
RECOMMENDED_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "steps": (("account_id", "session_id", "created_at"),),
    "handoffs": (("account_id", "claimed_at"),),
    "sessions": (("account_id", "created_at"),),
}

ID_TYPES: dict[str, t.Callable[[], sa.types.TypeEngine[t.Any]]] = {
    "integer": lambda: sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
    "string": lambda: sa.String(64),
    "uuid": lambda: sa.Uuid(),
}


def activity_io_table(declared: sa.Table) -> sa.Table:
    """The plugin's view of the activity table for its own reads and writes: the same columns, with
    ``created_at`` read and bound as UTC in the column's own kind (even when the host declared it)."""
    created = declared.c.created_at
    aware = bool(getattr(getattr(created.type, "impl", created.type), "timezone", False))
    columns = [sa.Column(c.name, UtcDateTime(timezone=aware) if c.key == "created_at" else c.type, key=c.key,
                         primary_key=c.primary_key) for c in declared.columns]
    return sa.Table(declared.name, sa.MetaData(), *columns, schema=declared.schema)


def activity_table(metadata: sa.MetaData, name: str, id_type: str) -> sa.Table:
    """The plugin's own ``psa_activity_logs``; reuses a table the host already declared."""
    if name in metadata.tables:
        declared = metadata.tables[name]
        if "idempotency_key" not in declared.c:
            raise ValueError(
                f"The host's declaration of {name} has no idempotency_key column, which flowpilot_analytics "
                f"0.2 needs to record each activity exactly once. Add Column('idempotency_key', String(36)) with "
                f"a unique index to it and to the database (see the upgrade notes; `flask flowpilot-analytics "
                f"doctor` prints the statements).")
        return declared
    ids = ID_TYPES[id_type]
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("account_id", ids(), nullable=False),
        sa.Column("session_id", ids(), nullable=True),
        sa.Column("activity_type", sa.String(64), nullable=False),
        sa.Column("psa_ticket_id", sa.String(255), nullable=True),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("minutes", sa.Numeric(12, 2, asdecimal=False), nullable=True),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        #: Given to each activity when it is pushed and carried by its dead letter: the row is written once,
        #: however many times the hook's late write and any number of replays try. NULL on rows from 0.1.
        sa.Column("idempotency_key", sa.String(36), nullable=True),
        sa.Index(f"ix_{name}_account_created", "account_id", "created_at"),
        sa.Index(f"ix_{name}_account_session_type", "account_id", "session_id", "activity_type"),
        sa.Index(f"uq_{name}_account_type_external", "account_id", "activity_type", "external_id", unique=True),
        sa.Index(f"uq_{name}_idempotency_key", "idempotency_key", unique=True),
    )


def set_tenant(connection: sa.Connection, setting: str | None, account_id: t.Any) -> None:
    """PostgreSQL row-level security: set ``setting`` to the account for the current transaction only.

    ``set_config(..., true)`` lasts until the transaction ends, so a pooled connection never carries
    one caller's tenant to the next. Other databases have no such setting; it is skipped there.
    """
    if setting is None or connection.dialect.name != "postgresql":
        return
    connection.execute(sa.select(sa.func.set_config(setting, str(account_id), True)))
