"""The post-push hook: record ``note_posted`` / ``time_entry_posted`` after a successful PSA push.

Contract: the push's return value and exceptions pass through untouched; recording never raises,
never touches the host's session, transaction or row-level-security setting, and never holds the
push longer than ``FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS``.

Recording semantics: the activity table mirrors what the PSA holds. Once a push has returned, its
activity is written in the plugin's own short transaction on a connection of its own, whatever the
host's transaction does next (commit, roll back, or end without a commit). Each activity carries an
``idempotency_key`` (a UUID), so a late write and any number of replays record it once. A write that
fails or misses the deadline goes to the dead-letter store with an ERROR log of its ids (never the
note text or the PSA's answer).

SQLite allows one writer, and a host transaction that has read or written holds a lock a second
connection would wait on; there the write happens as soon as the host's transaction ends (commit,
rollback or session close).
"""

from __future__ import annotations

import functools
import logging
import typing as t
import uuid
from collections.abc import Mapping

import sqlalchemy as sa
from flask import current_app, has_app_context

from .activities import describe, error_text, insert_activity, validate_payload
from .deadline import DeadlineExceeded
from .signals import activity_recorded
from .state import EXTENSION_KEY, AnalyticsState

logger = logging.getLogger(__name__)

#: Attribute set on wrapped functions, so that wrapping twice does not record twice.
WRAPPED_MARK = "__flowpilot_activity__"
#: The push functions :func:`wrap_service` wraps by default, by activity type.
DEFAULT_METHODS: Mapping[str, str] = {"note_posted": "push_note", "time_entry_posted": "push_time_entry"}

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
    """The row to insert: normalized, complete, with a fresh idempotency key."""
    if fields.get("account_id") is None:
        raise ValueError("the pushed session has no account_id")
    ticket, external = fields.get("psa_ticket_id"), fields.get("external_id")
    return validate_payload(
        {
            "account_id": fields["account_id"],
            "session_id": fields.get("session_id"),
            "activity_type": activity_type,
            "psa_ticket_id": None if ticket is None else str(ticket),
            "external_id": None if external is None else str(external),
            "minutes": fields.get("minutes"),
            "created_at": state.clock(),
            "idempotency_key": str(uuid.uuid4()),
        }
    )


def write_activity(state: AnalyticsState, payload: Mapping[str, t.Any]) -> bool:
    """Write one activity on a pooled connection of the plugin's own, bounded by the hook's deadline.

    Raises on failure, and :class:`~flowpilot_analytics.deadline.DeadlineExceeded` past the deadline: the
    write may still land later, and its idempotency key keeps a replay of the dead letter from doubling it.
    """
    timeout_ms = state.settings.hook_timeout_ms
    engine = state.write_engine  # resolved here: the helper thread has no app context

    def write() -> bool:
        with engine.connect() as connection:
            return insert_activity(connection, state.activity_io, state.settings.tenant_setting, payload, timeout_ms)

    return state.deadlines.run(write, timeout_ms / 1000.0)


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


def _dead_letter(state: AnalyticsState, payload: Mapping[str, t.Any]) -> None:
    """Keep an activity that could not be written, for ``flask flowpilot-analytics replay-activities``."""
    try:
        state.dead_letters.append(payload)
    except Exception as exc:
        logger.error(
            "the dead-letter store %s failed too (%s); only this log has the activity: %s",
            state.dead_letters.location,
            error_text(exc),
            describe(payload),
        )


def _record_now(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any]) -> None:
    """Write the activity, or keep it as a dead letter; never raises."""
    try:
        recorded = write_activity(state, payload)
    except Exception as exc:
        if isinstance(exc, DeadlineExceeded):
            exc.future.add_done_callback(lambda done: _late(state, payload, done))
        logger.error(
            "could not record a %s activity (%s); kept as a dead letter in %s "
            "for `flask flowpilot-analytics replay-activities`; activity: %s",
            payload["activity_type"],
            error_text(exc),
            state.dead_letters.location,
            describe(payload),
        )
        _dead_letter(state, payload)
        return
    if not recorded:
        logger.info(
            "%s %s already recorded for account %s",
            payload["activity_type"],
            payload["external_id"],
            payload["account_id"],
        )
        return
    _announce(app, state, payload)


def _late(state: AnalyticsState, payload: Mapping[str, t.Any], done: t.Any) -> None:
    """A write that missed the deadline finished after all: its row exists, so drop the stale cache."""
    if not done.cancelled() and done.exception() is None and done.result():
        state.cache.invalidate("psa_metrics", payload["account_id"])


def record(
    activity_type: str, extract: Extract, args: tuple[t.Any, ...], kwargs: dict[str, t.Any], result: t.Any
) -> None:
    """Record one activity after a push; every failure is logged at ERROR (ids only), never raised."""
    if not has_app_context():
        logger.warning("%s push outside an app context; activity not recorded", activity_type)
        return
    # The current app's registration records it, whichever FlowpilotAnalytics object wrapped the service.
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        logger.warning("%s push in an app without flowpilot_analytics; activity not recorded", activity_type)
        return
    try:
        session = state.db.session()
        with session.no_autoflush:  # reading an expired host object must not flush its pending ones
            fields = extract(args, kwargs, result)
        payload = build_payload(activity_type, fields, state)
    except Exception as exc:
        logger.error("could not read a %s activity from the push (%s); not recorded", activity_type, error_text(exc))
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if _holds_sqlite_lock(state, session):
        defer_until_transaction_end(session, lambda: _record_later(app, state, payload))
        return
    _record_now(app, state, payload)


def _record_later(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any]) -> None:
    """The deferred write, in the app's context even when the host ends its session outside one."""
    if has_app_context():
        _record_now(app, state, payload)
        return
    with app.app_context():
        _record_now(app, state, payload)


def _announce(app: t.Any, state: AnalyticsState, payload: dict[str, t.Any]) -> None:
    """Once the row is durable: drop the account's cached psa-metrics and send the signal."""
    try:
        state.cache.invalidate("psa_metrics", payload["account_id"])
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
