"""The post-push hook, driven through a fake PSA service wrapped by the public API."""

from __future__ import annotations

import json
import logging
import math
import threading
import types
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import FlowpilotAnalytics, activity_recorded, registration

from . import factories as f
from . import host
from .fake_psa import FakePsaService, PsaDown
from .helpers import PSA, activity_rows, as_user, replay
from .host import NOW, AISession, db


@pytest.fixture
def analytics(app: t.Any) -> FlowpilotAnalytics:
    return t.cast(FlowpilotAnalytics, app.extensions["test_analytics"])


@pytest.fixture
def psa(analytics: FlowpilotAnalytics) -> FakePsaService:
    return t.cast(FakePsaService, analytics.wrap_psa_service(FakePsaService()))


def committed_rows() -> list[dict[str, t.Any]]:
    """Activity rows as another connection sees them (committed only)."""
    return activity_rows()


def ticket_session(account: int = 1, ticket: str | None = "T-1") -> AISession:
    sess = f.session(account, f.at(days=1), ticket=ticket)
    f.commit()
    return sess


def test_successful_pushes_record_one_row_each(psa: FakePsaService) -> None:
    sess = ticket_session()
    note = psa.push_note(sess, "Fixed the VPN")
    entry = psa.push_time_entry(sess, 37.5)
    assert note == {"id": "1000", "text": "Fixed the VPN"}
    assert entry.minutes == 37.5
    f.commit()
    rows = committed_rows()
    assert [(r["activity_type"], r["external_id"], r["minutes"]) for r in rows] == [
        ("note_posted", "1000", None),
        ("time_entry_posted", "1001", 37.5),
    ]
    assert {(r["account_id"], r["session_id"], r["psa_ticket_id"]) for r in rows} == {
        (1, sess.id, "T-1")
    }
    assert all(r["created_at"] == NOW for r in rows)


def test_keyword_arguments_are_read_too(psa: FakePsaService) -> None:
    sess = ticket_session()
    psa.push_time_entry(session=sess, minutes=15)
    f.commit()
    assert [(r["activity_type"], r["minutes"]) for r in committed_rows()] == [
        ("time_entry_posted", 15.0)
    ]


def test_failed_push_propagates_unchanged_and_records_nothing(psa: FakePsaService) -> None:
    sess = ticket_session()
    error = PsaDown("ConnectWise said 502")
    psa.fail_with = error
    with pytest.raises(PsaDown) as raised:
        psa.push_note(sess, "text")
    assert raised.value is error
    f.commit()
    assert committed_rows() == []


def test_dropped_table_logs_payload_and_returns_the_push_result(
    psa: FakePsaService, caplog: pytest.LogCaptureFixture
) -> None:
    sess = ticket_session()
    session_id = sess.id
    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)
    try:
        with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
            result = psa.push_time_entry(sess, 20)
            db.session.rollback()  # on SQLite the write waits for the host's transaction to end
        assert result.minutes == 20
        records = [
            r
            for r in caplog.records
            if r.name.startswith("flowpilot_analytics") and r.levelno == logging.ERROR
        ]
        assert len(records) == 1
        payload = json.loads(records[0].getMessage().split("activity: ", 1)[1])
        assert payload["account_id"] == 1 and payload["session_id"] == session_id
        assert payload["activity_type"] == "time_entry_posted" and payload["minutes"] == 20.0
        assert payload["external_id"] == "1000" and len(payload["idempotency_key"]) == 36
        # the host's session is still usable: its later work commits
        db.session.add(AISession(account_id=1, created_at=f.at(), title="after"))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AISession)) == 2
    finally:
        db.session.rollback()
        db.metadata.tables["psa_activity_logs"].create(db.engine)


def test_invalid_pending_host_object_is_not_flushed_by_the_hook(psa: FakePsaService) -> None:
    sess = ticket_session()
    bad = AISession(account_id=1, created_at=None, title="no created_at: NOT NULL violation")
    db.session.add(bad)
    result = psa.push_note(sess, "documented")
    assert result["id"] == "1000"
    db.session.expunge(bad)  # the host drops its own bad object...
    db.session.add(AISession(account_id=1, created_at=f.at(), title="good"))
    db.session.commit()  # ...and its good work commits, with the activity
    assert [r["external_id"] for r in committed_rows()] == ["1000"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AISession)) == 2


def test_host_flush_error_then_push_still_returns(
    psa: FakePsaService, caplog: pytest.LogCaptureFixture
) -> None:
    sess = ticket_session()
    db.session.add(AISession(account_id=1, created_at=None, title="bad"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.flush()
    # the host has not rolled back yet: its session refuses work; the hook reads the expired
    # session's columns on its own connection, never through the host's session, and records the
    # push all the same
    with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
        assert psa.push_note(sess, "x")["id"] == "1000"
    db.session.rollback()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r["external_id"], r["psa_ticket_id"]) for r in committed_rows()] == [("1000", "T-1")]
    db.session.add(AISession(account_id=1, created_at=f.at(), title="later"))
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AISession)) == 2


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((types.SimpleNamespace(id=1, psa_ticket_id="T"), 10), {}),  # no account_id
        (
            (types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "lots"),
            {},
        ),  # minutes not a number
        ((), {}),  # no session at all
    ],
)
def test_unreadable_arguments_are_logged_not_raised(
    analytics: FlowpilotAnalytics, caplog: pytest.LogCaptureFixture, args: t.Any, kwargs: t.Any
) -> None:
    @analytics.psa_activity("time_entry_posted")
    def push(*a: t.Any, **k: t.Any) -> dict[str, str]:
        return {"id": "E-1"}

    with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
        assert push(*args, **kwargs) == {"id": "E-1"}
    assert [
        r for r in caplog.records if "could not read a time_entry_posted activity" in r.getMessage()
    ]
    f.commit()
    assert committed_rows() == []


def test_a_push_the_hook_cannot_read_logs_no_note_text_or_psa_answer(
    analytics: FlowpilotAnalytics, caplog: pytest.LogCaptureFixture
) -> None:
    @analytics.psa_activity("note_posted", extract=lambda args, kwargs, result: {"session_id": 1})
    def push_note(session: t.Any, text: str) -> dict[str, str]:
        return {"id": "N-1", "access_token": "tok-SECRET-123"}

    with caplog.at_level(logging.DEBUG):
        assert push_note(types.SimpleNamespace(id=1), "Customer password is hunter2")["id"] == "N-1"
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "could not read a note_posted activity" in text
    assert "hunter2" not in text and "tok-SECRET-123" not in text


@pytest.mark.parametrize("minutes", [math.nan, math.inf, -5])
def test_non_finite_or_negative_minutes_are_refused_not_stored(
    client: t.Any, psa: FakePsaService, minutes: float, caplog: pytest.LogCaptureFixture
) -> None:
    sess = f.session(1, f.at(days=1), ticket="T")
    f.commit()
    with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
        result = psa.push_time_entry(sess, minutes)
    assert result.minutes is minutes  # the push's own result is untouched
    f.commit()
    assert any(
        "could not read" in r.getMessage() and "finite number" in r.getMessage()
        for r in caplog.records
    )
    body = client.get(PSA, headers=as_user(1, "admin"))
    assert body.status_code == 200 and body.get_json()["time_entries"]["count"] == 0


def test_wrapping_twice_records_once(analytics: FlowpilotAnalytics, psa: FakePsaService) -> None:
    analytics.wrap_psa_service(psa)
    analytics.wrap_psa_service(psa)
    psa.push_note(ticket_session(), "once")
    f.commit()
    assert len(committed_rows()) == 1


def test_a_service_wrapped_by_two_extension_objects_records_in_each_app(
    database_uri: str, make_app: t.Any
) -> None:
    first = make_app(host.create_app(database_uri, analytics=FlowpilotAnalytics()))
    second = make_app(host.create_app(database_uri, analytics=FlowpilotAnalytics()))
    with first.app_context():
        db.create_all(bind_key=None)
    service = FakePsaService()
    first.extensions["test_analytics"].wrap_psa_service(service)
    second.extensions["test_analytics"].wrap_psa_service(service)
    sess = types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T")
    with second.app_context():
        service.push_note(sess, "recorded by the second app")
        table = db.metadata.tables["psa_activity_logs"]
        with db.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 1
        db.session.remove()
    with first.app_context():
        db.drop_all(bind_key=None)


def test_retry_with_same_external_id_is_recorded_once_per_account_and_type(
    psa: FakePsaService,
) -> None:
    sess = ticket_session()
    other = ticket_session(account=2)
    psa.fixed_id = "N-7"
    psa.push_note(sess, "first try")
    psa.push_note(sess, "retry")
    psa.push_time_entry(sess, 5)  # same id, other type: recorded
    psa.push_note(other, "other account, same id")  # other account: recorded
    f.commit()
    rows = committed_rows()
    assert sorted((r["account_id"], r["activity_type"]) for r in rows) == [
        (1, "note_posted"),
        (1, "time_entry_posted"),
        (2, "note_posted"),
    ]


def test_pushes_without_external_id_are_all_recorded(analytics: FlowpilotAnalytics) -> None:
    service = types.SimpleNamespace(push_note=lambda session, text: None)
    analytics.wrap_psa_service(service)
    sess = ticket_session()
    service.push_note(sess, "a")
    service.push_note(sess, "b")
    f.commit()
    assert [r["external_id"] for r in committed_rows()] == [None, None]


def test_module_service_and_configured_method_names(analytics: FlowpilotAnalytics) -> None:
    module = types.ModuleType("psa_documentation_service")
    module.post_doc = lambda session, text, **kw: {"id": "D1"}  # type: ignore[attr-defined]
    module.log_time = lambda session, minutes, **kw: {"id": "T1"}  # type: ignore[attr-defined]
    analytics.wrap_psa_service(
        module, methods={"note_posted": "post_doc", "time_entry_posted": "log_time"}
    )
    sess = ticket_session()
    assert module.post_doc(sess, "x") == {"id": "D1"}
    assert module.log_time(sess, 12) == {"id": "T1"}
    f.commit()
    assert [(r["activity_type"], r["minutes"]) for r in committed_rows()] == [
        ("note_posted", None),
        ("time_entry_posted", 12.0),
    ]


def test_service_without_push_functions_is_refused(analytics: FlowpilotAnalytics) -> None:
    with pytest.raises(AttributeError, match="push_note"):
        analytics.wrap_psa_service(object())


def test_decorator_with_custom_extract(analytics: FlowpilotAnalytics) -> None:
    @analytics.psa_activity(
        "time_entry_posted",
        extract=lambda args, kwargs, result: {
            "account_id": kwargs["tenant"],
            "session_id": None,
            "minutes": result["mins"],
            "external_id": result["ref"],
        },
    )
    def log_time(*, tenant: int, hours: float) -> dict[str, t.Any]:
        return {"ref": "X-1", "mins": hours * 60}

    assert log_time(tenant=3, hours=1.5) == {"ref": "X-1", "mins": 90.0}
    f.commit()
    assert [(r["account_id"], r["minutes"], r["external_id"]) for r in committed_rows()] == [
        (3, 90.0, "X-1")
    ]


def test_signal_is_sent_once_per_recorded_row(app: t.Any, psa: FakePsaService) -> None:
    received: list[tuple[t.Any, dict[str, t.Any]]] = []

    def receiver(sender: t.Any, activity: dict[str, t.Any]) -> None:
        received.append((sender, activity))

    with activity_recorded.connected_to(receiver):
        sess = ticket_session()
        psa.fixed_id = "S-1"
        psa.push_note(sess, "a")
        psa.push_note(sess, "retry: deduplicated, no signal")
        f.commit()
    assert len(received) == 1
    sender, activity = received[0]
    assert sender is app
    assert (activity["activity_type"], activity["external_id"], activity["account_id"]) == (
        "note_posted",
        "S-1",
        1,
    )


def test_the_signal_follows_the_row_even_when_the_host_rolls_back(psa: FakePsaService) -> None:
    received: list[t.Any] = []
    with activity_recorded.connected_to(lambda sender, activity: received.append(activity)):
        sess = ticket_session()
        psa.push_note(sess, "a")
        db.session.rollback()  # the PSA holds the note whatever the host does: so does the table
        db.session.add(AISession(account_id=1, created_at=f.at(), title="later work"))
        db.session.commit()
    assert [a["external_id"] for a in received] == ["1000"]
    assert [r["external_id"] for r in committed_rows()] == ["1000"]


def test_signal_at_once_without_a_host_transaction(psa: FakePsaService) -> None:
    received: list[t.Any] = []
    db.session.rollback()
    with activity_recorded.connected_to(lambda sender, activity: received.append(activity)):
        psa.push_note(types.SimpleNamespace(id=3, account_id=1, psa_ticket_id="T"), "a")
    assert [a["session_id"] for a in received] == [3]


def test_failing_signal_receiver_does_not_break_the_push(psa: FakePsaService) -> None:
    def broken(sender: t.Any, activity: t.Any) -> None:
        raise RuntimeError("receiver bug")

    with activity_recorded.connected_to(broken):
        assert psa.push_note(ticket_session(), "x")["id"] == "1000"
    f.commit()
    assert len(committed_rows()) == 1


def test_outside_an_app_context_the_push_goes_through(
    psa: FakePsaService, caplog: pytest.LogCaptureFixture
) -> None:
    sess = types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T")
    results: list[t.Any] = []
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        worker = threading.Thread(
            target=lambda: results.append(psa.push_note(sess, "from a worker"))
        )
        worker.start()
        worker.join()
    assert results == [{"id": "1000", "text": "from a worker"}]
    assert any("outside an app context" in r.getMessage() for r in caplog.records)


# -- transaction semantics ------------------------------------------------------------------------


def test_row_survives_the_hosts_rollback_and_leaves_its_session_alone(psa: FakePsaService) -> None:
    sess = ticket_session()
    pending = AISession(account_id=1, created_at=f.at(), title="host work in progress")
    db.session.add(pending)
    db.session.flush()
    psa.push_note(sess, "x")
    assert (
        pending in db.session and db.session().in_transaction()
    )  # the host's unit of work is as it was
    db.session.rollback()
    assert [r["external_id"] for r in committed_rows()] == [
        "1000"
    ]  # recorded, whatever the host did
    assert (
        db.session.scalar(sa.select(sa.func.count()).select_from(AISession)) == 1
    )  # host's rollback held


def test_row_commits_with_the_hosts_transaction(psa: FakePsaService) -> None:
    sess = ticket_session()
    db.session.add(AISession(account_id=1, created_at=f.at(), title="host work"))
    psa.push_note(sess, "x")
    db.session.commit()
    assert len(committed_rows()) == 1


def test_without_a_host_transaction_the_row_commits_at_once(psa: FakePsaService) -> None:
    sess = types.SimpleNamespace(id=5, account_id=1, psa_ticket_id="T")
    db.session.rollback()
    assert not db.session().in_transaction()
    psa.push_note(sess, "x")
    assert len(committed_rows()) == 1
    assert not db.session().in_transaction()


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
def test_a_push_from_a_host_route_is_recorded_however_its_transaction_ends(
    served: Flask, then: str
) -> None:
    with served.app_context():
        sess = f.session(1, f.at(days=1), ticket="T-7")
        f.commit()
        session_id = sess.id
    response = served.test_client().post(f"/host/sessions/{session_id}/push?then={then}&minutes=20")
    assert response.get_json() == {
        "note": "1000",
        "time_entry": "1001",
    }  # the push's answers, untouched
    with served.app_context():
        recorded = committed_rows()
    assert [(r["activity_type"], r["external_id"], r["minutes"]) for r in recorded] == [
        ("note_posted", "1000", None),
        ("time_entry_posted", "1001", 20.0),
    ]
    assert all(len(r["idempotency_key"]) == 36 for r in recorded)
    assert registration(served).dead_letters.pending() == []  # rows, not dead letters


def test_recording_leaves_the_hosts_pending_objects_and_transaction_alone(app: Flask) -> None:
    psa = app.extensions["test_psa"]
    sess = f.session(1, f.at(days=1), ticket="T")
    f.commit()
    draft = AISession(account_id=1, created_at=f.at(), title="unflushed host work")
    db.session.add(draft)
    psa.push_note(sess, "x")
    assert draft in db.session.new  # not flushed by the hook
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AISession)) == 1
    assert len(committed_rows()) == 1


def test_reading_an_expired_orm_session_never_begins_the_hosts_transaction(app: Flask) -> None:
    psa = app.extensions["test_psa"]
    sess = f.session(2, f.at(days=1), ticket="T-9")
    f.commit()
    assert not db.session().in_transaction()
    psa.push_time_entry(sess, 12)
    assert not db.session().in_transaction()
    with db.session.begin():  # the host's own explicit transaction still starts
        pass
    assert [(r["account_id"], r["psa_ticket_id"], r["minutes"]) for r in committed_rows()] == [
        (2, "T-9", 12.0)
    ]


def test_hook_rows_reach_the_psa_metrics(client: t.Any, psa: FakePsaService) -> None:
    sess = ticket_session()
    psa.push_note(sess, "doc")
    psa.push_time_entry(sess, 45)
    f.commit()
    body = client.get(
        "/api/v1/analytics/flowpilot/psa-metrics",
        headers={"X-Account": "1", "X-Role": "team_admin"},
    ).get_json()
    assert body["funnel"]["time_entry_logged"] == 1
    assert body["time_entries"] == {
        "count": 1,
        "total_minutes": 45.0,
        "total_hours": 0.75,
        "billable_minutes": 0.0,
        "non_billable_minutes": 0.0,
        "unclassified_minutes": 45.0,
    }


def test_legacy_sqlite_transactions_record_too(
    database_uri: str, backend: str, make_app: t.Any
) -> None:
    """A host that never applied ``sqlite_transactional`` still gets its rows, on commit and on
    rollback."""
    if backend != "sqlite":
        pytest.skip("a pysqlite matter")
    from flask import Flask

    app = make_app(Flask("legacy_sqlite"))
    app.config.update(SQLALCHEMY_DATABASE_URI=database_uri, SECRET_KEY="s")
    db.init_app(app)
    analytics = FlowpilotAnalytics(app, db=db, identity_loader=lambda: None)
    service = analytics.wrap_psa_service(FakePsaService())
    with app.app_context():
        db.create_all(bind_key=None)
        for _ in range(2):
            db.session.execute(sa.text("SELECT 1"))  # the host has read: a transaction is open
            service.push_note(types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "x")
            db.session.rollback()
        assert [r["external_id"] for r in committed_rows()] == ["1000", "1001"]
        db.session.remove()


def test_a_coroutine_service_is_recorded_after_a_successful_await(
    analytics: FlowpilotAnalytics,
) -> None:
    import asyncio

    class AsyncPsa:
        fail = False

        async def push_note(self, session: t.Any, text: str) -> dict[str, str]:
            await asyncio.sleep(0)
            if self.fail:
                raise PsaDown("rejected")
            return {"id": "A-1"}

        async def push_time_entry(self, session: t.Any, minutes: float) -> dict[str, str]:
            return {"id": "A-2"}

    service = analytics.wrap_psa_service(AsyncPsa())
    sess = ticket_session()
    pending = service.push_note(sess, "not awaited yet")
    f.commit()
    assert committed_rows() == []  # creating the coroutine records nothing
    assert asyncio.run(pending) == {"id": "A-1"}
    service.fail = True
    with pytest.raises(PsaDown):
        asyncio.run(service.push_note(sess, "fails"))
    assert asyncio.run(service.push_time_entry(sess, 7)) == {"id": "A-2"}
    f.commit()
    assert [(r["activity_type"], r["external_id"], r["minutes"]) for r in committed_rows()] == [
        ("note_posted", "A-1", None),
        ("time_entry_posted", "A-2", 7.0),
    ]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (
            (types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), 1e10),
            "minutes is too large",
        ),
        (
            (types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T" * 300), 5),
            "psa_ticket_id is longer",
        ),
        (
            (types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "secret fifteen"),
            "minutes must be a number",
        ),
        (
            (types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), 10**400),
            "minutes must be a number",
        ),
    ],
)
def test_values_no_column_could_hold_are_refused_at_push_time_naming_the_field(
    app: t.Any, psa: FakePsaService, caplog: pytest.LogCaptureFixture, args: t.Any, field: str
) -> None:
    with caplog.at_level(logging.INFO, logger="flowpilot_analytics"):
        assert psa.push_time_entry(*args).id == "1000"
        db.session.rollback()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert field in text and "secret" not in text and "T" * 300 not in text
    assert registration(app).dead_letters.pending() == []  # never a poison dead letter
    f.commit()
    assert committed_rows() == []


def test_every_activity_is_journaled_before_its_write_and_settled_after(
    app: t.Any, psa: FakePsaService
) -> None:
    store = registration(app).dead_letters
    seen: list[list[str]] = []

    def during_insert(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "INSERT INTO psa_activity_logs" in statement:
            seen.append([e["external_id"] for e in store.pending()])

    sess = ticket_session()
    db.session.rollback()  # no host transaction: written at once on every backend
    sa.event.listen(db.engine, "before_cursor_execute", during_insert)
    try:
        psa.push_note(sess, "journaled first")
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", during_insert)
    assert seen == [["1000"]]  # a kill during the write leaves a dead letter
    assert store.pending() == []  # settled once written
    assert [r["external_id"] for r in committed_rows()] == ["1000"]


def test_a_sqlite_push_inside_a_host_transaction_is_journaled_until_it_lands(
    app: Flask, dialect: str
) -> None:
    if dialect != "sqlite":
        pytest.skip("the journal serves SQLite's one-writer wait")
    psa = app.extensions["test_psa"]
    sess = f.session(1, f.at(days=1), ticket="T")
    f.commit()
    db.session.execute(
        sa.text("SELECT 1")
    )  # the host has read: the write waits for its transaction
    psa.push_note(sess, "x")
    assert [e["external_id"] for e in registration(app).dead_letters.pending()] == [
        "1000"
    ]  # a crash now keeps it
    assert committed_rows() == []
    db.session.rollback()
    assert [r["external_id"] for r in committed_rows()] == ["1000"]
    assert registration(app).dead_letters.pending() == []  # settled
    assert "written 0, already present 0, still failing 0" in replay(app).output


def test_an_expired_object_is_journaled_before_it_is_read_and_completed_after(
    app: t.Any, psa: FakePsaService
) -> None:
    store = registration(app).dead_letters
    seen: list[list[tuple[t.Any, t.Any]]] = []

    def during_read(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "FROM ai_sessions" in statement:
            seen.append([(e["session_id"], e["psa_ticket_id"]) for e in store.pending()])

    sess = ticket_session()
    session_id = sess.id
    db.session.commit()  # expires it: the hook must read its columns
    sa.event.listen(db.engine, "before_cursor_execute", during_read)
    try:
        psa.push_note(sess, "read after a commit")
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", during_read)
    assert seen == [[(session_id, None)]]  # a kill during the read leaves a dead letter with its id
    assert store.pending() == []
    assert [(r["session_id"], r["psa_ticket_id"]) for r in committed_rows()] == [
        (session_id, "T-1")
    ]


def test_a_failure_recording_did_not_foresee_never_reaches_the_push(
    app: t.Any,
    psa: FakePsaService,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowpilot_analytics import hook

    def broken(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise RuntimeError("an unforeseen host value: secret")

    monkeypatch.setattr(hook, "build_payload", broken)
    with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
        assert psa.push_note(ticket_session(), "x")["id"] == "1000"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed unexpectedly (RuntimeError)" in text and "secret" not in text
