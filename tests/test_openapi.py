"""The OpenAPI document: served, valid, true to every real response, and fuzzed with
schemathesis."""

from __future__ import annotations

import json
import os
import typing as t
from collections import Counter

import hypothesis
import pytest
import schemathesis
import sqlalchemy as sa
from openapi_spec_validator import validate
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from . import factories as f
from . import host
from .helpers import BASE, as_user
from .host import db

DOC = BASE + "/openapi.json"


def load(client: t.Any) -> t.Any:
    return schemathesis.openapi.from_dict(client.get(DOC).get_json())


def operation(schema: t.Any, path: str) -> t.Any:
    return schema[BASE + path]["GET"]


def test_document_is_served_without_identity_and_is_valid_openapi(client: t.Any) -> None:
    response = client.get(DOC)
    assert response.status_code == 200
    document = response.get_json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        BASE + "/escalations",
        BASE + "/escalations/trend",
        BASE + "/escalations/handoffs",
        BASE + "/psa-metrics",
        BASE + "/business-hours",
        BASE + "/escalations/baseline",
        BASE + "/escalations/baseline/{sample_id}",
        BASE + "/escalations/savings",
        DOC,
    }
    calendar = document["paths"][BASE + "/business-hours"]
    assert set(calendar) == {"get", "post", "put", "patch", "delete"}
    assert set(calendar["put"]["responses"]) == {"405"}
    assert "201" in calendar["post"]["responses"] and "requestBody" in calendar["post"]
    assert "409" in document["paths"][BASE + "/escalations"]["get"]["responses"]

    def parameter(path: str, name: str) -> dict[str, t.Any]:
        return next(
            p for p in document["paths"][BASE + path]["get"]["parameters"] if p["name"] == name
        )

    period = parameter("/escalations", "period")
    assert period["schema"]["enum"] == ["7d", "30d", "90d"] and period["schema"]["default"] == "30d"
    assert parameter("/escalations", "group_by")["schema"]["enum"] == ["engineer", "client"]
    assert parameter("/psa-metrics", "since")["schema"]["format"] == "date-time"
    assert parameter("/escalations/handoffs", "cursor")["schema"]["type"] == "string"
    for path in ("/psa-metrics", "/escalations/trend"):  # the zone list, once, as a component
        assert parameter(path, "tz")["schema"]["allOf"] == [{"$ref": "#/components/schemas/Zone"}]
    zones = document["components"]["schemas"]["Zone"]["enum"]
    assert "Europe/Berlin" in zones and "Mars/Olympus" not in zones
    assert json.dumps(document).count('"Europe/Berlin"') == 1
    assert "429" in document["paths"][BASE + "/psa-metrics"]["get"]["responses"]


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_URL_PREFIX": "/reports"}])
def test_document_follows_the_url_prefix(client: t.Any) -> None:
    document = client.get("/reports/analytics/flowpilot/openapi.json").get_json()
    assert "/reports/analytics/flowpilot/escalations" in document["paths"]


def test_every_real_response_validates_against_the_document(client: t.Any) -> None:
    f.escalation(1, f.at(days=1), 30, 60)
    f.commit()
    schema = load(client)
    escalations, psa = operation(schema, "/escalations"), operation(schema, "/psa-metrics")
    seen: set[tuple[str, int]] = set()

    def check(op: t.Any, query: str, headers: dict[str, str]) -> None:
        response = client.get(op.path + query, headers=headers)
        op.validate_response(response)
        body = response.get_json(silent=True)
        if response.status_code >= 400:
            assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
        seen.add((op.path.rsplit("/", 1)[1], response.status_code))

    check(escalations, "", as_user(1))
    check(escalations, "?target_seconds=45&group_by=engineer&compare=previous", as_user(1))
    check(escalations, "?clock=business", as_user(1))
    calendar = schema[BASE + "/business-hours"]
    added = client.post(
        BASE + "/business-hours",
        json={
            "timezone": "UTC",
            "effective_from": "2026-01-01",
            "weekly": {"mon": [["09:00", "17:00"]]},
        },
        headers=as_user(1, "team_admin"),
    )
    calendar["POST"].validate_response(added)
    bad = client.post(BASE + "/business-hours", json={"timezone": "x"}, headers=as_user(1, "admin"))
    calendar["POST"].validate_response(bad)
    calendar["GET"].validate_response(client.get(BASE + "/business-hours", headers=as_user(1)))
    calendar["PUT"].validate_response(client.put(BASE + "/business-hours", headers=as_user(1)))
    check(escalations, "?clock=business&target_seconds=60", as_user(1))
    check(operation(schema, "/escalations/handoffs"), "?clock=business", as_user(1))
    check(escalations, "?period=bad", as_user(1))
    check(operation(schema, "/escalations/handoffs"), "?limit=2&period=90d", as_user(1))
    check(operation(schema, "/escalations/handoffs"), "?cursor=zzz", as_user(1))
    check(escalations, "", {})
    check(escalations, "", as_user(1, "viewer"))
    check(escalations, "", as_user(1, "wizard"))
    check(psa, "?tz=America/New_York", as_user(1, "admin"))
    check(psa, "?tz=Nowhere/Town", as_user(1, "admin"))
    for _ in range(15):
        client.get(BASE + "/psa-metrics", headers=as_user(1, "admin", user=5))
    check(psa, "", as_user(1, "admin", user=5))
    etag = client.get(BASE + "/escalations", headers=as_user(1)).headers["ETag"]
    check(escalations, "", {**as_user(1), "If-None-Match": etag})
    db.session.rollback()

    def refuse(*args: t.Any) -> None:
        raise sa.exc.OperationalError(
            "SELECT", {}, ConnectionRefusedError("server closed the connection")
        )

    sa.event.listen(db.engine, "before_cursor_execute", refuse)
    try:
        check(psa, "?period=7d", as_user(1, "admin", user=6))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", refuse)
    host.SessionHandoff.__table__.drop(db.engine)
    check(escalations, "?period=7d", as_user(1))
    assert seen >= {
        ("escalations", 200),
        ("escalations", 400),
        ("escalations", 401),
        ("escalations", 403),
        ("psa-metrics", 200),
        ("psa-metrics", 400),
        ("psa-metrics", 429),
        ("escalations", 304),
        ("escalations", 409),
        ("psa-metrics", 503),
        ("escalations", 500),
    }


IDENTITIES = [None, "viewer", "engineer", "team_admin", "admin", "superuser"]
#: Examples per operation, generation mode and identity; raise it for a long run (the CHANGELOG has
#: one).
FUZZ_EXAMPLES = int(os.environ.get("FLOWPILOT_FUZZ_EXAMPLES", "15"))


@pytest.mark.parametrize(
    "app_config", [{"FLOWPILOT_ANALYTICS_LIMITS": {"psa_metrics": "1000 per minute"}}]
)
@pytest.mark.parametrize("role", IDENTITIES)
def test_fuzzing_finds_no_server_error_and_no_off_contract_response(
    client: t.Any, role: str | None
) -> None:
    f.escalation(1, f.at(days=3), 5, 50)
    f.escalation(2, f.at(days=2), 500)
    f.commit()
    schema = load(client)
    headers = as_user(1, role) if role else {}
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        op = result.ok()
        raw = op.definition.raw
        parameterless = not raw.get("parameters") and "requestBody" not in raw  # nothing to break
        modes = (
            (GenerationMode.POSITIVE,)
            if parameterless
            else (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        )
        for mode in modes:

            @hypothesis.settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(case=op.as_strategy(generation_mode=mode))
            def run(case: t.Any) -> None:
                body = case.body if isinstance(case.body, (dict, list, str, int, float)) else None
                response = client.open(
                    case.formatted_path,
                    method=case.method,
                    query_string=case.query,
                    json=body,
                    headers=headers,
                )
                statuses[response.status_code] += 1
                assert response.status_code < 500, (case.query, response.get_data(as_text=True))
                # since/until must come together, in order, within the maximum span: rules OpenAPI
                # 3.0 cannot state, so a "schema-valid" request may fairly get a 400 (still checked
                # below)
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
                if response.status_code >= 400:
                    assert response.get_json()["error"]["code"]

            run()
    print(
        f"\nfuzzed as {role}: {sum(statuses.values())} cases, statuses "
        f"{dict(sorted(statuses.items()))}"
    )
    assert sum(statuses.values()) >= 3
