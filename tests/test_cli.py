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
