"""Hook faults lose nothing: failed writes go to the dead-letter file, ``replay-activities`` writes
them once."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import types
import typing as t
from collections import Counter

import pytest
import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import registration

from . import factories as f
from . import host
from .fake_psa import FakePsaService
from .helpers import activity_rows, dead_letter_entries, replay
from .host import NOW, db


@pytest.fixture
def psa(app: t.Any) -> FakePsaService:
    return t.cast(
        FakePsaService, app.extensions["test_analytics"].wrap_psa_service(FakePsaService())
    )


class FlakyDatabase:
    """Makes the activity INSERT fail like a lost connection, for a chosen share of attempts."""

    def __init__(self, share: float, seed: int = 1) -> None:
        self.share = share
        self.rng = random.Random(seed)
        self.failures = 0

    def __call__(self, conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "INSERT INTO psa_activity_logs" in statement and self.rng.random() < self.share:
            self.failures += 1
            raise sa.exc.OperationalError(
                statement, {}, ConnectionError("server closed the connection")
            )


def rows() -> list[dict[str, t.Any]]:
    return activity_rows()


def test_n_pushes_with_a_flaky_database_then_replay_lose_nothing(
    app: t.Any, psa: FakePsaService
) -> None:
    sessions = [f.session(1 + i % 3, f.at(days=1), ticket=f"T{i}") for i in range(10)]
    f.commit()
    flaky = FlakyDatabase(share=0.4)
    sa.event.listen(db.engine, "before_cursor_execute", flaky)
    pushes = 60
    returned = []
    try:
        for i in range(pushes):
            sess = sessions[i % len(sessions)]
            if i % 2:
                returned.append(psa.push_time_entry(sess, 10 + i).id)
            else:
                returned.append(psa.push_note(sess, f"note {i}")["id"])
            db.session.commit()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", flaky)
    assert returned == [str(1000 + i) for i in range(pushes)]  # every push returned its own value
    assert flaky.failures > 0
    state = registration(app)
    assert len(state.dead_letters.pending()) == flaky.failures
    result = replay(app)
    assert result.exit_code == 0, result.output
    assert f"written {flaky.failures}, already present 0, still failing 0" in result.output
    recorded = rows()
    counts = Counter((r["account_id"], r["activity_type"], r["external_id"]) for r in recorded)
    lost = pushes - len(counts)
    duplicated = sum(n - 1 for n in counts.values())
    print(
        f"\nN={pushes} pushes, {flaky.failures} writes failed and were dead-lettered, "
        f"lost={lost}, duplicated={duplicated}"
    )
    assert (len(recorded), lost, duplicated) == (pushes, 0, 0)
    assert {r["created_at"] for r in recorded} == {NOW}
    again = replay(app)
    assert "written 0, already present 0, still failing 0" in again.output
    assert len(rows()) == pushes


def test_replay_skips_what_is_already_there(app: t.Any) -> None:
    state = registration(app)
    payload = {
        "account_id": 1,
        "session_id": 4,
        "activity_type": "note_posted",
        "psa_ticket_id": "T",
        "external_id": "N-1",
        "minutes": None,
        "created_at": NOW,
    }
    anonymous = {
        **payload,
        "external_id": None,
        "activity_type": "time_entry_posted",
        "minutes": 12.5,
    }
    for entry in (payload, payload, anonymous, anonymous):
        state.dead_letters.append(entry)
    result = replay(app)
    assert "written 2, already present 2, still failing 0" in result.output
    assert sorted((r["activity_type"], r["external_id"], r["minutes"]) for r in rows()) == [
        ("note_posted", "N-1", None),
        ("time_entry_posted", None, 12.5),
    ]


def test_replay_checks_entries_as_the_hook_does(app: Flask) -> None:
    store = registration(app).dead_letters
    good = dead_letter_entries(1)[0]
    for bad in (
        {**good, "minutes": math.nan, "idempotency_key": "nan"},
        {**good, "minutes": -3.0, "idempotency_key": "negative"},
        {**good, "activity_type": "ticket_closed", "idempotency_key": "unknown-type"},
    ):
        store.append(bad)
    store.append(good)
    result = replay(app)
    assert (
        result.exit_code == 0
    )  # what can never be written is set aside with its reason, not retried for ever
    assert "written 1, already present 0, still failing 0, set aside 3" in result.output
    assert "finite number" in result.output and "unknown activity type" in result.output
    assert [r["idempotency_key"] for r in rows()] == [good["idempotency_key"]]
    assert store.pending() == [] and store.rejected() == (3, 0)


def test_legacy_dead_letters_without_a_key_replay_once(app: Flask) -> None:
    store = registration(app).dead_letters
    legacy = {k: v for k, v in dead_letter_entries(1)[0].items() if k != "idempotency_key"}
    legacy["external_id"] = None
    store.append(legacy)
    store.append(legacy)
    assert "written 1, already present 1, still failing 0" in replay(app).output
    store.append(legacy)
    assert "written 0, already present 1, still failing 0" in replay(app).output
    assert len(rows()) == 1


def test_entries_that_still_fail_are_kept(app: t.Any) -> None:
    state = registration(app)
    state.dead_letters.append(
        {
            "account_id": 1,
            "session_id": 1,
            "activity_type": "note_posted",
            "psa_ticket_id": None,
            "external_id": "K-1",
            "minutes": None,
            "created_at": NOW,
        }
    )
    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)
    try:
        result = replay(app)
        assert result.exit_code == 1
        assert "still failing 1" in result.output
        assert [entry["external_id"] for entry in state.dead_letters.pending()] == ["K-1"]
    finally:
        db.metadata.tables["psa_activity_logs"].create(db.engine)
    assert "written 1" in replay(app).output


def test_dead_letter_file_is_json_lines_with_the_whole_payload(
    app: t.Any, psa: FakePsaService
) -> None:
    sess = f.session(1, f.at(days=1), ticket="T-9")
    f.commit()
    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)
    try:
        psa.push_time_entry(sess, 25)
    finally:
        db.session.rollback()
        db.metadata.tables["psa_activity_logs"].create(db.engine)
    path = app.config["FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH"]
    with open(path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    # journaled before the expired object was read, then complete under the same key, which
    # supersedes it
    assert len({line["idempotency_key"] for line in lines}) == 1
    entries = lines[-1:]
    assert [len(entry.pop("idempotency_key")) for entry in entries] == [36]
    assert entries == [
        {
            "account_id": 1,
            "session_id": sess.id,
            "activity_type": "time_entry_posted",
            "psa_ticket_id": "T-9",
            "external_id": "1000",
            "minutes": 25.0,
            "created_at": "2026-11-15T12:00:00+00:00",
            "user_id": None,
            "billable": None,
        }
    ]
    assert os.stat(path).st_mode & 0o777 == 0o600  # only its owner reads what the hook kept


def test_a_failed_write_logs_and_keeps_ids_only(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    psa = app.extensions["test_psa"]
    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)
    try:
        with caplog.at_level(logging.DEBUG):
            psa.push_note(
                types.SimpleNamespace(id=4, account_id=1, psa_ticket_id="T"), "Secret runbook text"
            )
    finally:
        db.metadata.tables["psa_activity_logs"].create(db.engine)
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    path = app.config["FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH"]
    with open(path, encoding="utf-8") as handle:
        kept = handle.read()
    assert "could not record a note_posted activity" in text and '"external_id": "1000"' in kept
    assert "Secret runbook text" not in text + kept
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_an_interrupted_replay_is_finished_by_the_next(app: t.Any) -> None:
    state = registration(app)
    payload = {
        "account_id": 1,
        "session_id": 2,
        "activity_type": "note_posted",
        "psa_ticket_id": None,
        "external_id": "I-1",
        "minutes": None,
        "created_at": NOW.isoformat(),
    }
    with open(
        state.dead_letters.path + ".replaying", "w", encoding="utf-8"
    ) as handle:  # left by a crash
        handle.write(json.dumps(payload) + "\n")
    state.dead_letters.append({**payload, "external_id": "I-2", "created_at": NOW})
    assert sorted(p["external_id"] for p in state.dead_letters.pending()) == ["I-1", "I-2"]
    assert "written 2, already present 0, still failing 0" in replay(app).output
    assert sorted(r["external_id"] for r in rows()) == ["I-1", "I-2"]
    assert state.dead_letters.pending() == []


def poison(key: str, **changes: t.Any) -> dict[str, t.Any]:
    return {
        "account_id": 1,
        "session_id": 3,
        "activity_type": "time_entry_posted",
        "psa_ticket_id": "T-3",
        "external_id": None,
        "minutes": 5.0,
        "created_at": NOW,
        "idempotency_key": key,
        **changes,
    }


def test_entries_that_can_never_be_written_are_set_aside_once(app: t.Any) -> None:
    state = registration(app)
    secret_ticket = "SECRET-TICKET-" + "x" * 286  # 300 characters, over VARCHAR(255)
    for entry in (
        poison("good"),
        poison("huge-minutes", minutes=1e10),  # over NUMERIC(12, 2)
        poison("long-ticket", psa_ticket_id=secret_ticket),
        poison(
            "huge-account", account_id=2**70
        ),  # PostgreSQL: bigint out of range; SQLite: no such integer
    ):
        state.dead_letters.append(entry)
    result = replay(app)
    assert result.exit_code == 0, result.output  # nothing left that another replay could write
    assert "written 1, already present 0, still failing 0, set aside 3" in result.output
    assert "3 entries that can never be written, 0 torn lines" in result.output
    assert "huge-minutes: ValueError: minutes is too large for its column" in result.output
    assert (
        "long-ticket: ValueError: psa_ticket_id is longer than its column allows" in result.output
    )
    assert "huge-account: " in result.output
    assert "SECRET-TICKET" not in result.output  # reasons name no value
    assert [r["idempotency_key"] for r in rows()] == ["good"]
    assert state.dead_letters.pending() == []

    path = state.dead_letters.rejected_location
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    kept = [json.loads(r["line"])["idempotency_key"] for r in records]
    assert kept == ["huge-minutes", "long-ticket", "huge-account"]
    assert all(set(r) == {"at", "reason", "line"} and "SECRET" not in r["reason"] for r in records)

    again = replay(app)  # not retried for ever
    assert (
        again.exit_code == 0
        and "written 0, already present 0, still failing 0, set aside 0" in again.output
    )
    doctor = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert (
        f"WARNING 3 entries that can never be written and 0 torn lines set aside in {path}"
        in doctor.output
    )
    assert "inspect them there" in doctor.output


def test_an_entry_without_its_account_is_kept_not_set_aside(app: t.Any) -> None:
    state = registration(app)
    state.dead_letters.append(
        poison("no-account", account_id=None, session_id=999)
    )  # no such session (yet)
    result = replay(app)
    assert result.exit_code == 1
    assert "still failing 1, set aside 0" in result.output
    assert [e["idempotency_key"] for e in state.dead_letters.pending()] == ["no-account"]
    assert not os.path.exists(state.dead_letters.rejected_location)


def test_a_constraint_the_row_breaks_sets_it_aside_until_retried(app: t.Any, dialect: str) -> None:
    state = registration(app)
    db.session.rollback()
    with db.engine.begin() as conn:  # a host's own rule on the plugin's table
        if dialect == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE psa_activity_logs ADD CONSTRAINT fpa_test_minutes "
                "CHECK (minutes IS NULL OR minutes < 100)"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER fpa_test_minutes BEFORE INSERT ON psa_activity_logs "
                "WHEN NEW.minutes >= 100 "
                "BEGIN SELECT RAISE(ABORT, 'minutes over the host rule'); END"
            )
    state.dead_letters.append(poison("long-call", minutes=150.0))
    state.dead_letters.append(poison("short-call", minutes=10.0))
    result = replay(app)
    assert result.exit_code == 0, result.output
    assert "written 1, already present 0, still failing 0, set aside 1" in result.output
    assert (
        "long-call: IntegrityError" in result.output or "long-call: CheckViolation" in result.output
    )
    with db.engine.begin() as conn:  # the operator reads the reason and lifts the rule
        if dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE psa_activity_logs DROP CONSTRAINT fpa_test_minutes")
        else:
            conn.exec_driver_sql("DROP TRIGGER fpa_test_minutes")
    assert "set aside 0" in replay(app).output  # never retried unless asked
    retried = app.test_cli_runner().invoke(
        args=["flowpilot-analytics", "replay-activities", "--retry-rejected"]
    )
    assert retried.exit_code == 0, retried.output
    assert "1 entries set aside before were tried again" in retried.output
    assert "written 1, already present 0, still failing 0, set aside 0" in retried.output
    assert sorted(r["idempotency_key"] for r in rows()) == ["long-call", "short-call"]
    assert state.dead_letters.rejected() == (0, 0)
    assert (
        "WARNING" not in app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"]).output
    )


def test_three_replays_at_once_record_each_activity_once(
    app: Flask, database_uri: str, tmp_path: t.Any
) -> None:
    import subprocess
    import sys

    env = {
        **os.environ,
        "FPA_TEST_DATABASE_URI": database_uri,
        "FPA_TEST_REDIS_URL": "memory://",
        "FPA_TEST_DEAD_LETTERS": str(tmp_path / "replayed.jsonl"),
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
    writer = host.create_app(
        database_uri, FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=env["FPA_TEST_DEAD_LETTERS"]
    )
    entries = dead_letter_entries(400)
    with writer.app_context():
        for entry in entries:
            registration(writer).dead_letters.append(entry)
        db.engine.dispose()
    processes = [
        subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    recorded = rows()
    keys = [r["idempotency_key"] for r in recorded]
    print(
        f"\n3 concurrent replays of 400 dead letters: {len(recorded)} rows, "
        f"{len(keys) - len(set(keys))} duplicated; outputs: "
        f"{[o.strip().splitlines()[-1] for o in outputs]}"
    )
    assert sorted(keys) == sorted(e["idempotency_key"] for e in entries)
    written = sum(int(o.split("written ")[1].split(",")[0]) for o in outputs)
    assert written == 400


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
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    crashed = make_app(FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(dead))
    with crashed.app_context():
        assert [e["external_id"] for e in registration(crashed).dead_letters.pending()] == ["1000"]
        assert "written 1" in replay(crashed).output
        assert [r["external_id"] for r in rows()] == ["1000"]
        db.drop_all(bind_key=None)


def test_a_later_entry_with_the_same_key_supersedes_the_earlier(app: Flask) -> None:
    store = registration(app).dead_letters
    complete = dead_letter_entries(1)[0]
    store.journal(
        {**complete, "account_id": None, "psa_ticket_id": None}
    )  # before the pushed object was read
    store.journal(complete)  # after: complete, under the same key
    assert [(e["account_id"], e["psa_ticket_id"]) for e in store.pending()] == [
        (complete["account_id"], "T")
    ]
    assert "written 1, already present 0" in replay(app).output
    assert [(r["account_id"], r["psa_ticket_id"]) for r in activity_rows()] == [
        (complete["account_id"], "T")
    ]
    assert store.pending() == []


def test_a_complete_entry_wins_over_a_later_partial_one(app: Flask) -> None:
    """A replay may re-append a kept partial entry after the complete one written meanwhile: the
    complete one still counts, and "partial" never reaches the database."""
    store = registration(app).dead_letters
    complete = dead_letter_entries(1)[0]
    store.journal(complete)
    store.journal({**complete, "account_id": None, "psa_ticket_id": None, "partial": True})
    assert store.pending() == [{**complete, "created_at": NOW.isoformat()}]
    assert "written 1, already present 0" in replay(app).output
    assert [(r["account_id"], r["psa_ticket_id"]) for r in activity_rows()] == [
        (complete["account_id"], "T")
    ]
    assert store.pending() == []
