"""A minimal host app, as FlowPilot's monolith registers the plugin; the tests drive it over
HTTP."""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy

from flowpilot_analytics import FlowpilotAnalytics, Identity, sqlite_transactional

from .fake_psa import FakePsaService

db = SQLAlchemy()

NOW = datetime(2026, 11, 15, 12, 0, 0, tzinfo=timezone.utc)


class AISession(db.Model):
    __tablename__ = "ai_sessions"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False)
    created_at = db.Column(db.DateTime, nullable=False)
    psa_ticket_id = db.Column(db.String(64))
    title = db.Column(db.String(200), nullable=False, default="")
    __table_args__ = (db.Index("ix_sessions_account_created", "account_id", "created_at"),)


class AISessionStep(db.Model):
    __tablename__ = "ai_session_steps"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False)
    session_id = db.Column(db.Integer, db.ForeignKey("ai_sessions.id"), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False)
    __table_args__ = (
        db.Index("ix_steps_account_session_created", "account_id", "session_id", "created_at"),
    )


class SessionHandoff(db.Model):
    __tablename__ = "session_handoffs"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False)
    session_id = db.Column(db.Integer, db.ForeignKey("ai_sessions.id"), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False)
    claimed_at = db.Column(db.DateTime)
    claimed_by = db.Column(db.Integer)
    __table_args__ = (db.Index("ix_handoffs_account_claimed", "account_id", "claimed_at"),)


def load_identity() -> Identity | None:
    """The test host's login: three headers stand in for a real session cookie."""
    if "X-Role" not in request.headers:
        return None
    return Identity(
        user_id=int(request.headers.get("X-User", "1")),
        account_id=int(request.headers["X-Account"]),
        role=request.headers["X-Role"],
    )


def create_app(
    database_uri: str,
    *,
    analytics: FlowpilotAnalytics | None = None,
    clock: t.Any = None,
    identity_loader: t.Any = None,
    **config: t.Any,
) -> Flask:
    """App factory: the host's db, its routes, then the plugin in three lines."""
    app = Flask(__name__)
    # Caching is off unless a test turns it on: most tests change data between two requests. The
    # hook gets 5 s, so a slow fsync on a loaded machine never turns a push into a dead letter; the
    # tests of the deadline set the default 250 ms themselves.
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri,
        TESTING=True,
        FLOWPILOT_ANALYTICS_CACHE_TTL=0,
        FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS=5000,
        SECRET_KEY="test-host-secret",
    )
    app.config.update(config)
    db.init_app(app)

    @app.get("/host/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    analytics = analytics or FlowpilotAnalytics()
    analytics.init_app(
        app, db=db, identity_loader=identity_loader or load_identity, clock=clock or (lambda: NOW)
    )
    app.extensions["test_analytics"] = analytics  # the host's own handle on the extension object
    psa = app.extensions["test_psa"] = analytics.wrap_psa_service(FakePsaService())

    @app.post("/host/sessions/<int:session_id>/push")
    def push(session_id: int) -> dict[str, t.Any]:
        """The host's "push documentation" action; ``then`` says how its transaction ends."""
        session = db.session.get(AISession, session_id)
        if session is None:
            return {"error": "no such session"}
        note = psa.push_note(session, "Resolved: reset the VPN profile")
        entry = psa.push_time_entry(session, float(request.args.get("minutes", 15)))
        then = request.args.get(
            "then", "nothing"
        )  # "nothing": a route that only read, never committed
        if then == "commit":
            db.session.commit()
        elif then == "rollback":
            db.session.rollback()
        return {"note": note["id"], "time_entry": entry.id}

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            sqlite_transactional(db.engine)
    return app
