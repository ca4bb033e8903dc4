"""The :class:`FlowpilotAnalytics` extension object: the composition root, imported by nothing but
``__init__``.

``init_app`` builds the app's :class:`~.config.Settings`, its rate limits (from the route
declarations), its :class:`~.state.AnalyticsState` (in ``app.extensions``), the blueprint with its
error handlers and commands, and registers it.
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from . import hook, reports
from .cli import register_commands
from .config import Settings, apply_defaults
from .identity import AccountId, UserId
from .ratelimit import RouteLimits
from .routes import create_blueprint
from .state import EXTENSION_KEY, AnalyticsState, Clock, IdentityLoader, current_state, utc_now
from .web import register_error_handlers

if t.TYPE_CHECKING:
    from flask_limiter import Limiter

S = t.TypeVar("S")


class FlowpilotAnalytics:
    """Escalation and PSA analytics for a Flask app that has FlowPilot's tables.

    ``FlowpilotAnalytics(app, db=db, identity_loader=load)`` or, with an app factory,
    ``analytics = FlowpilotAnalytics()`` then ``analytics.init_app(app, db=db,
    identity_loader=load)``. Arguments given to ``init_app`` win over those given to the
    constructor.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy | None = None,
        identity_loader: IdentityLoader | None = None,
        limiter: Limiter | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.identity_loader = identity_loader
        self.limiter = limiter
        self.clock = clock
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        db: SQLAlchemy | None = None,
        identity_loader: IdentityLoader | None = None,
        limiter: Limiter | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Register the plugin on ``app``: settings, the plugin's table in ``db.metadata``, the
        blueprint.

        :param db: the host's Flask-SQLAlchemy instance; the plugin never makes its own engine.
        :param identity_loader: called inside each request; returns an object with ``user_id``,
            ``account_id`` and ``role`` (e.g. :class:`~flowpilot_analytics.Identity`) or ``None``.
        :param limiter: the host's own ``flask_limiter.Limiter``, whose storage then holds the
            plugin's limits too; by default the plugin keeps its own, apart from the host's.
        :param clock: returns "now" as an aware datetime; for tests and replays.
        :raises RuntimeError: if the plugin is already registered on ``app``.
        :raises ValueError: if a setting is invalid or removed (the message names the key), or
            ``FLOWPILOT_ANALYTICS_LIMITS`` names a limit key no report route declares.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flowpilot_analytics is already registered on this app; call init_app once per app."
            )
        db = db or self.db
        identity_loader = identity_loader or self.identity_loader
        if db is None:
            raise TypeError("init_app needs db=, the host's Flask-SQLAlchemy instance")
        if identity_loader is None:
            raise TypeError(
                "init_app needs identity_loader=, a callable returning the caller or None"
            )
        apply_defaults(app.config)
        settings = Settings.from_config(app.config, app.instance_path)
        limits = RouteLimits(
            route_limits(settings.limits), settings.ratelimit_storage_uri, limiter or self.limiter
        )
        state = AnalyticsState(
            settings,
            db=db,
            identity_loader=identity_loader,
            clock=clock or self.clock or utc_now,
            limits=limits,
            database_uri=_database_uri(app.config, settings.bind),
        )
        blueprint = create_blueprint(state)
        register_error_handlers(blueprint)
        register_commands(blueprint, state)
        app.extensions[EXTENSION_KEY] = state
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)

    def wrap_psa_service(
        self,
        service: S,
        *,
        methods: Mapping[str, str] | None = None,
        account_of: hook.AccountOf | None = None,
    ) -> S:
        """Wrap, in place, a PSA documentation service (module or object) so each successful push is
        recorded.

        ``methods`` maps activity type to function name (default ``push_note`` and
        ``push_time_entry``). ``account_of(session)`` names the pushed session's account when the
        object has none loaded and no request is being served (a background job under row-level
        security). Wrapping twice records once. Returns ``service``.
        """
        hook.wrap_service(service, methods or hook.DEFAULT_METHODS, account_of)
        return service

    def psa_activity(
        self, activity_type: str, extract: hook.Extract | None = None
    ) -> t.Callable[[t.Callable[..., t.Any]], t.Callable[..., t.Any]]:
        """Decorator for push functions of other shapes: ``@analytics.psa_activity("note_posted",
        extract=f)``.

        ``extract(args, kwargs, result)`` returns a mapping with ``account_id`` (required),
        ``session_id``, ``psa_ticket_id``, ``external_id`` and ``minutes``.
        """
        return hook.psa_activity(activity_type, extract)

    def reset_rate_limit(
        self, account_id: AccountId, user_id: UserId, route: str = "psa_metrics"
    ) -> None:
        """Give one user their whole budget back on the route whose endpoint is ``route`` in the
        current app (support tool, tests)."""
        current_state().limits.reset(route, account_id, user_id)


def route_limits(overrides: Mapping[str, str]) -> dict[str, str]:
    """Each report route's limit by endpoint: the host's for its limit key
    (``FLOWPILOT_ANALYTICS_LIMITS``), else its declared default.

    :raises ValueError: for a key no route declares, naming the known ones.
    """
    known = sorted({route.limit[0] for route in reports.REPORT_ROUTES})
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"FLOWPILOT_ANALYTICS_LIMITS has unknown keys {unknown}; known: {known}")
    return {route.endpoint: overrides.get(*route.limit) for route in reports.REPORT_ROUTES}


def _database_uri(config: Mapping[str, object], bind: str | None) -> str:
    """The URI analytics reads from, as configured (part of the cache namespace)."""
    database = config.get("SQLALCHEMY_DATABASE_URI")
    binds = config.get("SQLALCHEMY_BINDS")
    if bind and isinstance(binds, Mapping):
        database = binds.get(bind)
    if isinstance(database, Mapping):
        database = database.get("url")
    return str(database)
