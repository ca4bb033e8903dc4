"""Demo host: a tiny FlowPilot-like app on SQLite that registers flowpilot_analytics.

Run it with ``bash examples/demo/run.sh`` (or ``flask --app examples/demo/app.py run``). The
database is created and seeded on first start, and acme (account 1) gets business hours then
(:func:`ensure_business_hours`; globex and initech have none, so their business clock answers 409)
and a stopwatch baseline of the old, verbal handoff (:func:`ensure_baseline`; globex and initech
have none, so their savings card says why there is no claim). Each account's sessions belong to a
few client companies (``ai_sessions.client_id``, :func:`assign_clients`; a few have none), so the
page can pick a client; a demo database from before that column gets it added at the next start.
Every request is signed in with a demo bearer token, e.g. ``curl -H 'Authorization: Bearer
acme-engineer' localhost:5000/api/v1/analytics/flowpilot/escalations``.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import typing as t
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask, abort, request
from flask_sqlalchemy import SQLAlchemy

from flowpilot_analytics import FlowpilotAnalytics, Identity, registration, sqlite_transactional

db = SQLAlchemy()
analytics = FlowpilotAnalytics()

ACCOUNTS = {1: "acme", 2: "globex", 3: "initech"}
ROLES = ("viewer", "engineer", "team_admin", "admin")
#: Demo credentials: "<account>-<role>" for every account and role, e.g. ``acme-team_admin``.
TOKENS = {
    f"{name}-{role}": Identity(user_id=account * 10 + i, account_id=account, role=role)
    for account, name in ACCOUNTS.items()
    for i, role in enumerate(ROLES)
}


#: The account with business hours (acme): the page's business clock works for it, and answers
#: ``409 no_business_hours`` for the others.
CALENDAR_ACCOUNT = 1
#: acme's office zone (the page's trend zone is the viewer's choice, UTC by default).
CALENDAR_ZONE = "America/New_York"
#: The account with a stopwatch baseline (acme), and how many samples it has: more than the
#: plugin's default minimum of 20, so its savings card can make a claim; globex and initech have
#: none, so theirs shows the reason.
BASELINE_ACCOUNT = 1
BASELINE_SAMPLES = 25
#: What the team lead jotted down next to a stopwatch time (``None``: nothing).
BASELINE_NOTES = (
    "VPN drop; senior on a call, came over after",
    "MFA reset, verbal handoff at the desk",
    "Mailbox permissions; asked in chat, then in person",
    "Printer queue stuck; senior finishing another ticket",
    "New starter laptop; explained twice",
    "Firewall rule; paged the senior, call back",
    "Shared drive access; waited for the standup to end",
    "Backup job failed overnight; senior in a meeting",
    "Licence assignment; handed over by phone",
    None,
)
#: The client companies each account works for, by id: the host's own client list (the plugin only
#: sees ``ai_sessions.client_id``; the page takes the names from ``GET /demo/clients``).
CLIENTS = {
    1: {
        101: "Northwind Traders",
        102: "Contoso Dental",
        103: "Fabrikam Logistics",
        104: "Tailspin Toys",
    },
    2: {201: "Wide World Importers", 202: "Litware Legal", 203: "Proseware Clinics"},
    3: {301: "Adventure Works", 302: "Blue Yonder Air", 303: "Coho Winery"},
}
#: How the sessions spread over an account's clients (relative weights, in ``CLIENTS`` order), and
#: the weight of a session without a client.
CLIENT_WEIGHTS = (0.4, 0.25, 0.17, 0.1)
NO_CLIENT_WEIGHT = 0.08
#: The seed of :func:`assign_clients`, its own so that the rest of the demo data stays as it was.
CLIENT_SEED = 7


class AISession(db.Model):
    __tablename__ = "ai_sessions"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False, index=True)
    created_at = db.Column(db.DateTime, nullable=False)
    psa_ticket_id = db.Column(db.String(64))
    title = db.Column(db.String(200), nullable=False)
    client_id = db.Column(db.Integer)  # the host's client company (None: internal work)
    __table_args__ = (
        # the index the plugin's doctor recommends for client= on a host with this column
        db.Index("ix_ai_sessions_account_client_created", "account_id", "client_id", "created_at"),
    )


class AISessionStep(db.Model):
    __tablename__ = "ai_session_steps"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False)
    session_id = db.Column(db.Integer, db.ForeignKey("ai_sessions.id"), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False)
    __table_args__ = (
        db.Index(
            "ix_ai_session_steps_account_session_created", "account_id", "session_id", "created_at"
        ),
    )


class SessionHandoff(db.Model):
    __tablename__ = "session_handoffs"
    id = db.Column(db.Integer, primary_key=True)
    account_id = db.Column(db.Integer, nullable=False)
    session_id = db.Column(db.Integer, db.ForeignKey("ai_sessions.id"), nullable=False)
    created_at = db.Column(db.DateTime, nullable=False)
    claimed_at = db.Column(db.DateTime)
    claimed_by = db.Column(db.Integer)  # the senior engineer's user id
    __table_args__ = (db.Index("ix_session_handoffs_account_claimed", "account_id", "claimed_at"),)


class DemoPsaService:
    """Stands in for the host's psa_documentation_service (ConnectWise, Autotask, HaloPSA...)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def push_note(self, session: AISession, text: str, **kw: t.Any) -> dict[str, t.Any]:
        return {
            "id": f"note-{session.account_id}-{next(self._ids)}",
            "ticket": session.psa_ticket_id,
        }

    def push_time_entry(self, session: AISession, minutes: float, **kw: t.Any) -> dict[str, t.Any]:
        return {"id": f"time-{session.account_id}-{next(self._ids)}", "minutes": minutes}


psa_documentation_service = DemoPsaService()
# --- flowpilot_analytics: record every successful push --------------------------------------------
analytics.wrap_psa_service(psa_documentation_service)


def configure_telemetry() -> None:
    """The demo host's OpenTelemetry SDK: metrics to Prometheus, served at /metrics (once per
    process)."""
    from opentelemetry import metrics
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))


def load_identity() -> Identity | None:
    """The demo's "login": a bearer token from ``TOKENS``; anything else is anonymous."""
    header = request.headers.get("Authorization", "")
    return (
        TOKENS.get(header.removeprefix("Bearer ").strip()) if header.startswith("Bearer ") else None
    )


def opening(naive_now: datetime, rng: random.Random) -> datetime:
    """When a seeded session opens (naive UTC): within the last six weeks, four in five during
    office hours (09:00-17:00 New York, Monday to Friday), the rest at any time."""
    office = ZoneInfo(CALENDAR_ZONE)
    opened = naive_now - timedelta(days=rng.uniform(0, 42))
    if rng.random() < 0.8:
        for _ in range(200):  # about one draw in four lands in office hours
            local = opened.replace(tzinfo=timezone.utc).astimezone(office)
            if local.weekday() < 5 and 9 <= local.hour < 17:
                break
            opened = naive_now - timedelta(days=rng.uniform(0, 42))
    return opened


def seed(now: datetime, rng: random.Random) -> None:
    """Six weeks of sessions, steps, handoffs and PSA activity for three accounts of different
    sizes, mostly in office hours (:func:`opening`)."""
    naive_now = now.replace(tzinfo=None)
    activities = db.metadata.tables["psa_activity_logs"]
    for account, size in ((1, 900), (2, 300), (3, 60)):
        for n in range(size):
            opened = opening(naive_now, rng)
            session = AISession(
                account_id=account,
                created_at=opened,
                title=f"Ticket work #{n}",
                psa_ticket_id=f"T-{account}-{n}" if rng.random() < 0.8 else None,
            )
            db.session.add(session)
            db.session.flush()
            moments = sorted(
                opened + timedelta(minutes=rng.uniform(0, 180)) for _ in range(rng.randint(1, 12))
            )
            if rng.random() < 0.35:
                asked = opened + timedelta(minutes=rng.uniform(1, 60))
                claimed = (
                    asked + timedelta(minutes=rng.expovariate(1 / 8))
                    if rng.random() < 0.9
                    else None
                )
                if claimed is not None and claimed > naive_now:
                    claimed = None
                db.session.add(
                    SessionHandoff(
                        account_id=account,
                        session_id=session.id,
                        created_at=asked,
                        claimed_at=claimed,
                        claimed_by=account * 100 + rng.randint(1, 4) if claimed else None,
                    )
                )
                if claimed is not None and rng.random() < 0.85:
                    moments.append(claimed + timedelta(seconds=rng.lognormvariate(4.5, 1.1)))
            db.session.add_all(
                AISessionStep(account_id=account, session_id=session.id, created_at=m)
                for m in moments
                if m <= naive_now
            )
            if (
                session.psa_ticket_id and rng.random() < 0.7
            ):  # documentation pushed, then (mostly) time logged
                pushed = min(naive_now, moments[-1] + timedelta(minutes=rng.uniform(1, 30)))
                rows = [{"activity_type": "note_posted", "minutes": None, "created_at": pushed}]
                if rng.random() < 0.75:
                    rows.append(
                        {
                            "activity_type": "time_entry_posted",
                            "created_at": pushed,
                            "minutes": float(rng.choice([15, 30, 30, 45, 60, 90])),
                        }
                    )
                db.session.execute(
                    activities.insert(),
                    [
                        {
                            **row,
                            "account_id": account,
                            "session_id": session.id,
                            "psa_ticket_id": session.psa_ticket_id,
                            "external_id": f"seed-{session.id}-{row['activity_type']}",
                        }
                        for row in rows
                    ],
                )
    db.session.commit()


def assign_clients(rng: random.Random) -> None:
    """Spread every account's sessions over its clients (``CLIENTS``, weighted by
    ``CLIENT_WEIGHTS``; a few keep none, ``NO_CLIENT_WEIGHT``), in id order: a fresh seed and a demo
    database from before ``client_id`` get the same clients for the same sessions."""
    for account, clients in CLIENTS.items():
        ids = db.session.scalars(
            sa.select(AISession.id).where(AISession.account_id == account).order_by(AISession.id)
        ).all()
        choices = [*clients, None]
        weights = [*CLIENT_WEIGHTS[: len(clients)], NO_CLIENT_WEIGHT]  # relative weights
        rows = [
            {"session_id": session_id, "client": rng.choices(choices, weights)[0]}
            for session_id in ids
        ]
        if rows:  # on the table, not the ORM: one executemany, no session objects to synchronise
            table = AISession.__table__
            db.session.execute(
                sa.update(table)
                .where(table.c.id == sa.bindparam("session_id"))
                .values(client_id=sa.bindparam("client")),
                rows,
            )
    db.session.commit()


def add_client_column() -> bool:
    """A demo database from before ``ai_sessions.client_id`` (``create_all`` adds tables, never
    columns): add the column and its index. Whether it was missing."""
    if "client_id" in {c["name"] for c in sa.inspect(db.engine).get_columns("ai_sessions")}:
        return False
    with db.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE ai_sessions ADD COLUMN client_id INTEGER"))
    for index in AISession.__table__.indexes:
        if "client_id" in index.columns:
            index.create(db.engine, checkfirst=True)
    return True


def demo_business_hours(today: date) -> dict[str, t.Any]:
    """acme's calendar version, as ``POST business-hours`` takes it: 09:00-17:00 Monday to Friday in
    New York, closed on US public holidays. It takes effect on January 1 of last year, before any
    demo data (the seed spans six weeks, the longest period 90 days); the holidays package expands
    the US holidays for ten years from then."""
    return {
        "timezone": CALENDAR_ZONE,
        "effective_from": date(today.year - 1, 1, 1).isoformat(),
        "weekly": {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
        "holidays": [],
        "holiday_calendar": {"country": "US", "subdivision": None},
    }


def team_admin_client(app: Flask, account: int) -> tuple[t.Any, str, dict[str, str]]:
    """The test client, the plugin's URL prefix and ``account``'s team admin headers: the demo sets
    its own data up as that admin would, through the plugin's routes."""
    token = next(
        token
        for token, who in TOKENS.items()
        if who.account_id == account and who.role == "team_admin"
    )
    base = f"{registration(app).settings.url_prefix}/analytics/flowpilot"
    return app.test_client(), base, {"Authorization": f"Bearer {token}"}


def ensure_business_hours(app: Flask, today: date) -> None:
    """Give acme its business hours once, as its team admin would: through the plugin's own route
    (``GET`` to see whether it has a version, else ``POST business-hours``). A version is never
    edited, so a demo database that has one keeps it."""
    client, base, headers = team_admin_client(app, CALENDAR_ACCOUNT)
    url = f"{base}/business-hours"
    listed = client.get(url, headers=headers)
    if listed.status_code != 200:
        raise RuntimeError(f"GET business-hours answered {listed.status_code}: {listed.text}")
    if listed.get_json()["versions"]:
        return
    added = client.post(url, json=demo_business_hours(today), headers=headers)
    if added.status_code != 201:
        raise RuntimeError(f"POST business-hours answered {added.status_code}: {added.text}")


def demo_baseline(before: datetime, rng: random.Random) -> list[dict[str, t.Any]]:
    """acme's stopwatch baseline, as ``POST escalations/baseline`` takes it: how long the old,
    verbal handoff took from "can you take this?" to the senior's first action, timed by hand
    before FlowPilot. Whole seconds, lognormal (median 25 min, sigma 0.5, kept within 8-50 min; the
    same 25 every time: 10 to 42 min, median 21.5 min), measured on weekdays in office hours over
    four weeks that end a week before ``before`` (the first demo session, naive UTC), most with a
    short note."""
    durations: list[int] = []  # drawn first, so they do not depend on the date
    while len(durations) < BASELINE_SAMPLES:
        seconds = round(rng.lognormvariate(math.log(1500), 0.5))
        if 480 <= seconds <= 3000:
            durations.append(seconds)
    office = ZoneInfo(CALENDAR_ZONE)
    start = before.replace(tzinfo=timezone.utc).astimezone(office).date() - timedelta(days=35)
    weekdays = [start + timedelta(days=n) for n in range(28)]
    weekdays = [day for day in weekdays if day.weekday() < 5]
    samples = []
    for seconds in durations:
        day = datetime.combine(rng.choice(weekdays), datetime.min.time(), office)
        measured = day + timedelta(minutes=rng.randrange(9 * 60 + 30, 16 * 60 + 30))
        samples.append(
            {
                "seconds": float(seconds),
                "measured_at": measured.astimezone(timezone.utc).isoformat(),
                "note": rng.choice(BASELINE_NOTES),
            }
        )
    return sorted(samples, key=lambda sample: sample["measured_at"])


def ensure_baseline(app: Flask, first_session: datetime) -> None:
    """Give acme its stopwatch baseline once, as its team admin would: through the plugin's own
    route (``GET escalations/baseline`` to see whether it has samples, else ``POST`` them all), so
    a restart on a demo database that has them adds none."""
    client, base, headers = team_admin_client(app, BASELINE_ACCOUNT)
    listed = client.get(f"{base}/escalations/baseline", headers=headers)
    if listed.status_code != 200:
        raise RuntimeError(f"GET escalations/baseline answered {listed.status_code}: {listed.text}")
    if listed.get_json()["samples"]:
        return
    body = {"samples": demo_baseline(first_session, random.Random(20))}
    added = client.post(f"{base}/escalations/baseline", json=body, headers=headers)
    if added.status_code != 201:
        raise RuntimeError(f"POST escalations/baseline answered {added.status_code}: {added.text}")


def create_app(database_uri: str | None = None) -> Flask:
    """The host's app factory; the three lines marked below are all the plugin needs."""
    here = os.path.dirname(os.path.abspath(__file__))
    app = Flask(__name__, root_path=here, instance_path=os.path.join(here, "instance"))
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri
        or os.environ.get(
            "DEMO_DATABASE_URI", f"sqlite:///{os.path.join(app.instance_path, 'demo.sqlite')}"
        ),
        RATELIMIT_STORAGE_URI=os.environ.get("DEMO_RATELIMIT_STORAGE_URI", "memory://"),
        SECRET_KEY=os.environ.get("DEMO_SECRET_KEY", "demo-only-secret"),
        FLOWPILOT_ANALYTICS_TARGET_SECONDS=900,  # the demo team's response target: 15 minutes
    )
    db.init_app(app)
    configure_telemetry()
    # --- flowpilot_analytics: register ------------------------------------------------------------
    analytics.init_app(app, db=db, identity_loader=load_identity)
    # ----------------------------------------------------------------------------------------------

    @app.get("/")
    def dashboard() -> t.Any:
        """The host's own analytics page (plain HTML/CSS/JS) that calls the plugin's JSON API."""
        return app.send_static_file("index.html")

    @app.get("/metrics")
    def prometheus_metrics() -> t.Any:
        """The host's Prometheus scrape endpoint (the plugin's counters among its own)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return app.response_class(generate_latest(), mimetype=CONTENT_TYPE_LATEST.split(";")[0])

    @app.get("/demo/users")
    def demo_users() -> list[dict[str, t.Any]]:
        """The demo credentials, for the page's user switch."""
        return [
            {"token": token, "role": who.role, "account_id": who.account_id}
            for token, who in TOKENS.items()
        ]

    @app.get("/demo/clients")
    def demo_clients() -> list[dict[str, t.Any]]:
        """The signed-in account's clients, for the page's client picker: the ids its sessions
        have, the names from the host's own list (``CLIENTS``)."""
        identity = load_identity()
        if identity is None:
            abort(401)
        ids = db.session.scalars(
            sa.select(AISession.client_id)
            .where(AISession.account_id == identity.account_id, AISession.client_id.is_not(None))
            .distinct()
            .order_by(AISession.client_id)
        ).all()
        names = CLIENTS.get(identity.account_id, {})
        return [{"id": i, "name": names.get(i, f"Client {i}")} for i in ids]

    @app.post("/demo/sessions/<int:session_id>/push")
    def push(session_id: int) -> dict[str, t.Any]:
        """The host's own "push documentation" action; the wrapped service records the
        activities."""
        identity = load_identity()
        session = db.session.get(AISession, session_id)
        if identity is None or session is None or session.account_id != identity.account_id:
            abort(404)
        note = psa_documentation_service.push_note(session, "Resolved with FlowPilot")
        entry = psa_documentation_service.push_time_entry(
            session, float(request.args.get("minutes", 15))
        )
        db.session.commit()
        return {"note": note, "time_entry": entry}

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            sqlite_transactional(db.engine)
        db.create_all()
        added = add_client_column()
        if db.session.scalar(sa.select(sa.func.count()).select_from(AISession)) == 0:
            seed(datetime.now(timezone.utc), random.Random(42))
            assign_clients(random.Random(CLIENT_SEED))
        elif added:
            assign_clients(random.Random(CLIENT_SEED))
        first_session = db.session.scalar(sa.select(sa.func.min(AISession.created_at)))
    # last, since a request (even the test client's) ends the app's setup: no route can follow
    ensure_business_hours(app, datetime.now(timezone.utc).date())
    ensure_baseline(app, first_session)
    return app
