"""PostgreSQL row-level security: a role that cannot bypass RLS, policies on every table, FORCE
RLS."""

from __future__ import annotations

import types
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from flask import Flask

from flowpilot_analytics import registration

from . import factories as f
from .fake_psa import FakePsaService
from .helpers import ESCALATIONS, PSA, activity_rows, as_user
from .host import NOW, AISession, db

SETTING = "app.current_account_id"
TABLES = ("ai_sessions", "ai_session_steps", "session_handoffs", "psa_activity_logs")


@pytest.fixture
def rls_role(app: t.Any, dialect: str, tmp_path: t.Any) -> t.Iterator[str]:
    """A NOSUPERUSER NOBYPASSRLS login role, not the tables' owner, with tenant policies on every
    table."""
    if dialect != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    role = f"fpa_tenant_{uuid.uuid4().hex[:8]}"
    db.session.rollback()
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS")
        for table in TABLES:
            conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")
            conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            conn.exec_driver_sql(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            conn.exec_driver_sql(
                f"CREATE POLICY tenant ON {table} USING "
                f"(account_id = nullif(current_setting('{SETTING}', true), '')::bigint) WITH CHECK "
                f"(account_id = nullif(current_setting('{SETTING}', true), '')::bigint)"
            )
        conn.exec_driver_sql(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    yield role
    with db.engine.begin() as conn:
        for table in TABLES:
            conn.exec_driver_sql(f"DROP POLICY IF EXISTS tenant ON {table}")
            conn.exec_driver_sql(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
            conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        conn.exec_driver_sql(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
        conn.exec_driver_sql(f"DROP ROLE {role}")


@pytest.fixture
def tenant_app(rls_role: str, database_uri: str, make_app: t.Any) -> t.Any:
    """The host app connecting as the restricted role, one pooled connection, the plugin's tenant
    setting on."""
    url = (
        sa.engine.make_url(database_uri)
        .set(username=rls_role)
        .render_as_string(hide_password=False)
    )
    app = make_app(
        SQLALCHEMY_DATABASE_URI=url,
        FLOWPILOT_ANALYTICS_TENANT_SETTING=SETTING,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0},
    )
    with app.app_context():
        with db.engine.connect() as conn:  # fail fast if this role could see through the policies
            superuser, bypass = conn.execute(
                sa.text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            ).one()
            owners = set(
                conn.execute(
                    sa.text("SELECT tableowner FROM pg_tables WHERE tablename = ANY(:t)"),
                    {"t": list(TABLES)},
                ).scalars()
            )
            forced = set(
                conn.execute(
                    sa.text("SELECT relforcerowsecurity FROM pg_class WHERE relname = ANY(:t)"),
                    {"t": list(TABLES)},
                ).scalars()
            )
        assert not superuser and not bypass, "the test role can bypass row-level security"
        assert rls_role not in owners, "the test role owns a table, so policies may not apply to it"
        assert forced == {True}
    return app


def seed_two_accounts() -> None:
    for account, delay in ((1, 100), (2, 5000)):
        for day in range(1, 4):
            handoff = f.escalation(account, f.at(days=day), delay)
            f.activity(account, handoff.session_id, "note_posted", f.at(days=day))
    f.commit()


def test_each_account_sees_only_its_own_numbers_under_rls(tenant_app: t.Any) -> None:
    seed_two_accounts()
    client = tenant_app.test_client()
    one = client.get(ESCALATIONS, headers=as_user(1)).get_json()
    two = client.get(ESCALATIONS, headers=as_user(2)).get_json()
    assert (one["n_handoffs_claimed"], one["median_seconds"]) == (3, 100.0)
    assert (two["n_handoffs_claimed"], two["median_seconds"]) == (3, 5000.0)
    psa = client.get(PSA, headers=as_user(2, "admin")).get_json()
    assert (
        psa["funnel"]["sessions"] == 3 and sum(r["notes_posted"] for r in psa["daily_trend"]) == 3
    )


def test_without_the_tenant_setting_the_policies_hide_everything(
    rls_role: str, database_uri: str, make_app: t.Any
) -> None:
    seed_two_accounts()
    url = (
        sa.engine.make_url(database_uri)
        .set(username=rls_role)
        .render_as_string(hide_password=False)
    )
    plain = make_app(SQLALCHEMY_DATABASE_URI=url)
    body = plain.test_client().get(ESCALATIONS, headers=as_user(1)).get_json()
    assert body["n_handoffs_claimed"] == 0  # the policies are really in force for this role


def test_explicit_account_filters_isolate_with_rls_off(client: t.Any, dialect: str) -> None:
    seed_two_accounts()
    assert client.get(ESCALATIONS, headers=as_user(1)).get_json()["median_seconds"] == 100.0
    refused = client.get(ESCALATIONS + "?account_id=2", headers=as_user(1))  # never a way in
    assert (
        refused.status_code == 400
        and "account_id" in refused.get_json()["error"]["details"]["fields"]
    )
    assert client.get(ESCALATIONS, headers=as_user(2)).get_json()["median_seconds"] == 5000.0


def test_a_pooled_connection_never_carries_the_previous_tenant(tenant_app: t.Any) -> None:
    seed_two_accounts()
    client = tenant_app.test_client()
    assert client.get(ESCALATIONS, headers=as_user(1)).status_code == 200
    with (
        tenant_app.app_context(),
        db.engine.connect() as conn,
    ):  # the pool's only connection, just used for 1
        leftover = conn.execute(sa.text(f"SELECT current_setting('{SETTING}', true)")).scalar()
        visible = conn.execute(sa.text("SELECT count(*) FROM session_handoffs")).scalar()
    assert leftover in (None, "")
    assert visible == 0
    assert client.get(ESCALATIONS, headers=as_user(2)).get_json()["median_seconds"] == 5000.0


def test_the_hook_writes_and_replays_under_rls(tenant_app: t.Any) -> None:
    with tenant_app.app_context():
        service = tenant_app.extensions["test_analytics"].wrap_psa_service(FakePsaService())
        sess = type("S", (), {"id": 9, "account_id": 2, "psa_ticket_id": "T"})()
        service.push_note(sess, "under RLS")
        state = registration(tenant_app)
        state.dead_letters.append(
            {
                "account_id": 1,
                "session_id": 3,
                "activity_type": "note_posted",
                "psa_ticket_id": None,
                "external_id": "R-1",
                "minutes": None,
                "created_at": NOW,
            }
        )
        # inside this app's context, so the command runs as the restricted role
        result = tenant_app.test_cli_runner().invoke(
            args=["flowpilot-analytics", "replay-activities"]
        )
    assert "written 1" in result.output, result.output
    with (
        db.engine.connect() as conn
    ):  # as the owner: both rows are there, each under its own account
        got = conn.execute(
            sa.text("SELECT account_id, external_id FROM psa_activity_logs ORDER BY account_id")
        )
        assert [tuple(r) for r in got] == [(1, "R-1"), (2, "1000")]


def test_drill_down_and_csv_under_rls(tenant_app: t.Any) -> None:
    seed_two_accounts()
    client = tenant_app.test_client()
    page = client.get(ESCALATIONS + "/handoffs?limit=2", headers=as_user(2)).get_json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get(
        ESCALATIONS + f"/handoffs?limit=2&cursor={page['next_cursor']}", headers=as_user(2)
    ).get_json()
    assert [i["seconds"] for i in page["items"] + rest["items"]] == [5000.0] * 3
    lines = (
        client.get(ESCALATIONS + "/handoffs?format=csv", headers=as_user(1))
        .get_data(as_text=True)
        .splitlines()
    )
    assert len(lines) == 4 and all(line.endswith(",100.0,1,100.0,wall,") for line in lines[1:])


class CommittingPsa(FakePsaService):
    """A PSA service that commits the host's session before it returns, so the pushed object comes
    back expired."""

    def push_note(self, session: t.Any, text: str, **kw: t.Any) -> dict[str, t.Any]:
        db.session.commit()
        return super().push_note(session, text, **kw)


@pytest.fixture
def committing(tenant_app: t.Any) -> tuple[int, t.Any, t.Any]:
    """Account 2's session with ticket T-2, the registration, and a committing service wrapped."""
    sid = f.session(2, f.at(days=1), ticket="T-2").id
    f.commit()
    service = tenant_app.extensions["test_analytics"].wrap_psa_service(CommittingPsa())
    return sid, registration(tenant_app), service


def _scoped_to_tenant(account: int) -> t.Callable[..., None]:
    """The host's own tenant scoping: every transaction of its session sets the tenant first."""

    def after_begin(session: t.Any, transaction: t.Any, connection: t.Any) -> None:
        connection.execute(sa.select(sa.func.set_config(SETTING, str(account), True)))

    return after_begin


def test_committed_orm_sessions_are_recorded_under_the_tenant_known_at_push_time(
    tenant_app: t.Any, committing: tuple[int, t.Any, t.Any]
) -> None:
    sid, state, service = committing
    # in a request: the caller's identity gives the tenant; the expired columns are read under it
    with tenant_app.test_request_context(headers=as_user(2)):
        hook = _scoped_to_tenant(2)
        sa.event.listen(db.session(), "after_begin", hook)
        for _ in range(20):
            service.push_note(db.session.get(AISession, sid), "committed before it returns")
        sa.event.remove(db.session(), "after_begin", hook)
        db.session.remove()
    # no request (a background job): no account is known at push time, and the hook never queries
    # the host's connection for its tenant (it could begin the host's transaction or outwait the
    # budget): the activity is kept with its session's id, never dropped
    with tenant_app.app_context():
        hook = _scoped_to_tenant(2)
        sa.event.listen(db.session(), "after_begin", hook)
        sess = db.session.get(AISession, sid)
        db.session.commit()  # expires it
        db.session.execute(sa.select(1))  # the host's next transaction, scoped to its tenant
        service.push_time_entry(sess, 5.0)
        db.session.rollback()
        sa.event.remove(db.session(), "after_begin", hook)
        db.session.remove()
        kept = [(e["account_id"], e["session_id"]) for e in state.dead_letters.pending()]
        assert kept == [(None, sid)]
    with db.engine.connect() as conn:  # as the owner
        got = conn.execute(
            sa.text("SELECT account_id, session_id, psa_ticket_id FROM psa_activity_logs")
        ).all()
    assert len(got) == 20 and set(got) == {(2, sid, "T-2")}


def test_a_database_failure_at_push_time_keeps_the_account_for_the_replay(
    tenant_app: t.Any, committing: tuple[int, t.Any, t.Any]
) -> None:
    sid, state, service = committing

    def fail(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if (
            "psa_activity_logs" in statement
            or "FROM ai_sessions" in statement
            and "set_config" not in statement
        ):
            raise sa.exc.OperationalError(
                statement, {}, Exception("the server closed the connection")
            )

    with tenant_app.test_request_context(headers=as_user(2)):
        sa.event.listen(db.session(), "after_begin", _scoped_to_tenant(2))
        sess = db.session.get(AISession, sid)
        sa.event.listen(db.engine, "before_cursor_execute", fail)
        try:
            service.push_note(sess, "the database fails as the push returns")
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", fail)
            db.session.remove()
        [kept] = state.dead_letters.pending()
        assert (kept["account_id"], kept["session_id"]) == (2, sid)
        result = tenant_app.test_cli_runner().invoke(
            args=["flowpilot-analytics", "replay-activities"]
        )
    assert "written 1" in result.output, result.output
    with db.engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT account_id, session_id FROM psa_activity_logs")
        ).all() == [(2, sid)]


@pytest.mark.parametrize(
    "app_config", [{"FLOWPILOT_ANALYTICS_TENANT_SETTING": "app.current_account_id"}]
)
def test_recording_and_reading_leave_the_hosts_tenant_as_it_was(
    app: Flask, client: t.Any, dialect: str
) -> None:
    if dialect != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    psa = app.extensions["test_psa"]
    setting = sa.text("SELECT current_setting('app.current_account_id', true)")
    db.session.execute(sa.text("SELECT set_config('app.current_account_id', '1', true)"))
    psa.push_note(types.SimpleNamespace(id=3, account_id=2, psa_ticket_id="T"), "for account 2")
    assert db.session.scalar(setting) == "1"  # the host's next query still runs as its own tenant
    db.session.commit()
    seen: list[t.Any] = []

    @app.after_request
    def host_hook(response: t.Any) -> t.Any:  # the host's own code, later in the same request
        seen.append(db.session.scalar(setting))
        return response

    assert client.get(ESCALATIONS, headers=as_user(7)).status_code == 200
    assert seen in ([None], [""])
    assert [(r["account_id"], r["external_id"]) for r in activity_rows()] == [(2, "1000")]


def test_a_background_job_names_the_account_and_its_pushes_are_recorded_under_rls(
    tenant_app: t.Any,
) -> None:
    sid = f.session(2, f.at(days=1), ticket="T-2").id
    f.commit()
    job_tenant = 2  # the job knows whose work it does (reading the expired object would load it)
    service = tenant_app.extensions["test_analytics"].wrap_psa_service(
        CommittingPsa(), account_of=lambda session: job_tenant
    )
    with tenant_app.app_context():  # no request, no identity
        hook = _scoped_to_tenant(2)
        sa.event.listen(db.session(), "after_begin", hook)
        service.push_note(db.session.get(AISession, sid), "from a job, committed before it returns")
        sa.event.remove(db.session(), "after_begin", hook)
        db.session.remove()
        assert registration(tenant_app).dead_letters.pending() == []
    with db.engine.connect() as conn:  # as the owner
        got = conn.execute(
            sa.text("SELECT account_id, session_id, psa_ticket_id FROM psa_activity_logs")
        )
        assert [tuple(r) for r in got] == [(2, sid, "T-2")]
