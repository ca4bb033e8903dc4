"""``flask flowpilot-analytics`` commands through Flask's CLI runner."""

from __future__ import annotations

import types
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import registration

from .helpers import activity_rows, replay
from .host import db


def test_ddl_for_the_apps_own_database(app: t.Any, dialect: str) -> None:
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "ddl"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE psa_activity_logs" in result.output
    assert "CREATE UNIQUE INDEX uq_psa_activity_logs_account_type_external" in result.output
    assert ("TIMESTAMP WITH TIME ZONE" in result.output) == (dialect == "postgresql")


@pytest.mark.parametrize("database_uri", ["sqlite://"], indirect=False)
def test_ddl_for_another_dialect(app: t.Any) -> None:
    result = app.test_cli_runner().invoke(
        args=["flowpilot-analytics", "ddl", "--dialect", "postgresql"]
    )
    assert result.exit_code == 0, result.output
    assert "BIGSERIAL" in result.output and "TIMESTAMP WITH TIME ZONE" in result.output


def test_doctor_passes_when_every_index_is_there(app: t.Any) -> None:
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 0, result.output
    assert (
        "ok      ai_session_steps (account_id, session_id, created_at): "
        "ix_steps_account_session_created"
    ) in result.output
    assert "uq_psa_activity_logs_account_type_external" in result.output


def test_doctor_prints_the_missing_index_and_fails(app: t.Any, dialect: str) -> None:
    from .host import db

    db.session.rollback()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_steps_account_session_created")
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 1
    assert "MISSING index ai_session_steps (account_id, session_id, created_at)" in result.output
    statement = [line for line in result.output.splitlines() if line.startswith("CREATE INDEX")][0]
    assert ("CONCURRENTLY" in statement) == (dialect == "postgresql")
    if dialect == "postgresql":  # CONCURRENTLY cannot run inside a transaction block
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(statement.rstrip(";"))
    else:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(statement.rstrip(";"))
    assert app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"]).exit_code == 0


def test_doctor_reports_a_missing_plugin_table_with_its_ddl(app: t.Any) -> None:
    from .host import db

    db.session.rollback()
    db.metadata.tables["psa_activity_logs"].drop(db.engine)
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 1
    assert "MISSING table psa_activity_logs (plugin)" in result.output
    assert "CREATE TABLE psa_activity_logs" in result.output


def test_doctor_wants_the_key_index_unique(app: Flask) -> None:
    db.session.rollback()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX uq_psa_activity_logs_idempotency_key")
        conn.exec_driver_sql(
            "CREATE INDEX ix_key ON psa_activity_logs (idempotency_key)"
        )  # not unique
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 1
    assert "MISSING unique index psa_activity_logs (idempotency_key)" in result.output
    assert "CREATE UNIQUE INDEX" in result.output
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_key")
        conn.exec_driver_sql(
            "CREATE UNIQUE INDEX uq_psa_activity_logs_idempotency_key "
            "ON psa_activity_logs (idempotency_key)"
        )


def test_an_old_activity_table_is_upgraded_by_the_statements_doctor_prints(app: Flask) -> None:
    """A 0.1 activity table, without the key column: pushes are kept until the statements doctor
    prints are run."""
    psa = app.extensions["test_psa"]
    db.session.rollback()
    table = db.metadata.tables["psa_activity_logs"]
    table.drop(db.engine)
    old = sa.Table(
        "psa_activity_logs",
        sa.MetaData(),
        *(c._copy() for c in table.columns if c.name != "idempotency_key"),
    )
    old.create(db.engine)
    psa.push_note(
        types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "before the upgrade"
    )
    assert (
        len(registration(app).dead_letters.pending()) == 1
    )  # kept, not lost, until the column exists
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert (
        result.exit_code == 1
        and "MISSING columns psa_activity_logs: idempotency_key" in result.output
    )
    statements = [
        line.rstrip(";")
        for line in result.output.splitlines()
        if line.startswith(("ALTER TABLE", "CREATE"))
    ]
    assert statements[0].startswith(
        "ALTER TABLE psa_activity_logs ADD COLUMN idempotency_key VARCHAR(36)"
    )
    for (
        statement
    ) in statements:  # one at a time: PostgreSQL's CONCURRENTLY runs outside a transaction
        with db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql(statement)
            conn.commit()
    again = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert again.exit_code == 1 and "MISSING" not in again.output  # the schema is right ...
    assert (
        "BACKLOG 1 dead letters" in again.output
    )  # ... and the push kept meanwhile waits for its replay
    assert "written 1" in replay(app).output
    done = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert done.exit_code == 0 and "ok      no dead letters" in done.output, done.output
    psa.push_note(types.SimpleNamespace(id=1, account_id=1, psa_ticket_id="T"), "after")
    assert [r["external_id"] for r in activity_rows()] == ["1000", "1001"]


# -- business hours --------------------------------------------------------------------------------

CALENDAR = {
    "timezone": "America/New_York",
    "effective_from": "2026-01-01",
    "weekly": {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
    "holidays": ["2026-12-24"],
}

#: An iCalendar feed: a yearly all-day event, a two-day event, a timed meeting and a cancelled day.
FEED = b"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//feed//EN
BEGIN:VEVENT
UID:a
DTSTART;VALUE=DATE:20260704
DTEND;VALUE=DATE:20260705
RRULE:FREQ=YEARLY
SUMMARY:Independence Day
END:VEVENT
BEGIN:VEVENT
UID:b
DTSTART;VALUE=DATE:20261224
DTEND;VALUE=DATE:20261226
SUMMARY:Christmas
END:VEVENT
BEGIN:VEVENT
UID:c
DTSTART:20260310T100000Z
DTEND:20260310T110000Z
SUMMARY:Meeting
END:VEVENT
BEGIN:VEVENT
UID:d
DTSTART;VALUE=DATE:20260601
STATUS:CANCELLED
SUMMARY:Cancelled
END:VEVENT
END:VCALENDAR
"""


def _write(tmp_path: t.Any, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def test_business_hours_add_and_show(app: Flask, tmp_path: t.Any) -> None:
    import json

    runner = app.test_cli_runner()
    empty = runner.invoke(args=["flowpilot-analytics", "business-hours", "show", "--account", "1"])
    assert empty.exit_code == 0 and "no business hours" in empty.output
    calendar = _write(tmp_path, "calendar.json", json.dumps(CALENDAR).encode())
    feed = _write(tmp_path, "feed.ics", FEED)
    added = runner.invoke(
        args=[
            "flowpilot-analytics",
            "business-hours",
            "add",
            "--account",
            "1",
            calendar,
            "--holidays-ics",
            feed,
        ]
    )
    assert added.exit_code == 0, added.output
    assert "added version 1 for account 1" in added.output
    shown = runner.invoke(
        args=["flowpilot-analytics", "business-hours", "show", "--account", "1", "--json"]
    )
    body = json.loads(shown.output)
    version = body["versions"][0]
    assert body["in_effect"]["id"] == version["id"] == 1
    # ten years of 4 July (2026-2035) and Christmas Eve and Day; the meeting and the cancelled day
    # are not holidays, and 2026-12-24 given twice is kept once
    july = [f"{year}-07-04" for year in range(2026, 2036)]
    assert version["holidays"] == sorted([*july, "2026-12-24", "2026-12-25"])
    table = runner.invoke(args=["flowpilot-analytics", "business-hours", "show", "--account", "1"])
    assert "version 1: from 2026-01-01 in America/New_York" in table.output
    assert "mon  09:00-17:00" in table.output and "sat  closed" in table.output
    assert "holidays: 12" in table.output
    other = runner.invoke(args=["flowpilot-analytics", "business-hours", "show", "--account", "2"])
    assert "no business hours" in other.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "a calendar version is a JSON object"),
        (b'{"timezone": "CET", "effective_from": "2026-01-01", "weekly": {}}', "timezone:"),
        (
            b'{"timezone": "UTC", "effective_from": "2026-01-01", "weekly": {"mon": [["9", "5"]]}}',
            "weekly.mon[0][0]:",
        ),
    ],
)
def test_business_hours_add_refuses_a_bad_file_and_stores_nothing(
    app: Flask, tmp_path: t.Any, content: bytes, message: str
) -> None:
    runner = app.test_cli_runner()
    path = _write(tmp_path, "bad.json", content)
    result = runner.invoke(
        args=["flowpilot-analytics", "business-hours", "add", "--account", "1", path]
    )
    assert result.exit_code == 2 and message in result.output
    shown = runner.invoke(args=["flowpilot-analytics", "business-hours", "show", "--account", "1"])
    assert "no business hours" in shown.output


def test_business_hours_add_refuses_an_unreadable_feed(app: Flask, tmp_path: t.Any) -> None:
    import json

    calendar = _write(tmp_path, "calendar.json", json.dumps(CALENDAR).encode())
    feed = _write(tmp_path, "feed.ics", b"this is not a calendar")
    result = app.test_cli_runner().invoke(
        args=[
            "flowpilot-analytics",
            "business-hours",
            "add",
            "--account",
            "1",
            calendar,
            "--holidays-ics",
            feed,
        ]
    )
    assert result.exit_code == 2 and "--holidays-ics" in result.output


def test_report_commands_take_the_clock(app: Flask, tmp_path: t.Any) -> None:
    import json
    from datetime import timedelta

    from . import factories as f

    sess = f.session(1)
    claimed = f.at(days=3)  # 2026-11-12 12:00 UTC, 07:00 in New York: before opening
    f.handoff(sess, claimed)
    f.step(sess, claimed + timedelta(hours=5))  # 12:00 in New York: 3 business hours
    db.session.commit()
    runner = app.test_cli_runner()
    refused = runner.invoke(
        args=["flowpilot-analytics", "escalations", "--account", "1", "--clock", "business"]
    )
    assert refused.exit_code == 2 and "no business hours" in refused.output
    calendar = _write(tmp_path, "calendar.json", json.dumps(CALENDAR).encode())
    runner.invoke(args=["flowpilot-analytics", "business-hours", "add", "--account", "1", calendar])
    for clock, seconds in (("wall", 18000.0), ("business", 10800.0)):
        result = runner.invoke(
            args=[
                "flowpilot-analytics",
                "escalations",
                "--account",
                "1",
                "--clock",
                clock,
                "--json",
            ]
        )
        body = json.loads(result.output)
        assert body["clock"] == clock and body["median_seconds"] == seconds
    table = runner.invoke(
        args=["flowpilot-analytics", "escalation-trend", "--account", "1", "--clock", "business"]
    )
    assert table.exit_code == 0 and "business" in table.output
    bad = runner.invoke(
        args=["flowpilot-analytics", "escalations", "--account", "1", "--clock", "x"]
    )
    assert bad.exit_code == 2


def test_doctor_reports_a_missing_calendar_table(app: Flask) -> None:
    db.session.rollback()
    db.metadata.tables["flowpilot_business_hours"].drop(db.engine)
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 1
    assert "MISSING table flowpilot_business_hours (plugin)" in result.output
    assert "CREATE TABLE flowpilot_business_hours" in result.output
    ddl = app.test_cli_runner().invoke(args=["flowpilot-analytics", "ddl"])
    assert "CREATE TABLE flowpilot_business_hours" in ddl.output
