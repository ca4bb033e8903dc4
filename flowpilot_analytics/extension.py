"""The :class:`FlowpilotAnalytics` extension object and the per-app state it keeps in ``app.extensions``."""

from __future__ import annotations

import hashlib
import os
import threading
import typing as t
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from flask_sqlalchemy import SQLAlchemy
from itsdangerous import URLSafeSerializer

from . import config as cfg
from . import hook
from .identity import IdentityLike, require_role
from .cache import ResponseCache
from .deadline import DeadlineRunner
from .deadletter import DeadLetterFile, DeadLetterTable, dead_letter_table
from .ratelimit import RouteLimits
from .tables import HostTables, activity_io_table, activity_table, reflect_host_tables, set_tenant

if t.TYPE_CHECKING:
    from flask_limiter import Limiter

EXTENSION_KEY = "flowpilot_analytics"

IdentityLoader = t.Callable[[], t.Optional[IdentityLike]]
Clock = t.Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock: the current time, aware, in UTC."""
    return datetime.now(timezone.utc)


class AnalyticsState:
    """Everything one app's registration needs at request time; lives in ``app.extensions``."""

    def __init__(self, extension: FlowpilotAnalytics, app: Flask, db: SQLAlchemy, identity_loader: IdentityLoader,
                 clock: Clock, limiter: Limiter | None) -> None:
        config = app.config
        self.extension = extension
        self.db = db
        self.identity_loader = identity_loader
        self.clock = clock
        self.config: dict[str, t.Any] = {key: config[key] for key in cfg.DEFAULTS}
        self.roles: tuple[str, ...] = tuple(config[cfg.ROLES])
        self.route_roles: dict[str, str] = cfg.route_roles(config)
        self.skew_seconds = float(config[cfg.CLOCK_SKEW_SECONDS])
        #: The declaration in the host's metadata (DDL, ``create_all``) ...
        self.activity_table = activity_table(db.metadata, config[cfg.ACTIVITY_TABLE], config[cfg.ID_TYPE])
        #: ... and the plugin's own view of it for reads and writes (UTC timestamps in the column's kind).
        self.activity_io = activity_io_table(self.activity_table)
        limit_storage = config[cfg.RATELIMIT_STORAGE_URI] or config.get("RATELIMIT_STORAGE_URI") or "memory://"
        self.limits = RouteLimits({"escalations": config[cfg.ESCALATIONS_LIMIT],
                                   "escalation_handoffs": config[cfg.HANDOFFS_LIMIT],
                                   "psa_metrics": config[cfg.PSA_METRICS_LIMIT]}, limit_storage, limiter)
        shared = limit_storage if limit_storage.startswith(("redis://", "rediss://")) else None
        self.bind_key: str | None = config[cfg.BIND]
        self.cache = ResponseCache(config[cfg.CACHE_TTL], config[cfg.CACHE_STORAGE_URI] or shared,
                                   namespace=self._cache_namespace(config), max_bytes=config[cfg.CACHE_MAX_BYTES])
        self.vary_headers: tuple[str, ...] = tuple(config[cfg.VARY_HEADERS])
        self.cursors = URLSafeSerializer(config[cfg.CURSOR_SECRET] or config["SECRET_KEY"],
                                         salt="flowpilot_analytics.cursor")
        self.hook_timeout_ms: int = config[cfg.HOOK_TIMEOUT_MS]
        self.deadlines = DeadlineRunner()
        self.tenant_setting: str | None = config[cfg.TENANT_SETTING]
        self.dead_letters: DeadLetterFile | DeadLetterTable
        if config[cfg.DEAD_LETTER_TABLE]:
            self.dead_letters = DeadLetterTable(dead_letter_table(db.metadata, config[cfg.DEAD_LETTER_TABLE]),
                                                lambda: self.write_engine, self.deadlines, self.hook_timeout_ms)
        else:
            self.dead_letters = DeadLetterFile(
                config[cfg.DEAD_LETTER_PATH] or os.path.join(app.instance_path, cfg.DEAD_LETTER_FILENAME))
        self._host_tables: HostTables | None = None
        self._statements: dict[str, t.Any] = {}
        self._lock = threading.Lock()

    def _cache_namespace(self, config: t.Mapping[str, t.Any]) -> str:
        """A short digest of everything that makes two apps' answers differ, so they never share entries."""
        binds = dict(config.get("SQLALCHEMY_BINDS") or {})
        database = binds.get(self.bind_key) if self.bind_key else config.get("SQLALCHEMY_DATABASE_URI")
        if isinstance(database, dict):
            database = database.get("url")
        answer_settings = (cfg.TABLES, cfg.COLUMNS, cfg.CLOCK_SKEW_SECONDS, cfg.BUCKET_EDGES_SECONDS,
                           cfg.ACTIVITY_TABLE, cfg.ID_TYPE)
        facts = [str(database), *(repr(config[key]) for key in answer_settings)]
        return hashlib.sha256("\x1f".join(facts).encode()).hexdigest()[:16]

    # -- identity ------------------------------------------------------------------------------
    def authorize(self, route: str, limit: str | None = None) -> IdentityLike:
        """Load the caller, check the route's minimum role (401/403), then count the call against the
        limit ``limit`` (default: the route's own) (429)."""
        identity = require_role(self.identity_loader(), self.roles, self.route_roles[route])
        self.limits.hit(limit or route, identity.account_id, identity.user_id)
        return identity

    # -- database ------------------------------------------------------------------------------
    @property
    def read_engine(self) -> sa.Engine:
        """The engine analytics reads go to: ``FLOWPILOT_ANALYTICS_BIND``'s (a replica), else the primary."""
        return self.db.engines[self.bind_key]

    @property
    def write_engine(self) -> sa.Engine:
        """The engine the hook writes to: always the primary."""
        return self.db.engine

    @property
    def dialect(self) -> str:
        """The read engine's dialect name; ``sqlite-text`` for SQLite whose timestamps are plain UTC text."""
        name = self.read_engine.dialect.name
        if name == "sqlite" and not self.config[cfg.SQLITE_TEXT_OFFSETS]:
            return "sqlite-text"
        return name

    def host_tables(self) -> HostTables:
        """The host's tables as mapped by the settings, reflected once per app."""
        if self._host_tables is None:
            with self._lock:
                if self._host_tables is None:
                    with self.read_engine.connect() as connection:
                        self._host_tables = reflect_host_tables(connection, self.config)
        return self._host_tables

    def once(self, name: str, build: t.Callable[[], t.Any]) -> t.Any:
        """Something built once per app and reused by every request: a query (after reflection), a schema."""
        statement = self._statements.get(name)
        if statement is None:
            statement = self._statements[name] = build()
        return statement

    def read(self, statement: t.Any, params: t.Mapping[str, t.Any]) -> list[sa.Row[t.Any]]:
        """Run one read on the analytics engine (see :meth:`read_all`) and fetch it all."""
        return self.read_all([statement], params)[0]

    def read_all(self, statements: t.Sequence[t.Any], params: t.Mapping[str, t.Any]) -> list[list[sa.Row[t.Any]]]:
        """Run reads in one short transaction of the plugin's own, on one pooled connection, and fetch them.

        The host's session, transaction and row-level-security setting are never touched: with
        ``FLOWPILOT_ANALYTICS_TENANT_SETTING`` the tenant is set in the plugin's transaction only.
        """
        with self.read_engine.connect() as connection:
            if self.tenant_setting is not None:
                set_tenant(connection, self.tenant_setting, params["account_id"])
            return [list(connection.execute(statement, params).all()) for statement in statements]


def current_state() -> AnalyticsState:
    """The state of the app handling the current request."""
    return t.cast(AnalyticsState, current_app.extensions[EXTENSION_KEY])


class FlowpilotAnalytics:
    """Escalation and PSA analytics for a Flask app that has FlowPilot's tables.

    ``FlowpilotAnalytics(app, db=db, identity_loader=load)`` or, with an app factory,
    ``analytics = FlowpilotAnalytics()`` then ``analytics.init_app(app, db=db, identity_loader=load)``.
    Arguments given to ``init_app`` win over those given to the constructor.
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy | None = None,
                 identity_loader: IdentityLoader | None = None, limiter: Limiter | None = None,
                 clock: Clock | None = None) -> None:
        self.db = db
        self.identity_loader = identity_loader
        self.limiter = limiter
        self.clock = clock
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, db: SQLAlchemy | None = None, identity_loader: IdentityLoader | None = None,
                 limiter: Limiter | None = None, clock: Clock | None = None) -> None:
        """Register the plugin on ``app``: settings, the plugin's table in ``db.metadata``, the blueprint.

        :param db: the host's Flask-SQLAlchemy instance; the plugin never makes its own engine.
        :param identity_loader: called inside each request; returns an object with ``user_id``,
            ``account_id`` and ``role`` (e.g. :class:`~flowpilot_analytics.Identity`) or ``None``.
        :param limiter: the host's own ``flask_limiter.Limiter``, whose storage then holds the
            plugin's limits too; by default the plugin keeps its own, apart from the host's.
        :param clock: returns "now" as an aware datetime; for tests and replays.
        :raises RuntimeError: if the plugin is already registered on ``app``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flowpilot_analytics is already registered on this app; call init_app once per app.")
        db = db or self.db
        identity_loader = identity_loader or self.identity_loader
        if db is None:
            raise TypeError("init_app needs db=, the host's Flask-SQLAlchemy instance")
        if identity_loader is None:
            raise TypeError("init_app needs identity_loader=, a callable returning the caller or None")
        cfg.apply_defaults(app.config)
        cfg.validate(app.config)

        from .routes import create_blueprint

        state = AnalyticsState(self, app, db, identity_loader, clock or self.clock or utc_now,
                               limiter or self.limiter)
        app.extensions[EXTENSION_KEY] = state
        app.register_blueprint(create_blueprint(), url_prefix=app.config[cfg.URL_PREFIX])

    def wrap_psa_service(self, service: t.Any, *, methods: t.Mapping[str, str] | None = None) -> t.Any:
        """Wrap, in place, a PSA documentation service (module or object) so each successful push is recorded.

        ``methods`` maps activity type to function name; by default the current app's
        ``FLOWPILOT_ANALYTICS_PSA_SERVICE_METHODS`` (``push_note`` and ``push_time_entry``). Wrapping
        twice records once. Returns ``service``.
        """
        if methods is None:
            methods = cfg.DEFAULT_PSA_SERVICE_METHODS
            if has_app_context():
                methods = current_app.config.get(cfg.PSA_SERVICE_METHODS, methods)
        return hook.wrap_service(service, methods)

    def psa_activity(self, activity_type: str, extract: hook.Extract | None = None
                     ) -> t.Callable[[t.Callable[..., t.Any]], t.Callable[..., t.Any]]:
        """Decorator for push functions of other shapes: ``@analytics.psa_activity("note_posted", extract=f)``.

        ``extract(args, kwargs, result)`` returns a mapping with ``account_id`` (required),
        ``session_id``, ``psa_ticket_id``, ``external_id`` and ``minutes``.
        """
        return hook.psa_activity(activity_type, extract)

    def reset_rate_limit(self, account_id: t.Any, user_id: t.Any, route: str = "psa_metrics") -> None:
        """Give one user their whole budget back on ``route`` in the current app (support tool, tests)."""
        current_state().limits.reset(route, account_id, user_id)
