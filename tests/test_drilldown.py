"""The drill-down behind the escalation number: keyset pages, bucket filter, CSV exports, bad
input."""

from __future__ import annotations

import csv
import io
import json
import random
import typing as t
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from flowpilot_analytics import registration

from . import factories as f
from .escalation_reference import UTC, seed
from .helpers import ESCALATIONS, HANDOFFS, PSA, as_user
from .host import NOW, db

URL = ESCALATIONS


def test_drill_down_pages_walk_every_handoff_once_in_a_stable_order(client: t.Any) -> None:
    rows = seed(random.Random(21))
    tie = f.at(days=2).replace(microsecond=123456)
    for _ in range(4):  # equal claim times: the id breaks the tie
        f.escalation(1, tie, 30)
    f.commit()
    body = client.get(URL + "?period=90d", headers=as_user(1)).get_json()
    seen: list[dict[str, t.Any]] = []
    cursor = None
    for _ in range(50):
        query = "?period=90d&limit=7" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(HANDOFFS + query, headers=as_user(1)).get_json()
        assert len(page["items"]) <= 7
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == body["n_handoffs_claimed"] == len({item["handoff_id"] for item in seen})
    keys = [(item["claimed_at"], item["handoff_id"]) for item in seen]
    assert keys == sorted(keys, reverse=True)
    with_action = [item["seconds"] for item in seen if item["seconds"] is not None]
    assert len(with_action) == body["n_handoffs_with_action"]
    assert float(np.percentile(with_action, 50)) == pytest.approx(body["median_seconds"])
    expected = sorted(
        r[3]
        for r in rows
        if r[0] == 1
        and r[3] is not None
        and NOW - timedelta(days=90) <= r[2].replace(tzinfo=UTC) <= NOW
    )
    assert sorted(with_action) == pytest.approx(sorted(expected + [30.0] * 4))


@pytest.mark.parametrize("bucket", ["0", "2", "5", "no_action"])
def test_drill_down_filters_by_bucket(client: t.Any, bucket: str) -> None:
    seed(random.Random(4))
    body = client.get(URL, headers=as_user(1)).get_json()
    expected = (
        body["distribution"]["no_action"]
        if bucket == "no_action"
        else body["distribution"]["buckets"][int(bucket)]["count"]
    )
    items = client.get(HANDOFFS + f"?bucket={bucket}&limit=500", headers=as_user(1)).get_json()[
        "items"
    ]
    assert len(items) == expected
    assert {item["bucket"] for item in items} <= {None if bucket == "no_action" else int(bucket)}


def test_csv_exports_stream_every_row_with_a_header(client: t.Any) -> None:
    seed(random.Random(8))
    body = client.get(URL, headers=as_user(1)).get_json()
    export = client.get(HANDOFFS + "?format=csv", headers=as_user(1))
    assert export.status_code == 200 and export.mimetype == "text/csv" and export.is_streamed
    lines = export.get_data(as_text=True).splitlines()
    assert lines[0] == (
        "handoff_id,session_id,claimed_at_utc,first_action_at_utc,seconds,bucket,wall_seconds,clock,"
        "client"
    )
    assert len(lines) - 1 == body["n_handoffs_claimed"]
    assert sum(",no_action," in line for line in lines) == body["distribution"]["no_action"]
    assert all(line.endswith(",wall,") for line in lines[1:])  # no client column on this host
    by_accept = client.get(HANDOFFS, headers={**as_user(1), "Accept": "text/csv"})
    assert by_accept.get_data(as_text=True) == export.get_data(as_text=True)
    trend = client.get(PSA + "?period=7d&tz=Europe/Berlin&format=csv", headers=as_user(1, "admin"))
    rows = trend.get_data(
        as_text=True
    ).splitlines()  # a streamed response is read before the next request
    json_trend = client.get(
        PSA + "?period=7d&tz=Europe/Berlin", headers=as_user(1, "admin")
    ).get_json()["daily_trend"]
    assert rows[0] == "date (Europe/Berlin),sessions,notes_posted,time_entries,minutes"
    assert [r.split(",")[0] for r in rows[1:]] == [d["date"] for d in json_trend]


@pytest.mark.parametrize(
    "query",
    [
        "?cursor=bm9wZQ",
        "?cursor=%%%",
        "?bucket=9",
        "?bucket=fast",
        "?limit=0",
        "?limit=501",
        "?format=xml",
        "?bucket=9&format=csv",
    ],
)
def test_drill_down_bad_input_is_400_json(client: t.Any, query: str) -> None:
    response = client.get(HANDOFFS + query, headers=as_user(1))
    assert response.status_code == 400 and response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("bucket", ["9" * 4400, "6", "-1", "1.0", "٣", "no-action"])
def test_bucket_values_outside_the_buckets_are_400(client: t.Any, bucket: str) -> None:
    response = client.get(HANDOFFS, query_string={"bucket": bucket}, headers=as_user(1))
    assert (
        response.status_code == 400
        and "bucket" in response.get_json()["error"]["details"]["fields"]
    )


def test_drill_down_follows_the_escalation_role_and_scope(client: t.Any) -> None:
    f.escalation(2, f.at(days=1), 10)
    f.commit()
    assert client.get(HANDOFFS, headers=as_user(1, "viewer")).status_code == 403
    sneaky = client.get(HANDOFFS + "?account_id=2", headers=as_user(1))
    assert sneaky.status_code == 400  # refused by name: a parameter never changes the scope
    assert sneaky.get_json()["error"]["details"]["fields"] == {"account_id": ["Unknown field."]}
    assert client.get(HANDOFFS, headers=as_user(1)).get_json()["items"] == []
    assert len(client.get(HANDOFFS, headers=as_user(2)).get_json()["items"]) == 1


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_ties_across_page_boundaries_are_neither_repeated_nor_lost(
    client: t.Any, backend: str, limit: int
) -> None:
    tie = f.at(days=2).replace(microsecond=0)
    for _ in range(5):
        f.escalation(1, tie, 30)
    f.escalation(1, tie + timedelta(seconds=1), 30)
    f.escalation(1, tie - timedelta(seconds=1), 30)
    f.commit()
    if (
        backend == "sqlite"
    ):  # the same instants written in other ISO spellings must page the same way
        from .host import db

        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE session_handoffs SET claimed_at = replace(claimed_at, ' ', 'T') "
                "WHERE id % 2 = 0"
            )
    seen: list[int] = []
    cursor = None
    for _ in range(20):
        page = client.get(
            HANDOFFS + f"?limit={limit}" + (f"&cursor={cursor}" if cursor else ""),
            headers=as_user(1),
        ).get_json()
        seen += [item["handoff_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == list(range(1, 8)) and len(seen) == 7


def test_bucket_filter_and_cursor_together(client: t.Any) -> None:
    for i in range(12):
        f.escalation(1, f.at(days=1, minutes=i), 30 if i % 3 else 4000)
    f.commit()
    seen, cursor = [], None
    for _ in range(10):
        page = client.get(
            HANDOFFS + "?bucket=0&limit=2" + (f"&cursor={cursor}" if cursor else ""),
            headers=as_user(1),
        ).get_json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 8 and {item["bucket"] for item in seen} == {0}


def test_a_drill_down_page_scans_a_bounded_number_of_rows(
    client: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowpilot_analytics import reports

    monkeypatch.setattr(reports, "MAX_SCAN_ROWS", 7)
    for i in range(
        30
    ):  # all acted on within a minute: bucket 0; none in bucket 5 but two at the end
        f.escalation(1, f.at(minutes=100 + i), 10)
    f.escalation(1, f.at(days=20), 20000)
    f.escalation(1, f.at(days=21), 30000)
    f.commit()
    pages, items, cursor = 0, [], None
    while True:
        page = client.get(
            HANDOFFS + "?bucket=5&limit=1" + (f"&cursor={cursor}" if cursor else ""),
            headers=as_user(1, user=3),
        ).get_json()
        pages += 1
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert [i["seconds"] for i in items] == [20000.0, 30000.0]
    assert pages >= 4  # 32 handoffs at most 7 a page: the empty early pages still hand on a cursor
    first = client.get(HANDOFFS + "?bucket=5", headers=as_user(1, user=3)).get_json()
    assert first["items"] == [] and first["next_cursor"] is not None


def test_csv_export_crosses_query_chunks(client: t.Any) -> None:
    for i in range(520):
        f.escalation(1, f.at(days=1, seconds_ago=i), 10)
    f.commit()
    lines = (
        client.get(HANDOFFS + "?format=csv", headers=as_user(1)).get_data(as_text=True).splitlines()
    )
    assert len(lines) == 521 and len(set(lines)) == 521


def test_csv_export_on_a_missing_table_is_a_json_error(client: t.Any) -> None:
    from . import host

    host.db.session.rollback()
    host.SessionHandoff.__table__.drop(host.db.engine)
    response = client.get(HANDOFFS + "?format=csv", headers=as_user(1))
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "schema_missing"
    assert response.get_json()["error"]["details"]["table"] == "session_handoffs"


TEXT_IDS = sa.MetaData()
TEXT_SESSIONS = sa.Table(
    "txt_sessions",
    TEXT_IDS,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("created_at", sa.DateTime),
    sa.Column("psa_ticket_id", sa.String(40)),
)
TEXT_STEPS = sa.Table(
    "txt_steps",
    TEXT_IDS,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("session_id", sa.String(40)),
    sa.Column("created_at", sa.DateTime),
)
TEXT_HANDOFFS = sa.Table(
    "txt_handoffs",
    TEXT_IDS,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("session_id", sa.String(40)),
    sa.Column("created_at", sa.DateTime),
    sa.Column("claimed_at", sa.DateTime),
)


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_TABLES": {
                "sessions": "txt_sessions",
                "steps": "txt_steps",
                "handoffs": "txt_handoffs",
            }
        }
    ],
)
def test_csv_cells_that_would_be_formulas_are_neutralised(client: t.Any) -> None:
    dangerous = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "plain"]
    TEXT_IDS.create_all(db.engine)
    try:
        with db.engine.begin() as conn:
            for i, text_id in enumerate(dangerous):
                claimed = f.at(minutes=10 + i)
                conn.execute(
                    TEXT_SESSIONS.insert().values(
                        id=f"s{text_id}", account_id=1, created_at=claimed
                    )
                )
                conn.execute(
                    TEXT_HANDOFFS.insert().values(
                        id=text_id,
                        account_id=1,
                        session_id=f"s{text_id}",
                        created_at=claimed,
                        claimed_at=claimed,
                    )
                )
        response = client.get(HANDOFFS + "?format=csv", headers=as_user(1))
        assert response.status_code == 200
        table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
        ids = {row[0] for row in table[1:]}
        assert ids == {"'" + d if d != "plain" else d for d in dangerous}
        assert {row[1] for row in table[1:]} == {
            "s" + d for d in dangerous
        }  # "s..." is safe as it is
    finally:
        db.session.rollback()
        TEXT_IDS.drop_all(db.engine)


def _forged(payload: t.Any) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        "?bucket=%C2%B2",
        f"?cursor={_forged({'k': '2026-11-01T00:00:00+00:00', 'id': [1]})}",
        f"?cursor={_forged({'k': '2026-11-01T00:00:00+00:00', 'id': {'a': 1}})}",
        f"?cursor={_forged({'k': '2026-11-01T00:00:00+00:00', 'id': 10**30})}",
        f"?cursor={_forged({'k': '0001-01-01T00:00:00+05:00', 'id': 1})}",
        f"?cursor={_forged({'k': 5, 'id': 1})}",
        f"?cursor={_forged([1, 2])}",
        "?since=0001-01-01T00:00:00&until=0001-02-01T00:00:00",
    ],
)
def test_forged_or_extreme_input_is_400_never_5xx(client: t.Any, backend: str, query: str) -> None:
    response = client.get(HANDOFFS + query, headers=as_user(1))
    assert response.status_code == 400, response.get_data(
        as_text=True
    )  # unsigned cursors never get through


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}])
def test_cache_keys_cannot_collide_through_free_text(client: t.Any) -> None:
    assert client.get(HANDOFFS + "?bucket=0&period=7d", headers=as_user(1)).status_code == 200
    assert client.get(HANDOFFS + "?bucket=0%26period%3D7d", headers=as_user(1)).status_code == 400
    etag = client.get(HANDOFFS + "?bucket=0&period=7d", headers=as_user(1)).headers["ETag"]
    again = client.get(
        HANDOFFS + "?bucket=0&period=7d", headers={**as_user(1), "If-None-Match": etag}
    )
    assert again.status_code == 304


UUID_IDS = sa.MetaData()
UUID_SESSIONS = sa.Table(
    "uid_sessions",
    UUID_IDS,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("created_at", sa.DateTime),
    sa.Column("psa_ticket_id", sa.String(40)),
)
UUID_STEPS = sa.Table(
    "uid_steps",
    UUID_IDS,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("session_id", sa.Uuid),
    sa.Column("created_at", sa.DateTime),
)
UUID_HANDOFFS = sa.Table(
    "uid_handoffs",
    UUID_IDS,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("account_id", sa.Integer),
    sa.Column("session_id", sa.Uuid),
    sa.Column("created_at", sa.DateTime),
    sa.Column("claimed_at", sa.DateTime),
)


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_TABLES": {
                "sessions": "uid_sessions",
                "steps": "uid_steps",
                "handoffs": "uid_handoffs",
            }
        }
    ],
)
def test_drill_down_pages_over_uuid_ids(client: t.Any, dialect: str) -> None:
    import uuid

    UUID_IDS.create_all(db.engine)
    try:
        ids = [uuid.uuid4() for _ in range(3)]
        with db.engine.begin() as conn:
            for i, handoff_id in enumerate(ids):
                claimed = f.at(minutes=10 + i)
                conn.execute(
                    UUID_SESSIONS.insert().values(id=handoff_id, account_id=1, created_at=claimed)
                )
                conn.execute(
                    UUID_HANDOFFS.insert().values(
                        id=handoff_id,
                        account_id=1,
                        session_id=handoff_id,
                        created_at=claimed,
                        claimed_at=claimed,
                    )
                )
        seen, cursor = [], None
        for _ in range(5):
            page = client.get(
                HANDOFFS + "?limit=1" + (f"&cursor={cursor}" if cursor else ""), headers=as_user(1)
            )
            assert page.status_code == 200, page.get_data(as_text=True)
            seen += [item["handoff_id"] for item in page.get_json()["items"]]
            cursor = page.get_json()["next_cursor"]
            if cursor is None:
                break
        assert [uuid.UUID(x) for x in seen] == ids  # SQLite keeps them as 32-digit hex text
        forged = registration(client.application).cursors.dumps(
            {"k": "2026-11-01 00:00:00", "id": "not-a-uuid", "a": "1", "u": "1"}
        )
        forged_page = client.get(HANDOFFS + f"?cursor={forged}", headers=as_user(1))
        # PostgreSQL's uuid column refuses the text at the door; SQLite keeps ids as text: an empty
        # page
        assert forged_page.status_code == (400 if dialect == "postgresql" else 200)
    finally:
        db.session.rollback()
        UUID_IDS.drop_all(db.engine)
