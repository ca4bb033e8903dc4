"""``client=``: every escalation route and psa-metrics for one client's sessions (the host's
``ai_sessions.client_id``), against a reference computed here; values the column cannot hold; a host
without the column; isolation between accounts."""

from __future__ import annotations

import csv
import json
import random
import typing as t
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from . import factories as f
from .helpers import BASE, ESCALATIONS, HANDOFFS, PSA, as_user
from .host import db

ADMIN = as_user(1, "team_admin")
CLIENTS = (101, 202, None)


def _add_client_column() -> None:
    """The host's sessions get a ``client_id`` column (before the first request reflects them)."""
    db.session.rollback()
    with db.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE ai_sessions ADD COLUMN client_id INTEGER"))


def _set_client(session_id: int, client: int | None) -> None:
    db.session.execute(
        sa.text("UPDATE ai_sessions SET client_id = :c WHERE id = :id"),
        {"c": client, "id": session_id},
    )


def _seed(rng: random.Random) -> dict[object, dict[str, list[t.Any]]]:
    """Handoffs and activities over 25 days, each session one of three clients (or none), plus
    account 2's sessions of client 101; returns per client the deltas (``None``: no action), the
    session ids and the time-entry minutes."""
    truth: dict[object, dict[str, list[t.Any]]] = {
        c: {"deltas": [], "sessions": [], "minutes": [], "claims": []} for c in CLIENTS
    }
    for i in range(90):
        client = CLIENTS[i % 3]
        claimed = f.at(days=rng.uniform(0.1, 25))
        sess = f.session(1, claimed - timedelta(hours=1), ticket=f"T-{i}" if i % 4 else None)
        _set_client(sess.id, client)
        f.handoff(sess, claimed)
        delta = None if i % 7 == 0 else round(rng.uniform(5, 20000), 6)
        if delta is not None:
            f.step(sess, claimed + timedelta(seconds=delta))
        truth[client]["deltas"].append(delta)
        truth[client]["sessions"].append(sess.id)
        truth[client]["claims"].append(claimed)
        if i % 4:
            f.activity(1, sess.id, "note_posted", claimed)
            minutes = float(rng.randint(5, 60))
            f.activity(1, sess.id, "time_entry_posted", claimed, minutes)
            truth[client]["minutes"].append(minutes)
    for _ in range(10):  # another account's sessions of a client with the same id
        claimed = f.at(days=rng.uniform(0.1, 25))
        sess = f.session(2, claimed - timedelta(hours=1))
        _set_client(sess.id, 101)
        f.handoff(sess, claimed)
        f.step(sess, claimed + timedelta(seconds=1))
    f.commit()
    return truth


@pytest.fixture
def clients(app: t.Any) -> dict[object, dict[str, list[t.Any]]]:
    _add_client_column()
    return _seed(random.Random(21))


def test_escalations_of_one_client_match_the_reference(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    for client_id in (101, 202):
        deltas = [d for d in clients[client_id]["deltas"] if d is not None]
        body = client.get(ESCALATIONS + f"?client={client_id}", headers=ADMIN).get_json()
        assert body["n_handoffs_claimed"] == len(clients[client_id]["deltas"])
        assert body["n_handoffs_with_action"] == len(deltas)
        assert body["median_seconds"] == pytest.approx(float(np.percentile(deltas, 50)), abs=1e-6)
        assert body["p95_seconds"] == pytest.approx(float(np.percentile(deltas, 95)), abs=1e-6)
        trend = client.get(ESCALATIONS + f"/trend?client={client_id}", headers=ADMIN).get_json()
        assert sum(p["n_handoffs_claimed"] for p in trend["points"]) == body["n_handoffs_claimed"]
        page = client.get(HANDOFFS + f"?client={client_id}&limit=500", headers=ADMIN).get_json()
        assert sorted(item["session_id"] for item in page["items"]) == sorted(
            clients[client_id]["sessions"]
        )
        csv_rows = client.get(HANDOFFS + f"?client={client_id}&format=csv", headers=ADMIN)
        assert len(csv_rows.get_data(as_text=True).splitlines()) - 1 == body["n_handoffs_claimed"]
    everyone = client.get(ESCALATIONS, headers=ADMIN).get_json()
    assert everyone["n_handoffs_claimed"] == sum(len(v["deltas"]) for v in clients.values())


def test_psa_metrics_of_one_client_match_the_reference(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    for client_id in (101, 202):
        body = client.get(PSA + f"?client={client_id}", headers=ADMIN).get_json()
        minutes = clients[client_id]["minutes"]
        assert body["funnel"]["sessions"] == len(clients[client_id]["sessions"])
        assert body["funnel"]["doc_pushed"] == len(minutes)
        assert body["time_entries"]["count"] == len(minutes)
        assert body["time_entries"]["total_minutes"] == pytest.approx(sum(minutes))
        assert sum(day["time_entries"] for day in body["daily_trend"]) == len(minutes)


def test_another_accounts_client_and_an_unknown_client_give_nothing(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    """Account 2's sessions of client 101 never count for account 1, nor account 1's for 2."""
    mine = client.get(ESCALATIONS + "?client=101", headers=ADMIN).get_json()
    assert mine["n_handoffs_claimed"] == len(clients[101]["deltas"])
    theirs = client.get(ESCALATIONS + "?client=101", headers=as_user(2, "team_admin")).get_json()
    assert theirs["n_handoffs_claimed"] == 10
    nobody = client.get(ESCALATIONS + "?client=999", headers=ADMIN).get_json()
    assert nobody["n_handoffs_claimed"] == 0 and nobody["median_seconds"] is None


@pytest.mark.parametrize("value", ["abc", "1.5", "99999999999999999999", "", "1" * 256, "１２"])
def test_a_value_the_column_cannot_hold_is_a_400(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]], value: str
) -> None:
    for url in (ESCALATIONS, ESCALATIONS + "/trend", HANDOFFS, PSA):
        response = client.get(url, query_string={"client": value}, headers=ADMIN)
        assert response.status_code == 400, (url, value)
        assert "client" in response.get_json()["error"]["details"]["fields"]


def test_a_host_without_the_column_is_told_which_column_to_add(client: t.Any) -> None:
    for url in (ESCALATIONS, ESCALATIONS + "/trend", HANDOFFS, PSA):
        response = client.get(url + "?client=1", headers=ADMIN)
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "unsupported_filter"
        assert "client_id" in error["message"] and error["details"]["setting"] == (
            "FLOWPILOT_ANALYTICS_COLUMNS"
        )
    assert client.get(ESCALATIONS, headers=ADMIN).status_code == 200


def test_the_command_line_takes_the_client(
    app: t.Any, client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    printed = app.test_cli_runner().invoke(
        args=["flowpilot-analytics", "escalations", "--account", "1", "--client", "202", "--json"]
    )
    assert printed.exit_code == 0, printed.output
    body = client.get(ESCALATIONS + "?client=202", headers=ADMIN).get_json()
    assert json.loads(printed.output) == body


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}], ids=["cached"])
def test_cached_answers_are_per_client(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    first = client.get(ESCALATIONS + "?client=101", headers=ADMIN).get_json()
    second = client.get(ESCALATIONS + "?client=202", headers=ADMIN).get_json()
    assert first["n_handoffs_claimed"] == len(clients[101]["deltas"])
    assert second["n_handoffs_claimed"] == len(clients[202]["deltas"])


def test_doctor_recommends_the_client_index_once_the_column_exists(app: t.Any) -> None:
    runner = app.test_cli_runner()
    before = runner.invoke(args=["flowpilot-analytics", "doctor"])
    assert "client_id" not in before.output and before.exit_code == 0
    _add_client_column()
    after = runner.invoke(args=["flowpilot-analytics", "doctor"])
    assert after.exit_code == 1
    assert "MISSING index ai_sessions (account_id, client_id, created_at, id)" in after.output
    statement = next(
        line for line in after.output.splitlines() if "client_id" in line and "CREATE" in line
    )
    if db.engine.dialect.name == "postgresql":  # CONCURRENTLY cannot run inside a transaction
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(statement.rstrip(";"))
    else:
        with db.engine.begin() as connection:
            connection.exec_driver_sql(statement.rstrip(";"))
    fixed = runner.invoke(args=["flowpilot-analytics", "doctor"])
    assert fixed.exit_code == 0, fixed.output


@pytest.mark.parametrize("clock", ["wall", "business"])
def test_group_by_client_gives_each_clients_figures(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]], clock: str
) -> None:
    """One group per client, sessions without one as ``"client": null``; the groups add up to the
    headline and each equals the ``client=`` report (and the reference on the wall clock)."""
    if clock == "business":
        always = {
            "timezone": "UTC",
            "effective_from": "2020-01-01",
            "weekly": {
                d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            },
        }
        assert (
            client.post(
                "/api/v1/analytics/flowpilot/business-hours", json=always, headers=ADMIN
            ).status_code
            == 201
        )
    body = client.get(
        ESCALATIONS + f"?group_by=client&clock={clock}&target_seconds=3600", headers=ADMIN
    ).get_json()
    groups = {group["client"]: group for group in body["groups"]}
    assert list(groups) == [101, 202, None]
    assert all("engineer" not in group for group in body["groups"])
    assert sum(g["n_handoffs_claimed"] for g in groups.values()) == body["n_handoffs_claimed"]
    for client_id, group in groups.items():
        deltas = [d for d in clients[client_id]["deltas"] if d is not None]
        assert group["n_handoffs_claimed"] == len(clients[client_id]["deltas"])
        assert group["median_seconds"] == pytest.approx(float(np.percentile(deltas, 50)), abs=1e-6)
        if client_id is not None:
            alone = client.get(
                ESCALATIONS + f"?client={client_id}&clock={clock}&target_seconds=3600",
                headers=ADMIN,
            ).get_json()
            for key in ("n_handoffs_claimed", "median_seconds", "p90_seconds", "target"):
                assert group[key] == alone[key], key


def test_group_by_client_on_a_host_without_the_column(client: t.Any) -> None:
    response = client.get(ESCALATIONS + "?group_by=client", headers=ADMIN)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "unsupported_grouping" and "client_id" in error["message"]


def test_psa_metrics_group_by_client(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    body = client.get(PSA + "?group_by=client", headers=ADMIN).get_json()
    groups = {group["client"]: group for group in body["groups"]}
    assert list(groups) == [101, 202, None]
    for client_id, group in groups.items():
        minutes = clients[client_id]["minutes"]
        assert group["funnel"]["sessions"] == len(clients[client_id]["sessions"])
        assert group["time_entries"]["count"] == len(minutes)
        assert group["time_entries"]["total_minutes"] == pytest.approx(sum(minutes))
    assert sum(g["funnel"]["sessions"] for g in groups.values()) == body["funnel"]["sessions"]
    alone = client.get(PSA + "?client=202", headers=ADMIN).get_json()
    assert groups[202]["funnel"] == alone["funnel"]
    assert groups[202]["time_entries"] == alone["time_entries"]


def test_psa_group_by_client_on_a_host_without_the_column(client: t.Any) -> None:
    response = client.get(PSA + "?group_by=client", headers=ADMIN)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "unsupported_grouping"


def test_the_drill_down_names_each_handoffs_client(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    items = client.get(HANDOFFS + "?limit=500", headers=ADMIN).get_json()["items"]
    by_session = {s: c for c, truth in clients.items() for s in truth["sessions"]}
    assert {item["session_id"]: item["client"] for item in items} == by_session
    lines = client.get(HANDOFFS + "?format=csv", headers=ADMIN).get_data(as_text=True).splitlines()
    assert lines[0].endswith(",clock,client")
    clients_in_csv = {line.rsplit(",", 1)[1] for line in lines[1:]}
    assert clients_in_csv == {"101", "202", ""}


def test_one_client_grouped_by_client_is_that_clients_one_group(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    for url in (ESCALATIONS, PSA):
        body = client.get(url + "?client=101&group_by=client", headers=ADMIN).get_json()
        assert [group["client"] for group in body["groups"]] == [101], url
    escalations = client.get(ESCALATIONS + "?client=101&group_by=client", headers=ADMIN).get_json()
    assert escalations["groups"][0]["n_handoffs_claimed"] == len(clients[101]["deltas"])


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
ALWAYS = {
    "timezone": "UTC",
    "effective_from": "2020-01-01",
    "weekly": {d: [["00:00", "24:00"]] for d in (*WEEKDAYS, "sat", "sun")},
}
OFFICE = {
    "timezone": "America/New_York",
    "effective_from": "2020-01-01",
    "weekly": {d: [["09:00", "17:00"]] for d in WEEKDAYS},
}


def test_a_clients_own_business_hours_measure_its_handoffs(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    """Client 101 has its own version (New York office hours); every other handoff is measured on
    the account's (round the clock, so its business seconds are its wall seconds)."""
    from datetime import timezone

    from .business_reference import Calendar as Reference

    url = "/api/v1/analytics/flowpilot/business-hours"
    own = client.post(url, json=ALWAYS, headers=ADMIN).get_json()
    office = client.post(url, json={**OFFICE, "client_id": 101}, headers=ADMIN).get_json()
    assert (own["client_id"], office["client_id"]) == (None, "101")
    assert [v["id"] for v in client.get(url, headers=ADMIN).get_json()["versions"]] == [own["id"]]
    listed = client.get(url + "?client=101", headers=ADMIN).get_json()
    assert [v["id"] for v in listed["versions"]] == [office["id"]]
    assert listed["in_effect"]["id"] == office["id"]
    reference = {101: Reference([OFFICE]), 202: Reference([ALWAYS]), None: Reference([ALWAYS])}

    def expected(client_id: object) -> list[float]:
        truth = clients[client_id]
        return [
            reference[client_id].seconds(
                claim.replace(tzinfo=timezone.utc),
                claim.replace(tzinfo=timezone.utc) + timedelta(seconds=delta),
            )
            for claim, delta in zip(truth["claims"], truth["deltas"])
            if delta is not None
        ]

    body = client.get(ESCALATIONS + "?clock=business&group_by=client", headers=ADMIN).get_json()
    assert body["business_hours"] == {"version_ids": sorted([own["id"], office["id"]])}
    for group in body["groups"]:
        seconds = expected(group["client"])
        assert group["median_seconds"] == pytest.approx(float(np.percentile(seconds, 50)), abs=1e-6)
    alone = client.get(ESCALATIONS + "?clock=business&client=101", headers=ADMIN).get_json()
    assert alone["business_hours"] == {"version_ids": [office["id"]]}
    assert alone["median_seconds"] == pytest.approx(float(np.percentile(expected(101), 50)))
    other = client.get(ESCALATIONS + "?clock=business&client=202", headers=ADMIN).get_json()
    assert other["business_hours"] == {"version_ids": [own["id"]]}
    page = client.get(HANDOFFS + "?clock=business&limit=500", headers=ADMIN).get_json()
    by_client: dict[object, list[float]] = {}
    for item in page["items"]:
        if item["seconds"] is not None:
            by_client.setdefault(item["client"], []).append(item["seconds"])
    for client_id, seconds in by_client.items():
        assert sorted(seconds) == pytest.approx(sorted(expected(client_id)), abs=1e-6)


def test_without_the_accounts_own_version_only_a_client_with_one_is_measured(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    url = "/api/v1/analytics/flowpilot/business-hours"
    client.post(url, json={**OFFICE, "client_id": 101}, headers=ADMIN)
    assert client.get(ESCALATIONS + "?clock=business&client=101", headers=ADMIN).status_code == 200
    for query in ("?clock=business", "?clock=business&client=202"):
        response = client.get(ESCALATIONS + query, headers=ADMIN)
        assert response.status_code == 409, query
        assert response.get_json()["error"]["code"] == "no_business_hours"


def test_a_clients_version_on_a_host_without_the_column_is_refused(client: t.Any) -> None:
    url = "/api/v1/analytics/flowpilot/business-hours"
    response = client.post(url, json={**OFFICE, "client_id": 101}, headers=ADMIN)
    assert response.status_code == 400
    assert "client_id" in response.get_json()["error"]["details"]["fields"]
    assert client.get(url, headers=ADMIN).get_json()["versions"] == []
    assert client.get(url + "?client=101", headers=ADMIN).status_code == 400


@pytest.mark.parametrize(
    "app_config", [{"FLOWPILOT_ANALYTICS_COLUMNS": {"sessions.client_id": "customer_id"}}]
)
def test_a_numeric_client_column_under_another_name(client: t.Any) -> None:
    db.session.rollback()
    with db.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE ai_sessions ADD COLUMN customer_id NUMERIC"))
    sess = f.session(1, f.at(days=2))
    db.session.execute(
        sa.text("UPDATE ai_sessions SET customer_id = 12 WHERE id = :id"), {"id": sess.id}
    )
    f.handoff(sess, f.at(days=1))
    f.commit()
    assert (
        client.get(ESCALATIONS + "?client=12", headers=ADMIN).get_json()["n_handoffs_claimed"] == 1
    )
    assert (
        client.get(ESCALATIONS + "?client=13", headers=ADMIN).get_json()["n_handoffs_claimed"] == 0
    )
    bad = client.get(ESCALATIONS + "?client=abc", headers=ADMIN)
    assert bad.status_code == 400 and "client" in bad.get_json()["error"]["details"]["fields"]


def test_psa_metrics_by_client_as_csv_has_one_row_per_client(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    import csv
    import io

    body = client.get(PSA + "?group_by=client", headers=ADMIN).get_json()
    export = client.get(PSA + "?group_by=client&format=csv", headers=ADMIN)
    assert (
        export.status_code == 200 and "psa_by_client.csv" in export.headers["Content-Disposition"]
    )
    table = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
    header, rows = table[0], table[1:]
    assert header[0] == "client" and "time_entries_count" in header and "funnel_sessions" in header
    assert [row[0] for row in rows] == ["101", "202", ""]
    count = header.index("time_entries_count")
    assert [int(row[count]) for row in rows] == [g["time_entries"]["count"] for g in body["groups"]]


@pytest.mark.parametrize("clock", ["wall", "business"])
def test_escalations_by_client_as_csv_has_one_row_per_group(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]], clock: str
) -> None:
    import io

    if clock == "business":
        version = {
            "timezone": "UTC",
            "effective_from": "2020-01-01",
            "weekly": {d: [["08:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
        }
        posted = client.post(BASE + "/business-hours", json=version, headers=ADMIN)
        assert posted.status_code == 201
    query = f"?group_by=client&clock={clock}&target_seconds=900"
    body = client.get(ESCALATIONS + query, headers=ADMIN).get_json()
    export = client.get(ESCALATIONS + query + "&format=csv", headers=ADMIN)
    suffix = "" if clock == "wall" else "_business"
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert f"escalations_by_client{suffix}.csv" in export.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert list(table[0])[0] == "client" and "engineer" not in table[0]
    assert [r["client"] for r in table] == ["101", "202", ""]
    for row, group in zip(table, body["groups"]):
        assert int(row["n_handoffs_claimed"]) == group["n_handoffs_claimed"]
        assert float(row["median_seconds"]) == group["median_seconds"]  # repr: every digit
        assert int(row["target_n_overdue"]) == group["target"]["n_overdue"]
    # the window as one row, and no CSV for a comparison
    whole = client.get(ESCALATIONS + f"?clock={clock}&format=csv", headers=ADMIN)
    rows = list(csv.DictReader(io.StringIO(whole.get_data(as_text=True))))
    assert len(rows) == 1 and int(rows[0]["n_handoffs_claimed"]) == sum(
        g["n_handoffs_claimed"] for g in body["groups"]
    )
    refused = client.get(ESCALATIONS + "?compare=previous&format=csv", headers=ADMIN)
    assert (
        refused.status_code == 400 and "compare" in refused.get_json()["error"]["details"]["fields"]
    )


def test_escalations_by_engineer_as_csv(
    client: t.Any, clients: dict[object, dict[str, list[t.Any]]]
) -> None:
    import io

    body = client.get(ESCALATIONS + "?group_by=engineer", headers=ADMIN).get_json()
    export = client.get(ESCALATIONS + "?group_by=engineer", headers={**ADMIN, "Accept": "text/csv"})
    table = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert list(table[0])[0] == "engineer" and "client" not in table[0]
    assert len(table) == len(body["groups"])
