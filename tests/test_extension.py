"""Registration contract, table mapping, time zones, errors: the host integration, end to end."""

from __future__ import annotations

import logging
import types
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from flask import Flask, got_request_exception

from flowpilot_analytics import FlowpilotAnalytics, Identity, registration

from . import factories as f
from . import host
from .fake_psa import FakePsaService
from .helpers import ESCALATIONS, PSA, as_user
from .host import NOW, db

URL = ESCALATIONS


def test_double_init_app_is_refused(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already registered"):
        FlowpilotAnalytics().init_app(app, db=db, identity_loader=host.load_identity)


def test_init_app_needs_db_and_loader() -> None:
    with pytest.raises(TypeError, match="db="):
        FlowpilotAnalytics().init_app(Flask("a"), identity_loader=host.load_identity)
    with pytest.raises(TypeError, match="identity_loader="):
        FlowpilotAnalytics().init_app(Flask("b"), db=db)


def test_constructor_form_registers_too(database_uri: str, make_app: t.Any) -> None:
    app = make_app(Flask("ctor"))
    app.config.update(SQLALCHEMY_DATABASE_URI=database_uri, SECRET_KEY="s")
    db.init_app(app)
    analytics = FlowpilotAnalytics(app, db=db, identity_loader=lambda: Identity(1, 1, "admin"))
    assert registration(app).db is db and analytics.db is db
    assert "flowpilot_analytics.escalations" in app.view_functions


def test_two_apps_in_one_process_keep_their_own_settings(make_app: t.Any, app: Flask) -> None:
    other = make_app(
        FLOWPILOT_ANALYTICS_URL_PREFIX="/reports",
        FLOWPILOT_ANALYTICS_ROUTE_ROLES={"escalations": "viewer"},
        clock=lambda: NOW + timedelta(days=60),
    )
    with app.app_context():
        f.escalation(1, f.at(days=1), 42)
        f.commit()
    first = app.test_client().get(URL, headers=as_user(1, "viewer"))
    assert first.status_code == 403
    assert other.test_client().get(URL, headers=as_user(1, "viewer")).status_code == 404
    second = other.test_client().get(
        "/reports/analytics/flowpilot/escalations", headers=as_user(1, "viewer")
    )
    assert second.status_code == 200
    assert second.get_json()["n_handoffs_claimed"] == 0  # its clock is 60 days later
    third = app.test_client().get(URL, headers=as_user(1, "engineer"))
    assert third.get_json()["median_seconds"] == 42.0


def test_an_in_memory_sqlite_host_keeps_its_work_when_the_plugin_reads(make_app: t.Any) -> None:
    app = make_app(host.create_app("sqlite://"))
    with app.app_context():
        db.create_all(bind_key=None)

    @app.before_request
    def audit() -> None:  # the host's own work in the request, not committed yet
        db.session.add(host.AISession(account_id=1, created_at=f.at(), title="audit"))
        db.session.flush()

    client = app.test_client()
    assert client.get(ESCALATIONS, headers=as_user(1)).status_code == 200
    with app.app_context():
        db.session.commit()
        assert (
            db.session.scalar(sa.select(sa.func.count()).select_from(host.AISession)) == 0
        )  # per request
    response = client.get(PSA, headers=as_user(1, "admin"))
    assert (
        response.status_code == 200 and response.get_json()["funnel"]["sessions"] == 1
    )  # its own row, seen


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_ROLES": ["guest", "tech", "lead"],
            "FLOWPILOT_ANALYTICS_ROUTE_ROLES": {"escalations": "lead", "psa_metrics": "lead"},
        }
    ],
)
def test_custom_role_ladder(client: t.Any) -> None:
    assert client.get(URL, headers=as_user(1, "tech")).status_code == 403
    assert client.get(URL, headers=as_user(1, "lead")).status_code == 200
    assert (
        client.get(URL, headers=as_user(1, "admin")).get_json()["error"]["code"] == "unknown_role"
    )


def test_host_error_pages_are_untouched(client: t.Any) -> None:
    missing = client.get("/host/nothing-here")
    assert missing.status_code == 404
    assert missing.mimetype == "text/html"
    assert client.get("/host/ping").get_json() == {"pong": "yes"}


def test_database_failure_is_503_json_and_logged(
    app: Flask, client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.get(URL, headers=as_user(1)).status_code == 200

    def refuse(*args: t.Any) -> None:
        raise sa.exc.OperationalError(
            "SELECT", {}, ConnectionRefusedError("server closed the connection")
        )

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", refuse)
    try:
        with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
            response = client.get(URL, headers=as_user(1))
    finally:
        sa.event.remove(engine, "before_cursor_execute", refuse)
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["code"] == "database_unavailable"
    assert "Traceback" not in response.get_data(as_text=True)
    assert "session_handoffs" not in response.get_data(as_text=True)
    assert any(r.exc_info for r in caplog.records if r.name.startswith("flowpilot_analytics"))
    assert client.get("/host/ping").status_code == 200  # the host's session is still usable


def test_missing_host_table_is_schema_missing_then_recovers(client: t.Any) -> None:
    db.session.rollback()  # end the test's request-long transaction before DDL
    host.SessionHandoff.__table__.drop(db.engine)
    response = client.get(URL, headers=as_user(1))
    assert response.status_code == 500
    error = response.get_json()["error"]
    assert error["code"] == "schema_missing" and error["details"]["table"] == "session_handoffs"
    assert "flask flowpilot-analytics doctor" in error["message"]
    db.session.rollback()
    host.SessionHandoff.__table__.create(db.engine)
    assert client.get(URL, headers=as_user(1)).status_code == 200


def test_errors_reach_the_hosts_error_tracking(app: Flask, client: t.Any) -> None:
    caught: list[BaseException] = []

    def tracker(sender: t.Any, exception: BaseException, **extra: t.Any) -> None:
        caught.append(exception)

    with got_request_exception.connected_to(tracker, app):
        db.session.rollback()
        host.SessionHandoff.__table__.drop(db.engine)
        try:
            missing = client.get(ESCALATIONS + "?period=7d", headers=as_user(1))
        finally:
            db.session.rollback()
            host.SessionHandoff.__table__.create(db.engine)
    assert missing.status_code == 500 and missing.get_json()["error"]["code"] == "schema_missing"
    assert len(caught) == 1 and isinstance(caught[0], sa.exc.SQLAlchemyError)


def test_a_missing_plugin_table_names_it(client: t.Any) -> None:
    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)
    try:
        response = client.get(PSA, headers=as_user(1, "admin"))
    finally:
        db.session.rollback()
        db.metadata.tables["psa_activity_logs"].create(db.engine)
    error = response.get_json()["error"]
    assert response.status_code == 500 and error["code"] == "schema_missing"
    assert error["details"]["table"] == "psa_activity_logs"


def test_an_unexpected_error_is_reported_and_answered_in_json(make_app: t.Any) -> None:
    def broken() -> None:
        raise KeyError("identity service bug")

    app = make_app(identity_loader=broken)
    caught: list[BaseException] = []
    with got_request_exception.connected_to(
        lambda sender, exception, **kw: caught.append(exception), app
    ):
        response = app.test_client().get(ESCALATIONS)
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert [type(e) for e in caught] == [KeyError]


def test_loader_returning_partial_identity_is_401(database_uri: str, make_app: t.Any) -> None:
    app = make_app(Flask("partial"))
    app.config.update(SQLALCHEMY_DATABASE_URI=database_uri, SECRET_KEY="s")
    db.init_app(app)
    FlowpilotAnalytics(app, db=db, identity_loader=lambda: Identity(1, None, "admin"))
    assert app.test_client().get(URL).status_code == 401


# -- host tables named differently, and stored with time zones ------------------------------------

ALT = sa.MetaData()
AWARE = sa.DateTime(timezone=True)
ALT_SESSIONS = sa.Table(
    "tz_sessions",
    ALT,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant", sa.Integer),
    sa.Column("opened", AWARE),
    sa.Column("psa_ticket_id", sa.String(64)),
)
ALT_STEPS = sa.Table(
    "tz_steps",
    ALT,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant", sa.Integer),
    sa.Column("session_id", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=False)),
)
ALT_HANDOFFS = sa.Table(
    "tz_handoffs",
    ALT,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant", sa.Integer),
    sa.Column("session_id", sa.Integer),
    sa.Column("created_at", AWARE),
    sa.Column("accepted_at", AWARE),
)
MAPPED = {
    "FLOWPILOT_ANALYTICS_TABLES": {
        "sessions": "tz_sessions",
        "steps": "tz_steps",
        "handoffs": "tz_handoffs",
    },
    "FLOWPILOT_ANALYTICS_COLUMNS": {
        "sessions.account_id": "tenant",
        "sessions.created_at": "opened",
        "steps.account_id": "tenant",
        "handoffs.account_id": "tenant",
        "handoffs.claimed_at": "accepted_at",
    },
}


def _stamp(dialect: str, moment: datetime) -> t.Any:
    """How a host stores a moment: aware values on PostgreSQL; SQLAlchemy's DateTime on SQLite
    writes UTC."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if dialect == "sqlite" else moment


@pytest.mark.parametrize("app_config", [MAPPED])
def test_mapped_tables_and_aware_timestamps(app: Flask, client: t.Any, dialect: str) -> None:
    ALT.create_all(db.engine)
    try:
        plus2 = timezone(timedelta(hours=2))
        claimed = (NOW - timedelta(days=1)).astimezone(plus2)
        edge = (NOW - timedelta(days=30, minutes=30)).astimezone(
            plus2
        )  # 30 min before window start
        with db.engine.begin() as conn:
            if dialect == "postgresql":
                conn.exec_driver_sql("SET TIME ZONE 'America/New_York'")
            conn.execute(
                ALT_SESSIONS.insert(),
                [
                    {"id": 1, "tenant": 7, "opened": _stamp(dialect, claimed)},
                    {"id": 2, "tenant": 7, "opened": _stamp(dialect, edge)},
                ],
            )
            conn.execute(
                ALT_HANDOFFS.insert(),
                [
                    {
                        "id": 1,
                        "tenant": 7,
                        "session_id": 1,
                        "created_at": _stamp(dialect, claimed),
                        "accepted_at": _stamp(dialect, claimed),
                    },
                    {
                        "id": 2,
                        "tenant": 7,
                        "session_id": 2,
                        "created_at": _stamp(dialect, edge),
                        "accepted_at": _stamp(dialect, edge),
                    },
                ],
            )
            # steps are naive UTC; the first one is 90 s after the claim, the other precedes it
            conn.execute(
                ALT_STEPS.insert(),
                [
                    {
                        "tenant": 7,
                        "session_id": 1,
                        "created_at": (claimed + timedelta(seconds=90))
                        .astimezone(timezone.utc)
                        .replace(tzinfo=None),
                    },
                    {
                        "tenant": 7,
                        "session_id": 1,
                        "created_at": (claimed - timedelta(seconds=1))
                        .astimezone(timezone.utc)
                        .replace(tzinfo=None),
                    },
                ],
            )
        body = client.get(URL, headers=as_user(7)).get_json()
        assert body["n_handoffs_claimed"] == 1
        assert body["n_handoffs_with_action"] == 1
        assert body["median_seconds"] == pytest.approx(90.0)
        # a mapped sessions table without a client column: the error names the host's table
        for query in ("?client=1", "?group_by=client"):
            error = client.get(URL + query, headers=as_user(7)).get_json()["error"]
            assert "Add tz_sessions.client_id" in error["message"], query
    finally:
        db.session.remove()
        ALT.drop_all(db.engine)


@pytest.mark.parametrize("aware", [True, False])
def test_a_host_declared_activity_table_is_read_and_written_in_utc(
    database_uri: str, backend: str, aware: bool
) -> None:
    """The host declares psa_activity_logs itself (here in its own metadata, with its own timestamp
    type)."""
    if backend == "postgresql":
        options = {
            "connect_args": {"options": "-c timezone=America/New_York"}
        }  # a server zone that is not UTC
    else:
        options = {}
    metadata = sa.MetaData()
    sa.Table(
        "psa_activity_logs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer),
        sa.Column("session_id", sa.Integer),
        sa.Column("activity_type", sa.String(64)),
        sa.Column("psa_ticket_id", sa.String(64)),
        sa.Column("external_id", sa.String(64)),
        sa.Column("minutes", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=aware)),
        sa.Column("idempotency_key", sa.String(36), unique=True),
        sa.Column("user_id", sa.String(64)),
        sa.Column("billable", sa.Boolean),
    )
    app = Flask(f"declared_{aware}")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri,
        SQLALCHEMY_ENGINE_OPTIONS=options,
        FLOWPILOT_ANALYTICS_CACHE_TTL=0,
        SECRET_KEY="s",
    )
    own = type(db)(metadata=metadata)
    own.init_app(app)
    late = NOW.replace(hour=23, minute=30) - timedelta(
        days=5
    )  # 23:30 UTC is the next day in Berlin
    analytics = FlowpilotAnalytics(
        app, db=own, identity_loader=host.load_identity, clock=lambda: late
    )
    assert registration(app).activity_table is metadata.tables["psa_activity_logs"]
    with app.app_context():
        own.create_all()
        host_tables = [
            host.AISession.__table__,
            host.AISessionStep.__table__,
            host.SessionHandoff.__table__,
        ]
        for table in host_tables:
            table.create(own.engine, checkfirst=True)
        try:
            service = analytics.wrap_psa_service(FakePsaService())
            service.push_note(types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "x")
            with own.engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT created_at FROM psa_activity_logs")).scalar()
            if backend == "postgresql" and not aware:
                assert stored == late.replace(
                    tzinfo=None
                )  # naive column: UTC wall time, not New York's
            body = (
                app.test_client()
                .get(PSA + "?period=7d&tz=Europe/Berlin", headers=as_user(1, "admin"))
                .get_json()
            )
            days = {row["date"]: row["notes_posted"] for row in body["daily_trend"]}
            assert days[(late + timedelta(days=1)).date().isoformat()] == 1
        finally:
            own.session.remove()
            own.drop_all()
            for table in reversed(host_tables):
                table.drop(own.engine, checkfirst=True)
            own.engine.dispose()


def test_a_host_declared_activity_table_without_the_idempotency_key_fails_at_startup() -> None:
    metadata = sa.MetaData()
    sa.Table(
        "psa_activity_logs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer),
        sa.Column("created_at", sa.DateTime),
    )
    app = Flask("declared_old")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", SECRET_KEY="s")
    own = type(db)(metadata=metadata)
    own.init_app(app)
    with pytest.raises(ValueError, match="idempotency_key, user_id, billable") as raised:
        FlowpilotAnalytics(app, db=own, identity_loader=host.load_identity)
    assert "Column('billable', Boolean)" in str(raised.value) and "doctor" in str(raised.value)


def test_a_host_declared_activity_table_without_user_id_and_billable_fails_at_startup() -> None:
    metadata = sa.MetaData()
    sa.Table(
        "psa_activity_logs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer),
        sa.Column("created_at", sa.DateTime),
        sa.Column("idempotency_key", sa.String(36), unique=True),
    )
    app = Flask("declared_0_2_dev")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", SECRET_KEY="s")
    own = type(db)(metadata=metadata)
    own.init_app(app)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) user_id, billable, ") as raised:
        FlowpilotAnalytics(app, db=own, identity_loader=host.load_identity)
    assert "Column('user_id', String(255))" in str(raised.value)


# -- storage URIs the plugin cannot use stop init_app ----------------------------------------------

CACHE_URI = "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI"
LIMIT_URI = "FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI"
CACHE_SUPPORTED = (
    "memory://, redis://, rediss://, redis+unix://, redis+sentinel://, redis+cluster://"
)


def _refusal(**config: t.Any) -> str:
    app = Flask("refused")
    app.config.update(SECRET_KEY="s", **config)
    with pytest.raises(ValueError) as refused:
        FlowpilotAnalytics().init_app(app, db=db, identity_loader=host.load_identity)
    assert "flowpilot_analytics" not in app.extensions
    return str(refused.value)


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        (
            "memcached://127.0.0.1:11211",
            "the scheme memcached://, which the cache does not support",
        ),
        ("redis:/typo", "is not a URI of the form scheme://"),
        ("foo://", "the scheme foo://"),
        ("REDIS://127.0.0.1:6379/0", "the scheme REDIS://"),
        ("async+redis://127.0.0.1:6379/0", "the scheme async+redis://"),
    ],
)
def test_a_cache_storage_uri_of_another_scheme_stops_init_app(uri: str, says: str) -> None:
    """Never again a silent per-process cache: the setting, the scheme given and the supported
    ones."""
    message = _refusal(**{CACHE_URI: uri})
    assert (
        message.startswith(CACHE_URI)
        and says in message
        and f"supported: {CACHE_SUPPORTED}" in message
    )


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("memory://elsewhere", "memory:// takes nothing after it"),
        ("redis://127.0.0.1:abc/0", "port"),
        ("redis://[::1/0", "host or port"),
        ("redis://127.0.0.1:6379/cache", "database number"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "query option"),
        ("redis+unix://", "socket's path"),
        ("redis+sentinel://127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1:26379/a/b", "service name"),
        ("redis+sentinel://127.0.0.1/mymaster", "host:port"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1", "host:port"),
        ("redis+cluster://127.0.0.1:7000/0", "takes no path"),
        ("redis+cluster://127.0.0.1:7000?ssl=true", "takes no query options"),
    ],
)
@pytest.mark.parametrize("key", [CACHE_URI, LIMIT_URI])
def test_a_storage_uri_that_does_not_read_stops_init_app(key: str, uri: str, says: str) -> None:
    """The cache and the limiter read a Redis URI alike, and neither quotes it (it may hold a
    password)."""
    secret_uri = (
        uri.replace("://", "://:Pw-s3cret@", 1) if "redis" in uri and "unix" not in uri else uri
    )
    message = _refusal(**{key: secret_uri})
    assert message.startswith(key) and says in message and "s3cret" not in message


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        (
            "foo://h",
            "the scheme foo://, which the rate limiter (the limits package) has no storage for",
        ),
        ("redis:/typo", "is not a URI of the form scheme://"),
        (
            "async+redis://127.0.0.1:6379/0",
            "the scheme async+redis://",
        ),  # the limiter is synchronous
        ("valkey://127.0.0.1:6379/0", "needs the valkey package"),
    ],
)
def test_a_rate_limit_storage_uri_the_limiter_cannot_use_stops_init_app(
    uri: str, says: str
) -> None:
    message = _refusal(**{LIMIT_URI: uri})
    assert message.startswith(LIMIT_URI) and says in message
    if "scheme" in says:
        assert (
            "supported: " in message
            and "redis+sentinel://" in message
            and "memcached://" in message
        )


def test_the_hosts_rate_limit_storage_uri_is_checked_under_its_own_name() -> None:
    message = _refusal(RATELIMIT_STORAGE_URI="redis+sentinel://127.0.0.1:26379")
    assert message.startswith(f"RATELIMIT_STORAGE_URI (the host's, used as {LIMIT_URI} is None)")
    assert "service name" in message


@pytest.mark.parametrize(
    ("uri", "client"), [("memcached://127.0.0.1:11211", "pymemcache"), ("mongodb://h", "pymongo")]
)
def test_a_rate_limit_storage_whose_client_is_missing_stops_init_app(uri: str, client: str) -> None:
    """``limits`` speaks memcached and MongoDB, through clients the plugin does not install: without
    them the limiter could never count there, so the URI is refused rather than counted per
    process."""
    import importlib.util

    if importlib.util.find_spec(client) is not None:
        pytest.skip(f"{client} is installed here: {uri} is usable")
    assert f"needs the {client} package" in _refusal(**{LIMIT_URI: uri})


@pytest.mark.parametrize(
    "uri",
    [
        "memory://",
        "redis://127.0.0.1:6379/0",
        "rediss://:pw@cache.example:6380/1?ssl_cert_reqs=required",
        "redis+unix:///run/redis.sock?db=2",
        "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster",
        "redis+cluster://[::1]:7000,127.0.0.1:7001",
    ],
)
def test_storage_uris_both_can_use_are_accepted(uri: str) -> None:
    """Nothing connects at ``init_app``: a storage that is down is an outage, answered per
    process."""
    app = Flask("accepted")
    app.config.update(SECRET_KEY="s", **{CACHE_URI: uri, LIMIT_URI: uri})
    FlowpilotAnalytics().init_app(app, db=db, identity_loader=host.load_identity)
    settings = registration(app).settings
    assert (settings.cache_storage_uri, settings.ratelimit_storage_uri) == (uri, uri)
