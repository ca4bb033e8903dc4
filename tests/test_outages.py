"""Outages and load: Redis down and back, database down, a failing identity loader, real workers."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
import types
import typing as t
import urllib.error
import urllib.request
import uuid

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import activity_recorded, registration

from . import factories as f
from . import host
from .helpers import (
    DEFAULT_TIMEOUT,
    ESCALATIONS,
    HOOK_BOUND_SECONDS,
    PSA,
    activity_rows,
    as_user,
    replay,
    unavailable,
)
from .host import db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_line(
    process: subprocess.Popen[bytes], needle: str, count: int = 1, timeout: float = 30
) -> None:
    """Read the process's output until ``needle`` has appeared ``count`` times (event-driven,
    bounded).

    Reads the pipe's file descriptor directly: a buffered reader could hold lines that ``select`` no
    longer sees.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    seen, pending, lines = 0, b"", []
    while seen < count:
        ready, _, _ = select.select([fd], [], [], timeout)
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            raise AssertionError(
                f"{needle!r} not seen ({seen}/{count}); output: {b''.join(lines[-20:])!r}"
            )
        pending += chunk
        *complete, pending = pending.split(b"\n")
        lines += complete
        seen += sum(needle.encode() in line for line in complete)


def redis_keys(url: str, pattern: str, delete: bool = False) -> list[bytes]:
    """Keys matching ``pattern`` (deleted when asked), with a client that is closed afterwards."""
    client = redis.Redis.from_url(url)
    try:
        keys = t.cast(list[bytes], client.keys(pattern))
        if delete and keys:
            client.delete(*keys)
        return keys
    finally:
        client.close()


class RedisServer:
    """A private redis-server on a free port, stopped and restarted by the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_for_line(self.process, "Ready to accept connections")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None


@pytest.fixture
def redis_server() -> t.Iterator[RedisServer]:
    try:
        server = RedisServer()
        server.start()
    except (OSError, AssertionError) as exc:
        unavailable("redis-server", exc)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0",
            "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": "redis://127.0.0.1:1/0",
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
        }
    ],
)
def test_unreachable_redis_limits_per_process(
    client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        codes = [client.get(PSA, headers=as_user(1, "admin")).status_code for _ in range(16)]
    assert codes == [200] * 15 + [429]
    messages = [r.getMessage() for r in caplog.records]
    assert any("limiting per process" in m for m in messages)
    assert any("cache unavailable" in m for m in messages)


def test_redis_stopped_then_back(
    make_app: t.Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI=redis_server.url)
    with app.app_context():
        db.create_all(bind_key=None)
    registration(app).limits.backoff.interval = 0  # try Redis on every call
    client = app.test_client()
    key_pattern = "*LIMITER/flowpilot_analytics/*"
    assert [client.get(PSA, headers=as_user(1, "admin")).status_code for _ in range(3)] == [200] * 3
    assert redis_keys(redis_server.url, key_pattern)
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        during = [client.get(PSA, headers=as_user(1, "admin")).status_code for _ in range(16)]
    assert during == [200] * 15 + [429]  # the per-process fallback keeps the limit
    assert any("unavailable" in r.getMessage() for r in caplog.records)
    redis_server.start()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        assert client.get(PSA, headers=as_user(1, "admin")).status_code == 200
    assert any("is back" in r.getMessage() for r in caplog.records)
    assert redis_keys(redis_server.url, key_pattern)  # counting in Redis again


def test_failing_identity_loader_is_a_json_500_without_internals(
    database_uri: str, make_app: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_loader() -> None:
        raise KeyError("session secret sauce")

    app = make_app(host.create_app(database_uri, identity_loader=broken_loader))
    with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
        response = app.test_client().get(ESCALATIONS)
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {
            "code": "internal_error",
            "message": "The analytics service failed unexpectedly.",
            "details": {},
        }
    }
    assert "secret sauce" not in response.get_data(as_text=True)
    assert any(r.exc_info for r in caplog.records)


def test_unreachable_database_is_503(dialect: str, make_app: t.Any, tmp_path: t.Any) -> None:
    uri = (
        "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"
        if dialect == "postgresql"
        else f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    )
    app = make_app(host.create_app(uri))
    response = app.test_client().get(ESCALATIONS, headers=as_user(1))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_real_workers_share_one_budget(
    app: t.Any, database_uri: str, redis_url: str, tmp_path: t.Any
) -> None:
    """Three gunicorn workers on 127.0.0.1, 30 concurrent calls by one user: exactly 15 pass."""
    port = free_port()
    env = {
        **os.environ,
        "FPA_TEST_DATABASE_URI": database_uri,
        "FPA_TEST_REDIS_URL": redis_url,
        "FPA_TEST_DEAD_LETTERS": str(tmp_path / "dead.jsonl"),
    }
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "3",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "info",
            "tests.wsgi_host:create_app()",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    user = uuid.uuid4().int % 10**9
    try:
        wait_for_line(process, "Booting worker", count=3)

        def call(_: int) -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{PSA}", headers=as_user(1, "admin", user)
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            codes = list(pool.map(call, range(30)))
        print(
            f"\n3 workers, 30 concurrent calls: {codes.count(200)} x 200, {codes.count(429)} x 429"
        )
        assert (codes.count(200), codes.count(429)) == (15, 15)
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()
        redis_keys(redis_url, f"*LIMITER/flowpilot_analytics/*/{user}/*", delete=True)


# -- the hook's deadline: a locked, hung or unreachable database never stalls a push ---------------


@pytest.mark.parametrize("app_config", [DEFAULT_TIMEOUT])
def test_a_locked_activity_table_delays_a_push_by_the_hook_timeout_at_most(
    app: Flask, dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    psa = app.extensions["test_psa"]
    db.session.rollback()
    locker = db.engine.connect()
    if dialect == "postgresql":
        locker.exec_driver_sql("BEGIN")
        locker.exec_driver_sql("LOCK TABLE psa_activity_logs IN ACCESS EXCLUSIVE MODE")
    else:
        locker.connection.dbapi_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
    try:
        with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
            started = time.perf_counter()
            result = psa.push_note(
                types.SimpleNamespace(id=9, account_id=1, psa_ticket_id="T"), "x"
            )
            elapsed = time.perf_counter() - started
    finally:
        if dialect == "postgresql":
            locker.rollback()
        else:
            locker.connection.dbapi_connection.rollback()
        locker.close()
    print(
        f"\npush with {dialect} activity table locked: returned in {elapsed * 1000:.0f} ms "
        "(timeout 250 ms)"
    )
    assert result == {"id": "1000", "text": "x"}
    assert elapsed < HOOK_BOUND_SECONDS  # the figure is printed above
    assert any("kept as a dead letter" in r.getMessage() for r in caplog.records)
    assert [e["external_id"] for e in registration(app).dead_letters.pending()] == ["1000"]
    # the replay writes it, or finds it written by a write that got the lock just after the deadline
    assert "still failing 0" in replay(app).output and len(activity_rows()) == 1


@pytest.mark.parametrize("app_config", [DEFAULT_TIMEOUT])
def test_a_hung_database_is_cut_off_at_the_deadline_and_its_late_write_is_not_doubled(
    app: Flask,
) -> None:
    psa = app.extensions["test_psa"]
    release, committed, signalled = threading.Event(), threading.Event(), threading.Event()

    def hang(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "INSERT INTO psa_activity_logs" in statement:
            release.wait(30)

    def done(conn: t.Any) -> None:
        committed.set()

    def announced(sender: t.Any, activity: t.Any) -> None:
        signalled.set()

    db.session.rollback()
    sa.event.listen(db.engine, "before_cursor_execute", hang)
    sa.event.listen(db.engine, "commit", done)
    activity_recorded.connect(announced, app)
    try:
        started = time.perf_counter()
        assert (
            psa.push_note(types.SimpleNamespace(id=9, account_id=1, psa_ticket_id="T"), "x")["id"]
            == "1000"
        )
        elapsed = time.perf_counter() - started
        assert len(registration(app).dead_letters.pending()) == 1
        release.set()
        assert committed.wait(30)  # the late write lands after all
    finally:
        release.set()
        sa.event.remove(db.engine, "before_cursor_execute", hang)
        sa.event.remove(db.engine, "commit", done)
    assert signalled.wait(30)  # announced once it landed
    activity_recorded.disconnect(announced, app)
    assert elapsed < HOOK_BOUND_SECONDS
    assert signalled.wait(30)  # announced once it landed
    assert registration(app).dead_letters.pending() == []  # the late write settled its dead letter
    assert (
        "written 0" in replay(app).output and "still failing 0" in replay(app).output
    )  # not doubled
    assert len(activity_rows()) == 1


@pytest.mark.parametrize("app_config", [DEFAULT_TIMEOUT])
def test_an_expired_orm_session_and_a_database_outage_lose_nothing_and_leave_the_session_alone(
    app: Flask,
) -> None:
    """ "Commit, then push" with the database gone: the host's expired object is never loaded
    through its session; the activity is kept with the ids known, and the replay finds its account
    from the session's row."""
    psa = app.extensions["test_psa"]
    sess = f.session(1, f.at(days=1), ticket="T-42")
    f.commit()  # expires sess: its columns would be loaded on next access
    session_id = sess.id
    db.session.commit()
    db.session.expire(sess)
    assert not db.session().in_transaction()

    def refuse(*args: t.Any) -> None:
        raise sa.exc.OperationalError(
            "SELECT", {}, ConnectionRefusedError("server closed the connection")
        )

    sa.event.listen(db.engine, "before_cursor_execute", refuse)
    try:
        started = time.perf_counter()
        assert psa.push_note(sess, "Customer password is hunter2")["id"] == "1000"
        elapsed = time.perf_counter() - started
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", refuse)
    assert not db.session().in_transaction()  # the hook began nothing on the host's session
    assert elapsed < HOOK_BOUND_SECONDS
    kept = registration(app).dead_letters.pending()
    assert [(k["session_id"], k["account_id"], k["external_id"]) for k in kept] == [
        (session_id, None, "1000")
    ]
    result = replay(app)
    assert "written 1, already present 0, still failing 0" in result.output, result.output
    assert [(r["account_id"], r["session_id"], r["psa_ticket_id"]) for r in activity_rows()] == [
        (1, session_id, "T-42")
    ]
