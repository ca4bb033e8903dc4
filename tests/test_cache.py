"""Response cache: TTL, ETag / 304, Cache-Control, rate limit still counted, hook invalidation, Redis."""

from __future__ import annotations

import logging
import typing as t
import uuid

import pytest
import redis

from . import factories as f
from .fake_psa import FakePsaService
from .helpers import ESCALATIONS, PSA, as_user
from .host import db

CACHED = {"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}


@pytest.mark.parametrize("app_config", [CACHED])
def test_repeated_call_is_served_from_cache_until_ttl(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 30)
    f.commit()
    first = client.get(ESCALATIONS, headers=as_user(1))
    assert first.headers["Cache-Control"] == "private, no-cache"  # the browser revalidates; the server caches
    f.escalation(1, f.at(days=1), 90)
    f.commit()
    second = client.get(ESCALATIONS, headers=as_user(1))
    assert second.get_data() == first.get_data()
    assert second.get_json()["n_handoffs_claimed"] == 1
    # other parameters and other accounts are other entries
    assert client.get(ESCALATIONS + "?period=7d", headers=as_user(1)).get_json()["n_handoffs_claimed"] == 2
    assert client.get(ESCALATIONS, headers=as_user(2)).get_json()["n_handoffs_claimed"] == 0


@pytest.mark.parametrize("app_config", [CACHED])
def test_etag_and_if_none_match(client: t.Any) -> None:
    first = client.get(ESCALATIONS, headers=as_user(1))
    etag = first.headers["ETag"]
    assert etag.startswith('"') and len(etag) > 10
    again = client.get(ESCALATIONS, headers={**as_user(1), "If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b""
    other = client.get(ESCALATIONS, headers={**as_user(1), "If-None-Match": '"stale"'})
    assert other.status_code == 200 and other.headers["ETag"] == etag


@pytest.mark.parametrize("app_config", [CACHED])
def test_cached_calls_still_count_against_the_limit(client: t.Any) -> None:
    codes = [client.get(PSA, headers=as_user(1, "admin")).status_code for _ in range(16)]
    assert codes == [200] * 15 + [429]


@pytest.mark.parametrize("app_config", [CACHED])
def test_a_recorded_activity_invalidates_the_accounts_psa_entry(app: t.Any, client: t.Any) -> None:
    psa = app.extensions["flowpilot_analytics"].extension.wrap_psa_service(FakePsaService())
    sess = f.session(1, f.at(days=1), ticket="T")
    other = f.session(2, f.at(days=1), ticket="T")
    f.commit()
    mine = client.get(PSA, headers=as_user(1, "admin")).get_json()
    theirs = client.get(PSA, headers=as_user(2, "admin")).get_data()
    psa.push_time_entry(sess, 30)
    f.commit()
    assert (
        client.get(PSA, headers=as_user(1, "admin")).get_json()["time_entries"]["count"]
        == mine["time_entries"]["count"] + 1
    )
    assert client.get(PSA, headers=as_user(2, "admin")).get_data() == theirs  # untouched
    assert other.id != sess.id


def test_ttl_zero_turns_caching_off(client: t.Any) -> None:
    assert client.get(ESCALATIONS, headers=as_user(1)).headers["Cache-Control"] == "private, no-cache"
    f.escalation(1, f.at(days=1), 30)
    f.commit()
    assert client.get(ESCALATIONS, headers=as_user(1)).get_json()["n_handoffs_claimed"] == 1


def test_workers_share_the_cache_through_redis(make_app: t.Any, redis_url: str) -> None:
    config = {"FLOWPILOT_ANALYTICS_CACHE_TTL": 60, "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": redis_url}
    first, second = make_app(**config), make_app(**config)
    account = uuid.uuid4().int % 10**9  # no earlier run has cached answers for it
    with first.app_context():
        db.create_all()
        f.escalation(account, f.at(days=1), 30)
        f.commit()
        body = first.test_client().get(ESCALATIONS, headers=as_user(account)).get_data()
        f.escalation(account, f.at(days=1), 90)
        f.commit()
    assert second.test_client().get(ESCALATIONS, headers=as_user(account)).get_data() == body
    client = redis.Redis.from_url(redis_url)
    keys = client.keys(f"flowpilot_analytics:cache:v2:*:{account}*")
    assert keys
    client.delete(*keys)
    client.close()


@pytest.mark.parametrize(
    "app_config",
    [{"FLOWPILOT_ANALYTICS_CACHE_TTL": 60, "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": "redis://127.0.0.1:1/0"}],
)
def test_unreachable_cache_answers_uncached(client: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flowpilot_analytics"):
        response = client.get(ESCALATIONS, headers=as_user(1))
    assert response.status_code == 200
    assert any("cache unavailable" in r.getMessage() for r in caplog.records)
