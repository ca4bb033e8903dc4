"""A stopwatch sample's note is the caller's words: stored and returned, never written to a log,
even when the database fails while storing it."""

from __future__ import annotations

import logging
import typing as t

import pytest

from .helpers import ESCALATIONS, as_user
from .host import db

NOTE = "Dr. Jane Example, ext. 4471, called about the payroll server"


def test_a_failed_write_logs_the_statement_but_never_the_note(
    client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    db.session.rollback()
    db.metadata.tables["flowpilot_baseline_samples"].drop(db.engine)
    caplog.set_level(logging.DEBUG)
    sample = {"seconds": 900.0, "measured_at": "2026-06-02T14:00:00Z", "note": NOTE}
    response = client.post(
        ESCALATIONS + "/baseline", json={"samples": [sample]}, headers=as_user(1, "team_admin")
    )
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "schema_missing"
    logged = caplog.text + "".join(
        logging.Formatter().formatException(record.exc_info)
        for record in caplog.records
        if record.exc_info
    )
    assert "flowpilot_baseline_samples" in logged  # the failure is logged ...
    assert NOTE not in logged and "payroll" not in logged  # ... without the note
