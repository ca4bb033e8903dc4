"""The post-push hook: record ``note_posted`` / ``time_entry_posted`` after a successful PSA push.

Contract: the push's return value and exceptions pass through untouched; recording never raises,
never touches the host's session (no load, no flush, no transaction begun), its transaction or its
row-level-security setting, and never holds the push longer than
``FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS`` (one deadline for reading the pushed object, journaling,
writing and keeping). The whole contract, with the reasons, is told once in ``docs/hook.md``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import numbers
import time
import typing as t
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context, has_request_context

from . import telemetry
from .activities import (
    USER_ID_LENGTH,
    Activity,
    NoAccount,
    error_text,
    insert_activity,
    validate_payload,
)
from .deadline import DeadlineExceeded
from .replica import insert_position
from .signals import activity_recorded
from .state import EXTENSION_KEY, AnalyticsState
from .tables import set_tenant

logger = logging.getLogger(__name__)

#: Attribute set on wrapped functions, so that wrapping twice does not record twice.
WRAPPED_MARK = "__flowpilot_activity__"
#: The push functions :func:`wrap_service` wraps by default, by activity type.
DEFAULT_METHODS: Mapping[str, str] = {
    "note_posted": "push_note",
    "time_entry_posted": "push_time_entry",
}
#: Key of an extracted mapping that holds a loader for the host object's columns that were not
#: loaded.
UNLOADED = "__unloaded__"

Extract = t.Callable[[tuple[object, ...], dict[str, object], object], Mapping[str, object]]
#: Reads the columns that were not loaded:
#: ``(engine, tenant setting, account or None) -> {field: value}``.
Loader = t.Callable[[sa.Engine, "str | None", object], dict[str, object]]
#: A push function, wrapped as it is (same signature).
Push = t.TypeVar("Push", bound=t.Callable[..., object])
Service = t.TypeVar("Service")


def _field(obj: object, name: str) -> object:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def read_attributes(obj: object, names: Mapping[str, str]) -> dict[str, object]:
    """``{field: obj.<attribute>}`` for ``names`` (field -> attribute), without ever touching a
    session.

    A mapping or plain object is read as it is. An ORM instance gives only what is loaded in it (its
    primary key from its identity); columns that are expired or deferred are not loaded through the
    host's session (that would begin a transaction, and fail when the session needs a rollback): an
    :data:`UNLOADED` loader reads them later on the plugin's own connection, under the account's
    tenant.
    """
    inspected = sa.inspect(obj, raiseerr=False)
    if not isinstance(inspected, sa.orm.InstanceState):
        return {field: _field(obj, attribute) for field, attribute in names.items()}
    mapper, loaded = inspected.mapper, inspected.dict
    identity = dict(
        zip(
            (mapper.get_property_by_column(c).key for c in mapper.primary_key),
            inspected.identity or (),
        )
    )
    values: dict[str, object] = {}
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
        statement = sa.select(*(column.label(field) for field, column in missing.items())).where(
            *where
        )

        def load(
            engine: sa.Engine, tenant_setting: str | None, account: object
        ) -> dict[str, object]:
            with engine.connect() as connection, connection.begin():
                if account is not None:
                    set_tenant(connection, tenant_setting, account)
                row = connection.execute(statement).first()
            return {} if row is None else dict(row._mapping)

        values[UNLOADED] = load
    return values


#: The host's way to name a pushed session's account without the database (e.g. a background job's
#: tenant), used when the object does not have it loaded.
AccountOf = t.Callable[[object], object]


def default_extract(activity_type: str, account_of: AccountOf | None = None) -> Extract:
    """Read ``session`` (first positional or ``session=``), ``minutes`` (second or ``minutes=``),
    result ``id``; the account from ``account_of(session)`` when the object has none loaded."""

    def extract(
        args: tuple[object, ...], kwargs: dict[str, object], result: object
    ) -> Mapping[str, object]:
        session = kwargs["session"] if "session" in kwargs else args[0]
        fields = read_attributes(
            session,
            {"account_id": "account_id", "session_id": "id", "psa_ticket_id": "psa_ticket_id"},
        )
        fields["external_id"] = _field(result, "id")
        if fields.get("account_id") is None and account_of is not None:
            fields["account_id"] = account_of(session)
        if activity_type == "time_entry_posted":
            fields["minutes"] = kwargs["minutes"] if "minutes" in kwargs else args[1]
        return fields

    return extract


def build_payload(
    activity_type: str, fields: Mapping[str, object], state: AnalyticsState
) -> dict[str, object]:
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
        "user_id": fields.get("user_id"),
        "billable": fields.get("billable"),
    }


def technician_of(value: object, length: int | None = USER_ID_LENGTH) -> str | None:
    """A user id as the activity keeps it: text (a whole number or UUID as its text) that its
    column (``length`` characters) can hold; ``None`` for none, and for a value that is not such an
    id (a WARNING names its type or the problem, never the value): the push is still recorded,
    without a technician."""
    if value is None or (isinstance(value, str) and not value):
        return None
    problem = f"a {type(value).__name__}, not an id"
    if not isinstance(value, bool) and isinstance(value, (str, uuid.UUID, numbers.Integral)):
        try:
            text = str(int(value)) if isinstance(value, numbers.Integral) else str(value)
            text.encode("utf-8")  # a lone surrogate is no text a database can store
        except (ValueError, UnicodeError):  # an integer past str()'s digit limit
            text = ""
        if not text or "\x00" in text:
            problem = "not storable text"
        elif length is not None and len(text) > length:
            problem = f"longer than its column's {length} characters"
        else:
            return text
    logger.warning("a push's user_id is %s; recorded without a technician", problem)
    return None


def billable_of(value: object) -> bool | None:
    """``billable`` as the activity keeps it: true, false, or ``None`` (not said; also for a value
    that is not a bool, with a WARNING naming its type: the push is recorded as unclassified)."""
    if value is None or isinstance(value, bool):
        return value
    logger.warning(
        "a push's billable is a %s, not true or false; recorded as unclassified",
        type(value).__name__,
    )
    return None


def _attribution(
    fields: dict[str, object],
    kwargs: Mapping[str, object],
    caller: t.Callable[[], Caller],
    length: int | None,
) -> None:
    """Who pushed and whether it is billable: the extractor's, else the push's ``user_id=`` /
    ``billable=`` keyword, else (the user only) the current request's identity."""
    for name in ("user_id", "billable"):
        if fields.get(name) is None and kwargs.get(name) is not None:
            fields[name] = kwargs[name]
    if fields.get("user_id") is None:
        fields["user_id"] = caller().user_id
    fields["user_id"] = technician_of(fields.get("user_id"), length)
    fields["billable"] = billable_of(fields.get("billable"))


class Written(t.NamedTuple):
    """What a write did: whether a new row was written, and (with a read replica on PostgreSQL) the
    primary's WAL position after it, which a standby must replay before its answers may be
    cached."""

    recorded: bool
    position: str | None = None


def write_activity(state: AnalyticsState, activity: Activity, timeout: float) -> Written:
    """Write one activity on a pooled connection of the plugin's own, within ``timeout`` seconds.

    Raises on failure, and :class:`~flowpilot_analytics.deadline.DeadlineExceeded` past the
    deadline: the write may still land later, and its idempotency key keeps a replay of the dead
    letter from doubling it.
    """
    engine = state.write_engine  # resolved here: the helper thread has no app context
    server_ms = max(1, int(timeout * 1000))
    replica = state.settings.bind is not None and engine.dialect.name == "postgresql"

    def write() -> Written:
        with engine.connect() as connection:
            recorded = insert_activity(
                connection, state.activity_io, state.settings.tenant_setting, activity, server_ms
            )
            if not (recorded and replica):
                return Written(recorded)
            position = insert_position(connection)
            connection.rollback()
            return Written(recorded, position)

    return state.deadlines.run(write, timeout)


DEFERRED_KEY = "flowpilot_analytics_deferred"


def defer_until_transaction_end(session: sa.orm.Session, action: t.Callable[[], None]) -> None:
    """Run ``action`` once the session's outermost transaction ends, by commit, rollback or
    close."""
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


@dataclass
class Recording:
    """One push's activity on its way to the table: where it goes, its deadline, and whether it is
    journaled."""

    app: Flask
    state: AnalyticsState
    activity: Activity
    deadline: float
    journaled: bool = False
    #: A partial entry under the same key was journaled before the pushed object was read.
    preliminary: bool = False

    @property
    def kind(self) -> dict[str, str]:
        """The telemetry attributes of this activity."""
        return {"activity_type": self.activity.activity_type}

    def left(self) -> float:
        """Seconds left of the push's budget."""
        return max(0.0, self.deadline - time.monotonic())

    def journal(self, durable: bool, partial: bool = False) -> None:
        """Journal the activity before its write, so that a process killed meanwhile leaves a dead
        letter; a journal that fails is logged and the write goes on (the activity is then kept only
        if the write fails). The lock wait takes at most a share of the budget, so the write keeps
        time. A ``partial`` entry (before the pushed object was read) yields to a complete one."""
        row = {**self.activity.row(), "partial": True} if partial else self.activity.row()
        budget = self.state.settings.hook_timeout_ms / 1000.0
        try:
            self.state.dead_letters.journal(row, timeout=min(self.left(), budget * JOURNAL_SHARE))
            if durable:
                self.state.dead_letters.sync()
        except Exception as exc:
            logger.warning(
                "could not journal a %s activity before writing it (%s)",
                self.activity.activity_type,
                error_text(exc),
            )
            return
        self.journaled = True

    def settle(self) -> None:
        """The row is written: its journal entry is no longer a dead letter."""
        try:
            key = t.cast(str, self.activity.idempotency_key)  # the hook always gives one
            self.state.dead_letters.settle(key, timeout=max(self.left(), 0.01))
        except Exception as exc:  # the entry stays; a replay finds the row present
            logger.warning(
                "could not settle the journal entry of a recorded activity (%s)", error_text(exc)
            )

    def keep(self, reason: str) -> str:
        """Keep the activity that could not be written as a dead letter, say so (ids only) at ERROR;
        the outcome."""
        try:
            if self.journaled:
                # the journal entry already is the dead letter: make it durable
                self.state.dead_letters.sync()
            else:
                self.state.dead_letters.append(self.activity.row(), timeout=self.left())
        except Exception as exc:
            telemetry.failed.add(1, self.kind)
            logger.error(
                "could not record a %s activity (%s), and the dead-letter store %s failed too "
                "(%s); only this log has it: %s",
                self.activity.activity_type,
                reason,
                self.state.dead_letters.location,
                error_text(exc),
                self.activity.describe(),
            )
            return "failed"
        telemetry.dead_lettered.add(1, self.kind)
        logger.error(
            "could not record a %s activity (%s); kept as a dead letter in %s for "
            "`flask flowpilot-analytics replay-activities`; activity: %s",
            self.activity.activity_type,
            reason,
            self.state.dead_letters.location,
            self.activity.describe(),
        )
        return "dead_lettered"


#: Of the push's budget, the longest the journal may wait for the dead-letter file's lock.
JOURNAL_SHARE = 0.4
#: Of the push's budget, what the write leaves for keeping the activity when the write fails (a
#: fsync).
KEEP_SHARE, KEEP_MAX_SECONDS = 0.2, 0.05


def _record_now(recording: Recording) -> None:
    """Write the activity, or keep it as a dead letter, before the deadline; never raises."""
    with telemetry.record_span(recording.activity.activity_type) as span:
        span.set_attribute(f"{telemetry.NAME}.outcome", _write_or_keep(recording))


def _write_or_keep(recording: Recording) -> str:
    state, activity = recording.state, recording.activity
    reserve = min(KEEP_MAX_SECONDS, state.settings.hook_timeout_ms / 1000.0 * KEEP_SHARE)
    try:
        written = write_activity(state, activity, recording.left() - reserve)
    except Exception as exc:
        if isinstance(exc, DeadlineExceeded):
            exc.future.add_done_callback(
                lambda done: _late(recording, t.cast("Future[Written]", done))
            )
        return recording.keep(error_text(exc))
    if recording.journaled or recording.preliminary:
        recording.settle()
    if not written.recorded:
        telemetry.duplicates.add(1, recording.kind)
        logger.info(
            "%s %s already recorded for account %s",
            activity.activity_type,
            activity.external_id,
            activity.account_id,
        )
        return "duplicate"
    telemetry.recorded.add(1, recording.kind)
    _announce(recording.app, state, activity, written.position)
    return "recorded"


def _late(recording: Recording, done: Future[Written]) -> None:
    """A write that missed the deadline finished after all: settle its dead letter and announce the
    row."""
    if done.cancelled() or done.exception() is not None or not done.result().recorded:
        return
    recording.settle()
    telemetry.recorded.add(1, recording.kind)
    with recording.app.app_context():
        _announce(recording.app, recording.state, recording.activity, done.result().position)


class Caller(t.NamedTuple):
    """The current request's identity as the hook may use it: its user and account ids."""

    user_id: object = None
    account_id: object = None


#: The loader's time, as a share of the push's budget, past which a WARNING says it slows pushes.
SLOW_IDENTITY_SHARE = 0.5


def _request_identity(state: AnalyticsState, session: sa.orm.Session) -> t.Callable[[], Caller]:
    """The current request's identity (an object or a mapping), asked of the host's loader at most
    once per push and only when needed, with the host's session's autoflush off (a loader that
    reads through the session must not flush the host's pending objects). Outside a request, or
    when the loader or reading its answer fails, nothing is known: never raised into the push."""
    asked: list[Caller] = []

    def identity() -> Caller:
        if asked:
            return asked[0]
        found = Caller()
        if has_request_context():
            started = time.monotonic()
            try:
                with session.no_autoflush:
                    loaded = state.identity_loader()
                found = Caller(_field(loaded, "user_id"), _field(loaded, "account_id"))
            except Exception as exc:
                logger.warning(
                    "the identity loader failed during a push (%s); recorded without the "
                    "request's user",
                    type(exc).__name__,
                )
            took = time.monotonic() - started
            slow = took > state.settings.hook_timeout_ms / 1000.0 * SLOW_IDENTITY_SHARE
            if slow and "slow_identity" not in state.warned:  # once per app: never a log flood
                state.warned.add("slow_identity")
                logger.warning(
                    "the identity loader took %.0f ms during a push, which waits for it; pass "
                    "user_id= to the push (or return it from extract) so the hook need not ask it",
                    took * 1000,
                )
        asked.append(found)
        return found

    return identity


def _known_account(fields: Mapping[str, object], caller: t.Callable[[], Caller]) -> object:
    """The account the push belongs to, as known without reading the pushed object: its loaded
    ``account_id``, else the request's identity. (Never the host's connection: a query there could
    begin the host's transaction or wait past the deadline.)"""
    if fields.get("account_id") is not None:
        return fields["account_id"]
    return caller().account_id


def _complete(
    deadline: float, state: AnalyticsState, fields: dict[str, object], account: object
) -> str | None:
    """Load the host object's columns that were not loaded, on the plugin's own connection under the
    account's tenant, before the deadline; why the columns are still unknown (a failed read, or no
    row), if they are."""
    load = t.cast("Loader | None", fields.pop(UNLOADED, None))
    if load is None:
        return None
    engine, setting = state.write_engine, state.settings.tenant_setting
    try:
        found = state.deadlines.run(
            lambda: load(engine, setting, account), max(0.0, deadline - time.monotonic())
        )
    except Exception as exc:
        return error_text(exc)
    if not found:
        return "the pushed session's row was not found"
    fields.update({k: v for k, v in found.items() if fields.get(k) is None})
    return None


def record(
    activity_type: str,
    extract: Extract,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    result: object,
) -> None:
    """Record one activity after a push; every failure is logged at ERROR (ids only), never
    raised."""
    if not has_app_context():
        telemetry.failed.add(1, {"activity_type": activity_type, "reason": "no_app_context"})
        logger.warning("%s push outside an app context; activity not recorded", activity_type)
        return
    # The current app's registration records it, whichever FlowpilotAnalytics object wrapped the
    # service.
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        telemetry.failed.add(1, {"activity_type": activity_type, "reason": "not_registered"})
        logger.warning(
            "%s push in an app without flowpilot_analytics; activity not recorded", activity_type
        )
        return
    deadline = time.monotonic() + state.settings.hook_timeout_ms / 1000.0
    try:
        session = state.db.session()
        with session.no_autoflush:  # a host's own extract must not flush the host's pending objects
            fields = dict(extract(args, kwargs, result))
    except Exception as exc:  # the type only: the message may quote the host's values
        telemetry.failed.add(1, {"activity_type": activity_type})
        logger.error(
            "could not read a %s activity from the push (%s); not recorded",
            activity_type,
            type(exc).__name__,
        )
        return
    caller = _request_identity(state, session)
    account = _known_account(fields, caller)
    _attribution(fields, kwargs, caller, _length(state.activity_io.c.user_id))
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    payload = build_payload(
        activity_type, {**fields, "account_id": fields.get("account_id") or account}, state
    )
    first: Recording | None = None
    if (
        UNLOADED in fields
    ):  # the pushed object must be read first: journal what is known before the read
        try:
            first = Recording(app, state, _checked(payload, state), deadline)
        except (ValueError, TypeError) as exc:
            _refuse(activity_type, str(exc))
            return
        first.journal(durable=False, partial=True)
    unknown = _complete(deadline, state, fields, account)
    if fields.get("account_id") is None:
        fields["account_id"] = account
    # the same key and time as the first journal entry, which the complete one supersedes
    complete = {
        **build_payload(activity_type, fields, state),
        **{k: payload[k] for k in ("idempotency_key", "created_at")},
    }
    try:
        activity = validate_payload(complete, state.activity_io)
    except NoAccount as exc:
        if unknown is None or exc.activity.session_id is None:
            _refuse(activity_type, str(exc), first)
            return
        # the database did not give the pushed session's account: keep what is known; a replay looks
        # it up
        kept = Recording(
            app, state, exc.activity, deadline, journaled=first is not None and first.journaled
        )
        kept.keep(unknown)
        return
    except (ValueError, TypeError) as exc:
        _refuse(activity_type, str(exc), first)
        return
    recording = Recording(
        app, state, activity, deadline, preliminary=bool(first and first.journaled)
    )
    if state.write_engine.dialect.name == "sqlite" and session.in_transaction():
        # one writer: a write now would wait on the host's own open transaction; write when it ends
        recording.journal(durable=True)
        defer_until_transaction_end(session, lambda: _record_later(recording))
        return
    recording.journal(
        durable=False
    )  # the write follows at once; it, or the dead letter's fsync, makes it durable
    _record_now(recording)


def _length(column: sa.ColumnElement[t.Any]) -> int | None:
    """The most characters a text column holds (``None``: no limit, or not text)."""
    return t.cast("int | None", getattr(column.type, "length", None))


def _checked(payload: Mapping[str, object], state: AnalyticsState) -> Activity:
    """The activity, checked; one still without its account passes (the read, or a replay, finds
    it)."""
    try:
        return validate_payload(payload, state.activity_io)
    except NoAccount as exc:
        return exc.activity


def _never_raise(activity_type: str, recording: t.Callable[[], None]) -> None:
    """Run ``recording``; whatever it did not foresee is logged (its type only), never raised: the
    PSA call succeeded, so the push must return as it is."""
    try:
        recording()
    except Exception as exc:
        telemetry.failed.add(1, {"activity_type": activity_type, "reason": "unexpected"})
        logger.error(
            "recording a %s activity failed unexpectedly (%s); not recorded",
            activity_type,
            type(exc).__name__,
        )


def _refuse(activity_type: str, reason: str, journaled: Recording | None = None) -> None:
    """A push whose activity no write could ever store: counted and logged (the reason names the
    field); a journal entry made before the pushed object was read is settled, so no replay retries
    it."""
    if journaled is not None and journaled.journaled:
        journaled.settle()
    telemetry.failed.add(1, {"activity_type": activity_type, "reason": "refused"})
    logger.error(
        "could not read a %s activity from the push (%s); not recorded", activity_type, reason
    )


def _record_later(recording: Recording) -> None:
    """The deferred write, with a budget of its own, in the app's context even when the host ends
    its session outside one."""
    recording.deadline = time.monotonic() + recording.state.settings.hook_timeout_ms / 1000.0
    if has_app_context():
        _record_now(recording)
        return
    with recording.app.app_context():
        _record_now(recording)


def _announce(
    app: Flask, state: AnalyticsState, activity: Activity, position: str | None = None
) -> None:
    """Once the row is durable: drop the account's cached psa-metrics and send the signal."""
    try:
        state.cache.invalidate("psa_metrics", activity.account_id, position)
        activity_recorded.send(app, activity=activity.row())
    except Exception:
        logger.error("an activity_recorded receiver failed", exc_info=True)


def psa_activity(activity_type: str, extract: Extract | None = None) -> t.Callable[[Push], Push]:
    """Decorator: after ``fn`` returns, record an ``activity_type`` row; exceptions propagate, no
    row.

    A coroutine function gets a coroutine wrapper that records once the push has been awaited and
    succeeded.
    """
    reader = extract or default_extract(activity_type)

    def decorator(fn: Push) -> Push:
        if getattr(fn, WRAPPED_MARK, None):
            return fn

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: object, **kwargs: object) -> object:
                result = await t.cast(t.Callable[..., t.Awaitable[object]], fn)(*args, **kwargs)
                _never_raise(
                    activity_type, lambda: record(activity_type, reader, args, kwargs, result)
                )
                return result

            setattr(async_wrapper, WRAPPED_MARK, activity_type)
            return t.cast(Push, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> object:
            result = fn(*args, **kwargs)
            _never_raise(activity_type, lambda: record(activity_type, reader, args, kwargs, result))
            return result

        setattr(wrapper, WRAPPED_MARK, activity_type)
        return t.cast(Push, wrapper)

    return decorator


def wrap_service(
    service: Service, methods: Mapping[str, str], account_of: AccountOf | None = None
) -> Service:
    """Replace, in place, each named push function of a module or object with its recording
    wrapper."""
    found = [name for name in methods.values() if callable(getattr(service, name, None))]
    if not found:
        raise AttributeError(
            f"{service!r} has none of the PSA push functions {sorted(methods.values())}"
        )
    for activity_type, name in methods.items():
        fn = getattr(service, name, None)
        if callable(fn):
            setattr(
                service,
                name,
                psa_activity(activity_type, default_extract(activity_type, account_of))(fn),
            )
    return service
