"""Analytics reads go to ``FLOWPILOT_ANALYTICS_BIND`` (a read replica); the hook writes to the
primary."""

from __future__ import annotations

import typing as t
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from . import factories as f
from .fake_psa import FakePsaService
from .helpers import as_user
from .host import db


@pytest.fixture
def app_config(tmp_path: t.Any) -> dict[str, t.Any]:
    return {
        "SQLALCHEMY_BINDS": {"replica": f"sqlite:///{tmp_path / 'replica.db'}"},
        "FLOWPILOT_ANALYTICS_BIND": "replica",
    }


def test_reads_go_to_the_replica_and_writes_to_the_primary(app: Flask, client: t.Any) -> None:
    replica = db.engines["replica"]
    db.metadata.create_all(replica)
    try:
        claimed = f.at(days=1)
        with replica.begin() as conn:  # the replica has data the primary does not
            conn.execute(
                sa.text(
                    "INSERT INTO ai_sessions (id, account_id, created_at, title, psa_ticket_id) "
                    "VALUES (1, 1, :c, 'r', 'T')"
                ),
                {"c": claimed - timedelta(hours=1)},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO session_handoffs (account_id, session_id, created_at, claimed_at) "
                    "VALUES (1, 1, :c, :c)"
                ),
                {"c": claimed},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO ai_session_steps (account_id, session_id, created_at) "
                    "VALUES (1, 1, :s)"
                ),
                {"s": claimed + timedelta(seconds=77)},
            )
        body = client.get("/api/v1/analytics/flowpilot/escalations", headers=as_user(1)).get_json()
        assert (body["n_handoffs_claimed"], body["median_seconds"]) == (1, 77.0)

        psa = app.extensions["test_analytics"].wrap_psa_service(FakePsaService())
        sess = f.session(1, f.at(days=1), ticket="T")
        psa.push_note(sess, "written to the primary")
        f.commit()
        activities = db.metadata.tables["psa_activity_logs"]
        with db.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(activities)) == 1
        with replica.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(activities)) == 0
    finally:
        db.session.remove()
        db.metadata.drop_all(replica)
