"""Storage credentials never reach a log; drill-down cursors survive a key rotation, expire, and
name no one."""

from __future__ import annotations

import base64
import json
import logging
import typing as t
import zlib
from datetime import timedelta

import pytest
from flask import Flask

from flowpilot_analytics import registration

from . import factories as f
from . import host
from .helpers import HANDOFFS, PSA, as_user
from .host import NOW

SECRET = "s3cr3t-9f1c"


# -- storage URIs: every credential form is redacted -----------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        f"redis://127.0.0.1:1/0?password=Pw-{SECRET}",
        f"redis://127.0.0.1:1/0?socket_timeout=1&PassWord=Pw-{SECRET}",
        f"redis://:Pw-{SECRET}@127.0.0.1:1/0",
        f"redis://alice:Pw-{SECRET}@127.0.0.1:1/0",
        f"redis://:Pw-{SECRET}@ops@127.0.0.1:1/0",
        f"rediss://Tok-{SECRET}@127.0.0.1:1/0",
        f"redis+unix:///nonexistent/fpa.sock?password=Pw-{SECRET}",
        f"redis+sentinel://:Pw-{SECRET}@127.0.0.1:1/mymaster",
        f"redis+cluster://:Pw-{SECRET}@127.0.0.1:1",
    ],
)
def test_storage_credentials_never_reach_the_log(
    make_app: t.Any, app: Flask, caplog: pytest.LogCaptureFixture, uri: str
) -> None:
    """The cache and the limiter both fail to reach the storage; no record (message, arguments or
    traceback) carries the password or token, whichever way the URI gives it."""
    failing = make_app(
        FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI=uri,
        FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI=uri,
        FLOWPILOT_ANALYTICS_CACHE_TTL=60,
    )
    with caplog.at_level(logging.DEBUG):
        assert failing.test_client().get(PSA, headers=as_user(1, "admin")).status_code == 200
    messages = [r.getMessage() for r in caplog.records]
    assert any("response cache unavailable" in m for m in messages), messages
    assert any("limiting per process" in m for m in messages), messages
    logged = caplog.text + "".join(f"{r.msg} {r.args} {r.exc_text or ''}" for r in caplog.records)
    assert SECRET not in logged
    assert "***" in logged  # the storage is still named, credentials masked


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI": "redis://:s3cret@pass@127.0.0.1:1/0",
            "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": "redis://:s3cret@pass@127.0.0.1:1/0",
            "FLOWPILOT_ANALYTICS_CACHE_TTL": 60,
        }
    ],
)
def test_storage_passwords_never_reach_the_log(
    client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert client.get(PSA, headers=as_user(1, "admin")).status_code == 200
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "unavailable" in text and "redis://:***@127.0.0.1:1/0" in text
    assert "s3cret" not in text and "pass@" not in text  # an unencoded "@" in the password too


# -- cursors ---------------------------------------------------------------------------------------


def _seed(account: int, count: int = 3) -> None:
    for i in range(count):
        f.escalation(account, f.at(minutes=10 + i), 30)
    f.commit()


def _page(client: t.Any, headers: dict[str, str], cursor: str | None = None) -> t.Any:
    return client.get(
        HANDOFFS + "?limit=1" + (f"&cursor={cursor}" if cursor else ""), headers=headers
    )


@pytest.mark.parametrize("app_config", [{"SECRET_KEY": "key-before-rotation"}])
def test_a_cursor_issued_before_a_key_rotation_still_pages(
    app: Flask, client: t.Any, make_app: t.Any
) -> None:
    _seed(1)
    first = _page(client, as_user(1)).get_json()
    expected = _page(client, as_user(1), first["next_cursor"]).get_json()["items"]
    rotated = make_app(
        SECRET_KEY="key-after-rotation", SECRET_KEY_FALLBACKS=["key-before-rotation"]
    ).test_client()
    page = _page(rotated, as_user(1), first["next_cursor"])
    assert page.status_code == 200, page.get_data(as_text=True)
    assert page.get_json()["items"] == expected
    retired = make_app(SECRET_KEY="key-after-rotation").test_client()  # the old key gone for good
    assert (
        _page(retired, as_user(1), page.get_json()["next_cursor"]).status_code == 200
    )  # the newest key signs
    refused = _page(retired, as_user(1), first["next_cursor"])
    assert refused.status_code == 400
    assert refused.get_json()["error"]["details"]["fields"]["cursor"] == [
        "Not a cursor this API returned."
    ]


def test_an_expired_cursor_is_a_400_that_says_to_start_again(make_app: t.Any, app: Flask) -> None:
    now = [NOW]
    clocked = make_app(
        host.create_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            clock=lambda: now[0],
            FLOWPILOT_ANALYTICS_CURSOR_MAX_AGE=600,
            FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=app.config["FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH"],
        )
    ).test_client()
    _seed(1)
    cursor = _page(clocked, as_user(1)).get_json()["next_cursor"]
    now[0] = NOW + timedelta(seconds=600)
    assert _page(clocked, as_user(1), cursor).status_code == 200  # still within its lifetime
    now[0] = NOW + timedelta(seconds=601)
    expired = _page(clocked, as_user(1), cursor)
    assert expired.status_code == 400
    error = expired.get_json()["error"]
    assert error["code"] == "invalid_parameter"
    assert "expired" in error["message"] and "first page" in error["message"]
    assert (
        "expired" in error["details"]["fields"]["cursor"][0]
        and "600 seconds" in error["details"]["fields"]["cursor"][0]
    )
    assert _page(clocked, as_user(1)).status_code == 200  # the first page, as told, works


def _payload(cursor: str) -> str:
    """The readable part of a signed cursor: its base64 payload (zlib-compressed when it starts with
    ".")."""
    compressed = cursor.startswith(".")
    body = cursor.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return (zlib.decompress(raw) if compressed else raw).decode()


def test_a_cursor_names_neither_account_nor_user_and_serves_only_its_caller(client: t.Any) -> None:
    account, user = 31337, 918273
    _seed(account)
    mine = as_user(account, user=user)
    cursor = _page(client, mine).get_json()["next_cursor"]
    payload = json.loads(_payload(cursor))
    assert set(payload) == {"k", "id", "c"}
    assert str(account) not in json.dumps(payload) and str(user) not in json.dumps(payload)
    assert _page(client, mine, cursor).status_code == 200
    for other in (as_user(account, user=user + 1), as_user(account + 1, user=user)):
        refused = _page(client, other, cursor)
        assert refused.status_code == 400
        assert refused.get_json()["error"]["message"] == "The cursor was issued to another user."


def test_a_cursor_is_valid_only_for_the_user_it_was_issued_to(client: t.Any) -> None:
    for i in range(3):
        f.escalation(1, f.at(minutes=10 + i), 30)
    f.commit()
    cursor = client.get(HANDOFFS + "?limit=1", headers=as_user(1, user=1)).get_json()["next_cursor"]
    assert (
        client.get(HANDOFFS + f"?limit=1&cursor={cursor}", headers=as_user(1, user=1)).status_code
        == 200
    )
    for other in (as_user(1, user=2), as_user(2, user=1)):
        response = client.get(HANDOFFS + f"?limit=1&cursor={cursor}", headers=other)
        assert (
            response.status_code == 400
            and "cursor" in response.get_json()["error"]["details"]["fields"]
        )
    edited = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    assert client.get(HANDOFFS + f"?cursor={edited}", headers=as_user(1)).status_code == 400


@pytest.mark.parametrize(
    "fields",
    [{"id": "abc"}, {"id": 2**70}, {"id": True}, {"k": "not a time"}, {"k": "0001-01-01T00:00:00"}],
)
def test_signed_cursors_whose_fields_do_not_fit_the_columns_are_400(
    app: Flask, client: t.Any, dialect: str, fields: dict[str, t.Any]
) -> None:
    """Even a cursor signed with the app's key (a leaked key) never reaches the database with a bad
    value."""
    payload = {"k": "2026-11-01T00:00:00+00:00", "id": 1, "a": "1", "u": "1", **fields}
    cursor = registration(app).cursors.dumps(payload)
    response = client.get(HANDOFFS + f"?cursor={cursor}", headers=as_user(1))
    if (
        dialect == "sqlite" and "k" in fields
    ):  # SQLite keys are the stored text: a harmless empty page
        assert response.status_code == 200 and response.get_json()["items"] == []
    else:
        assert response.status_code == 400, response.get_data(as_text=True)
