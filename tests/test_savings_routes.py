"""The savings claim over HTTP and the command line: stopwatch baseline samples (``escalations/
baseline``) and ``escalations/savings``, against the reference of :mod:`tests.savings_reference`,
on every database."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import typing as t
import uuid
from datetime import datetime, timedelta

import pytest
import redis

from . import factories as f
from .helpers import ESCALATIONS, as_user
from .host import NOW
from .savings_reference import (
    SAMPLE_KEYS,
    UTC,
    Handoff,
    expected,
    in_window,
    instant,
    same,
    samples,
    seed,
    store,
    summary,
)

SAVINGS = ESCALATIONS + "/savings"
BASELINE = ESCALATIONS + "/baseline"
CACHED = {"FLOWPILOT_ANALYTICS_CACHE_TTL": 60}
MIN_SAMPLES = "FLOWPILOT_ANALYTICS_BASELINE_MIN_SAMPLES"
PARTS = ("baseline", "in_product", "difference", "extrapolated", "claim", "reason")
GOOD = {"seconds": 840.0, "measured_at": "2026-06-02T14:00:00Z", "note": "desk 4"}


# -- helpers ---------------------------------------------------------------------------------------


def post_samples(
    client: t.Any, given: t.Sequence[t.Mapping[str, t.Any]], account: int = 1, user: int = 1
) -> list[dict[str, t.Any]]:
    """POST the samples as a team admin; the stored samples, checked against what was given."""
    response = client.post(
        BASELINE, json={"samples": list(given)}, headers=as_user(account, "team_admin", user)
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    stored = t.cast(list[dict[str, t.Any]], response.get_json()["samples"])
    assert len(stored) == len(given)
    for sample, sent in zip(stored, given):
        assert set(sample) == SAMPLE_KEYS, sample
        assert isinstance(sample["id"], int) and not isinstance(sample["id"], bool)
        assert isinstance(sample["seconds"], float) and sample["seconds"] == sent["seconds"]
        assert same(sample["measured_at"], instant(sent["measured_at"])), sample
        assert sample["note"] == sent.get("note"), sample
        assert sample["measured_by"] == str(user)
        assert same(sample["created_at"], NOW), sample
    assert len({s["id"] for s in stored}) == len(stored)
    return stored


def listed(client: t.Any, account: int = 1, user: int = 1) -> list[dict[str, t.Any]]:
    response = client.get(BASELINE, headers=as_user(account, "team_admin", user))
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(list[dict[str, t.Any]], response.get_json()["samples"])


def in_order(stored: t.Iterable[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    """The listing's order: oldest ``measured_at`` first, ties by id."""
    return sorted(stored, key=lambda s: (instant(s["measured_at"]), s["id"]))


def savings_of(client: t.Any, query: str = "", account: int = 1, user: int = 1) -> dict[str, t.Any]:
    response = client.get(SAVINGS + query, headers=as_user(account, "team_admin", user))
    assert response.status_code == 200, (query, response.get_data(as_text=True))
    return t.cast(dict[str, t.Any], response.get_json())


def window(body: t.Mapping[str, t.Any]) -> tuple[datetime, datetime]:
    return instant(body["window_start"]), instant(body["window_end"])


def parts(body: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {key: body[key] for key in PARTS}


def dump(actual: object, wanted: object) -> str:
    return json.dumps({"actual": actual, "expected": wanted}, default=str)[:4000]


def delete(client: t.Any, sample_id: object, account: int = 1, role: str = "team_admin") -> t.Any:
    return client.delete(f"{BASELINE}/{sample_id}", headers=as_user(account, role))


def lognormal(mu: float, sigma: float) -> t.Callable[[random.Random], float]:
    return lambda rng: rng.lognormvariate(mu, sigma)


def uniform(low: float, high: float) -> t.Callable[[random.Random], float]:
    return lambda rng: rng.uniform(low, high)


def slow_baseline_and_fast_product(
    client: t.Any, account: int = 1, count: int = 25
) -> tuple[list[Handoff], list[dict[str, t.Any]]]:
    """``count`` stopwatch samples around 30 min, 30 handoffs with an action around 1 min (and 5
    without) in the last 20 days."""
    rng = random.Random(account * 1000 + count)
    handoffs = seed(rng, account, 30, uniform(30, 90), days=20, no_action=0)
    handoffs += seed(rng, account, 5, uniform(30, 90), days=20, no_action=1)
    return handoffs, post_samples(client, samples(rng, count, uniform(1500, 2100)), account)


# -- 1. The figures against a reference ------------------------------------------------------------


@pytest.mark.parametrize("seed_value", [2001, 2002])
def test_the_figures_match_a_reference_computed_here(client: t.Any, seed_value: int) -> None:
    rng = random.Random(seed_value)
    handoffs = seed(rng, 1, 150, lognormal(5, 1.2))
    seed(rng, 2, 30, uniform(1, 5))  # another account's handoffs: never counted
    given = samples(rng, rng.randint(25, 40), lognormal(6.3, 0.7))
    tie = {"seconds": 700.5, "measured_at": given[0]["measured_at"]}  # same instant as the first
    given.append(tie)
    stored = post_samples(client, given, user=5)
    post_samples(client, samples(rng, 6, uniform(1, 2)), account=2)  # never in account 1's baseline
    assert listed(client) == in_order(stored)

    since = NOW - timedelta(days=20, hours=3, minutes=7)
    until = NOW - timedelta(days=2, seconds=17)
    windows = {
        "": (NOW - timedelta(days=30), NOW),
        "?period=30d": (NOW - timedelta(days=30), NOW),
        "?period=7d": (NOW - timedelta(days=7), NOW),
        "?since={}&until={}".format(
            since.strftime("%Y-%m-%dT%H:%M:%SZ"), until.strftime("%Y-%m-%dT%H:%M:%S")
        ): (since, until),
    }
    for query, (start, end) in windows.items():
        response = client.get(SAVINGS + query, headers=as_user(1, "team_admin"))
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert window(body) == (start, end), query
        escalations = client.get(ESCALATIONS + query, headers=as_user(1, "team_admin")).get_json()
        assert body["period"] == escalations["period"], query
        assert (body["window_start"], body["window_end"]) == (
            escalations["window_start"],
            escalations["window_end"],
        )
        assert body["metric_definition"] == escalations["metric_definition"]
        deltas = in_window(handoffs, 1, start, end)
        assert deltas and len(deltas) < len([h for h in handoffs if h.delta is not None])
        wanted = expected(given, deltas)
        assert same(parts(body), wanted), dump(parts(body), wanted)
        # the in-product sample is the escalation report's, for the same window
        product = body["in_product"]
        assert product["n"] == escalations["n_handoffs_with_action"]
        assert product["median_seconds"] == pytest.approx(escalations["median_seconds"], abs=1e-6)
        assert product["mean_seconds"] == pytest.approx(escalations["avg_seconds"], rel=1e-9)
        difference = body["difference"]
        low, high = difference["median_interval"]
        assert low <= difference["median_seconds"] <= high
        assert difference["confidence"] == 0.95
        assert isinstance(difference["method"], str) and difference["method"]
        assert body["extrapolated"]["total_seconds"] == pytest.approx(
            difference["mean_seconds"] * product["n"], rel=1e-9
        )
        assert body["extrapolated"]["total_interval"] == pytest.approx(
            [x * product["n"] for x in difference["mean_interval"]], rel=1e-9
        )
        # deterministic: the same data, the same body (the cache is off in the test host)
        again = client.get(SAVINGS + query, headers=as_user(1, "team_admin"))
        assert again.get_data() == response.get_data(), query


# -- 2. Claims and their absence -------------------------------------------------------------------


def test_a_baseline_far_slower_than_the_product_gives_a_claim(client: t.Any) -> None:
    handoffs, given = slow_baseline_and_fast_product(client)
    body = savings_of(client)
    wanted = expected(given, in_window(handoffs, 1, NOW - timedelta(days=30), NOW))
    assert same(parts(body), wanted), dump(parts(body), wanted)
    claim = body["claim"]
    assert isinstance(claim, str) and body["reason"] is None
    assert "25 samples" in claim and "30 handoffs" in claim, claim
    assert "extrapolated" in claim.lower() and "minutes recovered" not in claim.lower()
    assert body["difference"]["median_interval"][0] > 0
    assert body["extrapolated"]["handoffs"] == 30 and body["extrapolated"]["total_seconds"] > 0


def test_too_few_baseline_samples_give_figures_but_no_difference(
    client: t.Any, make_app: t.Any
) -> None:
    handoffs, given = slow_baseline_and_fast_product(client, count=7)
    body = savings_of(client)
    deltas = in_window(handoffs, 1, NOW - timedelta(days=30), NOW)
    assert same(body["baseline"], expected(given, deltas)["baseline"])
    assert body["baseline"]["n"] == 7 and same(body["in_product"], summary(deltas))
    assert (body["difference"], body["extrapolated"], body["claim"]) == (None, None, None)
    assert "needs at least 20 baseline samples; has 7" in body["reason"]

    # the setting lowers the minimum: the same seven samples now carry a claim
    lenient = make_app(**{MIN_SAMPLES: 5}).test_client()
    body = savings_of(lenient)
    wanted = expected(given, deltas, min_samples=5)
    assert same(parts(body), wanted), dump(parts(body), wanted)
    assert body["difference"] is not None and body["reason"] is None
    assert isinstance(body["claim"], str) and "7 samples" in body["claim"]
    for sample in listed(client)[:3]:
        assert delete(client, sample["id"]).status_code == 204
    assert "needs at least 5 baseline samples; has 4" in savings_of(lenient)["reason"]
    assert "needs at least 20 baseline samples; has 4" in savings_of(client)["reason"]
    # ... within 2..1000
    assert make_app(**{MIN_SAMPLES: 2}) and make_app(**{MIN_SAMPLES: 1000})
    for bad in (1, 0, -3, 1001, 2.5, True):
        with pytest.raises(ValueError, match="BASELINE_MIN_SAMPLES"):
            make_app(**{MIN_SAMPLES: bad})


def test_overlapping_populations_give_no_claim(client: t.Any) -> None:
    rng = random.Random(7)
    values = [round(rng.uniform(40, 400), 3) for _ in range(30)]
    handoffs = [store(1, NOW - timedelta(days=1 + i / 2), v) for i, v in enumerate(values)]
    f.commit()
    given = [{"seconds": v, "measured_at": "2026-05-01T10:00:00Z"} for v in values]
    post_samples(client, given)
    body = savings_of(client)
    wanted = expected(given, in_window(handoffs, 1, NOW - timedelta(days=30), NOW))
    assert same(parts(body), wanted), dump(parts(body), wanted)
    assert body["difference"]["median_seconds"] == pytest.approx(0, abs=1e-6)
    low, high = body["difference"]["median_interval"]
    assert low < 0 < high
    assert body["extrapolated"] is not None and body["claim"] is None
    assert "interval of the difference in medians includes 0" in body["reason"]


def test_no_handoff_with_an_action_in_the_window(client: t.Any) -> None:
    empty = savings_of(client)
    assert empty["baseline"] == {
        "n": 0,
        "median_seconds": None,
        "mean_seconds": None,
        "first_measured_at": None,
        "last_measured_at": None,
    }
    assert empty["in_product"] == {"n": 0, "median_seconds": None, "mean_seconds": None}
    assert (empty["difference"], empty["extrapolated"], empty["claim"]) == (None, None, None)
    assert "needs at least 20 baseline samples; has 0" in empty["reason"]
    assert "no handoff with a first action" in empty["reason"]

    rng = random.Random(11)
    given = samples(rng, 25, uniform(600, 900))
    post_samples(client, given)
    for i in range(5):
        store(1, NOW - timedelta(days=2, hours=i), None)  # claimed, no action yet
        store(1, NOW - timedelta(days=40 + i), 120.0)  # an action, but outside the window
        store(2, NOW - timedelta(days=1, hours=i), 60.0)  # another account's
    f.commit()
    for query in ("", "?period=7d"):
        body = savings_of(client, query)
        wanted = expected(given, [])
        assert same(parts(body), wanted), dump(parts(body), wanted)
        assert body["in_product"] == {"n": 0, "median_seconds": None, "mean_seconds": None}
        assert (body["difference"], body["extrapolated"], body["claim"]) == (None, None, None)
        assert "no handoff with a first action" in body["reason"]
        assert "baseline samples" not in body["reason"]
    escalations = client.get(ESCALATIONS, headers=as_user(1)).get_json()
    assert (escalations["n_handoffs_claimed"], escalations["n_handoffs_with_action"]) == (5, 0)


# -- 3. Roles and accounts -------------------------------------------------------------------------


def test_role_gates_on_all_four_routes(client: t.Any) -> None:
    ids = [s["id"] for s in post_samples(client, [GOOD, GOOD, GOOD])]
    routes: list[tuple[str, str, dict[str, t.Any]]] = [
        ("get", BASELINE, {}),
        ("post", BASELINE, {"json": {"samples": [GOOD]}}),
        ("delete", f"{BASELINE}/{ids[0]}", {}),
        ("get", SAVINGS, {}),
    ]
    for method, url, kwargs in routes:
        anonymous = getattr(client, method)(url, **kwargs)
        assert anonymous.status_code == 401, (method, url)
        assert anonymous.get_json()["error"]["code"] == "unauthenticated"
        for role in ("viewer", "engineer"):
            refused = getattr(client, method)(url, headers=as_user(1, role), **kwargs)
            assert refused.status_code == 403, (method, url, role)
            assert refused.get_json()["error"]["code"] == "forbidden"
    assert [s["id"] for s in listed(client)] == ids  # nothing was added or removed
    for role in ("team_admin", "admin"):
        assert client.get(BASELINE, headers=as_user(1, role)).status_code == 200, role
        assert client.get(SAVINGS, headers=as_user(1, role)).status_code == 200, role
        made = client.post(BASELINE, json={"samples": [GOOD]}, headers=as_user(1, role, 9))
        assert made.status_code == 201, role
        assert made.get_json()["samples"][0]["measured_by"] == "9"
    assert delete(client, ids[0], role="team_admin").status_code == 204
    assert delete(client, ids[1], role="admin").status_code == 204
    assert len(listed(client)) == 3


def test_the_route_roles_setting_moves_the_gates(client: t.Any, make_app: t.Any) -> None:
    stored = post_samples(client, [GOOD, GOOD])
    # the three keys follow psa_metrics unless set
    loose = make_app(FLOWPILOT_ANALYTICS_ROUTE_ROLES={"psa_metrics": "engineer"}).test_client()
    engineer = as_user(1, "engineer")
    assert loose.get(BASELINE, headers=engineer).status_code == 200
    assert loose.get(SAVINGS, headers=engineer).status_code == 200
    assert loose.post(BASELINE, json={"samples": [GOOD]}, headers=engineer).status_code == 201
    assert loose.delete(f"{BASELINE}/{stored[0]['id']}", headers=engineer).status_code == 204
    strict = make_app(
        FLOWPILOT_ANALYTICS_ROUTE_ROLES={"baseline_write": "admin", "savings": "admin"}
    ).test_client()
    admin, team_admin = as_user(1, "admin"), as_user(1, "team_admin")
    assert strict.get(BASELINE, headers=team_admin).status_code == 200
    assert strict.get(SAVINGS, headers=team_admin).status_code == 403
    assert strict.get(SAVINGS, headers=admin).status_code == 200
    assert strict.post(BASELINE, json={"samples": [GOOD]}, headers=team_admin).status_code == 403
    assert strict.delete(f"{BASELINE}/{stored[1]['id']}", headers=team_admin).status_code == 403
    assert strict.delete(f"{BASELINE}/{stored[1]['id']}", headers=admin).status_code == 204
    assert len(listed(client)) == 1


def test_accounts_never_share_samples(client: t.Any) -> None:
    rng = random.Random(31)
    mine = post_samples(client, samples(rng, 21, uniform(600, 900)), account=1)
    theirs = post_samples(client, samples(rng, 4, uniform(1, 2)), account=2)
    assert listed(client, account=1) == in_order(mine)
    assert listed(client, account=2) == in_order(theirs)
    assert savings_of(client, account=1)["baseline"]["n"] == 21
    assert savings_of(client, account=2)["baseline"]["n"] == 4
    for sample in mine[:2]:
        refused = delete(client, sample["id"], account=2)
        assert refused.status_code == 404
        assert refused.get_json()["error"]["code"] == "not_found"
    assert listed(client, account=1) == in_order(mine)
    assert savings_of(client, account=1)["baseline"]["n"] == 21
    # a query parameter never names another account
    sneaky = client.get(SAVINGS + "?account_id=2", headers=as_user(1, "team_admin"))
    assert sneaky.status_code == 400


# -- 4. DELETE ------------------------------------------------------------------------------------


def test_delete_removes_one_sample(client: t.Any) -> None:
    rng = random.Random(41)
    stored = post_samples(client, samples(rng, 22, uniform(600, 900)))
    before = savings_of(client)["baseline"]
    gone = stored[5]
    response = delete(client, gone["id"])
    assert response.status_code == 204
    assert response.get_data() == b""
    assert listed(client) == in_order([s for s in stored if s["id"] != gone["id"]])
    after = savings_of(client)["baseline"]
    assert after["n"] == before["n"] - 1 == 21
    assert same(
        after["median_seconds"], summary([s["seconds"] for s in listed(client)])["median_seconds"]
    )
    again = delete(client, gone["id"])
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "not_found"
    for bad in ("abc", "1.5", "-1", "0", "99999999999999999999", "%20"):
        refused = delete(client, bad)
        assert refused.status_code == 404, (bad, refused.get_data(as_text=True))
        assert refused.get_json()["error"]["code"] == "not_found", bad
    assert len(listed(client)) == 21


def test_baseline_samples_are_never_edited_in_place(client: t.Any) -> None:
    stored = post_samples(client, [GOOD])
    for method in ("put", "patch"):
        response = getattr(client, method)(
            BASELINE, json={"samples": [GOOD]}, headers=as_user(1, "admin")
        )
        assert response.status_code == 405, method
        assert response.mimetype == "application/json"
        assert response.get_json()["error"]["code"] == "method_not_allowed"
        assert {m.strip() for m in response.headers["Allow"].split(",")} >= {"GET", "POST"}
    assert listed(client) == stored


# -- 5. Bad samples store nothing ------------------------------------------------------------------


def _sample(**changes: t.Any) -> dict[str, t.Any]:
    return {k: v for k, v in {**GOOD, **changes}.items() if v is not ...}


def _in_sample(field: str, index: int = 0) -> t.Callable[[t.Any], bool]:
    return lambda fields: field in fields.get("samples", {}).get(str(index), {})


def _top(field: str) -> t.Callable[[t.Any], bool]:
    return lambda fields: field in fields


def _any(fields: t.Any) -> bool:
    return True


RAW_GOOD = '{"seconds": %s, "measured_at": "2026-06-02T14:00:00Z"}'
BAD_BODIES: list[tuple[str, t.Any, t.Callable[[t.Any], bool]]] = [
    ("negative", {"samples": [_sample(seconds=-1.0)]}, _in_sample("seconds")),
    ("zero", {"samples": [_sample(seconds=0)]}, _in_sample("seconds")),
    ("raw NaN", '{"samples": [%s]}' % (RAW_GOOD % "NaN"), _in_sample("seconds")),
    ("string NaN", {"samples": [_sample(seconds="NaN")]}, _in_sample("seconds")),
    ("raw Infinity", '{"samples": [%s]}' % (RAW_GOOD % "Infinity"), _in_sample("seconds")),
    ("string Infinity", {"samples": [_sample(seconds="Infinity")]}, _in_sample("seconds")),
    ("overflowing number", '{"samples": [%s]}' % (RAW_GOOD % "1e999"), _in_sample("seconds")),
    ("over 7 days", {"samples": [_sample(seconds=604800.001)]}, _in_sample("seconds")),
    ("a boolean", {"samples": [_sample(seconds=True)]}, _in_sample("seconds")),
    ("no seconds", {"samples": [_sample(seconds=...)]}, _in_sample("seconds")),
    ("not a date", {"samples": [_sample(measured_at="yesterday")]}, _in_sample("measured_at")),
    (
        "month 13",
        {"samples": [_sample(measured_at="2026-13-01T00:00:00Z")]},
        _in_sample("measured_at"),
    ),
    (
        "before 1970",
        {"samples": [_sample(measured_at="1969-12-31T23:00:00Z")]},
        _in_sample("measured_at"),
    ),
    (
        "after 9000",
        {"samples": [_sample(measured_at="9001-01-01T00:00:00Z")]},
        _in_sample("measured_at"),
    ),
    ("no measured_at", {"samples": [_sample(measured_at=...)]}, _in_sample("measured_at")),
    ("long note", {"samples": [_sample(note="x" * 1001)]}, _in_sample("note")),
    ("note not text", {"samples": [_sample(note=5)]}, _in_sample("note")),
    ("unknown sample key", {"samples": [_sample(minutes=14)]}, _in_sample("minutes")),
    ("unknown top-level key", {"samples": [GOOD], "account_id": 2}, _top("account_id")),
    ("samples an object", {"samples": GOOD}, _top("samples")),
    ("samples a string", {"samples": "840"}, _top("samples")),
    ("no samples", {}, _top("samples")),
    ("empty list", {"samples": []}, _top("samples")),
    ("1,001 samples", {"samples": [GOOD] * 1001}, _top("samples")),
    ("a sample not an object", {"samples": [840]}, lambda fields: "0" in fields["samples"]),
    ("not JSON", "{samples: [", _any),
    ("a JSON list", json.dumps([GOOD]), _any),
    ("null", "null", _any),
    ("empty", "", _any),
    (
        "one bad among good",
        {"samples": [GOOD, GOOD, _sample(seconds=1), _sample(seconds=-5), GOOD]},
        lambda fields: (
            set(fields) == {"samples"}
            and set(fields["samples"]) == {"3"}
            and set(fields["samples"]["3"]) == {"seconds"}
        ),
    ),
]


def test_bad_samples_are_refused_naming_the_field_and_nothing_is_stored(client: t.Any) -> None:
    failures = []
    for user, (name, body, check) in enumerate(BAD_BODIES, start=100):  # each its own rate limit
        raw = body if isinstance(body, str) else json.dumps(body)
        response = client.post(
            BASELINE,
            data=raw,
            content_type="application/json",
            headers=as_user(1, "team_admin", user),
        )
        error = (response.get_json(silent=True) or {}).get("error", {})
        fields = (error.get("details") or {}).get("fields") or {}
        if response.status_code != 400 or error.get("code") != "invalid_body" or not check(fields):
            failures.append((name, response.status_code, error))
    assert not failures, json.dumps(failures, indent=1)[:6000]
    assert listed(client) == []
    assert savings_of(client)["baseline"]["n"] == 0
    # the limits are inclusive, and a thousand samples is one body
    edges = [
        _sample(seconds=604800, note="n" * 1000),
        _sample(seconds=0.001, note=""),
        _sample(measured_at="1970-01-01T00:00:00Z"),
        _sample(measured_at="9000-12-31T23:59:59+00:00"),
    ]
    post_samples(client, edges)
    thousand = post_samples(client, [_sample(seconds=float(i + 1)) for i in range(1000)], user=2)
    assert [s["seconds"] for s in thousand] == [float(i + 1) for i in range(1000)]
    assert len(listed(client)) == 1004


def test_the_write_limits_count_refused_attempts(client: t.Any, make_app: t.Any) -> None:
    writer = as_user(1, "team_admin", 77)
    codes = [client.post(BASELINE, json={}, headers=writer).status_code for _ in range(31)]
    assert codes == [400] * 30 + [429]
    # adding and deleting are counted apart, at the same rate
    codes = [client.delete(f"{BASELINE}/{i}", headers=writer).status_code for i in range(31)]
    assert codes == [404] * 30 + [429]
    # per user: another user of the account still writes
    post_samples(client, [GOOD], user=78)
    assert len(listed(client, user=77)) == 1
    # the limit keys of the setting
    limits = {"baseline_write": "2 per minute", "baseline": "1 per minute", "savings": "1/minute"}
    tight = make_app(FLOWPILOT_ANALYTICS_LIMITS=limits).test_client()
    admin = as_user(1, "admin", 79)
    assert [tight.post(BASELINE, json={}, headers=admin).status_code for _ in range(3)] == [
        400,
        400,
        429,
    ]
    assert [tight.delete(f"{BASELINE}/0", headers=admin).status_code for _ in range(3)] == [
        404,
        404,
        429,
    ]
    assert [tight.get(BASELINE, headers=admin).status_code for _ in range(2)] == [200, 429]
    assert [tight.get(SAVINGS, headers=admin).status_code for _ in range(2)] == [200, 429]


# -- 6. The cache ----------------------------------------------------------------------------------


@pytest.mark.parametrize("app_config", [CACHED])
def test_a_baseline_change_invalidates_cached_savings_in_process(client: t.Any) -> None:
    rng = random.Random(61)
    handoffs = seed(rng, 1, 60, lognormal(5, 1), days=25)
    given = samples(rng, 22, lognormal(6.5, 0.5))
    stored = post_samples(client, given)
    first = client.get(SAVINGS, headers=as_user(1, "team_admin"))
    other_user = client.get(SAVINGS, headers=as_user(1, "team_admin", 2))
    start, end = window(first.get_json())

    def check(body: dict[str, t.Any], baseline: list[dict[str, t.Any]]) -> None:
        wanted = expected(baseline, in_window(handoffs, 1, start, end))
        assert same(parts(body), wanted), dump(parts(body), wanted)

    check(first.get_json(), given)
    # the cache is on: a new handoff stays unseen ...
    handoffs.append(store(1, NOW - timedelta(days=1), 30.0))
    f.commit()
    assert client.get(SAVINGS, headers=as_user(1, "team_admin")).get_data() == first.get_data()
    assert (
        client.get(SAVINGS, headers=as_user(1, "team_admin", 2)).get_data() == other_user.get_data()
    )
    # ... until a sample is posted: every user of the account gets the new answer at once
    extra = {"seconds": 333.0, "measured_at": "2026-11-01T08:00:00Z"}
    post_samples(client, [extra])
    check(savings_of(client), [*given, extra])
    check(savings_of(client, user=2), [*given, extra])
    # cached again, until a sample is deleted
    handoffs.append(store(1, NOW - timedelta(days=2), 45.0))
    f.commit()
    cached = client.get(SAVINGS, headers=as_user(1, "team_admin")).get_json()
    assert cached["in_product"]["n"] == len(in_window(handoffs, 1, start, end)) - 1
    assert delete(client, stored[0]["id"]).status_code == 204
    check(savings_of(client), [*given[1:], extra])
    check(savings_of(client, user=2), [*given[1:], extra])


def test_a_baseline_change_invalidates_cached_savings_of_every_worker(
    app: t.Any, make_app: t.Any, redis_url: str
) -> None:
    config = {**CACHED, "FLOWPILOT_ANALYTICS_CACHE_STORAGE_URI": redis_url}
    one, two = make_app(**config).test_client(), make_app(**config).test_client()
    account = uuid.uuid4().int % 10**9  # no earlier run has cached answers for it
    try:
        rng = random.Random(62)
        handoffs = seed(rng, account, 40, lognormal(5, 1), days=25)
        given = samples(rng, 21, lognormal(6.5, 0.5))
        stored = post_samples(one, given, account=account)
        before = two.get(SAVINGS, headers=as_user(account, "team_admin"))
        assert before.status_code == 200
        start, end = window(before.get_json())

        def check(client: t.Any, baseline: list[dict[str, t.Any]]) -> None:
            body = savings_of(client, account=account)
            wanted = expected(baseline, in_window(handoffs, account, start, end))
            assert same(parts(body), wanted), dump(parts(body), wanted)

        handoffs.append(store(account, NOW - timedelta(days=1), 30.0))
        f.commit()
        # cached, and shared: the first worker gets the second one's answer
        assert one.get(SAVINGS, headers=as_user(account, "team_admin")).data == before.data
        extra = {"seconds": 444.0, "measured_at": "2026-10-01T08:00:00Z"}
        post_samples(one, [extra], account=account)
        check(two, [*given, extra])
        check(one, [*given, extra])
        handoffs.append(store(account, NOW - timedelta(days=2), 30.0))
        f.commit()
        assert delete(two, stored[3]["id"], account=account).status_code == 204
        remaining = [*given[:3], *given[4:], extra]
        check(one, remaining)
        check(two, remaining)
        shared = redis.Redis.from_url(redis_url)
        assert shared.keys(f"flowpilot_analytics:cache:*:{account}*")  # in Redis indeed
        shared.close()
    finally:
        shared = redis.Redis.from_url(redis_url)
        keys = shared.keys(f"flowpilot_analytics:cache:*:{account}*")
        if keys:
            shared.delete(*keys)
        shared.close()


# -- 7. The command line ---------------------------------------------------------------------------


def _csv(tmp_path: t.Any, name: str, rows: t.Sequence[t.Sequence[object]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    path = tmp_path / name
    path.write_text(out.getvalue(), encoding="utf-8")
    return str(path)


def _cli(app: t.Any, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["flowpilot-analytics", *args])


def test_baseline_import_stores_a_good_file(app: t.Any, client: t.Any, tmp_path: t.Any) -> None:
    rows = [
        ("seconds", "measured_at", "note"),
        ("840", "2026-06-02T14:00:00Z", "desk 4, the long way"),
        ("95.5", "2026-06-01T09:30:00", ""),
        ("1800.25", "2026-06-03T10:00:00+02:00", "after lunch"),
    ]
    result = _cli(app, "baseline", "import", "--account", "1", _csv(tmp_path, "good.csv", rows))
    assert result.exit_code == 0, result.output
    assert "imported 3 baseline samples for account 1" in result.output
    got = listed(client)
    assert [(s["seconds"], instant(s["measured_at"]), s["note"]) for s in got] == [
        (95.5, datetime(2026, 6, 1, 9, 30, tzinfo=UTC), None),
        (840.0, datetime(2026, 6, 2, 14, tzinfo=UTC), "desk 4, the long way"),
        (1800.25, datetime(2026, 6, 3, 8, tzinfo=UTC), "after lunch"),
    ]
    assert all(s["measured_by"] is None and same(s["created_at"], NOW) for s in got)
    assert listed(client, account=2) == []
    assert savings_of(client)["baseline"]["n"] == 3


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (("-5", "2026-06-02T14:00:00Z", ""), "seconds"),
        (("NaN", "2026-06-02T14:00:00Z", ""), "seconds"),
        (("840", "last tuesday", ""), "measured_at"),
        (("840", "2026-06-02T14:00:00Z", "x" * 1001), "note"),
    ],
)
def test_baseline_import_refuses_a_bad_line_and_stores_nothing(
    app: t.Any, client: t.Any, tmp_path: t.Any, bad: tuple[str, str, str], field: str
) -> None:
    rows = [
        ("seconds", "measured_at", "note"),
        ("840", "2026-06-02T14:00:00Z", "fine"),
        bad,
        ("900", "2026-06-04T14:00:00Z", "fine too"),
        bad,
    ]
    result = _cli(app, "baseline", "import", "--account", "1", _csv(tmp_path, "bad.csv", rows))
    assert result.exit_code == 2, result.output
    assert f"line 3: {field}" in result.output, result.output
    assert "line 5" not in result.output  # the first bad line is named
    assert "imported" not in result.output
    assert listed(client) == []


def test_the_savings_command_prints_the_routes_body(
    app: t.Any, client: t.Any, tmp_path: t.Any
) -> None:
    slow_baseline_and_fast_product(client)
    since, until = "2026-10-20T00:00:00Z", "2026-11-10T06:00:00Z"
    for options, query in (
        ((), ""),
        (("--period", "7d"), "?period=7d"),
        (("--since", since, "--until", until), f"?since={since}&until={until}"),
    ):
        result = _cli(app, "savings", "--account", "1", "--json", *options)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == savings_of(client, query), options
    table = _cli(app, "savings", "--account", "1")
    assert table.exit_code == 0, table.output
    claim = savings_of(client)["claim"]
    assert claim and claim in table.output

    slow_baseline_and_fast_product(client, account=3, count=7)
    table = _cli(app, "savings", "--account", "3")
    assert table.exit_code == 0, table.output
    reason = savings_of(client, account=3)["reason"]
    assert "needs at least 20 baseline samples; has 7" in reason and reason in table.output
    refused = _cli(app, "savings", "--account", "1", "--period", "1d")
    assert refused.exit_code == 2


def test_ddl_and_doctor_know_the_baseline_table(app: t.Any) -> None:
    ddl = _cli(app, "ddl")
    assert ddl.exit_code == 0, ddl.output
    assert "CREATE TABLE flowpilot_baseline_samples" in ddl.output
    assert "ix_flowpilot_baseline_samples_account_measured" in ddl.output
    doctor = _cli(app, "doctor")
    assert doctor.exit_code == 0, doctor.output
    assert "ix_flowpilot_baseline_samples_account_measured" in doctor.output


def test_baseline_import_refuses_a_file_that_is_not_utf8(
    app: t.Any, client: t.Any, tmp_path: t.Any
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "seconds,measured_at,note\n60,2026-06-02T14:00:00Z,caf\u00e9\n".encode("latin-1")
    )
    result = _cli(app, "baseline", "import", "--account", "1", str(path))
    assert listed(client) == []
    assert result.exit_code == 2, (result.exit_code, repr(result.exception))


# -- 8. The query ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "?compare=previous",
        "?clock=business",
        "?group_by=engineer",
        "?target_seconds=300",
        "?engineer=7",
        "?format=csv",
        "?periode=7d",
        "?period=1d",
        "?period=7d&since=2026-11-01T00:00:00Z&until=2026-11-02T00:00:00Z",
        "?since=2026-11-01T00:00:00Z",
        "?since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z",
    ],
)
def test_a_bad_query_is_a_400(client: t.Any, query: str) -> None:
    response = client.get(SAVINGS + query, headers=as_user(1, "team_admin"))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_parameter"


# -- 9. The note is never logged -------------------------------------------------------------------


def test_the_note_is_never_logged(
    client: t.Any, app: t.Any, tmp_path: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Zebra-7f3c-private-remark"
    seed(random.Random(91), 1, 30, lognormal(5, 1))
    rng = random.Random(92)
    given = [
        {**s, "note": f"{secret} {i}"} for i, s in enumerate(samples(rng, 21, uniform(500, 900)))
    ]
    stored = post_samples(client, given)
    refused = client.post(
        BASELINE,
        json={"samples": [_sample(seconds=-1, note=secret), _sample(note=secret + "x" * 1000)]},
        headers=as_user(1, "team_admin"),
    )
    assert refused.status_code == 400
    assert [s["note"] for s in listed(client)] == [s["note"] for s in in_order(stored)]
    assert savings_of(client)["baseline"]["n"] == 21
    assert delete(client, stored[0]["id"]).status_code == 204
    path = _csv(
        tmp_path,
        "notes.csv",
        [("seconds", "measured_at", "note"), ("60", "2026-01-01T00:00:00Z", secret)],
    )
    assert _cli(app, "baseline", "import", "--account", "1", path).exit_code == 0
    logged = [
        r
        for r in caplog.records
        if secret in r.getMessage() or secret in str(r.exc_text or "") or secret in repr(r.args)
    ]
    assert not logged, [r.getMessage()[:300] for r in logged]
    assert secret not in caplog.text


def test_a_note_with_a_nul_character_is_refused_on_every_database(
    client: t.Any,
    app: t.Any,
    tmp_path: t.Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL's text cannot hold U+0000: refused as bad input everywhere, never a 503 that a
    retry cannot fix, and never logged."""
    caplog.set_level(logging.DEBUG)
    secret = "Nul-Zebra-91c2"
    response = client.post(
        BASELINE,
        json={"samples": [GOOD, _sample(note=f"{secret}\x00 after")]},
        headers=as_user(1, "team_admin"),
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_body"
    assert set(error["details"]["fields"]["samples"]) == {"1"}
    assert listed(client) == []
    before = len(listed(client))
    path = _csv(
        tmp_path,
        "nul.csv",
        [("seconds", "measured_at", "note"), ("60", "2026-01-01T00:00:00Z", f"{secret}\x00")],
    )
    result = _cli(app, "baseline", "import", "--account", "1", path)
    assert result.exit_code == 2, (result.exit_code, repr(result.exception))
    assert len(listed(client)) == before
    assert "line 2: note" in result.output
    assert secret not in caplog.text
    assert not [r for r in caplog.records if secret in str(r.exc_text or "")]


def test_a_note_that_cannot_be_encoded_is_a_400(client: t.Any) -> None:
    raw = (
        '{"samples": [{"seconds": 5, "measured_at": "2026-01-01T00:00:00Z", '
        '"note": "half a pair \\ud800"}]}'
    )
    response = client.post(
        BASELINE, data=raw, content_type="application/json", headers=as_user(1, "team_admin")
    )
    assert listed(client) == []
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_body" and "note" in error["details"]["fields"]["samples"]["0"]


# -- odds and ends ---------------------------------------------------------------------------------


def test_the_savings_limit(client: t.Any) -> None:
    codes = [
        client.get(SAVINGS, headers=as_user(1, "team_admin", 55)).status_code for _ in range(31)
    ]
    assert codes == [200] * 30 + [429]
    assert client.get(SAVINGS, headers=as_user(1, "team_admin", 56)).status_code == 200


def test_baseline_values_round_trip_exactly(client: t.Any) -> None:
    odd = [
        {"seconds": math.pi, "measured_at": "2026-03-29T01:30:00.123456+01:00", "note": "é ✓ \n"},
        {"seconds": 1e-3, "measured_at": "2026-03-29T00:30:00.123456Z"},
    ]
    stored = post_samples(client, odd)  # the same instant, to the microsecond
    assert instant(stored[0]["measured_at"]) == instant(stored[1]["measured_at"])
    assert listed(client) == sorted(stored, key=lambda s: s["id"])  # a tie: by id
