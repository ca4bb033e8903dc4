"""The tables the plugin reads (the host's, mapped by name) and the ones it owns.

Host tables are described from the mapping settings and the database's own column types (reflected
once), never imported from host model classes; their timestamps are read as UTC (:mod:`.timeutil`).
The plugin's own tables are declared in the host's metadata with standard SQLAlchemy types only, so
Alembic autogenerate renders them with nothing but ``sa``; the plugin reads and writes them through
a view whose ``created_at`` is UTC in the column's own kind.
"""

from __future__ import annotations

import dataclasses
import typing as t
from dataclasses import dataclass

import sqlalchemy as sa

from .config import HOST_COLUMNS, OPTIONAL_HOST_COLUMNS, Settings
from .timeutil import Expr, UtcDateTime, is_aware, is_aware_type


@dataclass(frozen=True)
class HostTables:
    """The host's three tables, with columns keyed by the plugin's logical names."""

    sessions: sa.Table
    steps: sa.Table
    handoffs: sa.Table
    #: Whether statements built from these tables keep one client's sessions only (the client
    #: bound as ``client_id``): :meth:`for_one_client`'s copy.
    one_client: bool = False

    @property
    def has_client(self) -> bool:
        """Whether the host's sessions have a client column (``sessions.client_id``)."""
        return "client_id" in self.sessions.c

    def for_one_client(self) -> HostTables:
        """The same tables, for statements restricted to the client bound as ``client_id``."""
        return dataclasses.replace(self, one_client=True)

    def client_scope(self, session_id: Expr) -> list[sa.ColumnElement[bool]]:
        """With :attr:`one_client`, the condition that the session ``session_id`` (of the account
        bound as ``account_id``) is the bound client's; nothing otherwise."""
        if not self.one_client:
            return []
        # an alias: a statement that also joins the sessions (group_by=client) keeps its own
        s = self.sessions.alias("client_sessions")
        return [
            sa.exists().where(
                s.c.id == session_id,
                s.c.account_id == sa.bindparam("account_id"),
                s.c.client_id == sa.bindparam("client_id", type_=s.c.client_id.type),
            )
        ]


def split_name(name: str) -> tuple[str | None, str]:
    """``schema.table`` as ``(schema, table)``; no schema is ``None``."""
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def reflect_host_tables(connection: sa.Connection, settings: Settings) -> HostTables:
    """Describe the host's tables from the mapping and the database's column types.

    Only whether each timestamp column carries a time zone is taken from the database; ids
    keep whatever type they have (``NullType`` passes values through unchanged).
    """
    inspector = sa.inspect(connection)
    metadata = sa.MetaData()
    built: dict[str, sa.Table] = {}
    for logical, full_name in settings.tables.items():
        schema, name = split_name(full_name)
        reflected = {c["name"]: c for c in inspector.get_columns(name, schema=schema)}
        columns = []
        for column in HOST_COLUMNS[logical]:
            host_name = settings.host_column(logical, column)
            if host_name not in reflected:
                raise sa.exc.NoSuchColumnError(
                    f"column {full_name}.{host_name} (for {logical}.{column}) does not exist; "
                    f"map it with FLOWPILOT_ANALYTICS_COLUMNS"
                )
            if column.endswith("_at"):
                col_type: sa.types.TypeEngine[t.Any] = UtcDateTime(
                    timezone=is_aware_type(reflected[host_name]["type"])
                )
            else:
                col_type = reflected[host_name]["type"]
            columns.append(sa.Column(host_name, col_type, key=column))
        for column in OPTIONAL_HOST_COLUMNS.get(logical, ()):
            host_name = settings.host_column(logical, column)
            if host_name in reflected:
                columns.append(sa.Column(host_name, reflected[host_name]["type"], key=column))
        built[logical] = sa.Table(name, metadata, *columns, schema=schema)
    return HostTables(sessions=built["sessions"], steps=built["steps"], handoffs=built["handoffs"])


#: Indexes the plugin's queries need on the host's tables (logical names), checked by ``doctor``:
#: the first step after a claim is an index probe; the window filters are index ranges.
RECOMMENDED_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "steps": (("account_id", "session_id", "created_at"),),
    "handoffs": (("account_id", "claimed_at"),),
    "sessions": (("account_id", "created_at"),),
}

#: Indexes for optional columns, recommended when the host has the column: ``client=`` on
#: psa-metrics reads one client's sessions of the window; the trailing ``id`` lets the escalation
#: routes' client check (which sessions are the client's) read the index only, never the table.
OPTIONAL_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "sessions": (("account_id", "client_id", "created_at", "id"),),
}

ID_TYPES: dict[str, t.Callable[[], sa.types.TypeEngine[t.Any]]] = {
    "integer": lambda: sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
    "string": lambda: sa.String(64),
    "uuid": lambda: sa.Uuid(),
}


def _serial_id() -> sa.Column[int]:
    """A plugin table's key: a 64-bit serial (SQLite's rowid integer there)."""
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def plugin_io_table(declared: sa.Table) -> sa.Table:
    """The plugin's view of one of its tables for its own reads and writes: the same columns, with
    every timestamp read and bound as UTC in the column's own kind (even when the host declared
    it)."""
    columns = [
        sa.Column(
            c.name,
            UtcDateTime(timezone=is_aware(c)) if isinstance(c.type, sa.DateTime) else c.type,
            key=c.key,
            primary_key=c.primary_key,
        )
        for c in declared.columns
    ]
    return sa.Table(declared.name, sa.MetaData(), *columns, schema=declared.schema)


#: Columns a host's own declaration of the activity table must have, with the release that added
#: each and the column to add (the upgrade path; ``doctor`` prints the statements for the database).
REQUIRED_ACTIVITY_COLUMNS: dict[str, tuple[str, str]] = {
    "idempotency_key": ("0.2", "Column('idempotency_key', String(36)) with a unique index"),
    "user_id": ("0.2", "Column('user_id', String(255))"),
    "billable": ("0.2", "Column('billable', Boolean)"),
}


def activity_table(metadata: sa.MetaData, name: str, id_type: str) -> sa.Table:
    """The plugin's own ``psa_activity_logs``; reuses a table the host already declared."""
    if name in metadata.tables:
        declared = metadata.tables[name]
        absent = [c for c in REQUIRED_ACTIVITY_COLUMNS if c not in declared.c]
        if absent:
            needs = "; ".join(
                f"{column} (flowpilot_analytics {REQUIRED_ACTIVITY_COLUMNS[column][0]}): "
                f"{REQUIRED_ACTIVITY_COLUMNS[column][1]}"
                for column in absent
            )
            raise ValueError(
                f"The host's declaration of {name} lacks the column(s) {', '.join(absent)}, which "
                f"flowpilot_analytics needs. Add them to the declaration and to the database: "
                f"{needs} (see the upgrade notes; `flask flowpilot-analytics doctor` prints the "
                f"statements)."
            )
        return declared
    ids = ID_TYPES[id_type]
    return sa.Table(
        name,
        metadata,
        _serial_id(),
        sa.Column("account_id", ids(), nullable=False),
        sa.Column("session_id", ids(), nullable=True),
        sa.Column("activity_type", sa.String(64), nullable=False),
        sa.Column("psa_ticket_id", sa.String(255), nullable=True),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("minutes", sa.Numeric(12, 2, asdecimal=False), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        #: Given to each activity when it is pushed and carried by its dead letter: the row is
        #: written once, however many times the hook's late write and any number of replays try.
        #: NULL on rows from 0.1.
        sa.Column("idempotency_key", sa.String(36), nullable=True),
        #: Who pushed (the host's user id as text); NULL when unknown and on rows before 0.2.
        sa.Column("user_id", sa.String(255), nullable=True),
        #: Whether the time is billable, as the push said; NULL: not said (and rows before 0.2).
        sa.Column("billable", sa.Boolean(), nullable=True),
        sa.Index(f"ix_{name}_account_created", "account_id", "created_at"),
        sa.Index(f"ix_{name}_account_session_type", "account_id", "session_id", "activity_type"),
        sa.Index(
            f"uq_{name}_account_type_external",
            "account_id",
            "activity_type",
            "external_id",
            unique=True,
        ),
        sa.Index(f"uq_{name}_idempotency_key", "idempotency_key", unique=True),
    )


#: The plugin's calendar table: every business-hours version of every account, append-only.
BUSINESS_HOURS_TABLE = "flowpilot_business_hours"


def _account_table(
    metadata: sa.MetaData, name: str, id_type: str, *parts: sa.schema.SchemaItem
) -> sa.Table:
    """A plugin table of one account's rows: a serial ``id``, ``account_id`` of the host's id type,
    then ``parts``; a table the host already declared under ``name`` is reused as it is."""
    if name in metadata.tables:
        return metadata.tables[name]
    return sa.Table(
        name,
        metadata,
        _serial_id(),
        sa.Column("account_id", ID_TYPES[id_type](), nullable=False),
        *parts,
    )


def business_hours_table(metadata: sa.MetaData, id_type: str) -> sa.Table:
    """The plugin's own calendar table (one row per version, never updated or deleted); reuses a
    table the host already declared under that name.

    ``definition`` is the version's canonical JSON (``CalendarVersion.as_dict``, its holidays
    expanded): what a report measures with, whatever package version reads it later.
    ``timezone`` and ``effective_from`` repeat it for people reading the table.
    """
    name = BUSINESS_HOURS_TABLE
    return _account_table(
        metadata,
        name,
        id_type,
        #: A client's own calendar (per-client business hours); NULL: the account's.
        sa.Column("client_id", sa.String(255), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Index(f"ix_{name}_account_id", "account_id", "id"),
    )


#: The plugin's stopwatch baseline: the manual samples a savings claim is paired with.
BASELINE_TABLE = "flowpilot_baseline_samples"


def baseline_table(metadata: sa.MetaData, id_type: str) -> sa.Table:
    """The plugin's own table of stopwatch baseline samples (one row per sample; a wrong sample is
    deleted, never edited); reuses a table the host already declared under that name."""
    name = BASELINE_TABLE
    return _account_table(
        metadata,
        name,
        id_type,
        #: Seconds from handoff to first action in the old process, by stopwatch.
        sa.Column("seconds", sa.Float(precision=53), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(1000), nullable=True),
        #: Who recorded it (the caller's user id as text; NULL when imported from the command line).
        sa.Column("measured_by", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"ix_{name}_account_measured", "account_id", "measured_at"),
    )


def set_tenant(connection: sa.Connection, setting: str | None, account_id: object) -> None:
    """PostgreSQL row-level security: set ``setting`` to the account for the current transaction
    only.

    ``set_config(..., true)`` lasts until the transaction ends, so a pooled connection never carries
    one caller's tenant to the next. Other databases have no such setting; it is skipped there.
    """
    if setting is None or connection.dialect.name != "postgresql":
        return
    connection.execute(sa.select(sa.func.set_config(setting, str(account_id), True)))
