"""Fixtures: a fresh host app per test, on SQLite and on PostgreSQL (a database made for this run)."""

from __future__ import annotations

import os
import typing as t
import uuid

import pytest
import sqlalchemy as sa

from . import host

PG_ADMIN_URL = os.environ.get("FLOWPILOT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FLOWPILOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = [b for b in os.environ.get("FLOWPILOT_TEST_DATABASES", "sqlite,sqlite-text,postgresql").split(",") if b]
#: Extra settings per backend: ``sqlite`` reads ISO text with offsets (julianday), ``sqlite-text`` is the
#: default (SQLAlchemy's plain UTC text, compared as text).
BACKEND_CONFIG: dict[str, dict[str, t.Any]] = {"sqlite": {"FLOWPILOT_ANALYTICS_SQLITE_TEXT_OFFSETS": True}}


def _unavailable(what: str, exc: BaseException) -> t.NoReturn:
    """Locally a missing service skips; in CI it fails, so a green run always means both databases ran."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but unreachable: {exc}")
    pytest.skip(f"{what} unreachable: {exc}")


@pytest.fixture(scope="session")
def postgres_database() -> t.Iterator[str]:
    """A throwaway PostgreSQL database for this test run, dropped at the end."""
    name = f"fpa_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable("PostgreSQL", exc)
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test runs once per database backend."""
    return t.cast(str, request.param)


@pytest.fixture
def database_uri(backend: str, request: pytest.FixtureRequest, tmp_path: t.Any) -> str:
    if backend.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'host.db'}"
    return t.cast(str, request.getfixturevalue("postgres_database"))


@pytest.fixture
def backend_config(backend: str) -> dict[str, t.Any]:
    return dict(BACKEND_CONFIG.get(backend, {}))


@pytest.fixture
def app_config() -> dict[str, t.Any]:
    """Extra Flask config for the test's app; override in a test module or with indirect params."""
    return {}


@pytest.fixture
def app(database_uri: str, backend_config: dict[str, t.Any], app_config: dict[str, t.Any],
        tmp_path: t.Any) -> t.Iterator[t.Any]:
    """A fresh host app with empty tables; everything is dropped afterwards."""
    app = host.create_app(database_uri, **{"FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH": str(tmp_path / "dead.jsonl"),
                                           **backend_config, **app_config})
    with app.app_context():
        host.db.drop_all(bind_key=None)
        host.db.create_all(bind_key=None)
    yield app
    with app.app_context():
        host.db.session.remove()
        host.db.drop_all(bind_key=None)
        for engine in host.db.engines.values():
            engine.dispose()


@pytest.fixture
def make_app(database_uri: str, backend_config: dict[str, t.Any],
             tmp_path: t.Any) -> t.Iterator[t.Callable[..., t.Any]]:
    """Build more host apps in one test (bare ``Flask`` ones are passed in); their engines are disposed after."""
    made: list[t.Any] = []

    def make(existing: t.Any = None, **config: t.Any) -> t.Any:
        if existing is None:
            existing = host.create_app(database_uri, **{
                "FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH": str(tmp_path / f"dead{len(made)}.jsonl"),
                **backend_config, **config})
        made.append(existing)
        return made[-1]

    yield make
    for extra in made:
        if "sqlalchemy" in extra.extensions:
            with extra.app_context():
                for engine in host.db.engines.values():
                    engine.dispose()


@pytest.fixture
def redis_url() -> str:
    """The shared test Redis (database 15); tests use keys no other run uses and clean up after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        _unavailable("Redis", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def dialect(app: t.Any) -> str:
    with app.app_context():
        return t.cast(str, host.db.engine.dialect.name)


DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "demo")


def load_demo_module(name: str) -> t.Any:
    """A module of the demo host (``examples/demo/<name>.py``), which is not an installed package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"flowpilot_demo_{name}", os.path.join(DEMO_DIR, f"{name}.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo(tmp_path: t.Any) -> t.Iterator[t.Any]:
    """The demo host app, created and seeded in a temporary SQLite file."""
    module = load_demo_module("app")
    app = module.create_app(f"sqlite:///{tmp_path / 'demo.sqlite'}")
    yield app
    with app.app_context():
        module.db.engine.dispose()


def as_user(account: int, role: str = "engineer", user: int = 1) -> dict[str, str]:
    """Headers the test host's identity loader reads."""
    return {"X-Account": str(account), "X-Role": role, "X-User": str(user)}
