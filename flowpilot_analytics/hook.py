"""The post-push hook: record ``note_posted`` / ``time_entry_posted`` after a successful PSA push.

Contract: the push's return value and exceptions pass through untouched; recording never raises,
never flushes the host's pending objects and never rolls back the host's work.

Transaction semantics: when the host's ``db.session`` has a transaction open, the row is written in
it, inside a SAVEPOINT taken on the session's connection (no autoflush), so it commits or rolls back
with the host's own record of the push; a failed insert rolls back only its savepoint. When the
session has no transaction, the row is committed at once on a pooled connection of its own.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import typing as t
from collections.abc import Mapping

import sqlalchemy as sa
from flask import current_app, has_app_context

from .signals import activity_recorded
from .tables import set_tenant

if t.TYPE_CHECKING:
    from .extension import AnalyticsState

logger = logging.getLogger("flowpilot_analytics")

#: Attribute set on wrapped functions, so that wrapping twice does not record twice.
WRAPPED_MARK = "__flowpilot_activity__"

Extract = t.Callable[[tuple[t.Any, ...], dict[str, t.Any], t.Any], Mapping[str, t.Any]]


def _field(obj: t.Any, name: str) -> t.Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def default_extract(activity_type: str) -> Extract:
    """Read ``session`` (first positional or ``session=``), ``minutes`` (second or ``minutes=``), result ``id``."""

    def extract(args: tuple[t.Any, ...], kwargs: dict[str, t.Any], result: t.Any) -> Mapping[str, t.Any]:
        session = kwargs["session"] if "session" in kwargs else args[0]
        fields: dict[str, t.Any] = {
            "account_id": _field(session, "account_id"),
            "session_id": _field(session, "id"),
            "psa_ticket_id": _field(session, "psa_ticket_id"),
            "external_id": _field(result, "id"),
        }
        if activity_type == "time_entry_posted":
            fields["minutes"] = kwargs["minutes"] if "minutes" in kwargs else args[1]
        return fields

    return extract


def build_payload(activity_type: str, fields: Mapping[str, t.Any], state: AnalyticsState) -> dict[str, t.Any]:
    """The row to insert: normalized, complete, and JSON-friendly for the error log."""
    if fields.get("account_id") is None:
        raise ValueError("the pushed session has no account_id")
    minutes = fields.get("minutes")
    if minutes is not None:
        minutes = float(minutes)
        if not math.isfinite(minutes) or minutes < 0:
            raise ValueError(f"minutes must be a finite number >= 0, got {minutes!r}")
    ticket, external = fields.get("psa_ticket_id"), fields.get("external_id")
    return {
        "account_id": fields["account_id"],
        "session_id": fields.get("session_id"),
        "activity_type": activity_type,
        "psa_ticket_id": None if ticket is None else str(ticket),
        "external_id": None if external is None else str(external),
        "minutes": minutes,
        "created_at": state.clock(),
    }


def _insert_once(table: sa.Table, dialect: str) -> t.Any:
    """INSERT that skips a row already recorded (same account, type and external id)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE")
    return table.insert()


def write_activity(state: AnalyticsState, payload: Mapping[str, t.Any]) -> tuple[bool, sa.orm.Session | None]:
    """Insert one activity row (see the module docstring).

    Returns whether a new row was written, and the host's session when the row joined its open
    transaction (so that what follows the row waits for that transaction's commit).
    """
    session = state.db.session()  # the scoped session's current Session
    engine = state.write_engine
    table = state.activity_io
    statement = _insert_once(table, engine.dialect.name).values(**payload)
    returning = engine.dialect.insert_returning
    if returning:  # rowcount is not reliable for INSERT .. ON CONFLICT with implicit RETURNING
        statement = statement.returning(table.c.id)

    def run(connection: sa.Connection) -> bool:
        set_tenant(connection, state.tenant_setting, payload["account_id"])
        result = connection.execute(statement)
        return result.first() is not None if returning else result.rowcount == 1

    if session.in_transaction():
        connection = session.connection(bind_arguments={"bind": engine})
        _warn_legacy_sqlite(state, connection)
        with connection.begin_nested():
            return run(connection), session
    with engine.begin() as connection:
        return run(connection), None


def _warn_legacy_sqlite(state: AnalyticsState, connection: sa.Connection) -> None:
    """Once per app: say so when pysqlite's legacy transactions would let the savepoint commit on its own."""
    if state.warned_legacy_sqlite or connection.dialect.name != "sqlite":
        return
    dbapi_connection = connection.connection.dbapi_connection
    if getattr(dbapi_connection, "autocommit", None) is False:  # Python 3.12's PEP 249 mode: real transactions
        return
    if getattr(dbapi_connection, "isolation_level", None) is not None:
        state.warned_legacy_sqlite = True
        logger.warning("flowpilot_analytics: this SQLite engine uses pysqlite's legacy transactions; an activity "
                       "written while the host has only read commits on its own. Apply "
                       "flowpilot_analytics.sqlite_transactional(db.engine) (see the README).")


PENDING_KEY = "flowpilot_analytics_after_commit"


def after_commit(session: sa.orm.Session | None, action: t.Callable[[], None]) -> None:
    """Run ``action`` now, or, inside the host's transaction, once it commits (never if it rolls back)."""
    if session is None:
        action()
        return
    if PENDING_KEY not in session.info:  # one pair of listeners per session, however many pushes
        session.info[PENDING_KEY] = []
        sa.event.listen(session, "after_commit", _run_pending)
        sa.event.listen(session, "after_transaction_end", _drop_pending)
    session.info[PENDING_KEY].append(action)


def _run_pending(session: sa.orm.Session) -> None:
    actions, session.info[PENDING_KEY] = session.info[PENDING_KEY], []
    for action in actions:
        action()


def _drop_pending(session: sa.orm.Session, transaction: sa.orm.SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended without a commit running them
        session.info[PENDING_KEY] = []


def _describe(payload: Mapping[str, t.Any] | None, activity_type: str, args: t.Any, kwargs: t.Any,
              result: t.Any) -> str:
    if payload is not None:
        return json.dumps(dict(payload), default=str, sort_keys=True)
    return json.dumps({"activity_type": activity_type, "args": repr(args), "kwargs": repr(kwargs),
                       "result": repr(result)}, sort_keys=True)


def _dead_letter(state: AnalyticsState, payload: Mapping[str, t.Any]) -> None:
    """Keep an activity that could not be written, for ``flask flowpilot-analytics replay-activities``."""
    try:
        state.dead_letters.append(payload, state.db.session())
    except Exception:
        logger.error("flowpilot_analytics: the dead-letter store %s failed too; only the log above has the payload",
                     state.dead_letters.location, exc_info=True)


def record(activity_type: str, extract: Extract, args: tuple[t.Any, ...],
           kwargs: dict[str, t.Any], result: t.Any) -> None:
    """Record one activity after a push; every failure is logged at ERROR with the payload, never raised."""
    from .extension import EXTENSION_KEY

    if not has_app_context():
        logger.warning("flowpilot_analytics: %s push outside an app context; activity not recorded", activity_type)
        return
    # The current app's registration records it, whichever FlowpilotAnalytics object wrapped the service.
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        logger.warning("flowpilot_analytics: %s push in an app without flowpilot_analytics; activity not recorded",
                       activity_type)
        return
    payload: dict[str, t.Any] | None = None
    try:
        with state.db.session().no_autoflush:  # reading an expired host object must not flush its pending ones
            fields = extract(args, kwargs, result)
        payload = build_payload(activity_type, fields, state)
    except Exception:
        logger.error("flowpilot_analytics: could not read a %s activity from the push; payload for replay: %s",
                     activity_type, _describe(payload, activity_type, args, kwargs, result), exc_info=True)
        return
    try:
        recorded, host_session = write_activity(state, payload)
    except Exception:
        logger.error("flowpilot_analytics: could not record a %s activity; payload for replay: %s",
                     activity_type, _describe(payload, activity_type, args, kwargs, result), exc_info=True)
        _dead_letter(state, payload)
        return
    if not recorded:
        logger.info("flowpilot_analytics: %s %s already recorded for account %s", activity_type,
                    payload["external_id"], payload["account_id"])
        return
    app = current_app._get_current_object()
    after_commit(host_session, lambda: _announce(app, state, dict(payload)))


def _announce(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any]) -> None:
    """Once the row is committed: drop the account's cached psa-metrics and send the signal."""
    try:
        state.cache.invalidate("psa_metrics", payload["account_id"])
        activity_recorded.send(app, activity=payload)
    except Exception:
        logger.error("flowpilot_analytics: an activity_recorded receiver failed", exc_info=True)


def psa_activity(activity_type: str,
                 extract: Extract | None = None) -> t.Callable[[t.Callable[..., t.Any]], t.Callable[..., t.Any]]:
    """Decorator: after ``fn`` returns, record an ``activity_type`` row; exceptions propagate, no row."""
    reader = extract or default_extract(activity_type)

    def decorator(fn: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        if getattr(fn, WRAPPED_MARK, None):
            return fn

        @functools.wraps(fn)
        def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
            result = fn(*args, **kwargs)
            record(activity_type, reader, args, kwargs, result)
            return result

        setattr(wrapper, WRAPPED_MARK, activity_type)
        return wrapper

    return decorator


def wrap_service(service: t.Any, methods: Mapping[str, str]) -> t.Any:
    """Replace, in place, each named push function of a module or object with its recording wrapper."""
    found = [name for name in methods.values() if callable(getattr(service, name, None))]
    if not found:
        raise AttributeError(f"{service!r} has none of the PSA push functions {sorted(methods.values())}")
    for activity_type, name in methods.items():
        fn = getattr(service, name, None)
        if callable(fn):
            setattr(service, name, psa_activity(activity_type)(fn))
    return service
