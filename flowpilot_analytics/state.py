"""One app's registration at request time: settings, engines, prepared queries, cache, limits, dead
letters.

:func:`current_state` is how request-time code (views, the hook, commands) finds it; the composition
root, :mod:`flowpilot_analytics.extension`, builds it and puts it in ``app.extensions``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import threading
import typing as t
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from itsdangerous import TimestampSigner, URLSafeTimedSerializer, want_bytes
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from . import baselines
from .baselines import NewSample, StoredSample
from .business_hours import CalendarVersion
from .cache import ResponseCache
from .calendars import (
    Calendar,
    StoredVersion,
    calendar_of,
    client_calendars,
    client_versions_query,
    insert_values,
    versions_query,
)
from .config import Settings
from .deadletter import DeadLetterFile, DeadLetterStore
from .deadline import DeadlineRunner
from .escalations import Escalations, Row, Statement
from .identity import IdentityLike, require_role
from .psa_metrics import PsaMetrics
from .ratelimit import RouteLimits
from .replica import Reads, insert_position
from .tables import (
    HostTables,
    activity_table,
    baseline_table,
    business_hours_table,
    plugin_io_table,
    reflect_host_tables,
    set_tenant,
)
from .telemetry import watch_backlog
from .timeutil import Backend

EXTENSION_KEY = "flowpilot_analytics"

IdentityLoader = t.Callable[[], IdentityLike | None]
Clock = t.Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock: the current time, aware, in UTC."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Prepared:
    """What needs the database to build (reflection), built once at the first request that needs
    it."""

    backend: Backend
    tables: HostTables
    escalations: Escalations
    psa_metrics: PsaMetrics
    #: The same metrics restricted to the client bound as ``client_id`` (``None`` when the host's
    #: sessions have no client column).
    client_escalations: Escalations | None = None
    client_psa_metrics: PsaMetrics | None = None


class AnalyticsState:
    """Everything one app's registration needs at request time; lives in ``app.extensions``."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: SQLAlchemy,
        identity_loader: IdentityLoader,
        clock: Clock,
        limits: RouteLimits,
        database_uri: str,
    ) -> None:
        self.settings = settings
        self.db = db
        self.identity_loader = identity_loader
        self.clock = clock
        #: The declaration in the host's metadata (DDL, ``create_all``, Alembic) ...
        self.activity_table = activity_table(db.metadata, settings.activity_table, settings.id_type)
        #: ... and the plugin's own view of it for reads and
        #: writes (UTC timestamps in the column's kind).
        self.activity_io = plugin_io_table(self.activity_table)
        #: The calendar table (business hours), declared and viewed the same way.
        self.business_hours_table = business_hours_table(db.metadata, settings.id_type)
        self.business_hours_io = plugin_io_table(self.business_hours_table)
        self._versions = versions_query(self.business_hours_io)
        self._client_versions = client_versions_query(self.business_hours_io)
        #: The stopwatch baseline's table, declared and viewed the same way.
        self.baseline_table = baseline_table(db.metadata, settings.id_type)
        self.baseline_io = plugin_io_table(self.baseline_table)
        self._samples = baselines.samples_query(self.baseline_io)
        self._delete_sample = baselines.delete_statement(self.baseline_io)
        self.limits = limits
        self.cache = ResponseCache(
            settings.cache_ttl,
            settings.cache_storage_uri,
            namespace=_cache_namespace(settings, database_uri),
        )
        self.cursors = CursorSigner(
            [*settings.cursor_fallbacks, settings.cursor_secret], settings.cursor_max_age, clock
        )
        self.deadlines = DeadlineRunner()
        self.dead_letters: DeadLetterStore = DeadLetterFile(settings.dead_letter_path)
        watch_backlog(self.dead_letters)
        self._prepared: Prepared | None = None
        self._lock = threading.Lock()
        #: The one-time warnings this registration has logged already (by name).
        self.warned: set[str] = set()

    # -- identity ------------------------------------------------------------------------------
    def authorize(self, route: str, limit: str | None = None) -> IdentityLike:
        """Load the caller, check the route's minimum role, then count the call against the limit
        ``limit`` (default: the route's own). Raises the domain errors for 401, 403 and 429."""
        identity = require_role(
            self.identity_loader(), self.settings.roles, self.settings.route_roles[route]
        )
        self.limits.hit(limit or route, identity.account_id, identity.user_id)
        return identity

    # -- database ------------------------------------------------------------------------------
    @property
    def read_engine(self) -> sa.Engine:
        """The engine analytics reads go to:
        ``FLOWPILOT_ANALYTICS_BIND``'s (a replica), else the primary."""
        return self.db.engines[self.settings.bind]

    @property
    def write_engine(self) -> sa.Engine:
        """The engine the hook writes to: always the primary."""
        return self.db.engine

    def prepared(self) -> Prepared:
        """The backend, the host's tables as mapped by the
        settings, and each metric's statements (built once)."""
        if self._prepared is None:
            with self._lock:
                if self._prepared is None:
                    engine = self.read_engine
                    backend = Backend.for_dialect(engine.dialect.name)
                    with self._reading() as connection:
                        tables = reflect_host_tables(connection, self.settings)

                    def escalations(scope: HostTables) -> Escalations:
                        skew, edges = self.settings.clock_skew_seconds, self.settings.bucket_edges
                        return Escalations(scope, backend, skew, edges)

                    one = tables.for_one_client() if tables.has_client else None
                    self._prepared = Prepared(
                        backend=backend,
                        tables=tables,
                        escalations=escalations(tables),
                        psa_metrics=PsaMetrics(tables, self.activity_io, backend),
                        client_escalations=None if one is None else escalations(one),
                        client_psa_metrics=None
                        if one is None
                        else PsaMetrics(one, self.activity_io, backend),
                    )
        return self._prepared

    def reads(self) -> Reads | None:
        """A fresh record of one report's reads, with a read replica (``FLOWPILOT_ANALYTICS_BIND``);
        without one there is nothing to record: ``None``."""
        return None if self.settings.bind is None else Reads()

    def read_all(
        self, statements: t.Sequence[Statement], params: t.Mapping[str, object], reads: Reads | None
    ) -> list[list[Row]]:
        """Run reads in one short transaction of the plugin's own, on one pooled connection, and
        fetch them; with ``reads``, note the standby's replay position before them
        (:mod:`.replica`).

        The host's session, transaction and row-level-security setting are never touched: with
        ``FLOWPILOT_ANALYTICS_TENANT_SETTING`` the tenant is set in the plugin's transaction only.
        An engine with one shared connection (in-memory SQLite) has no connection of the plugin's
        own to give: there the reads go through the host's session.
        """
        with self._reading() as connection:
            set_tenant(connection, self.settings.tenant_setting, params["account_id"])
            if reads is not None:
                reads.observe(connection)
            return [list(connection.execute(statement, params).all()) for statement in statements]

    @property
    def plugin_tables(self) -> tuple[sa.Table, ...]:
        """The tables the plugin owns, as declared in the host's metadata (``doctor``, ``ddl``)."""
        return (self.activity_table, self.business_hours_table, self.baseline_table)

    def calendar(self, account_id: object, reads: Reads | None) -> Calendar | None:
        """The account's own business-hours versions, or ``None`` without one."""
        rows = self.read_all([self._versions], {"account_id": account_id}, reads)[0]
        return calendar_of(rows)

    def calendars(
        self, account_id: object, reads: Reads | None
    ) -> tuple[Calendar | None, dict[str, Calendar]]:
        """The account's own calendar (``None`` without a version) and each client's, in one
        transaction."""
        params = {"account_id": account_id}
        own, clients = self.read_all([self._versions, self._client_versions], params, reads)
        return calendar_of(own), client_calendars(clients)

    def append_version(
        self, account_id: object, version: CalendarVersion, now: datetime, user_id: object
    ) -> tuple[StoredVersion, str | None]:
        """Store a new calendar version on the primary; return it and, with a read replica, the
        WAL position a standby must replay to see it."""
        table = self.business_hours_io
        values = insert_values(account_id, version, now, user_id)
        with self.write_engine.begin() as connection:
            set_tenant(connection, self.settings.tenant_setting, account_id)
            result = connection.execute(sa.insert(table).values(**values))
            new_id = int(t.cast(t.Sequence[int], result.inserted_primary_key)[0])
            position = insert_position(connection) if self.settings.bind is not None else None
        return StoredVersion(new_id, now.astimezone(timezone.utc), version), position

    def baseline(self, account_id: object, reads: Reads | None) -> list[StoredSample]:
        """The account's stopwatch samples, oldest measurement first."""
        rows = self.read_all([self._samples], {"account_id": account_id}, reads)[0]
        return baselines.stored(rows)

    def add_samples(
        self, account_id: object, samples: t.Sequence[NewSample], now: datetime, user_id: object
    ) -> tuple[list[StoredSample], str | None]:
        """Store samples on the primary, all or none, in one transaction; return them (in the order
        given) and, with a read replica, the WAL position a standby must replay to see them."""
        table = self.baseline_io
        rows = [baselines.insert_values(account_id, sample, now, user_id) for sample in samples]
        inserting = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
        try:
            with self.write_engine.begin() as connection:
                set_tenant(connection, self.settings.tenant_setting, account_id)
                keys = connection.execute(inserting, rows).scalars().all()
                position = insert_position(connection) if self.settings.bind is not None else None
        except sa.exc.StatementError as exc:
            exc.hide_parameters = True  # the notes are the caller's words: never in a log
            raise
        added = [
            StoredSample(
                int(key),
                float(sample.seconds),
                sample.measured_at,
                sample.note,
                t.cast("str | None", row["measured_by"]),
                now.astimezone(timezone.utc),
            )
            for key, sample, row in zip(keys, samples, rows)
        ]
        return added, position

    def delete_sample(self, account_id: object, sample_id: int) -> tuple[bool, str | None]:
        """Delete one of the account's samples on the primary; whether it existed, and the WAL
        position (with a read replica)."""
        with self.write_engine.begin() as connection:
            set_tenant(connection, self.settings.tenant_setting, account_id)
            result = connection.execute(
                self._delete_sample, {"account_id": account_id, "sample_id": sample_id}
            )
            position = insert_position(connection) if self.settings.bind is not None else None
        return result.rowcount > 0, position

    @contextlib.contextmanager
    def _reading(self) -> t.Iterator[sa.Connection]:
        """A pooled connection of the plugin's own on the read engine;
        on an engine with one shared connection (in-memory SQLite) there
        is none to give, and the host's session's connection serves."""
        engine = self.read_engine
        if isinstance(engine.pool, (StaticPool, SingletonThreadPool)):
            yield self.db.session.connection(bind_arguments={"bind": engine})
            return
        with engine.connect() as connection:
            yield connection


class _ClockedSigner(TimestampSigner):
    """itsdangerous's timestamping signer on the app's clock, so cursor lifetimes follow the clock
    the reports use (an injected one in tests and replays)."""

    def __init__(
        self, secret_key: t.Iterable[bytes], salt: str | bytes | None, *, clock: Clock
    ) -> None:
        super().__init__(secret_key, salt=salt)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock().timestamp())


class CursorSigner:
    """Signs drill-down cursors so they survive a key rotation, expire, and name their caller to no
    one.

    ``keys`` go oldest first (``[*SECRET_KEY_FALLBACKS, SECRET_KEY]``, as Flask's sessions): the
    newest signs, every one verifies, so cursors open during a rotation still page. Each signature
    carries the time it was made; past ``max_age`` seconds :meth:`loads` raises
    ``SignatureExpired``. The caller is kept as a keyed digest (``c``), so a cursor's readable
    payload holds neither account nor user id, and only this app can tell whose it is.
    """

    SALT = "flowpilot_analytics.cursor.v2"

    def __init__(self, keys: t.Sequence[str | bytes], max_age: int, clock: Clock) -> None:
        self.max_age = max_age
        self._keys = [want_bytes(key) for key in keys]
        self._serializer = URLSafeTimedSerializer(
            self._keys, salt=self.SALT, signer=_ClockedSigner, signer_kwargs={"clock": clock}
        )

    @staticmethod
    def _digest(key: bytes, account: object, user: object) -> str:
        message = "\x1f".join(
            ("flowpilot_analytics.cursor.caller", str(account), str(user))
        ).encode()
        mac = hmac.new(key, message, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def dumps(self, payload: t.Mapping[str, object]) -> str:
        """``payload`` signed and timestamped; its ``a`` and ``u`` (the caller's account and user)
        are replaced by their digest under the newest key, ``c``."""
        data = dict(payload)
        data["c"] = self._digest(self._keys[-1], data.pop("a"), data.pop("u"))
        return self._serializer.dumps(data)

    def loads(self, text: str) -> object:
        """The payload of a cursor signed with one of the keys less than ``max_age`` seconds ago.

        :raises itsdangerous.SignatureExpired: a genuine cursor, too old.
        :raises itsdangerous.BadSignature: anything else this app did not sign.
        """
        return self._serializer.loads(text, max_age=self.max_age)

    def issued_to(self, digest: object, account: object, user: object) -> bool:
        """Whether a payload's ``c`` is this caller's under any of the keys (a cursor signed before
        a rotation carries the old key's)."""
        return isinstance(digest, str) and any(
            hmac.compare_digest(digest, self._digest(key, account, user)) for key in self._keys
        )


def _cache_namespace(settings: Settings, database_uri: str) -> str:
    """A short digest of everything that makes two
    apps' answers differ, so they never share entries."""
    facts = [
        database_uri,
        repr(sorted(settings.tables.items())),
        repr(sorted(settings.columns.items())),
        repr(settings.clock_skew_seconds),
        repr(settings.bucket_edges),
        settings.activity_table,
        settings.id_type,
        repr(settings.target_seconds),
        repr(settings.baseline_min_samples),
    ]
    return hashlib.sha256("\x1f".join(facts).encode()).hexdigest()[:16]


def registration(app: Flask) -> AnalyticsState:
    """``app``'s registration of the plugin (its settings,
    dead letters, cache, limits); for tools and tests."""
    try:
        return t.cast(AnalyticsState, app.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError(
            "flowpilot_analytics is not registered on this app: call init_app first."
        ) from None


def current_state() -> AnalyticsState:
    """The state of the app handling the current request."""
    return t.cast(AnalyticsState, current_app.extensions[EXTENSION_KEY])
