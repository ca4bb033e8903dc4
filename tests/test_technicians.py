"""Who pushed and whether it is billable: the hook's attribution (extractor, keyword, request
identity), the billable split in every psa-metrics block, ``group_by=technician`` against a
reference computed here, dead letters and replay carrying both fields, and the upgrade path of a
table without the two columns."""

from __future__ import annotations

import csv
import io
import logging
import random
import types
import typing as t
from collections import defaultdict
from datetime import timedelta, timezone

import pytest
import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import FlowpilotAnalytics, registration

from . import factories as f
from . import host
from .fake_psa import FakePsaService
from .helpers import PSA, activity_rows, as_user, replay
from .host import NOW, db

ADMIN = as_user(1, "team_admin")
TECHNICIANS = ("7", "10", "alice", None)
BILLABLE = (True, False, None)


def pushed_session(account: int = 1) -> types.SimpleNamespace:
    """A pushed session as a plain object (the hook reads it as it is)."""
    return types.SimpleNamespace(id=1, account_id=account, psa_ticket_id="T-1")


def parts_add_up(entries: t.Mapping[str, t.Any]) -> None:
    """The three parts add up to the total, in the documented order, to the last bit."""
    assert (entries["billable_minutes"] + entries["non_billable_minutes"]) + entries[
        "unclassified_minutes"
    ] == entries["total_minutes"]


# -- the figures against a reference -----------------------------------------------------------


def _seed(
    rng: random.Random,
) -> list[tuple[int, str, str | None, bool | None, float | None, t.Any]]:
    """Notes and time entries over 40 days by four technicians (one unknown) with a billable mix,
    and account 2's under the same user ids; returns (account, type, user, billable, minutes,
    at)."""
    made = []
    for account in (1, 2):
        sess = f.session(account, f.at(days=45), ticket="T")
        for i in range(160 if account == 1 else 40):
            kind = "time_entry_posted" if i % 3 else "note_posted"
            user = rng.choice(TECHNICIANS)
            billable = rng.choice(BILLABLE) if kind == "time_entry_posted" else None
            minutes = round(rng.uniform(0.25, 90), 2) if kind == "time_entry_posted" else None
            at = f.at(days=rng.uniform(0.01, 40))
            f.activity(account, sess.id, kind, at, minutes, user_id=user, billable=billable)
            made.append((account, kind, user, billable, minutes, at))
    f.commit()
    return made


def _reference(
    made: t.Sequence[tuple[int, str, str | None, bool | None, float | None, t.Any]],
    start: t.Any,
    end: t.Any,
) -> dict[str | None, dict[str, t.Any]]:
    """Per technician (and ``"*"`` for all): notes and the minutes split, of account 1 in
    ``[start, end)``."""
    out: dict[t.Any, dict[str, t.Any]] = defaultdict(
        lambda: {"notes": 0, "count": 0, True: 0.0, False: 0.0, None: 0.0}
    )
    for account, kind, user, billable, minutes, at in made:
        if account != 1 or not start <= at.replace(tzinfo=timezone.utc) < end:
            continue
        for key in (user, "*"):
            if kind == "note_posted":
                out[key]["notes"] += 1
            else:
                out[key]["count"] += 1
                out[key][billable] += t.cast(float, minutes)
    return dict(out)


def _matches(entries: t.Mapping[str, t.Any], want: t.Mapping[t.Any, t.Any]) -> None:
    assert entries["count"] == want["count"]
    assert entries["billable_minutes"] == pytest.approx(want[True], abs=1e-6)
    assert entries["non_billable_minutes"] == pytest.approx(want[False], abs=1e-6)
    assert entries["unclassified_minutes"] == pytest.approx(want[None], abs=1e-6)
    parts_add_up(entries)


def test_the_billable_split_and_technician_groups_equal_the_reference(client: t.Any) -> None:
    made = _seed(random.Random(21))
    body = client.get(PSA + "?group_by=technician&compare=previous", headers=ADMIN).get_json()
    window = (NOW - timedelta(days=30), NOW)
    truth = _reference(made, *window)
    _matches(body["time_entries"], truth["*"])
    before = _reference(made, NOW - timedelta(days=60), window[0])
    _matches(body["previous"]["time_entries"], before["*"])
    groups = body["groups"]
    assert [g["technician"] for g in groups] == [
        "7",
        "10",
        "alice",
        None,
    ]  # natural order, null last
    for group in groups:
        want = truth[group["technician"]]
        assert group["notes_posted"] == want["notes"]
        _matches(group["time_entries"], want)
        assert set(group) == {"technician", "notes_posted", "time_entries"}
    # the groups add up to the window's figures
    assert sum(g["time_entries"]["count"] for g in groups) == body["time_entries"]["count"]
    assert sum(g["notes_posted"] for g in groups) == sum(
        d["notes_posted"] for d in body["daily_trend"]
    )


def test_each_client_group_carries_the_split(client: t.Any) -> None:
    db.session.rollback()
    with db.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE ai_sessions ADD COLUMN client_id INTEGER"))
    mine, theirs = f.session(1, f.at(days=3), ticket="A"), f.session(1, f.at(days=3), ticket="B")
    f.commit()
    db.session.execute(
        sa.text("UPDATE ai_sessions SET client_id = 5 WHERE id = :id"), {"id": mine.id}
    )
    f.activity(1, mine.id, "time_entry_posted", f.at(days=2), 30, user_id="7", billable=True)
    f.activity(1, mine.id, "time_entry_posted", f.at(days=2), 15.5, user_id="7", billable=False)
    f.activity(1, theirs.id, "time_entry_posted", f.at(days=2), 20, user_id="8", billable=True)
    f.commit()
    body = client.get(PSA + "?group_by=client", headers=ADMIN).get_json()
    by_client = {g["client"]: g["time_entries"] for g in body["groups"]}
    assert (by_client[5]["billable_minutes"], by_client[5]["non_billable_minutes"]) == (30.0, 15.5)
    assert (by_client[None]["billable_minutes"], by_client[None]["unclassified_minutes"]) == (20, 0)
    # one client's technicians: the filter applies to the technician groups too
    one = client.get(PSA + "?client=5&group_by=technician", headers=ADMIN).get_json()
    assert [(g["technician"], g["time_entries"]["total_minutes"]) for g in one["groups"]] == [
        ("7", 45.5)
    ]


def test_technician_groups_as_csv_one_row_each(client: t.Any) -> None:
    f.session(1, f.at(days=3), ticket="A")
    f.activity(1, None, "time_entry_posted", f.at(days=2), 30, user_id="7", billable=True)
    f.activity(1, None, "note_posted", f.at(days=2), user_id="7")
    f.activity(1, None, "time_entry_posted", f.at(days=1), 12.25, billable=False)
    f.commit()
    response = client.get(PSA + "?group_by=technician&format=csv", headers=ADMIN)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "psa_by_technician.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0])[:2] == ["technician", "notes_posted"]
    assert [
        (r["technician"], r["notes_posted"], r["time_entries_billable_minutes"]) for r in rows
    ] == [
        ("7", "1", "30.0"),
        ("", "0", "0.0"),
    ]
    assert rows[1]["time_entries_non_billable_minutes"] == "12.25"


def test_technician_groups_keep_the_role_gate_and_the_account(client: t.Any) -> None:
    f.activity(2, None, "time_entry_posted", f.at(days=2), 30, user_id="7", billable=True)
    f.commit()
    assert client.get(PSA + "?group_by=technician", headers=as_user(1)).status_code == 403
    body = client.get(PSA + "?group_by=technician", headers=ADMIN).get_json()
    assert body["groups"] == [] and body["time_entries"]["billable_minutes"] == 0.0
    bad = client.get(PSA + "?group_by=user", headers=ADMIN)
    assert bad.status_code == 400 and "group_by" in bad.get_json()["error"]["details"]["fields"]


def test_the_report_command_groups_by_technician(app: Flask) -> None:
    with app.app_context():
        f.activity(1, None, "time_entry_posted", f.at(days=2), 30, user_id="7", billable=True)
        f.commit()
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["flowpilot-analytics", "psa-metrics", "--account", "1", "--group-by", "technician"]
    )
    assert result.exit_code == 0, result.output
    assert "technician" in result.output and "billable_minutes" in result.output
    assert "30.0" in result.output


# -- the hook's attribution ------------------------------------------------------------------------


@pytest.fixture
def psa(app: Flask) -> FakePsaService:
    return t.cast(FakePsaService, app.extensions["test_psa"])


def _last() -> dict[str, t.Any]:
    f.commit()
    return activity_rows()[-1]


def test_the_request_identity_is_the_technician_unless_the_push_says(
    app: Flask, psa: FakePsaService
) -> None:
    with app.test_request_context(headers=as_user(1, "engineer", user=42)):
        psa.push_time_entry(pushed_session(), 15)
        assert (_last()["user_id"], _last()["billable"]) == ("42", None)
        psa.push_time_entry(pushed_session(), 15, user_id=9, billable=True)
        assert (_last()["user_id"], _last()["billable"]) == ("9", True)
        psa.push_note(pushed_session(), "x", billable=False)
        assert (_last()["user_id"], _last()["billable"]) == ("42", False)
    psa.push_time_entry(pushed_session(), 15)  # no request, no keyword: unknown
    assert (_last()["user_id"], _last()["billable"]) == (None, None)


def test_the_extractor_wins_over_the_keywords(app: Flask) -> None:
    analytics = t.cast(FlowpilotAnalytics, app.extensions["test_analytics"])

    @analytics.psa_activity(
        "time_entry_posted",
        extract=lambda args, kwargs, result: {
            "account_id": 1,
            "minutes": kwargs["minutes"],
            "external_id": result,
            "user_id": "from-extractor",
            "billable": True,
        },
    )
    def log_time(*, minutes: float, user_id: str, billable: bool) -> str:
        return "E-1"

    with app.test_request_context(headers=as_user(1, "engineer", user=42)):
        log_time(minutes=5, user_id="keyword", billable=False)
    assert (_last()["user_id"], _last()["billable"]) == ("from-extractor", True)


def test_an_identity_mapping_names_the_technician(database_uri: str, tmp_path: t.Any) -> None:
    def as_mapping() -> dict[str, object] | None:
        found = host.load_identity()
        return None if found is None else vars(found)

    app = host.create_app(
        database_uri,
        identity_loader=as_mapping,
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(tmp_path / "dl" / "dead.jsonl"),
    )
    try:
        with app.app_context():
            db.create_all(bind_key=None)
            with app.test_request_context(headers=as_user(1, "engineer", user=5)):
                app.extensions["test_psa"].push_time_entry(pushed_session(), 3)
            assert _last()["user_id"] == "5"
            ok = app.test_client().get(PSA, headers=as_user(1, "team_admin"))
            assert ok.status_code == 200
    finally:
        with app.app_context():
            db.session.remove()
            db.drop_all(bind_key=None)
            db.engine.dispose()


@pytest.mark.parametrize(
    ("keywords", "field", "kind"),
    [
        ({"billable": "yes"}, "billable", "str"),
        ({"billable": 1}, "billable", "int"),
        ({"user_id": 3.5}, "user_id", "float"),
        ({"user_id": True}, "user_id", "bool"),
        ({"user_id": "u" * 256}, "user_id", "longer than its column's 255"),
    ],
)
def test_a_bad_value_is_recorded_as_unknown_with_a_warning_naming_its_type(
    app: Flask,
    psa: FakePsaService,
    caplog: pytest.LogCaptureFixture,
    keywords: dict[str, t.Any],
    field: str,
    kind: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        psa.push_time_entry(pushed_session(), 15, **keywords)
    row = _last()
    assert row[field] is None and row["minutes"] == 15.0  # the push is recorded, the field unknown
    warned = [r.getMessage() for r in caplog.records if field in r.getMessage()]
    assert warned and kind in warned[0]
    assert all(str(value) not in " ".join(warned) for value in keywords.values() if value != 1)


def test_dead_letters_carry_both_fields_and_replay_writes_them(
    app: Flask, psa: FakePsaService
) -> None:
    table = db.metadata.tables["psa_activity_logs"]
    db.session.rollback()
    table.drop(db.engine)
    try:
        psa.push_time_entry(pushed_session(), 20, user_id="tech-1", billable=False)
    finally:
        db.session.rollback()
        table.create(db.engine)
    pending = registration(app).dead_letters.pending()
    assert [(p["user_id"], p["billable"]) for p in pending] == [("tech-1", False)]
    result = replay(app)
    assert result.exit_code == 0, result.output
    rows = activity_rows()
    assert [(r["user_id"], r["billable"], r["minutes"]) for r in rows] == [("tech-1", False, 20.0)]


# -- the upgrade path ------------------------------------------------------------------------------


def test_a_table_without_the_two_columns_is_upgraded_by_the_statements_doctor_prints(
    app: Flask, psa: FakePsaService
) -> None:
    db.session.rollback()
    table = db.metadata.tables["psa_activity_logs"]
    table.drop(db.engine)
    older = sa.Table(
        "psa_activity_logs",
        sa.MetaData(),
        *(c._copy() for c in table.columns if c.name not in ("user_id", "billable")),
    )
    older.create(db.engine)
    for index in table.indexes:
        index.create(db.engine)
    with app.test_request_context(headers=as_user(1, "engineer", user=3)):
        psa.push_time_entry(pushed_session(), 10, billable=True)
    assert len(registration(app).dead_letters.pending()) == 1  # kept until the columns exist
    missing = app.test_client().get(PSA, headers=ADMIN)
    assert missing.status_code == 500 and missing.get_json()["error"]["code"] == "schema_missing"
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 1
    assert "MISSING columns psa_activity_logs: user_id, billable" in result.output
    statements = [
        line.rstrip(";") for line in result.output.splitlines() if line.startswith("ALTER TABLE")
    ]
    assert statements[0].startswith("ALTER TABLE psa_activity_logs ADD COLUMN user_id VARCHAR(255)")
    assert statements[1].startswith("ALTER TABLE psa_activity_logs ADD COLUMN billable BOOLEAN")
    with db.engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    assert replay(app).exit_code == 0
    assert [(r["user_id"], r["billable"]) for r in activity_rows()] == [("3", True)]
    body = app.test_client().get(PSA, headers=ADMIN).get_json()
    assert body["time_entries"]["billable_minutes"] == 10.0


def test_an_incomplete_identity_mapping_is_a_401_naming_its_type(
    database_uri: str, tmp_path: t.Any
) -> None:
    app = host.create_app(
        database_uri,
        identity_loader=lambda: {"user_id": 1, "account_id": 1},
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(tmp_path / "dl" / "dead.jsonl"),
    )
    try:
        response = app.test_client().get(PSA)
        error = response.get_json()["error"]
        assert response.status_code == 401
        assert "(a dict) has no role key" in error["message"]
        assert error["details"] == {"missing": "role", "identity_type": "dict"}
    finally:
        with app.app_context():
            db.engine.dispose()


# -- the request's identity, read safely -------------------------------------------------------


class _Exploding:
    """An identity whose attributes fail when read (an expired ORM user in a broken session)."""

    account_id = 1

    @property
    def user_id(self) -> t.NoReturn:
        raise RuntimeError("the session needs a rollback")


def test_an_identity_that_fails_when_read_never_costs_the_activity(
    database_uri: str, tmp_path: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = host.create_app(
        database_uri,
        identity_loader=_Exploding,
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(tmp_path / "dl" / "dead.jsonl"),
    )
    try:
        with app.app_context():
            db.create_all(bind_key=None)
            with (
                caplog.at_level(logging.WARNING, logger="flowpilot_analytics"),
                app.test_request_context(),
            ):
                app.extensions["test_psa"].push_time_entry(pushed_session(), 3)
            row = _last()
            assert (row["minutes"], row["user_id"]) == (3.0, None)
            assert any("identity loader failed" in r.getMessage() for r in caplog.records)
            assert "needs a rollback" not in caplog.text
    finally:
        with app.app_context():
            db.session.remove()
            db.drop_all(bind_key=None)
            db.engine.dispose()


def test_a_loader_reading_through_the_hosts_session_flushes_nothing(
    database_uri: str, tmp_path: t.Any
) -> None:
    def through_the_session() -> object:
        db.session.execute(sa.select(host.AISession.id).limit(1)).all()  # as a user_loader does
        return host.load_identity()

    app = host.create_app(
        database_uri,
        identity_loader=through_the_session,
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(tmp_path / "dl" / "dead.jsonl"),
    )
    try:
        with app.app_context():
            db.create_all(bind_key=None)
            with app.test_request_context(headers=as_user(1, "engineer", user=8)):
                pending = host.AISession(account_id=1, created_at=f.at(days=1))
                db.session.add(pending)
                app.extensions["test_psa"].push_time_entry(pushed_session(), 3)
                assert pending in db.session.new  # the host's pending object was not flushed
                db.session.rollback()
            assert _last()["user_id"] == "8"
    finally:
        with app.app_context():
            db.session.remove()
            db.drop_all(bind_key=None)
            db.engine.dispose()


def test_a_slow_identity_loader_is_named_once(
    app: Flask, psa: FakePsaService, caplog: pytest.LogCaptureFixture, monkeypatch: t.Any
) -> None:
    from flowpilot_analytics import hook

    skew = [0.0]
    real = hook.time.monotonic
    monkeypatch.setattr(hook.time, "monotonic", lambda: real() + skew[0])
    loader = registration(app).identity_loader

    budget = registration(app).settings.hook_timeout_ms / 1000.0

    def slow() -> object:
        skew[0] += budget * 0.8  # most of the push's budget, on the hook's clock (no sleeping)
        return loader()

    monkeypatch.setattr(registration(app), "identity_loader", slow)
    with (
        caplog.at_level(logging.WARNING, logger="flowpilot_analytics.hook"),
        app.test_request_context(headers=as_user(1, "engineer", user=8)),
    ):
        for _ in range(3):
            psa.push_time_entry(pushed_session(), 3)
    slow_lines = [r for r in caplog.records if "identity loader took" in r.getMessage()]
    assert len(slow_lines) == 1 and "pass user_id=" in slow_lines[0].getMessage()
    f.commit()
    kept = registration(app).dead_letters.pending()
    assert len(activity_rows()) + len(kept) == 3  # slow, never lost


@pytest.mark.parametrize(
    "value", [10**5000, "tech\x00nul", "\ud800", "x" * 37], ids=["huge", "nul", "surrogate", "long"]
)
def test_a_user_id_no_column_could_store_is_recorded_without_a_technician(
    database_uri: str, tmp_path: t.Any, value: object, backend: str
) -> None:
    """Against the host's own, shorter user_id column (36 characters) too."""
    metadata = sa.MetaData()
    sa.Table(
        "psa_activity_logs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("session_id", sa.Integer),
        sa.Column("activity_type", sa.String(64), nullable=False),
        sa.Column("psa_ticket_id", sa.String(255)),
        sa.Column("external_id", sa.String(255)),
        sa.Column("minutes", sa.Numeric(12, 2, asdecimal=False)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(36), unique=True),
        sa.Column("user_id", sa.String(36)),
        sa.Column("billable", sa.Boolean),
    )
    app = Flask(f"short_user_{backend}")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri,
        SECRET_KEY="s",
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(tmp_path / "dl" / "dead.jsonl"),
    )
    own = type(db)(metadata=metadata)
    own.init_app(app)
    analytics = FlowpilotAnalytics(app, db=own, identity_loader=host.load_identity)
    with app.app_context():
        own.create_all()
        try:
            service = analytics.wrap_psa_service(FakePsaService())
            service.push_time_entry(pushed_session(), 4, user_id=value)
            with own.engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT user_id, minutes FROM psa_activity_logs")).all()
            assert [tuple(r) for r in rows] == [(None, 4.0)]
            assert registration(app).dead_letters.pending() == []
        finally:
            own.session.remove()
            own.drop_all()
            own.engine.dispose()


def test_log_lines_never_carry_the_user_id(
    app: Flask, psa: FakePsaService, caplog: pytest.LogCaptureFixture
) -> None:
    table = db.metadata.tables["psa_activity_logs"]
    db.session.rollback()
    table.drop(db.engine)
    try:
        with caplog.at_level(logging.ERROR, logger="flowpilot_analytics"):
            psa.push_time_entry(pushed_session(), 20, user_id="dana@example.com", billable=True)
    finally:
        db.session.rollback()
        table.create(db.engine)
    assert "dana@example.com" not in caplog.text and '"billable": true' in caplog.text
    assert registration(app).dead_letters.pending()[0]["user_id"] == "dana@example.com"
