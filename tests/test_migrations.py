"""Alembic through Flask-Migrate on a host no one here wrote: autogenerate picks up the plugin's
table and the generated migration runs as generated (only ``op`` and ``sa``), up, down and up again,
and ``flask db check`` finds nothing left to migrate, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing as t

import pytest

HOST = '''
"""A throwaway host: Flask-SQLAlchemy models for FlowPilot's tables, Flask-Migrate, and the \
plugin."""
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from flowpilot_analytics import FlowpilotAnalytics

db = SQLAlchemy()
migrate = Migrate()
analytics = FlowpilotAnalytics()


class Session(db.Model):
    __tablename__ = "ai_sessions"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False)
    created_at = db.Column(db.DateTime, nullable=False)
    psa_ticket_id = db.Column(db.String(64))


class Step(db.Model):
    __tablename__ = "ai_session_steps"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False)
    session_id = db.Column(db.Integer, db.ForeignKey("ai_sessions.id"), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False)


class Handoff(db.Model):
    __tablename__ = "session_handoffs"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False)
    session_id = db.Column(db.Integer, db.ForeignKey("ai_sessions.id"), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False)
    claimed_at = db.Column(db.DateTime)


def create_app():
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=os.environ["HOST_DATABASE_URI"], SECRET_KEY="host")
    db.init_app(app)
    migrate.init_app(app, db)
    analytics.init_app(app, db=db, identity_loader=lambda: None)
    return app
'''


def flask(folder: str, uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FLASK_APP": "hostapp:create_app",
        "HOST_DATABASE_URI": uri,
        "PYTHONPATH": folder,
    }
    return subprocess.run(
        [sys.executable, "-m", "flask", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_autogenerate_upgrade_downgrade_and_check(
    database_uri: str, backend: str, tmp_path: t.Any, request: pytest.FixtureRequest
) -> None:
    folder = str(tmp_path / "host")
    os.makedirs(folder)
    with open(os.path.join(folder, "hostapp.py"), "w", encoding="utf-8") as handle:
        handle.write(textwrap.dedent(HOST))
    uri = database_uri
    if (
        backend == "postgresql"
    ):  # a database of its own: autogenerate compares against everything in it
        import uuid

        import sqlalchemy as sa

        name = f"fpa_migrate_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(
            database_uri.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

        request.addfinalizer(drop)
        uri = database_uri.rsplit("/", 1)[0] + "/" + name
    steps = [
        ("db", "init"),
        ("db", "migrate", "-m", "flowpilot"),
        ("db", "upgrade"),
        ("db", "downgrade"),
        ("db", "upgrade"),
        ("db", "check"),
    ]
    for step in steps:
        done = flask(folder, uri, *step)
        assert done.returncode == 0, f"flask {' '.join(step)}:\n{done.stdout}\n{done.stderr}"
        if step[:2] == ("db", "migrate"):
            versions = os.path.join(folder, "migrations", "versions")
            (script,) = [
                os.path.join(versions, n) for n in os.listdir(versions) if n.endswith(".py")
            ]
            with open(script, encoding="utf-8") as handle:
                source = handle.read()
            assert "op.create_table('psa_activity_logs'" in source
            assert "idempotency_key" in source and "uq_psa_activity_logs_idempotency_key" in source
            assert (
                "flowpilot_analytics" not in source
            )  # nothing but op and sa: it runs as generated
    assert "No new upgrade operations detected" in done.stdout + done.stderr
    # a database from before user_id and billable: autogenerate adds exactly those two columns
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        for column in ("user_id", "billable"):
            conn.exec_driver_sql(f"ALTER TABLE psa_activity_logs DROP COLUMN {column}")
    engine.dispose()
    done = flask(folder, uri, "db", "migrate", "-m", "technicians")
    assert done.returncode == 0, done.stderr
    versions = os.path.join(folder, "migrations", "versions")
    (script,) = [
        os.path.join(versions, n) for n in os.listdir(versions) if n.endswith("technicians.py")
    ]
    with open(script, encoding="utf-8") as handle:
        upgrade = handle.read().split("def downgrade", 1)[0]
    assert upgrade.count("add_column(") == 2  # op. or, on SQLite, batch_op.
    assert "sa.Column('user_id', sa.String(length=255)" in upgrade
    assert "sa.Column('billable', sa.Boolean()" in upgrade
    for step in [("db", "upgrade"), ("db", "check")]:
        done = flask(folder, uri, *step)
        assert done.returncode == 0, f"flask {' '.join(step)}:\n{done.stdout}\n{done.stderr}"
    assert "No new upgrade operations detected" in done.stdout + done.stderr
