"""Activities: the rows of the plugin's own table, how one is checked, and how one is written once.

The hook writes them after a push and ``replay-activities`` writes the dead letters, both through
:func:`insert_activity`, so both apply the same checks and the same exactly-once rule.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import math
import numbers
import typing as t
import uuid
from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa

from .tables import set_tenant

#: The activity types the hook records, and so the only ones a replay accepts.
ACTIVITY_TYPES = ("note_posted", "time_entry_posted")

#: An account or session id as the host's columns hold it.
Id: t.TypeAlias = "int | str | uuid.UUID"


@dataclasses.dataclass(frozen=True)
class Activity:
    """One activity, checked, as the hook writes it and a dead letter keeps it."""

    account_id: Id | None
    session_id: Id | None
    activity_type: str
    psa_ticket_id: str | None
    external_id: str | None
    minutes: float | None
    created_at: datetime
    idempotency_key: str | None
    #: Who pushed (the host's user id as text), ``None`` when unknown.
    user_id: str | None = None
    #: Whether the time is billable as the push said; ``None``: not said.
    billable: bool | None = None

    def row(self) -> dict[str, object]:
        """The activity as the table's row (and the dead letter's JSON object)."""
        return {name: getattr(self, name) for name in PAYLOAD_FIELDS}

    def describe(self) -> str:
        """What the log may say of it: ids, type and minutes; never the note text or the PSA's
        answer."""
        return describe(self.row())


PAYLOAD_FIELDS = tuple(field.name for field in dataclasses.fields(Activity))
#: The fields of a dead letter from before idempotency keys (0.1): its legacy key is derived from
#: these only, so that it stays the same whatever fields later versions add.
LEGACY_FIELDS = (
    "account_id",
    "session_id",
    "activity_type",
    "psa_ticket_id",
    "external_id",
    "minutes",
    "created_at",
)
#: The longest user id an activity keeps (its column's length).
USER_ID_LENGTH = 255


def legacy_key(payload: Mapping[str, object]) -> str:
    """A stable key for a dead letter written before keys existed, so that replays of it stay
    idempotent."""
    canonical = json.dumps(
        {k: payload.get(k) for k in LEGACY_FIELDS},
        default=str,
        sort_keys=True,
    )
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "flowpilot-analytics:" + canonical))


class NoAccount(ValueError):
    """The activity passed every check but has no account: it is kept, never written or dropped."""

    def __init__(self, message: str, activity: Activity) -> None:
        super().__init__(message)
        self.activity = activity


def validate_payload(payload: Mapping[str, object], table: sa.Table | None = None) -> Activity:
    """The checks every activity passes before it is written, by the hook and by a replay alike.

    With ``table``, values are also checked against what its columns can hold (a number too large
    for ``minutes``, an id longer than its column), so a row that no write could ever store is
    refused here rather than failing every write and every replay. Messages name the field and the
    value's type, never the value: it comes from the host and may be anything. :class:`NoAccount`
    (last) carries the activity.
    """
    row = {key: payload.get(key) for key in PAYLOAD_FIELDS}
    if row["activity_type"] not in ACTIVITY_TYPES:
        raise ValueError(f"unknown activity type; known: {list(ACTIVITY_TYPES)}")
    if row["minutes"] is not None:
        minutes = row["minutes"] = _number(row["minutes"])
        if not math.isfinite(minutes) or minutes < 0:
            raise ValueError("minutes must be a finite number >= 0")
    if not isinstance(row["created_at"], datetime):
        raise ValueError("the activity has no created_at")
    for name in ("psa_ticket_id", "external_id", "idempotency_key", "user_id"):
        if row[name] is not None and not isinstance(row[name], str):
            raise ValueError(f"{name} must be text, got a {type(row[name]).__name__}")
    if row["billable"] is not None and not isinstance(row["billable"], bool):
        raise ValueError(
            f"billable must be true, false or null, got a {type(row['billable']).__name__}"
        )
    for name in ("account_id", "session_id"):
        value = row[name]
        if isinstance(value, bool):
            raise ValueError(f"{name} must be an id (a whole number, text or UUID), got a bool")
        if isinstance(value, numbers.Integral):
            row[name] = int(value)
        elif value is not None and not isinstance(value, (str, uuid.UUID)):
            raise ValueError(
                f"{name} must be an id (a whole number, text or UUID), got a {type(value).__name__}"
            )
    if table is not None:
        _check_capacity(table, row)
    activity = Activity(**row)  # type: ignore[arg-type]  # each field checked above
    if (
        activity.account_id is None
    ):  # last: every other check passed, so the activity is worth keeping
        raise NoAccount("the activity has no account_id", activity)
    return activity


def _number(value: object) -> float:
    """``value`` as a float (numbers, and text that spells one), else ``ValueError`` naming only its
    type."""
    if not isinstance(value, bool) and isinstance(value, (numbers.Real, decimal.Decimal, str)):
        try:
            return float(value)
        except (ValueError, OverflowError):
            pass
    raise ValueError(f"minutes must be a number, got a {type(value).__name__} that is not one")


def _check_capacity(table: sa.Table, row: Mapping[str, object]) -> None:
    """Refuse a value its column cannot hold (``NUMERIC(p, s)`` range, ``VARCHAR(n)`` length)."""
    for name, value in row.items():
        if value is None or name not in table.c:
            continue
        column_type = table.c[name].type
        if isinstance(column_type, sa.Numeric) and isinstance(value, float):
            precision, scale = column_type.precision, column_type.scale or 0
            if precision is not None and abs(round(value, scale)) >= 10 ** (precision - scale):
                raise ValueError(
                    f"{name} is too large for its column (NUMERIC({precision}, {scale}))"
                )
        length = getattr(column_type, "length", None)
        if isinstance(value, str) and length is not None and len(value) > length:
            raise ValueError(
                f"{name} is longer than its column allows ({len(value)} > {length} characters)"
            )


#: What a log line may say of an activity: every field but the user id (a host's user ids may be
#: e-mail addresses; the dead letter keeps it, the log does not).
LOGGED_FIELDS = tuple(name for name in PAYLOAD_FIELDS if name != "user_id")


def describe(payload: Mapping[str, object]) -> str:
    """What the log may say of an activity: its ids (not the user's), type, minutes and billable;
    never the note text or the PSA's answer."""
    return json.dumps({key: payload.get(key) for key in LOGGED_FIELDS}, default=str, sort_keys=True)


def error_text(exc: BaseException) -> str:
    """An exception as one short line, for logs that must not carry a traceback's worth of data."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _insert_once(table: sa.Table, dialect: str) -> t.Any:
    """INSERT that skips a row already recorded: same idempotency key, or same account, type and
    external id."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE")
    return table.insert()


def _skips_conflicts(dialect: str) -> bool:
    """Whether :func:`_insert_once` has a "do nothing on conflict" form for this dialect."""
    return dialect in ("postgresql", "sqlite", "mysql", "mariadb")


def insert_activity(
    connection: sa.Connection,
    table: sa.Table,
    tenant_setting: str | None,
    activity: Activity,
    timeout_ms: int | None = None,
) -> bool:
    """Write one validated activity in a transaction of ``connection``'s own; whether a new row was
    written.

    With ``timeout_ms`` the transaction waits at most that long for a lock or a statement
    (PostgreSQL's ``lock_timeout`` / ``statement_timeout``, transaction-local; SQLite's busy
    timeout, put back after).
    """
    dialect = connection.dialect.name
    statement = _insert_once(table, dialect).values(**activity.row())
    returning = connection.dialect.insert_returning
    if returning:  # rowcount is not reliable for INSERT .. ON CONFLICT with implicit RETURNING
        statement = statement.returning(table.c.id)
    restore_busy: int | None = None
    dbapi_connection: t.Any = connection.connection.dbapi_connection
    if timeout_ms is not None and dialect == "sqlite":
        restore_busy = int(dbapi_connection.execute("PRAGMA busy_timeout").fetchone()[0])
        per_lock_wait = max(1, int(timeout_ms) * 2 // 5)
        dbapi_connection.execute(f"PRAGMA busy_timeout = {per_lock_wait}")
    try:
        with connection.begin():
            if timeout_ms is not None and dialect == "postgresql":
                # the server gives up first, so no write lingers
                server_ms = f"{max(1, timeout_ms * 4 // 5)}ms"
                connection.execute(
                    sa.select(
                        sa.func.set_config("lock_timeout", server_ms, True),
                        sa.func.set_config("statement_timeout", server_ms, True),
                    )
                )
            set_tenant(connection, tenant_setting, activity.account_id)
            if _skips_conflicts(dialect):
                result = connection.execute(statement)
            else:
                # a database with no "skip on conflict": a unique violation means the row is already
                # there
                try:
                    with connection.begin_nested():
                        result = connection.execute(statement)
                except sa.exc.IntegrityError:
                    return False
            return result.first() is not None if returning else result.rowcount == 1
    finally:
        if restore_busy is not None:
            dbapi_connection.execute(f"PRAGMA busy_timeout = {restore_busy}")
