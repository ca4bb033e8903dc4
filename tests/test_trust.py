"""Trust at the edges: each promise an outside review broke, tried the way it was broken (issue 10)."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import threading
import time
import types
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask, got_request_exception, request

from flowpilot_analytics import Identity, activity_recorded

from . import factories as f
from . import host
from .helpers import ESCALATIONS, HANDOFFS, PSA, activity_rows, as_user
from .host import NOW, db

#: A push with the database locked or hung returns within the hook timeout (250 ms by default); this bound is far
#: above it, to stay quiet on a loaded machine, and far below a stall (a lock held 5 s, a hung server).
HOOK_BOUND_SECONDS = 1.5
#: The test host gives the hook 5 s; the tests of the deadline use the default.
DEFAULT_TIMEOUT = {"FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS": 250}


def rows() -> list[dict[str, t.Any]]:
    return activity_rows()


def state(app: Flask) -> t.Any:
    return app.extensions["flowpilot_analytics"]


def replay(app: Flask) -> t.Any:
    return app.test_cli_runner().invoke(args=["flowpilot-analytics", "replay-activities"])


# -- 1. a push is recorded whatever the host's transaction does next ------------------------------------


@pytest.fixture
def served(make_app: t.Any) -> t.Iterator[Flask]:
    """A host app whose requests each run in their own app context, as under a real server."""
    app = make_app()
    with app.app_context():
        db.create_all(bind_key=None)
    yield app
    with app.app_context():
        db.drop_all(bind_key=None)


@pytest.mark.parametrize("then", ["nothing", "rollback", "commit"])
def test_a_push_from_a_host_route_is_recorded_however_its_transaction_ends(served: Flask, then: str) -> None:
    with served.app_context():
        sess = f.session(1, f.at(days=1), ticket="T-7")
        f.commit()
        session_id = sess.id
    response = served.test_client().post(f"/host/sessions/{session_id}/push?then={then}&minutes=20")
    assert response.get_json() == {"note": "1000", "time_entry": "1001"}  # the push's answers, untouched
    with served.app_context():
        recorded = rows()
    assert [(r["activity_type"], r["external_id"], r["minutes"]) for r in recorded] == [
        ("note_posted", "1000", None),
        ("time_entry_posted", "1001", 20.0),
    ]
    assert all(len(r["idempotency_key"]) == 36 for r in recorded)
    assert state(served).dead_letters.pending() == []  # rows, not dead letters


def test_recording_leaves_the_hosts_pending_objects_and_transaction_alone(app: Flask) -> None:
    psa = app.extensions["test_psa"]
    sess = f.session(1, f.at(days=1), ticket="T")
    f.commit()
    draft = host.AISession(account_id=1, created_at=f.at(), title="unflushed host work")
    db.session.add(draft)
    psa.push_note(sess, "x")
    assert draft in db.session.new  # not flushed by the hook
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(host.AISession)) == 1
    assert len(rows()) == 1


# -- 2. any number of replays at once record each activity exactly once ---------------------------------


def _dead_letters(count: int) -> list[dict[str, t.Any]]:
    """Half with an external id, half without (nothing but the key to tell retries apart)."""
    return [
        {
            "account_id": 1 + i % 3,
            "session_id": i,
            "activity_type": ("note_posted", "time_entry_posted")[i % 2],
            "psa_ticket_id": "T",
            "external_id": f"E-{i}" if i % 4 < 2 else None,
            "minutes": None if i % 2 == 0 else float(i % 50),
            "created_at": NOW,
            "idempotency_key": f"key-{i:05d}",
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("store", ["file", "table"])
def test_three_replays_at_once_record_each_activity_once(
    app: Flask, database_uri: str, tmp_path: t.Any, store: str
) -> None:
    import subprocess
    import sys

    table_name = "fpa_dead_letters_concurrent" if store == "table" else ""
    env = {
        **os.environ,
        "FPA_TEST_DATABASE_URI": database_uri,
        "FPA_TEST_REDIS_URL": "memory://",
        "FPA_TEST_DEAD_LETTERS": str(tmp_path / "replayed.jsonl"),
        "FPA_TEST_DEAD_LETTER_TABLE": table_name,
    }
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "tests.wsgi_host:create_app",
        "flowpilot-analytics",
        "replay-activities",
    ]
    try:
        writer = host.create_app(
            database_uri,
            FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=env["FPA_TEST_DEAD_LETTERS"],
            FLOWPILOT_ANALYTICS_DEAD_LETTER_TABLE=table_name or None,
        )
        entries = _dead_letters(400)
        with writer.app_context():
            if table_name:
                db.metadata.tables[table_name].create(db.engine, checkfirst=True)
            for entry in entries:
                writer.extensions["flowpilot_analytics"].dead_letters.append(entry)
            db.engine.dispose()
        processes = [
            subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(3)
        ]
        outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
        assert [p.returncode for p in processes] == [0, 0, 0], outputs
        recorded = rows()
        keys = [r["idempotency_key"] for r in recorded]
        print(
            f"\n3 concurrent replays ({store} store) of 400 dead letters: {len(recorded)} rows, "
            f"{len(keys) - len(set(keys))} duplicated; outputs: {[o.strip().splitlines()[-1] for o in outputs]}"
        )
        assert sorted(keys) == sorted(e["idempotency_key"] for e in entries)
        written = sum(int(o.split("written ")[1].split(",")[0]) for o in outputs)
        assert written == 400
    finally:
        if table_name in db.metadata.tables:
            db.session.rollback()
            db.metadata.tables[table_name].drop(db.engine, checkfirst=True)
            db.metadata.remove(db.metadata.tables[table_name])


def test_replay_checks_entries_as_the_hook_does(app: Flask) -> None:
    store = state(app).dead_letters
    good = _dead_letters(1)[0]
    for bad in (
        {**good, "minutes": math.nan, "idempotency_key": "nan"},
        {**good, "minutes": -3.0, "idempotency_key": "negative"},
        {**good, "activity_type": "ticket_closed", "idempotency_key": "unknown-type"},
    ):
        store.append(bad)
    store.append(good)
    result = replay(app)
    assert result.exit_code == 0  # what can never be written is set aside with its reason, not retried for ever
    assert "written 1, already present 0, still failing 0, set aside 3" in result.output
    assert "finite number" in result.output and "unknown activity type" in result.output
    assert [r["idempotency_key"] for r in rows()] == [good["idempotency_key"]]
    assert store.pending() == [] and store.rejected() == (3, 0)


def test_legacy_dead_letters_without_a_key_replay_once(app: Flask) -> None:
    store = state(app).dead_letters
    legacy = {k: v for k, v in _dead_letters(1)[0].items() if k != "idempotency_key"}
    legacy["external_id"] = None
    store.append(legacy)
    store.append(legacy)
    assert "written 1, already present 1, still failing 0" in replay(app).output
    store.append(legacy)
    assert "written 0, already present 1, still failing 0" in replay(app).output
    assert len(rows()) == 1


# -- 3. caching bounded in bytes, every report route rate limited, drill-down pages bounded ---------------


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
            "FLOWPILOT_ANALYTICS_CACHE_MAX_BYTES": 64 * 1024,
            "FLOWPILOT_ANALYTICS_HANDOFFS_LIMIT": "10000 per minute",
        }
    ],
)
def test_the_in_process_cache_stays_within_its_byte_bound(
    app: Flask, client: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(60):
        f.escalation(1, f.at(minutes=10 + i), 30 + i)
    f.commit()
    cache = state(app).cache
    for limit in range(1, 201):  # 200 distinct answers of up to ~12 KB each
        assert client.get(f"{HANDOFFS}?limit={limit}", headers=as_user(1)).status_code == 200
    backend = cache.backend
    print(f"\n200 distinct drill-down pages: {len(backend)} entries, {backend.bytes} bytes kept (bound 65536)")
    assert 0 < backend.bytes <= 64 * 1024
    assert len(backend) < 200
    # expired entries are freed by the next store, not only when read again
    later = time.monotonic() + 61
    monkeypatch.setattr("flowpilot_analytics.cache.time.monotonic", lambda: later)
    assert client.get(f"{HANDOFFS}?limit=1&period=7d", headers=as_user(1)).status_code == 200
    assert len(backend) == 1


@pytest.mark.parametrize(
    "app_config",
    [{"FLOWPILOT_ANALYTICS_ESCALATIONS_LIMIT": "3 per minute", "FLOWPILOT_ANALYTICS_HANDOFFS_LIMIT": "2 per minute"}],
)
def test_every_report_route_has_a_per_user_limit(client: t.Any) -> None:
    assert [client.get(ESCALATIONS, headers=as_user(1)).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert [client.get(HANDOFFS, headers=as_user(1)).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get(ESCALATIONS, headers=as_user(1, user=2)).status_code == 200  # per user
    limited = client.get(HANDOFFS, headers=as_user(1))
    assert limited.get_json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1


def test_default_limits_are_generous_for_escalations_and_strict_for_psa(app: Flask) -> None:
    assert app.config["FLOWPILOT_ANALYTICS_ESCALATIONS_LIMIT"] == "120 per minute"
    assert app.config["FLOWPILOT_ANALYTICS_HANDOFFS_LIMIT"] == "120 per minute"
    assert app.config["FLOWPILOT_ANALYTICS_PSA_METRICS_LIMIT"] == "15 per minute"


def test_a_drill_down_page_scans_a_bounded_number_of_rows(client: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowpilot_analytics import reports

    monkeypatch.setattr(reports, "MAX_SCAN_ROWS", 7)
    for i in range(30):  # all acted on within a minute: bucket 0; none in bucket 5 but two at the end
        f.escalation(1, f.at(minutes=100 + i), 10)
    f.escalation(1, f.at(days=20), 20000)
    f.escalation(1, f.at(days=21), 30000)
    f.commit()
    pages, items, cursor = 0, [], None
    while True:
        page = client.get(
            HANDOFFS + "?bucket=5&limit=1" + (f"&cursor={cursor}" if cursor else ""), headers=as_user(1, user=3)
        ).get_json()
        pages += 1
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert [i["seconds"] for i in items] == [20000.0, 30000.0]
    assert pages >= 4  # 32 handoffs at most 7 a page: the empty early pages still hand on a cursor
    first = client.get(HANDOFFS + "?bucket=5", headers=as_user(1, user=3)).get_json()
    assert first["items"] == [] and first["next_cursor"] is not None


# -- 4. a shared browser never shows one account's answer to another ------------------------------------


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}])
def test_browsers_must_revalidate_and_answers_vary_on_credentials(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 30)
    f.commit()
    mine = client.get(ESCALATIONS, headers=as_user(1))
    assert mine.headers["Cache-Control"] == "private, no-cache"
    assert {"Authorization", "Cookie"} <= {v.strip() for v in mine.headers["Vary"].split(",")}
    theirs = client.get(ESCALATIONS, headers={**as_user(2), "If-None-Match": mine.headers["ETag"]})
    assert theirs.status_code == 200 and theirs.get_json()["n_handoffs_claimed"] == 0
    assert client.get(ESCALATIONS, headers={**as_user(1), "If-None-Match": mine.headers["ETag"]}).status_code == 304


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_VARY_HEADERS": ["X-Account", "X-User"]}])
def test_vary_names_the_headers_the_host_says_carry_credentials(client: t.Any) -> None:
    vary = {v.strip() for v in client.get(ESCALATIONS, headers=as_user(1)).headers["Vary"].split(",")}
    assert {"X-Account", "X-User"} <= vary and "Cookie" not in vary


# -- 5. nothing secret in logs or files -------------------------------------------------------------------


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI": "redis://:s3cret@pass@127.0.0.1:1/0",
            "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": "redis://:s3cret@pass@127.0.0.1:1/0",
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
        }
    ],
)
def test_storage_passwords_never_reach_the_log(client: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert client.get(PSA, headers=as_user(1, "admin")).status_code == 200
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "unavailable" in text and "redis://:***@127.0.0.1:1/0" in text
    assert "s3cret" not in text and "pass@" not in text  # an unencoded "@" in the password too


def test_a_push_the_hook_cannot_read_logs_no_note_text_or_psa_answer(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    analytics = state(app).extension

    @analytics.psa_activity("note_posted", extract=lambda args, kwargs, result: {"session_id": 1})
    def push_note(session: t.Any, text: str) -> dict[str, str]:
        return {"id": "N-1", "access_token": "tok-SECRET-123"}

    with caplog.at_level(logging.DEBUG):
        assert push_note(types.SimpleNamespace(id=1), "Customer password is hunter2")["id"] == "N-1"
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "could not read a note_posted activity" in text
    assert "hunter2" not in text and "tok-SECRET-123" not in text


def test_a_failed_write_logs_and_keeps_ids_only(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    psa = app.extensions["test_psa"]
    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)
    try:
        with caplog.at_level(logging.DEBUG):
            psa.push_note(types.SimpleNamespace(id=4, account_id=1, psa_ticket_id="T"), "Secret runbook text")
    finally:
        db.metadata.tables["psa_activity_logs"].create(db.engine)
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    path = app.config["FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH"]
    with open(path, encoding="utf-8") as handle:
        kept = handle.read()
    assert "could not record a note_posted activity" in text and '"external_id": "1000"' in kept
    assert "Secret runbook text" not in text + kept
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_world_writable_dead_letter_folder_is_refused_at_startup(tmp_path: t.Any) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ValueError, match="world-writable"):
        host.create_app("sqlite://", FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(folder / "dead.jsonl"))


def test_a_new_dead_letter_folder_is_private(make_app: t.Any, tmp_path: t.Any) -> None:
    folder = tmp_path / "made-by-the-plugin"
    made = make_app(FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(folder / "dead.jsonl"))
    state(made).dead_letters.append(_dead_letters(1)[0])
    assert folder.stat().st_mode & 0o777 == 0o700


# -- 6. a lock on the activity table never stalls a push --------------------------------------------------


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
            result = psa.push_note(types.SimpleNamespace(id=9, account_id=1, psa_ticket_id="T"), "x")
            elapsed = time.perf_counter() - started
    finally:
        locker.rollback() if dialect == "postgresql" else locker.connection.dbapi_connection.rollback()
        locker.close()
    print(f"\npush with {dialect} activity table locked: returned in {elapsed * 1000:.0f} ms (timeout 250 ms)")
    assert result == {"id": "1000", "text": "x"}
    assert elapsed < HOOK_BOUND_SECONDS  # the figure is printed above
    assert any("kept as a dead letter" in r.getMessage() for r in caplog.records)
    assert [e["external_id"] for e in state(app).dead_letters.pending()] == ["1000"]
    # the replay writes it, or finds it written by a write that got the lock just after the deadline
    assert "still failing 0" in replay(app).output and len(rows()) == 1


@pytest.mark.parametrize("app_config", [DEFAULT_TIMEOUT])
def test_a_hung_database_is_cut_off_at_the_deadline_and_its_late_write_is_not_doubled(app: Flask) -> None:
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
        assert psa.push_note(types.SimpleNamespace(id=9, account_id=1, psa_ticket_id="T"), "x")["id"] == "1000"
        elapsed = time.perf_counter() - started
        assert len(state(app).dead_letters.pending()) == 1
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
    assert state(app).dead_letters.pending() == []  # the late write settled its dead letter
    assert "written 0" in replay(app).output and "still failing 0" in replay(app).output  # not doubled
    assert len(rows()) == 1


# -- 7. inputs checked before they reach the database -----------------------------------------------------


@pytest.mark.parametrize("bucket", ["9" * 4400, "6", "-1", "1.0", "٣", "no-action"])
def test_bucket_values_outside_the_buckets_are_400(client: t.Any, bucket: str) -> None:
    response = client.get(HANDOFFS, query_string={"bucket": bucket}, headers=as_user(1))
    assert response.status_code == 400 and "bucket" in response.get_json()["error"]["details"]["fields"]


def test_a_cursor_is_valid_only_for_the_user_it_was_issued_to(client: t.Any) -> None:
    for i in range(3):
        f.escalation(1, f.at(minutes=10 + i), 30)
    f.commit()
    cursor = client.get(HANDOFFS + "?limit=1", headers=as_user(1, user=1)).get_json()["next_cursor"]
    assert client.get(HANDOFFS + f"?limit=1&cursor={cursor}", headers=as_user(1, user=1)).status_code == 200
    for other in (as_user(1, user=2), as_user(2, user=1)):
        response = client.get(HANDOFFS + f"?limit=1&cursor={cursor}", headers=other)
        assert response.status_code == 400 and "cursor" in response.get_json()["error"]["details"]["fields"]
    edited = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    assert client.get(HANDOFFS + f"?cursor={edited}", headers=as_user(1)).status_code == 400


@pytest.mark.parametrize(
    "fields", [{"id": "abc"}, {"id": 2**70}, {"id": True}, {"k": "not a time"}, {"k": "0001-01-01T00:00:00"}]
)
def test_signed_cursors_whose_fields_do_not_fit_the_columns_are_400(
    app: Flask, client: t.Any, dialect: str, fields: dict[str, t.Any]
) -> None:
    """Even a cursor signed with the app's key (a leaked key) never reaches the database with a bad value."""
    payload = {"k": "2026-11-01T00:00:00+00:00", "id": 1, "a": "1", "u": "1", **fields}
    cursor = state(app).cursors.dumps(payload)
    response = client.get(HANDOFFS + f"?cursor={cursor}", headers=as_user(1))
    if dialect == "sqlite" and "k" in fields:  # SQLite keys are the stored text: a harmless empty page
        assert response.status_code == 200 and response.get_json()["items"] == []
    else:
        assert response.status_code == 400, response.get_data(as_text=True)


# -- 8. a stored NaN never breaks an account's report -----------------------------------------------------


def test_stored_non_finite_minutes_are_skipped_and_counted(
    client: t.Any, dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    sess = f.session(1, f.at(days=1), ticket="T")
    f.activity(1, sess.id, "time_entry_posted", f.at(hours_ago(2)), minutes=30, external_id="ok")
    f.commit()
    table = "psa_activity_logs"
    bad = ["'NaN'", "'NaN'"] if dialect == "postgresql" else ["9e999", "-9e999"]  # numeric(12,2) holds NaN
    for i, value in enumerate(bad):
        db.session.execute(
            sa.text(
                f"INSERT INTO {table} (account_id, session_id, activity_type, external_id, minutes, created_at) "
                f"VALUES (1, :session, 'time_entry_posted', :ext, {value}, :at)"
            ),
            {"session": sess.id, "ext": f"bad-{i}", "at": f.at(hours_ago(1))},
        )
    f.commit()
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        response = client.get(PSA, headers=as_user(1, "admin"))
    assert response.status_code == 200
    assert response.get_json()["time_entries"] == {"count": 3, "total_minutes": 30.0, "total_hours": 0.5}
    assert any("2 stored activities whose minutes are not a finite number" in r.getMessage() for r in caplog.records)


def hours_ago(hours: float) -> float:
    return hours * 3600


# -- 9. exported CSV cells never run as formulas ----------------------------------------------------------

TEXT_IDS = sa.MetaData()
TEXT_SESSIONS = sa.Table(
    "txt_sessions",
    TEXT_IDS,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("created_at", sa.DateTime),
    sa.Column("psa_ticket_id", sa.String(40)),
)
TEXT_STEPS = sa.Table(
    "txt_steps",
    TEXT_IDS,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("session_id", sa.String(40)),
    sa.Column("created_at", sa.DateTime),
)
TEXT_HANDOFFS = sa.Table(
    "txt_handoffs",
    TEXT_IDS,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("session_id", sa.String(40)),
    sa.Column("created_at", sa.DateTime),
    sa.Column("claimed_at", sa.DateTime),
)


@pytest.mark.parametrize(
    "app_config",
    [{"FLOWPILOT_ANALYTICS_TABLES": {"sessions": "txt_sessions", "steps": "txt_steps", "handoffs": "txt_handoffs"}}],
)
def test_csv_cells_that_would_be_formulas_are_neutralised(client: t.Any) -> None:
    dangerous = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "plain"]
    TEXT_IDS.create_all(db.engine)
    try:
        with db.engine.begin() as conn:
            for i, text_id in enumerate(dangerous):
                claimed = f.at(minutes=10 + i)
                conn.execute(TEXT_SESSIONS.insert().values(id=f"s{text_id}", account_id=1, created_at=claimed))
                conn.execute(
                    TEXT_HANDOFFS.insert().values(
                        id=text_id, account_id=1, session_id=f"s{text_id}", created_at=claimed, claimed_at=claimed
                    )
                )
        response = client.get(HANDOFFS + "?format=csv", headers=as_user(1))
        assert response.status_code == 200
        table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
        ids = {row[0] for row in table[1:]}
        assert ids == {"'" + d if d != "plain" else d for d in dangerous}
        assert {row[1] for row in table[1:]} == {"s" + d for d in dangerous}  # "s..." is safe as it is
    finally:
        db.session.rollback()
        TEXT_IDS.drop_all(db.engine)


# -- 10. rate-limit keys cannot collide ---------------------------------------------------------------------


def _text_identity() -> Identity | None:
    return Identity(user_id=request.headers["X-User"], account_id=request.headers["X-Account"], role="admin")


def test_ids_with_slashes_never_share_a_budget(make_app: t.Any) -> None:
    app = make_app(
        identity_loader=_text_identity,
        FLOWPILOT_ANALYTICS_PSA_METRICS_LIMIT="2 per minute",
        FLOWPILOT_ANALYTICS_ID_TYPE="string",
    )
    with app.app_context():
        db.create_all(bind_key=None)
    client = app.test_client()
    first = {"X-Account": "a/b", "X-User": "c"}
    second = {"X-Account": "a", "X-User": "b/c"}
    assert [client.get(PSA, headers=first).status_code == 429 for _ in range(3)] == [False, False, True]
    assert client.get(PSA, headers=second).status_code != 429  # (text ids against integer tables: no 200 here)
    with app.app_context():
        db.drop_all(bind_key=None)


# -- 11. the host's row-level-security setting is never changed -------------------------------------------


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_TENANT_SETTING": "app.current_account_id"}])
def test_recording_and_reading_leave_the_hosts_tenant_as_it_was(app: Flask, client: t.Any, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    psa = app.extensions["test_psa"]
    setting = sa.text("SELECT current_setting('app.current_account_id', true)")
    db.session.execute(sa.text("SELECT set_config('app.current_account_id', '1', true)"))
    psa.push_note(types.SimpleNamespace(id=3, account_id=2, psa_ticket_id="T"), "for account 2")
    assert db.session.scalar(setting) == "1"  # the host's next query still runs as its own tenant
    db.session.commit()
    seen: list[t.Any] = []

    @app.after_request
    def host_hook(response: t.Any) -> t.Any:  # the host's own code, later in the same request
        seen.append(db.session.scalar(setting))
        return response

    assert client.get(ESCALATIONS, headers=as_user(7)).status_code == 200
    assert seen in ([None], [""])
    assert [(r["account_id"], r["external_id"]) for r in rows()] == [(2, "1000")]


# -- 12. errors that point the right way ------------------------------------------------------------------


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
    with got_request_exception.connected_to(lambda sender, exception, **kw: caught.append(exception), app):
        response = app.test_client().get(ESCALATIONS)
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert [type(e) for e in caught] == [KeyError]


# -- upgrade path: a 0.1 table gets the key column -------------------------------------------------------


def test_an_old_activity_table_is_upgraded_by_the_statements_doctor_prints(app: Flask) -> None:
    psa = app.extensions["test_psa"]
    db.session.rollback()
    table = db.metadata.tables["psa_activity_logs"]
    table.drop(db.engine)
    old = sa.Table(
        "psa_activity_logs", sa.MetaData(), *(c._copy() for c in table.columns if c.name != "idempotency_key")
    )
    old.create(db.engine)
    psa.push_note(types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "before the upgrade")
    assert len(state(app).dead_letters.pending()) == 1  # kept, not lost, until the column exists
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 1 and "MISSING columns psa_activity_logs: idempotency_key" in result.output
    statements = [line.rstrip(";") for line in result.output.splitlines() if line.startswith(("ALTER TABLE", "CREATE"))]
    assert statements[0].startswith("ALTER TABLE psa_activity_logs ADD COLUMN idempotency_key VARCHAR(36)")
    for statement in statements:  # one at a time: PostgreSQL's CONCURRENTLY runs outside a transaction
        with db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql(statement)
            conn.commit()
    again = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert again.exit_code == 1 and "MISSING" not in again.output  # the schema is right ...
    assert "BACKLOG 1 dead letters" in again.output  # ... and the push kept meanwhile waits for its replay
    assert "written 1" in replay(app).output
    done = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert done.exit_code == 0 and "ok      no dead letters" in done.output, done.output
    psa.push_note(types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "after")
    assert [r["external_id"] for r in rows()] == ["1000", "1001"]


# -- review follow-ups: ORM objects, stores, pools, ids -------------------------------------------------


@pytest.mark.parametrize("app_config", [DEFAULT_TIMEOUT])
def test_an_expired_orm_session_and_a_database_outage_lose_nothing_and_leave_the_session_alone(app: Flask) -> None:
    """ "Commit, then push" with the database gone: the host's expired object is never loaded through its session;
    the activity is kept with the ids known, and the replay finds its account from the session's row."""
    psa = app.extensions["test_psa"]
    sess = f.session(1, f.at(days=1), ticket="T-42")
    f.commit()  # expires sess: its columns would be loaded on next access
    session_id = sess.id
    db.session.commit()
    db.session.expire(sess)
    assert not db.session().in_transaction()

    def refuse(*args: t.Any) -> None:
        raise sa.exc.OperationalError("SELECT", {}, ConnectionRefusedError("server closed the connection"))

    sa.event.listen(db.engine, "before_cursor_execute", refuse)
    try:
        started = time.perf_counter()
        assert psa.push_note(sess, "Customer password is hunter2")["id"] == "1000"
        elapsed = time.perf_counter() - started
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", refuse)
    assert not db.session().in_transaction()  # the hook began nothing on the host's session
    assert elapsed < HOOK_BOUND_SECONDS
    kept = state(app).dead_letters.pending()
    assert [(k["session_id"], k["account_id"], k["external_id"]) for k in kept] == [(session_id, None, "1000")]
    result = replay(app)
    assert "written 1, already present 0, still failing 0" in result.output, result.output
    assert [(r["account_id"], r["session_id"], r["psa_ticket_id"]) for r in rows()] == [(1, session_id, "T-42")]


def test_reading_an_expired_orm_session_never_begins_the_hosts_transaction(app: Flask) -> None:
    psa = app.extensions["test_psa"]
    sess = f.session(2, f.at(days=1), ticket="T-9")
    f.commit()
    assert not db.session().in_transaction()
    psa.push_time_entry(sess, 12)
    assert not db.session().in_transaction()
    with db.session.begin():  # the host's own explicit transaction still starts
        pass
    assert [(r["account_id"], r["psa_ticket_id"], r["minutes"]) for r in rows()] == [(2, "T-9", 12.0)]


@pytest.mark.parametrize(
    "app_config", [{"FLOWPILOT_ANALYTICS_DEAD_LETTER_TABLE": "fpa_dead_letters", **DEFAULT_TIMEOUT}]
)
def test_a_hung_database_with_the_table_store_still_bounds_the_push(app: Flask) -> None:
    psa = app.extensions["test_psa"]
    release = threading.Event()

    def hang(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.startswith("INSERT INTO"):
            release.wait(30)

    db.session.rollback()
    sa.event.listen(db.engine, "before_cursor_execute", hang)
    try:
        started = time.perf_counter()
        psa.push_note(types.SimpleNamespace(id=9, account_id=1, psa_ticket_id="T"), "x")
        elapsed = time.perf_counter() - started
    finally:
        release.set()
        sa.event.remove(db.engine, "before_cursor_execute", hang)
    print(f"\npush with a hung database and the table store: {elapsed * 1000:.0f} ms (timeout 250 ms)")
    assert elapsed < HOOK_BOUND_SECONDS
    assert [e["external_id"] for e in state(app).dead_letters.spill.pending()] == ["1000"]  # the file took it
    assert "still failing 0" in replay(app).output and len(rows()) == 1


def test_a_sqlite_push_inside_a_host_transaction_is_journaled_until_it_lands(app: Flask, dialect: str) -> None:
    if dialect != "sqlite":
        pytest.skip("the journal serves SQLite's one-writer wait")
    psa = app.extensions["test_psa"]
    sess = f.session(1, f.at(days=1), ticket="T")
    f.commit()
    db.session.execute(sa.text("SELECT 1"))  # the host has read: the write waits for its transaction
    psa.push_note(sess, "x")
    assert [e["external_id"] for e in state(app).dead_letters.pending()] == ["1000"]  # a crash now keeps it
    assert rows() == []
    db.session.rollback()
    assert [r["external_id"] for r in rows()] == ["1000"]
    assert state(app).dead_letters.pending() == []  # settled
    assert "written 0, already present 0, still failing 0" in replay(app).output


def test_a_process_that_dies_before_the_host_transaction_ends_leaves_a_dead_letter(
    database_uri: str, dialect: str, tmp_path: t.Any, make_app: t.Any
) -> None:
    import subprocess
    import sys

    if dialect != "sqlite":
        pytest.skip("on PostgreSQL the row is written before the push returns")
    app = make_app()
    with app.app_context():
        db.create_all(bind_key=None)
        f.session(1, f.at(days=1), ticket="T-1")
        f.commit()
    dead = tmp_path / "crash.jsonl"
    script = f"""
import os, sqlalchemy as sa
from tests import host
app = host.create_app({database_uri!r}, FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH={str(dead)!r})
with app.app_context():
    sess = host.db.session.get(host.AISession, 1)   # the host read: its transaction is open
    app.extensions["test_psa"].push_note(sess, "x")
    os._exit(0)                                      # dies before the transaction ends
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    crashed = make_app(FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(dead))
    with crashed.app_context():
        assert [e["external_id"] for e in state(crashed).dead_letters.pending()] == ["1000"]
        assert "written 1" in replay(crashed).output
        assert [r["external_id"] for r in rows()] == ["1000"]
        db.drop_all(bind_key=None)


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
        assert db.session.scalar(sa.select(sa.func.count()).select_from(host.AISession)) == 0  # per request
    response = client.get(PSA, headers=as_user(1, "admin"))
    assert response.status_code == 200 and response.get_json()["funnel"]["sessions"] == 1  # its own row, seen


UUID_IDS = sa.MetaData()
UUID_SESSIONS = sa.Table(
    "uid_sessions",
    UUID_IDS,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("created_at", sa.DateTime),
    sa.Column("psa_ticket_id", sa.String(40)),
)
UUID_STEPS = sa.Table(
    "uid_steps",
    UUID_IDS,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("session_id", sa.Uuid),
    sa.Column("created_at", sa.DateTime),
)
UUID_HANDOFFS = sa.Table(
    "uid_handoffs",
    UUID_IDS,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("session_id", sa.Uuid),
    sa.Column("created_at", sa.DateTime),
    sa.Column("claimed_at", sa.DateTime),
)


@pytest.mark.parametrize(
    "app_config",
    [{"FLOWPILOT_ANALYTICS_TABLES": {"sessions": "uid_sessions", "steps": "uid_steps", "handoffs": "uid_handoffs"}}],
)
def test_drill_down_pages_over_uuid_ids(client: t.Any, dialect: str) -> None:
    import uuid

    UUID_IDS.create_all(db.engine)
    try:
        ids = [uuid.uuid4() for _ in range(3)]
        with db.engine.begin() as conn:
            for i, handoff_id in enumerate(ids):
                claimed = f.at(minutes=10 + i)
                conn.execute(UUID_SESSIONS.insert().values(id=handoff_id, account_id=1, created_at=claimed))
                conn.execute(
                    UUID_HANDOFFS.insert().values(
                        id=handoff_id, account_id=1, session_id=handoff_id, created_at=claimed, claimed_at=claimed
                    )
                )
        seen, cursor = [], None
        for _ in range(5):
            page = client.get(HANDOFFS + "?limit=1" + (f"&cursor={cursor}" if cursor else ""), headers=as_user(1))
            assert page.status_code == 200, page.get_data(as_text=True)
            seen += [item["handoff_id"] for item in page.get_json()["items"]]
            cursor = page.get_json()["next_cursor"]
            if cursor is None:
                break
        assert [uuid.UUID(x) for x in seen] == ids  # SQLite keeps them as 32-digit hex text
        forged = state(client.application).cursors.dumps(
            {"k": "2026-11-01 00:00:00", "id": "not-a-uuid", "a": "1", "u": "1"}
        )
        forged_page = client.get(HANDOFFS + f"?cursor={forged}", headers=as_user(1))
        # PostgreSQL's uuid column refuses the text at the door; SQLite keeps ids as text: an empty page
        assert forged_page.status_code == (400 if dialect == "postgresql" else 200)
    finally:
        db.session.rollback()
        UUID_IDS.drop_all(db.engine)


def test_doctor_wants_the_key_index_unique(app: Flask) -> None:
    db.session.rollback()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX uq_psa_activity_logs_idempotency_key")
        conn.exec_driver_sql("CREATE INDEX ix_key ON psa_activity_logs (idempotency_key)")  # not unique
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 1
    assert "MISSING unique index psa_activity_logs (idempotency_key)" in result.output
    assert "CREATE UNIQUE INDEX" in result.output
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_key")
        conn.exec_driver_sql(
            "CREATE UNIQUE INDEX uq_psa_activity_logs_idempotency_key ON psa_activity_logs (idempotency_key)"
        )
