"""Demo host: a tiny FlowPilot-like app on SQLite that registers flowpilot_analytics.

Run it with ``bash examples/demo/run.sh`` (or ``flask --app examples/demo/app.py run``). The
database is created and seeded on first start, and acme (account 1) gets business hours then
(:func:`ensure_business_hours`; globex and initech have none, so their business clock answers 409)
and a stopwatch baseline of the old, verbal handoff (:func:`ensure_baseline`; globex and initech
have none, so their savings card says why there is no claim). Each account's sessions belong to a
few client companies (``ai_sessions.client_id``, :func:`assign_clients`; a few have none), so the
page can pick a client; a demo database from before that column gets it added at the next start.
The demo serves the plugin's own analytics page (``FLOWPILOT_ANALYTICS_DASHBOARD``) at
``/api/v1/analytics/flowpilot/``; its home page, ``/``, is the demo's only page of its own: a list
of demo users, each a link to ``/demo/login?user=<name>``, which signs that user in with Flask's
session cookie (the page calls the API with the browser's cookies), and a queue page with the
plugin's stat-card. A few of the latest handoffs are claimed with no step after the claim, and a
few are not claimed yet (:func:`add_open_handoffs`), so the page has its no-action and pending
cases. The API also takes a demo bearer token, e.g. ``curl -H 'Authorization: Bearer acme-engineer'
localhost:5000/api/v1/analytics/flowpilot/escalations``.
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
from flask import Flask, abort, current_app, redirect, request, session, url_for
from flask_sqlalchemy import SQLAlchemy
from markupsafe import escape

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
#: The technicians who push each account's documentation (user id -> name; the ids of the demo's
#: own users, ``TOKENS``, among them). The plugin only stores the user id; the page takes the names
#: from ``GET /demo/technicians``.
TECHNICIANS = {
    1: {10: "Dana Whitfield", 11: "Sam Okafor", 12: "Priya Raman", 13: "Lee Novak", 14: "Ana Ruiz"},
    2: {20: "Tom Becker", 21: "Mia Chen", 22: "Omar Haddad"},
    3: {30: "Jo Park", 31: "Ravi Iyer"},
}
#: How often a seeded push names no technician (a background sync), and how its time entry is
#: classified: billable, not billable, or not said (relative weights).
NO_TECHNICIAN_WEIGHT = 0.06
BILLABLE_WEIGHTS = {True: 0.7, False: 0.22, None: 0.08}
#: The seed of :func:`assign_technicians`, its own for the same reason as ``CLIENT_SEED``.
TECHNICIAN_SEED = 11
#: The seed of :func:`add_open_handoffs`, its own for the same reason.
OPEN_SEED = 5


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
        db.Index(
            "ix_ai_sessions_account_client_created", "account_id", "client_id", "created_at", "id"
        ),
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


#: The demo's own pages: nothing but their own origin (the home page has no script at all).
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
#: The key of the signed-in demo user in Flask's session.
SESSION_USER = "demo_user"


def load_identity() -> Identity | None:
    """The demo's "login": a bearer token from ``TOKENS`` (curl, tests), else the user signed in
    with the session cookie (``/demo/login``, the browser); anything else is anonymous."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return TOKENS.get(header.removeprefix("Bearer ").strip())
    return TOKENS.get(str(session.get(SESSION_USER, "")))


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


def add_open_handoffs(now: datetime, rng: random.Random) -> None:
    """The cases a queue has at any moment, in the last days of every account: handoffs claimed
    with no step after the claim (overdue ones, and two claimed minutes ago, still inside the
    15-minute target: pending), and handoffs nobody has claimed yet. Each goes on a recent session
    after its last step, so that no step follows the claim."""
    naive_now = now.replace(tzinfo=None)
    last_step = (
        sa.select(AISessionStep.session_id, sa.func.max(AISessionStep.created_at).label("last"))
        .group_by(AISessionStep.session_id)
        .subquery()
    )
    for account, (overdue, pending, unclaimed) in ((1, (6, 2, 4)), (2, (2, 1, 2)), (3, (1, 0, 1))):
        recent = db.session.execute(
            sa.select(AISession.id, last_step.c.last)
            .join(last_step, last_step.c.session_id == AISession.id)
            .where(
                AISession.account_id == account,
                last_step.c.last.between(
                    naive_now - timedelta(days=6), naive_now - timedelta(hours=1)
                ),
            )
            .order_by(AISession.id)
        ).all()
        picked = rng.sample(recent, min(len(recent), overdue + pending + unclaimed))
        for n, (session_id, last) in enumerate(picked):
            if n < overdue:  # claimed minutes after the last step; nothing since
                asked = last + timedelta(minutes=rng.uniform(1, 20))
                claimed: datetime | None = asked + timedelta(minutes=rng.uniform(1, 10))
            elif n < overdue + pending:  # claimed a few minutes ago
                asked = naive_now - timedelta(minutes=rng.uniform(6, 12))
                claimed = naive_now - timedelta(minutes=rng.uniform(1, 5))
            else:  # asked, waiting for a senior
                asked = naive_now - timedelta(minutes=rng.uniform(2, 50))
                claimed = None
            db.session.add(
                SessionHandoff(
                    account_id=account,
                    session_id=session_id,
                    created_at=asked,
                    claimed_at=claimed,
                    claimed_by=account * 100 + rng.randint(1, 4) if claimed else None,
                )
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


def assign_technicians(rng: random.Random) -> None:
    """Name who pushed each seeded activity and whether its time is billable (``TECHNICIANS``,
    ``BILLABLE_WEIGHTS``), in id order, on the table: a fresh seed and a demo database from before
    the two columns get the same."""
    table = db.metadata.tables["psa_activity_logs"]
    found = db.session.execute(
        sa.select(table.c.id, table.c.account_id, table.c.activity_type).order_by(table.c.id)
    ).all()
    rows = []
    for activity_id, account, activity_type in found:
        people = [*TECHNICIANS.get(account, {}), None]
        weights = [1.0] * (len(people) - 1) + [NO_TECHNICIAN_WEIGHT * (len(people) - 1)]
        user = rng.choices(people, weights)[0]
        billable = rng.choices(list(BILLABLE_WEIGHTS), list(BILLABLE_WEIGHTS.values()))[0]
        rows.append(
            {
                "activity_id": activity_id,
                "user": None if user is None else str(user),
                "bill": billable if activity_type == "time_entry_posted" else None,
            }
        )
    if rows:
        db.session.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("activity_id"))
            .values(user_id=sa.bindparam("user"), billable=sa.bindparam("bill")),
            rows,
        )
    db.session.commit()


def add_activity_columns() -> bool:
    """A demo database from before ``psa_activity_logs.user_id`` and ``billable``: add them, as
    ``flask flowpilot-analytics doctor`` prints them. Whether they were missing."""
    table = db.metadata.tables["psa_activity_logs"]
    present = {c["name"] for c in sa.inspect(db.engine).get_columns(table.name)}
    added = [c for c in (table.c.user_id, table.c.billable) if c.name not in present]
    with db.engine.begin() as connection:
        for column in added:
            spec = sa.schema.CreateColumn(column).compile(dialect=db.engine.dialect)
            connection.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {spec}"))
    return bool(added)


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


def demo_page(html: str) -> t.Any:
    """One of the demo's own pages, under the same kind of policy as the plugin's page."""
    response = current_app.response_class(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DEMO_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


def create_app(database_uri: str | None = None) -> Flask:
    """The host's app factory; the three lines marked below are all the plugin needs."""
    here = os.path.dirname(os.path.abspath(__file__))
    app = Flask(
        __name__, root_path=here, instance_path=os.path.join(here, "instance"), static_folder=None
    )
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri
        or os.environ.get(
            "DEMO_DATABASE_URI", f"sqlite:///{os.path.join(app.instance_path, 'demo.sqlite')}"
        ),
        RATELIMIT_STORAGE_URI=os.environ.get("DEMO_RATELIMIT_STORAGE_URI", "memory://"),
        SECRET_KEY=os.environ.get("DEMO_SECRET_KEY", "demo-only-secret"),
        SESSION_COOKIE_SAMESITE="Lax",
        FLOWPILOT_ANALYTICS_OPENAPI_SECURITY="bearer",  # curl and the tests use bearer tokens
        FLOWPILOT_ANALYTICS_TARGET_SECONDS=900,  # the demo team's response target: 15 minutes
        FLOWPILOT_ANALYTICS_DASHBOARD=True,  # the plugin's own page, with its stat-card
    )
    db.init_app(app)
    configure_telemetry()
    # --- flowpilot_analytics: register ------------------------------------------------------------
    analytics.init_app(app, db=db, identity_loader=load_identity)
    # ----------------------------------------------------------------------------------------------

    @app.get("/")
    def home() -> t.Any:
        """The demo's own page: its users (each signs in with the session cookie and opens the
        plugin's page) and its queue page; no script, no style."""
        page = url_for("flowpilot_analytics.dashboard")
        signed_in = load_identity()
        users = "".join(
            f'<li><a href="{escape(url_for("demo_login", user=token))}">{escape(token)}</a></li>'
            for token in TOKENS
        )
        who = f"Signed in as {escape(session.get(SESSION_USER, ''))}." if signed_in else ""
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>FlowPilot analytics · demo host</title></head><body>"
            "<h1>FlowPilot analytics · demo host</h1>"
            f'<p>{who} The analytics page is the plugin\'s own, at <a href="{escape(page)}">'
            f'{escape(page)}</a>; the <a href="{escape(url_for("queue"))}">queue page</a> '
            "shows its stat-card. Sign in as a demo user (account-role) to open it:</p>"
            f'<ul id="users">{users}</ul>'
            f'<p><a href="{escape(url_for("demo_logout"))}">Sign out</a></p></body></html>'
        )
        return demo_page(html)

    @app.get("/demo/login")
    def demo_login() -> t.Any:
        """Sign a demo user in with the session cookie, then open ``next`` (a path on this host)
        or the analytics page."""
        user = request.args.get("user", "")
        if user not in TOKENS:
            abort(404)
        session.clear()
        session[SESSION_USER] = user
        target = request.args.get("next", "")
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = url_for("flowpilot_analytics.dashboard")
        return redirect(target)

    @app.get("/demo/logout")
    def demo_logout() -> t.Any:
        session.clear()
        return redirect(url_for("home"))

    @app.get("/demo/queue")
    def queue() -> t.Any:
        """A host's queue page with the plugin's stat-card: the two lines a host pastes."""
        script = url_for("flowpilot_analytics.dashboard_static", filename="stat-card.js")
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Escalation queue · demo host</title></head><body>"
            "<h1>Escalation queue</h1><p>(The host's own queue would be listed here.)</p>"
            f'<script src="{escape(script)}"></script>\n'
            '<flowpilot-queue-stat period="7d"></flowpilot-queue-stat>\n'
            "</body></html>"
        )
        return demo_page(html)

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

    @app.get("/demo/technicians")
    def technicians() -> list[dict[str, t.Any]]:
        """The signed-in account's technicians (id as the plugin stores it, as text), from the
        host's own list (``TECHNICIANS``)."""
        identity = load_identity()
        if identity is None:
            abort(401)
        names = TECHNICIANS.get(identity.account_id, {})
        return [{"id": str(i), "name": name} for i, name in names.items()]

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
            session,
            float(request.args.get("minutes", 15)),
            billable=request.args.get("billable", "true") != "false",
        )
        db.session.commit()
        return {"note": note, "time_entry": entry}

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            sqlite_transactional(db.engine)
        db.create_all()
        added = add_client_column()
        attributed = add_activity_columns()
        if db.session.scalar(sa.select(sa.func.count()).select_from(AISession)) == 0:
            now = datetime.now(timezone.utc)
            seed(now, random.Random(42))
            add_open_handoffs(now, random.Random(OPEN_SEED))
            assign_clients(random.Random(CLIENT_SEED))
            assign_technicians(random.Random(TECHNICIAN_SEED))
        else:
            if added:
                assign_clients(random.Random(CLIENT_SEED))
            if attributed:
                assign_technicians(random.Random(TECHNICIAN_SEED))
        first_session = db.session.scalar(sa.select(sa.func.min(AISession.created_at)))
    # last, since a request (even the test client's) ends the app's setup: no route can follow
    ensure_business_hours(app, datetime.now(timezone.utc).date())
    ensure_baseline(app, first_session)
    return app
