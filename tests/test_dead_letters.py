"""Hook faults lose nothing: failed writes go to the dead-letter file, ``replay-activities`` writes them once."""

from __future__ import annotations

import json
import os
import random
import typing as t
from collections import Counter

import pytest
import sqlalchemy as sa

from . import factories as f
from .fake_psa import FakePsaService
from .helpers import activity_rows
from .host import NOW, db


@pytest.fixture
def psa(app: t.Any) -> FakePsaService:
    return t.cast(FakePsaService, app.extensions["flowpilot_analytics"].extension.wrap_psa_service(FakePsaService()))


class FlakyDatabase:
    """Makes the activity INSERT fail like a lost connection, for a chosen share of attempts."""

    def __init__(self, share: float, seed: int = 1) -> None:
        self.share = share
        self.rng = random.Random(seed)
        self.failures = 0

    def __call__(self, conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "INSERT INTO psa_activity_logs" in statement and self.rng.random() < self.share:
            self.failures += 1
            raise sa.exc.OperationalError(statement, {}, ConnectionError("server closed the connection"))


def rows() -> list[dict[str, t.Any]]:
    return activity_rows()


def replay(app: t.Any) -> t.Any:
    return app.test_cli_runner().invoke(args=["flowpilot-analytics", "replay-activities"])


def test_n_pushes_with_a_flaky_database_then_replay_lose_nothing(app: t.Any, psa: FakePsaService) -> None:
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
    state = app.extensions["flowpilot_analytics"]
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
    state = app.extensions["flowpilot_analytics"]
    payload = {
        "account_id": 1,
        "session_id": 4,
        "activity_type": "note_posted",
        "psa_ticket_id": "T",
        "external_id": "N-1",
        "minutes": None,
        "created_at": NOW,
    }
    anonymous = {**payload, "external_id": None, "activity_type": "time_entry_posted", "minutes": 12.5}
    for entry in (payload, payload, anonymous, anonymous):
        state.dead_letters.append(entry)
    result = replay(app)
    assert "written 2, already present 2, still failing 0" in result.output
    assert sorted((r["activity_type"], r["external_id"], r["minutes"]) for r in rows()) == [
        ("note_posted", "N-1", None),
        ("time_entry_posted", None, 12.5),
    ]


def test_entries_that_still_fail_are_kept(app: t.Any) -> None:
    state = app.extensions["flowpilot_analytics"]
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


def test_dead_letter_file_is_json_lines_with_the_whole_payload(app: t.Any, psa: FakePsaService) -> None:
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
        entries = [json.loads(line) for line in handle]
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
        }
    ]
    assert os.stat(path).st_mode & 0o777 == 0o600  # only its owner reads what the hook kept


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_DEAD_LETTER_TABLE": "fpa_dead_letters"}])
def test_dead_letters_in_a_table(app: t.Any, psa: FakePsaService) -> None:
    sess = f.session(1, f.at(days=1), ticket="T")
    f.commit()
    state = app.extensions["flowpilot_analytics"]
    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)  # the activity table is missing, the database is up
    try:
        assert psa.push_note(sess, "x")["id"] == "1000"
        assert psa.push_time_entry(sess, 15).id == "1001"
        db.session.commit()
    finally:
        db.session.rollback()
        db.metadata.tables["psa_activity_logs"].create(db.engine)
    assert [p["external_id"] for p in state.dead_letters.pending()] == ["1000", "1001"]
    result = replay(app)
    assert "table fpa_dead_letters: written 2, already present 0, still failing 0" in result.output
    assert state.dead_letters.pending() == []
    assert sorted(r["external_id"] for r in rows()) == ["1000", "1001"]


def test_an_interrupted_replay_is_finished_by_the_next(app: t.Any) -> None:
    state = app.extensions["flowpilot_analytics"]
    payload = {
        "account_id": 1,
        "session_id": 2,
        "activity_type": "note_posted",
        "psa_ticket_id": None,
        "external_id": "I-1",
        "minutes": None,
        "created_at": NOW.isoformat(),
    }
    with open(state.dead_letters.path + ".replaying", "w", encoding="utf-8") as handle:  # left by a crash
        handle.write(json.dumps(payload) + "\n")
    state.dead_letters.append({**payload, "external_id": "I-2", "created_at": NOW})
    assert sorted(p["external_id"] for p in state.dead_letters.pending()) == ["I-1", "I-2"]
    assert "written 2, already present 0, still failing 0" in replay(app).output
    assert sorted(r["external_id"] for r in rows()) == ["I-1", "I-2"]
    assert state.dead_letters.pending() == []
