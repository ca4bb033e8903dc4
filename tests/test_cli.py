"""``flask flowpilot-analytics`` commands through Flask's CLI runner."""

from __future__ import annotations

import typing as t

import pytest


def test_ddl_for_the_apps_own_database(app: t.Any, dialect: str) -> None:
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "ddl"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE psa_activity_logs" in result.output
    assert "CREATE UNIQUE INDEX uq_psa_activity_logs_account_type_external" in result.output
    assert ("TIMESTAMP WITH TIME ZONE" in result.output) == (dialect == "postgresql")


@pytest.mark.parametrize("database_uri", ["sqlite://"], indirect=False)
def test_ddl_for_another_dialect(app: t.Any) -> None:
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "ddl", "--dialect", "postgresql"])
    assert result.exit_code == 0, result.output
    assert "BIGSERIAL" in result.output and "TIMESTAMP WITH TIME ZONE" in result.output


def test_doctor_passes_when_every_index_is_there(app: t.Any) -> None:
    result = app.test_cli_runner().invoke(args=["flowpilot-analytics", "doctor"])
    assert result.exit_code == 0, result.output
    assert (
        "ok      ai_session_steps (account_id, session_id, created_at): ix_steps_account_session_created"
        in result.output
    )
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
