"""One rule for query parameters on every route: a parameter the route does not take is a 400 that
names it, in the shape of every other bad parameter, and nothing is stored or deleted; every
parameter a route does take (the cursor, ``format=csv``, the window...) still works."""

from __future__ import annotations

import csv
import io
import typing as t
from datetime import timedelta

import pytest

from flowpilot_analytics import registration
from flowpilot_analytics.baselines import NewSample
from flowpilot_analytics.reports import REPORT_ROUTES, ReportRoute

from . import factories as f
from .helpers import BASE, ESCALATIONS, HANDOFFS, PSA, as_user
from .host import NOW

BASELINE = ESCALATIONS + "/baseline"
BUSINESS_HOURS = BASE + "/business-hours"
#: A valid body for each write route, so that the query string is the only thing wrong.
BODIES = {
    "add_business_hours": {
        "timezone": "UTC",
        "effective_from": "2026-01-01",
        "weekly": {"mon": [["09:00", "17:00"]]},
    },
    "add_baseline": {"samples": [{"seconds": 600.0, "measured_at": "2026-06-01T10:00:00Z"}]},
}
UNKNOWN = {"periode": ["Unknown field."], "account_id": ["Unknown field."]}


def _stored(client: t.Any) -> tuple[int, int]:
    """How many calendar versions and baseline samples account 1 has."""
    versions = client.get(BUSINESS_HOURS, headers=as_user(1, "admin")).get_json()["versions"]
    samples = client.get(BASELINE, headers=as_user(1, "admin")).get_json()["samples"]
    return len(versions), len(samples)


def _request(client: t.Any, route: ReportRoute[t.Any], query: str) -> t.Any:
    """The route's own request, valid but for ``query``: a write sends a valid body, a ``DELETE``
    names a stored sample."""
    url = f"{BASE}/{route.path}"
    if route.source == "path":
        sample = NewSample(600.0, NOW - timedelta(days=1))
        with client.application.app_context():
            added, _ = registration(client.application).add_samples(1, [sample], NOW, None)
        url = url.replace("<sample_id>", str(added[0].id))
    return client.open(
        url + query,
        method=route.methods[0],
        json=BODIES.get(route.endpoint),
        headers=as_user(1, "admin"),
    )


@pytest.mark.parametrize("route", REPORT_ROUTES, ids=lambda route: route.endpoint)
def test_every_route_refuses_a_parameter_it_does_not_take_naming_it(
    client: t.Any, route: ReportRoute[t.Any]
) -> None:
    response = _request(client, route, "?periode=7d&account_id=2")
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["details"]["fields"] == UNKNOWN
    # the shape of any other bad parameter
    bad_period = client.get(ESCALATIONS + "?period=1d", headers=as_user(1)).get_json()["error"]
    assert set(error) == set(bad_period) == {"code", "message", "details"}
    assert set(error["details"]) == set(bad_period["details"])
    assert error["message"] == bad_period["message"]
    # a refused write stored nothing, a refused delete deleted nothing
    assert _stored(client) == (0, 1 if route.source == "path" else 0)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (ESCALATIONS + "?Period=7d", {"Period"}),  # names are case-sensitive
        (ESCALATIONS + "?target=60&period=7d", {"target"}),
        (ESCALATIONS + "?format=xml", {"format"}),  # json or csv only
        (ESCALATIONS + "?tz=Europe/Berlin", {"tz"}),  # the escalation report has no days
        (HANDOFFS + "?page=2&limit=5", {"page"}),
        (ESCALATIONS + "/trend?compare=previous", {"compare"}),
        (PSA + "?group-by=client&tz=UTC", {"group-by"}),
        (PSA + "?interval=week", {"interval"}),
        (ESCALATIONS + "/savings?target_seconds=60", {"target_seconds"}),
    ],
)
def test_a_mistyped_or_misplaced_parameter_is_refused_not_ignored(
    client: t.Any, url: str, named: set[str]
) -> None:
    response = client.get(url, headers=as_user(1, "admin"))
    assert response.status_code == 400
    assert set(response.get_json()["error"]["details"]["fields"]) == named


def test_an_unknown_and_a_bad_parameter_are_named_together(client: t.Any) -> None:
    response = client.get(ESCALATIONS + "?period=1d&engineer=7", headers=as_user(1))
    fields = response.get_json()["error"]["details"]["fields"]
    assert set(fields) == {"period", "engineer"}
    assert fields["engineer"] == ["Unknown field."]


def test_authorization_comes_first(client: t.Any) -> None:
    """A caller below the route's minimum learns nothing of its parameters."""
    assert client.get(PSA + "?periode=7d", headers=as_user(1, "engineer")).status_code == 403
    assert client.get(PSA + "?periode=7d").status_code == 401


def test_every_parameter_a_route_takes_still_works(client: t.Any) -> None:
    for day in range(1, 6):
        f.escalation(1, f.at(days=day), 30 * day)
    f.commit()
    headers = as_user(1, "admin")
    # the drill-down's page: limit, then the cursor it returned, with the window and the clock
    query = {"period": "30d", "limit": "2", "clock": "wall"}
    first = client.get(HANDOFFS, query_string=query, headers=headers).get_json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get(
        HANDOFFS, query_string={**query, "cursor": first["next_cursor"]}, headers=headers
    )
    assert second.status_code == 200, second.get_data(as_text=True)
    assert {i["handoff_id"] for i in second.get_json()["items"]}.isdisjoint(
        i["handoff_id"] for i in first["items"]
    )
    # format=csv where a route has an export
    for url, rows in (
        (HANDOFFS + "?format=csv&bucket=no_action", 0),
        (ESCALATIONS + "/trend?format=csv&tz=Europe/Berlin&interval=week&target_seconds=60", None),
        (PSA + "?format=csv&tz=UTC&group_by=technician", None),
    ):
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.get_data(as_text=True))
        assert response.mimetype == "text/csv"
        table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
        assert table and (rows is None or len(table) == rows + 1)
    # a custom window, and every option of the report
    window = "since=2026-11-01T00:00:00Z&until=2026-11-15T00:00:00Z"
    for url in (
        ESCALATIONS + f"?{window}&compare=previous&group_by=engineer&target_seconds=60",
        ESCALATIONS + "/savings?" + window,
        BUSINESS_HOURS,
        BASELINE,
    ):
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.get_data(as_text=True))
    report = client.get(ESCALATIONS + f"?{window}&target_seconds=60", headers=headers).get_json()
    assert report["n_handoffs_claimed"] == 5 and report["target"]["seconds"] == 60


def test_the_openapi_document_refuses_a_parameter_too(client: t.Any) -> None:
    refused = client.get(BASE + "/openapi.json?foo=1")
    assert refused.status_code == 400
    assert refused.get_json()["error"]["details"]["fields"] == {"foo": ["Unknown field."]}
    assert client.get(BASE + "/openapi.json").status_code == 200


@pytest.mark.parametrize("how", ["format=csv&", "group_by=technician&format=csv&", "accept"])
def test_a_comparison_has_no_csv_form_and_is_refused_not_dropped(client: t.Any, how: str) -> None:
    headers = as_user(1, "admin")
    if how == "accept":
        headers, how = {**headers, "Accept": "text/csv"}, ""
    refused = client.get(PSA + f"?{how}compare=previous", headers=headers)
    assert refused.status_code == 400 and refused.mimetype == "application/json"
    assert "compare" in refused.get_json()["error"]["details"]["fields"]


def test_a_huge_zone_is_refused_without_echoing_it_whole(client: t.Any) -> None:
    refused = client.get(ESCALATIONS + "/trend?tz=" + "A" * 200_000, headers=as_user(1))
    assert refused.status_code == 400
    assert len(refused.get_data()) < 1_000 and "AAAA" in refused.get_data(as_text=True)


@pytest.mark.parametrize(
    "query",
    [
        "limit=%D9%A5",  # an Arabic-Indic 5: int() would take it
        "limit=%205",
        "limit=5%20",
        "limit=0x5",
        "limit=5.0",
        "target_seconds=%20%201e2",
        "target_seconds=%EF%BC%91%EF%BC%90",  # fullwidth 10
        "target_seconds=nan",
        "target_seconds=1_000",
    ],
)
def test_numbers_are_plain_ascii_as_the_document_types_them(client: t.Any, query: str) -> None:
    url = HANDOFFS if query.startswith("limit") else ESCALATIONS
    refused = client.get(url + "?" + query, headers=as_user(1))
    assert refused.status_code == 400, query
    assert set(refused.get_json()["error"]["details"]["fields"]) <= {"limit", "target_seconds"}


@pytest.mark.parametrize(
    "query", ["limit=5", "limit=%2B5", "target_seconds=1e2", "target_seconds=.5"]
)
def test_plain_numbers_still_work(client: t.Any, query: str) -> None:
    url = HANDOFFS if query.startswith("limit") else ESCALATIONS
    assert client.get(url + "?" + query, headers=as_user(1)).status_code == 200
