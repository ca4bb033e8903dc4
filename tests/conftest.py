"""Fixtures: a fresh host app per test, on SQLite and on PostgreSQL (a database made for this
run)."""

from __future__ import annotations

import os
import typing as t

import pytest

from . import host
from .helpers import install_telemetry_sdk, load_demo_module, throwaway_database, unavailable

PG_ADMIN_URL = os.environ.get(
    "FLOWPILOT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FLOWPILOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = [
    b for b in os.environ.get("FLOWPILOT_TEST_DATABASES", "sqlite,postgresql").split(",") if b
]


@pytest.fixture(scope="session")
def postgres_database() -> t.Iterator[str]:
    """A throwaway PostgreSQL database for this test run, dropped at the end."""
    with throwaway_database(PG_ADMIN_URL, "fpa_test") as url:
        yield url


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
def app_config() -> dict[str, t.Any]:
    """Extra Flask config for the test's app; override in a test module or with indirect params."""
    return {}


@pytest.fixture
def app(database_uri: str, app_config: dict[str, t.Any], tmp_path: t.Any) -> t.Iterator[t.Any]:
    """A fresh host app with empty tables; everything is dropped afterwards."""
    app = host.create_app(
        database_uri,
        **{"FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH": str(tmp_path / "dead.jsonl"), **app_config},
    )
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
def make_app(database_uri: str, tmp_path: t.Any) -> t.Iterator[t.Callable[..., t.Any]]:
    """Build more host apps in one test (bare ``Flask`` ones are passed in); their engines are
    disposed after."""
    made: list[t.Any] = []

    def make(existing: t.Any = None, **config: t.Any) -> t.Any:
        if existing is None:
            existing = host.create_app(
                database_uri,
                **{
                    "FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH": str(
                        tmp_path / f"dead{len(made)}.jsonl"
                    ),
                    **config,
                },
            )
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
        unavailable("Redis", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def dialect(app: t.Any) -> str:
    with app.app_context():
        return t.cast(str, host.db.engine.dialect.name)


@pytest.fixture
def demo(tmp_path: t.Any) -> t.Iterator[t.Any]:
    """The demo host app, created and seeded in a temporary SQLite file."""
    module = load_demo_module("app")
    app = module.create_app(f"sqlite:///{tmp_path / 'demo.sqlite'}")
    yield app
    with app.app_context():
        module.db.engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def telemetry_sdk() -> None:
    """The host's OpenTelemetry SDK, set before any app (the demo's included) could set another."""
    install_telemetry_sdk()
