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
