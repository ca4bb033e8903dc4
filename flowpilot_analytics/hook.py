"""The post-push hook: record ``note_posted`` / ``time_entry_posted`` after a successful PSA push.

Contract: the push's return value and exceptions pass through untouched; recording never raises, never
touches the host's session (no load, no flush, no transaction begun), its transaction or its
row-level-security setting, and never holds the push longer than ``FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS``.

Recording semantics: the activity table mirrors what the PSA holds. Once a push has returned, its
activity is written in the plugin's own short transaction on a connection of its own, whatever the
host's transaction does next (commit, roll back, or end without a commit). Each activity carries an
``idempotency_key`` (a UUID), so a late write and any number of replays record it once. A write that
fails or misses the deadline goes to the dead-letter store, with an ERROR log of its ids (never the note
text or the PSA's answer).

SQLite allows one writer, and a host transaction that has read or written holds a lock a second
connection would wait on; there the activity is first journaled in the dead-letter file, then written
as soon as the host's transaction ends (commit, rollback or session close) and its journal entry
settled, so a process that dies in between loses nothing.
"""

from __future__ import annotations

import functools
import logging
import time
import typing as t
import uuid
from collections.abc import Mapping
from concurrent.futures import Future

import sqlalchemy as sa
from flask import current_app, has_app_context

from . import telemetry
from .activities import describe, error_text, insert_activity, validate_payload
from .deadline import DeadlineExceeded
from .signals import activity_recorded
from .state import EXTENSION_KEY, AnalyticsState

logger = logging.getLogger(__name__)

#: Attribute set on wrapped functions, so that wrapping twice does not record twice.
WRAPPED_MARK = "__flowpilot_activity__"
#: The push functions :func:`wrap_service` wraps by default, by activity type.
DEFAULT_METHODS: Mapping[str, str] = {"note_posted": "push_note", "time_entry_posted": "push_time_entry"}
#: Key of an extracted mapping that holds a loader for the host object's columns that were not loaded.
UNLOADED = "__unloaded__"

Extract = t.Callable[[tuple[t.Any, ...], dict[str, t.Any], t.Any], Mapping[str, t.Any]]
Loader = t.Callable[[sa.Engine], dict[str, t.Any]]


def _field(obj: t.Any, name: str) -> t.Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def read_attributes(obj: t.Any, names: Mapping[str, str]) -> dict[str, t.Any]:
    """``{field: obj.<attribute>}`` for ``names`` (field -> attribute), without ever touching a session.

    A mapping or plain object is read as it is. An ORM instance gives only what is loaded in it (its
    primary key from its identity); columns that are expired or deferred are not loaded through the
    host's session (that would begin a transaction, and fail when the session needs a rollback): an
    :data:`UNLOADED` loader reads them later on the plugin's own connection.
    """
    inspected = sa.inspect(obj, raiseerr=False)
    if not isinstance(inspected, sa.orm.InstanceState):
        return {field: _field(obj, attribute) for field, attribute in names.items()}
    mapper, loaded = inspected.mapper, inspected.dict
    identity = dict(zip((mapper.get_property_by_column(c).key for c in mapper.primary_key), inspected.identity or ()))
    values: dict[str, t.Any] = {}
    missing: dict[str, sa.ColumnElement[t.Any]] = {}
    for field, attribute in names.items():
        if attribute in loaded:
            values[field] = loaded[attribute]
        elif attribute in identity:
            values[field] = identity[attribute]
        elif attribute in mapper.column_attrs:
            values[field] = None
            missing[field] = mapper.column_attrs[attribute].columns[0]
    if missing and inspected.identity is not None:
        where = [column == value for column, value in zip(mapper.primary_key, inspected.identity)]
        statement = sa.select(*(column.label(field) for field, column in missing.items())).where(*where)

        def load(engine: sa.Engine) -> dict[str, t.Any]:
            with engine.connect() as connection:
                row = connection.execute(statement).first()
            return {} if row is None else dict(row._mapping)

        values[UNLOADED] = load
    return values


def default_extract(activity_type: str) -> Extract:
    """Read ``session`` (first positional or ``session=``), ``minutes`` (second or ``minutes=``), result ``id``."""

    def extract(args: tuple[t.Any, ...], kwargs: dict[str, t.Any], result: t.Any) -> Mapping[str, t.Any]:
        session = kwargs["session"] if "session" in kwargs else args[0]
        fields = read_attributes(
            session, {"account_id": "account_id", "session_id": "id", "psa_ticket_id": "psa_ticket_id"}
        )
        fields["external_id"] = _field(result, "id")
        if activity_type == "time_entry_posted":
            fields["minutes"] = kwargs["minutes"] if "minutes" in kwargs else args[1]
        return fields

    return extract


def build_payload(activity_type: str, fields: Mapping[str, t.Any], state: AnalyticsState) -> dict[str, t.Any]:
    """The row to insert (not yet checked): normalized, with a fresh idempotency key."""
    ticket, external = fields.get("psa_ticket_id"), fields.get("external_id")
    return {
        "account_id": fields.get("account_id"),
        "session_id": fields.get("session_id"),
        "activity_type": activity_type,
        "psa_ticket_id": None if ticket is None else str(ticket),
        "external_id": None if external is None else str(external),
        "minutes": fields.get("minutes"),
        "created_at": state.clock(),
        "idempotency_key": str(uuid.uuid4()),
    }


class Written(t.NamedTuple):
    """What a write did: whether a new row was written, and (with a read replica on PostgreSQL) the primary's
    WAL position after it, which a standby must replay before its answers may be cached."""

    recorded: bool
    position: str | None = None


def write_activity(state: AnalyticsState, payload: Mapping[str, t.Any], timeout: float) -> Written:
    """Write one activity on a pooled connection of the plugin's own, within ``timeout`` seconds.

    Raises on failure, and :class:`~flowpilot_analytics.deadline.DeadlineExceeded` past the deadline: the
    write may still land later, and its idempotency key keeps a replay of the dead letter from doubling it.
    """
    engine = state.write_engine  # resolved here: the helper thread has no app context
    server_ms = max(1, int(timeout * 1000))
    replica = state.settings.bind is not None and engine.dialect.name == "postgresql"

    def write() -> Written:
        with engine.connect() as connection:
            recorded = insert_activity(connection, state.activity_io, state.settings.tenant_setting, payload, server_ms)
            if not (recorded and replica):
                return Written(recorded)
            position = connection.exec_driver_sql("SELECT pg_current_wal_insert_lsn()::text").scalar()
            connection.rollback()
            return Written(recorded, None if position is None else str(position))

    return state.deadlines.run(write, timeout)


DEFERRED_KEY = "flowpilot_analytics_deferred"


def defer_until_transaction_end(session: sa.orm.Session, action: t.Callable[[], None]) -> None:
    """Run ``action`` once the session's outermost transaction ends, by commit, rollback or close."""
    if DEFERRED_KEY not in session.info:  # one listener per session, however many pushes
        session.info[DEFERRED_KEY] = []
        sa.event.listen(session, "after_transaction_end", _run_deferred)
    session.info[DEFERRED_KEY].append(action)


def _run_deferred(session: sa.orm.Session, transaction: sa.orm.SessionTransaction) -> None:
    if transaction.parent is not None or not session.info.get(DEFERRED_KEY):
        return
    actions, session.info[DEFERRED_KEY] = session.info[DEFERRED_KEY], []
    for action in actions:
        action()


def _holds_sqlite_lock(state: AnalyticsState, session: sa.orm.Session) -> bool:
    """Whether a write now would wait on the host's own open transaction (SQLite: one writer, readers block)."""
    return state.write_engine.dialect.name == "sqlite" and session.in_transaction()


def _keep(state: AnalyticsState, payload: Mapping[str, t.Any], reason: str, deadline: float) -> str:
    """Keep an activity that could not be written as a dead letter, and say so (ids only) at ERROR; the outcome."""
    kind = {"activity_type": payload["activity_type"]}
    try:
        state.dead_letters.append(payload, timeout=max(0.0, deadline - time.monotonic()))
    except Exception as exc:
        telemetry.failed.add(1, kind)
        logger.error(
            "could not record a %s activity (%s), and the dead-letter store %s failed too (%s); only this log "
            "has it: %s",
            payload["activity_type"],
            reason,
            state.dead_letters.location,
            error_text(exc),
            describe(payload),
        )
        return "failed"
    telemetry.dead_lettered.add(1, kind)
    logger.error(
        "could not record a %s activity (%s); kept as a dead letter in %s for `flask flowpilot-analytics "
        "replay-activities`; activity: %s",
        payload["activity_type"],
        reason,
        state.dead_letters.location,
        describe(payload),
    )
    return "dead_lettered"


def _record_now(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any], journaled: bool = False) -> None:
    """Write the activity, or keep it as a dead letter, within the hook timeout; never raises."""
    with telemetry.record_span(payload["activity_type"]) as span:
        span.set_attribute(f"{telemetry.NAME}.outcome", _write_or_keep(app, state, payload, journaled))


def _write_or_keep(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any], journaled: bool) -> str:
    deadline = time.monotonic() + state.settings.hook_timeout_ms / 1000.0
    kind = {"activity_type": payload["activity_type"]}
    try:
        written = write_activity(state, payload, state.settings.hook_timeout_ms / 1000.0)
    except Exception as exc:
        if isinstance(exc, DeadlineExceeded):
            exc.future.add_done_callback(lambda done: _late(app, state, payload, done))
        if not journaled:
            return _keep(state, payload, error_text(exc), deadline)
        telemetry.dead_lettered.add(1, kind)  # its journal entry already is the dead letter
        logger.error(
            "could not record a %s activity (%s); kept as a dead letter in %s for `flask flowpilot-analytics "
            "replay-activities`; activity: %s",
            payload["activity_type"],
            error_text(exc),
            state.dead_letters.location,
            describe(payload),
        )
        return "dead_lettered"
    if journaled:
        try:
            state.dead_letters.settle(payload["idempotency_key"])
        except Exception as exc:  # the entry stays; a replay finds the row present
            logger.warning("could not settle the journal entry of a recorded activity (%s)", error_text(exc))
    if not written.recorded:
        telemetry.duplicates.add(1, kind)
        logger.info(
            "%s %s already recorded for account %s",
            payload["activity_type"],
            payload["external_id"],
            payload["account_id"],
        )
        return "duplicate"
    telemetry.recorded.add(1, kind)
    _announce(app, state, payload, written.position)
    return "recorded"


def _late(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any], done: Future[t.Any]) -> None:
    """A write that missed the deadline finished after all: its row exists, so announce it now."""
    if done.cancelled() or done.exception() is not None or not done.result().recorded:
        return
    telemetry.recorded.add(1, {"activity_type": payload["activity_type"]})
    with app.app_context():
        _announce(app, state, payload, done.result().position)


def _complete(state: AnalyticsState, fields: dict[str, t.Any]) -> str | None:
    """Load the host object's columns that were not loaded, on the plugin's own connection within the
    hook timeout; the error, if that failed (the activity is then kept with what is known)."""
    load: Loader | None = fields.pop(UNLOADED, None)
    if load is None:
        return None
    engine = state.write_engine
    try:
        fields.update(
            {
                k: v
                for k, v in state.deadlines.run(lambda: load(engine), state.settings.hook_timeout_ms / 1000.0).items()
                if fields.get(k) is None
            }
        )
    except Exception as exc:
        return error_text(exc)
    return None


def record(
    activity_type: str, extract: Extract, args: tuple[t.Any, ...], kwargs: dict[str, t.Any], result: t.Any
) -> None:
    """Record one activity after a push; every failure is logged at ERROR (ids only), never raised."""
    if not has_app_context():
        telemetry.failed.add(1, {"activity_type": activity_type, "reason": "no_app_context"})
        logger.warning("%s push outside an app context; activity not recorded", activity_type)
        return
    # The current app's registration records it, whichever FlowpilotAnalytics object wrapped the service.
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        telemetry.failed.add(1, {"activity_type": activity_type, "reason": "not_registered"})
        logger.warning("%s push in an app without flowpilot_analytics; activity not recorded", activity_type)
        return
    started = time.monotonic()
    try:
        session = state.db.session()
        with session.no_autoflush:  # a host's own extract must not flush the host's pending objects
            fields = dict(extract(args, kwargs, result))
    except Exception as exc:
        telemetry.failed.add(1, {"activity_type": activity_type})
        logger.error("could not read a %s activity from the push (%s); not recorded", activity_type, error_text(exc))
        return
    unloaded = _complete(state, fields)
    payload = build_payload(activity_type, fields, state)
    try:
        payload = validate_payload(payload)
    except (ValueError, TypeError) as exc:
        if unloaded is not None and payload["account_id"] is None and payload["session_id"] is not None:
            # the database did not answer for the host's object: keep what is known; a replay looks up its account
            _keep(state, payload, unloaded, started + state.settings.hook_timeout_ms / 1000.0)
            return
        telemetry.failed.add(1, {"activity_type": activity_type})
        logger.error("could not read a %s activity from the push (%s); not recorded", activity_type, error_text(exc))
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if _holds_sqlite_lock(state, session):
        try:
            state.dead_letters.journal(payload)
        except Exception as exc:
            logger.warning(
                "could not journal a %s activity before the host's transaction ends (%s)",
                activity_type,
                error_text(exc),
            )
            defer_until_transaction_end(session, lambda: _record_later(app, state, payload, False))
            return
        defer_until_transaction_end(session, lambda: _record_later(app, state, payload, True))
        return
    _record_now(app, state, payload)


def _record_later(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any], journaled: bool) -> None:
    """The deferred write, in the app's context even when the host ends its session outside one."""
    if has_app_context():
        _record_now(app, state, payload, journaled)
        return
    with app.app_context():
        _record_now(app, state, payload, journaled)


def _announce(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any], position: str | None = None) -> None:
    """Once the row is durable: drop the account's cached psa-metrics and send the signal."""
    try:
        state.cache.invalidate("psa_metrics", payload["account_id"], position)
        activity_recorded.send(app, activity=payload)
    except Exception:
        logger.error("an activity_recorded receiver failed", exc_info=True)


def psa_activity(
    activity_type: str, extract: Extract | None = None
) -> t.Callable[[t.Callable[..., t.Any]], t.Callable[..., t.Any]]:
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
