"""``flask flowpilot-analytics doctor`` asks the services the plugin depends on: the databases (the
primary and the read bind) and the storages of the cache and the rate limiter."""

from __future__ import annotations

import socket
import typing as t

import pytest
from flask import Flask
from flask_limiter import Limiter

from flowpilot_analytics import FlowpilotAnalytics
from flowpilot_analytics.storage import redact_uri

from . import host
from .conftest import REDIS_URL
from .host import NOW, db
from .services import free_port

#: A port nothing listens on (taken and let go at collection): connections to it are refused.
CLOSED = free_port()
#: A password no output may show.
PASSWORD = "doctor-pw-5e1c"


def doctor(app: Flask, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor", *args])


def line(output: str, start: str) -> str:
    """The one line of ``output`` starting with ``start``."""
    [found] = [text for text in output.splitlines() if text.startswith(start)]
    return found


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
            "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": REDIS_URL,
            "FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI": REDIS_URL,
        }
    ],
)
def test_storages_and_databases_that_answer_are_ok(app: Flask, redis_url: str) -> None:
    result = doctor(app)
    assert result.exit_code == 0, result.output
    shown = redact_uri(redis_url)  # as the test Redis's URI is given (it may hold a password)
    assert f"ok      cache storage {shown}: answers PING" in result.output
    assert f"ok      rate-limit storage {shown}: answers its health check" in result.output
    assert "reports read it too): answers SELECT 1" in line(result.output, "ok      database ")
    assert "DOWN" not in result.output
    assert "Everything the plugin needs is in place." in result.output


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
            "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": f"redis://:{PASSWORD}@127.0.0.1:{CLOSED}/0",
        }
    ],
)
def test_a_cache_redis_on_a_closed_port_is_down_and_its_password_never_shown(app: Flask) -> None:
    result = doctor(app)
    assert result.exit_code == 1
    down = line(result.output, "DOWN    cache storage ")
    assert down.startswith(f"DOWN    cache storage redis://:***@127.0.0.1:{CLOSED}/0: ")
    assert "answered uncached" in down and "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI" in down
    assert PASSWORD not in result.output
    assert "ok      rate-limit storage memory://" in result.output  # the others are still asked
    assert "ok      no dead letters" in result.output  # ... and the tables and dead letters
    assert "in place" not in result.output


@pytest.mark.parametrize(
    "setting", ["FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI", "RATELIMIT_STORAGE_URI"]
)
def test_a_limits_redis_that_is_down(make_app: t.Any, setting: str) -> None:
    """The plugin's own setting, or the host's it falls back to."""
    app = make_app(**{setting: f"redis://ops:{PASSWORD}@127.0.0.1:{CLOSED}/0"})
    result = doctor(app)
    assert result.exit_code == 1
    down = line(result.output, "DOWN    rate-limit storage ")
    assert down.startswith(f"DOWN    rate-limit storage redis://ops:***@127.0.0.1:{CLOSED}/0: ")
    assert "counted per process" in down and "FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI" in down
    assert PASSWORD not in result.output
    assert "ok      cache storage memory://" in result.output


def test_the_host_limiters_storage_is_asked_too(database_uri: str, make_app: t.Any) -> None:
    app = make_app(Flask("limited_host"))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri,
        RATELIMIT_STORAGE_URI=f"redis://:{PASSWORD}@127.0.0.1:{CLOSED}/0",
        SECRET_KEY="s",
    )
    db.init_app(app)
    limiter = Limiter(key_func=lambda: "host-key", app=app)
    FlowpilotAnalytics(
        app, db=db, identity_loader=host.load_identity, limiter=limiter, clock=lambda: NOW
    )
    result = doctor(app)
    assert result.exit_code == 1
    down = line(result.output, "DOWN    rate-limit storage of the host's Flask-Limiter: ")
    assert "fix the host limiter's storage" in down
    assert PASSWORD not in result.output


@pytest.mark.parametrize(
    "app_config",
    [
        {"SQLALCHEMY_BINDS": {"replica": bind}, "FLOWPILOT_ANALYTICS_BIND": "replica"}
        for bind in (
            f"postgresql+psycopg://reader:{PASSWORD}@127.0.0.1:{CLOSED}/flowpilot",
            "sqlite:////nonexistent-fpa-folder/replica.db",
        )
    ],
    ids=["postgresql-bind", "sqlite-bind"],
)
def test_a_read_bind_that_cannot_connect(app: Flask) -> None:
    """The host's tables live on the bind: they are not checked; the plugin's (primary) are."""
    result = doctor(app)
    assert result.exit_code == 1, result.output
    down = line(result.output, "DOWN    read bind 'replica' ")
    assert "OperationalError" in down and "SQLALCHEMY_BINDS['replica']" in down
    assert PASSWORD not in result.output
    assert "(primary: the hook's writes): answers SELECT 1" in result.output
    assert "SKIPPED the host's tables and indexes" in result.output
    assert "ai_sessions" not in result.output
    assert "ok      psa_activity_logs (idempotency_key, unique)" in result.output


def test_a_database_that_never_answers_is_given_up_at_the_timeout(
    make_app: t.Any, database_uri: str, tmp_path: t.Any
) -> None:
    """A port that takes connections and never answers (a hung or black-holed server): the check
    ends at ``--timeout``; the cache's own socket timeout ends its PING."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        replica = make_app(
            host.create_app(
                database_uri,
                SQLALCHEMY_BINDS={"replica": f"postgresql+psycopg://reader@127.0.0.1:{port}/x"},
                FLOWPILOT_ANALYTICS_BIND="replica",
                FLOWPILOT_ANALYTICS_CACHE_TTL=60,
                FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI=f"redis://127.0.0.1:{port}/0",
                FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(tmp_path / "dead.jsonl"),
            )
        )
        result = doctor(replica, "--timeout", "1")
    assert result.exit_code == 1
    assert "no answer within 1 s" in line(result.output, "DOWN    read bind 'replica' ")
    assert line(result.output, f"DOWN    cache storage redis://127.0.0.1:{port}/0: ")


def test_a_primary_that_cannot_connect(backend: str, make_app: t.Any, tmp_path: t.Any) -> None:
    uri = (
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{CLOSED}/none"
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    )
    app = make_app(
        host.create_app(uri, FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(tmp_path / "dead.jsonl"))
    )
    result = doctor(app)
    assert result.exit_code == 1
    down = line(result.output, "DOWN    database ")
    assert "reports read it too" in down and "SQLALCHEMY_DATABASE_URI" in down
    assert PASSWORD not in result.output
    assert "SKIPPED the host's tables" in result.output
    assert "SKIPPED the plugin's tables" in result.output
    assert "ok      no dead letters" in result.output  # the dead letters are a file


@pytest.mark.parametrize(
    ("app_config", "cache"),
    [
        ({"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}, "in this process, nothing to reach"),
        ({}, "not used, the cache is off (FLOWPILOT_ANALYTICS_CACHE_TTL = 0): not checked"),
    ],
)
def test_in_process_storages_are_not_asked_and_say_so(app: Flask, cache: str) -> None:
    result = doctor(app)
    assert result.exit_code == 0, result.output
    assert cache in line(result.output, "ok      cache storage memory://: ")
    assert "nothing to reach (no network check); each worker counts its own calls" in line(
        result.output, "ok      rate-limit storage memory://: "
    )


def test_the_timeout_must_be_positive(app: Flask) -> None:
    result = doctor(app, "--timeout", "0")
    assert result.exit_code == 2
    assert "--timeout" in result.output
