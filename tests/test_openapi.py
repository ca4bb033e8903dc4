"""The OpenAPI document: served, valid, as exact as the validators (every bound walked against the
schemas and probed on the API), true to every real response, and fuzzed with schemathesis."""

from __future__ import annotations

import json
import os
import re
import typing as t
from collections import Counter

import hypothesis
import pytest
import schemathesis
import sqlalchemy as sa
from marshmallow import Schema, fields
from marshmallow import validate as checks
from openapi_spec_validator import validate
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from flowpilot_analytics import registration, reports

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
    # the host's sign-in, on every route but this document
    assert document["security"] == [{"host": []}]
    scheme = document["components"]["securitySchemes"]["host"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "cookie", "session")
    assert document["paths"][DOC]["get"]["security"] == []
    # tags: every operation under exactly one of the declared ones
    tags = [tag["name"] for tag in document["tags"]]
    assert tags == ["escalations", "psa", "business hours", "baseline and savings", "openapi"]
    tagged = {
        (path.removeprefix(BASE), method): operation["tags"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert all(len(found) == 1 and found[0] in tags for found in tagged.values())
    assert tagged[("/escalations/trend", "get")] == ["escalations"]
    assert tagged[("/psa-metrics", "get")] == ["psa"]
    assert tagged[("/business-hours", "post")] == ["business hours"]
    assert tagged[("/escalations/baseline/{sample_id}", "delete")] == ["baseline and savings"]
    assert tagged[("/escalations/savings", "get")] == ["baseline and savings"]
    # target_seconds=0 is refused, and the document says so
    target = parameter("/escalations", "target_seconds")["schema"]
    assert (target["minimum"], target["exclusiveMinimum"], target["maximum"]) == (0, True, 604800)
    # one error shape: details always there
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"code", "message", "details"}
    assert error["additionalProperties"] is False


@pytest.mark.parametrize(
    ("app_config", "scheme"),
    [
        (
            {"SESSION_COOKIE_NAME": "host_session"},
            {"type": "apiKey", "in": "cookie", "name": "host_session"},
        ),
        ({"FLOWPILOT_ANALYTICS_OPENAPI_SECURITY": "bearer"}, {"type": "http", "scheme": "bearer"}),
    ],
)
def test_the_security_scheme_is_the_hosts_sign_in(client: t.Any, scheme: dict[str, str]) -> None:
    document = client.get(DOC).get_json()
    validate(document)
    found = document["components"]["securitySchemes"]["host"]
    assert {key: value for key, value in found.items() if key != "description"} == scheme


@pytest.mark.parametrize("app_config", [{"FLOWPILOT_ANALYTICS_BUCKET_EDGES_SECONDS": [30, 120]}])
def test_the_bucket_values_are_this_apps_buckets(client: t.Any) -> None:
    document = client.get(DOC).get_json()
    bucket = next(
        p
        for p in document["paths"][BASE + "/escalations/handoffs"]["get"]["parameters"]
        if p["name"] == "bucket"
    )
    assert bucket["schema"]["enum"] == ["0", "1", "2", "no_action"]
    for value, status in (("2", 200), ("no_action", 200), ("3", 400)):
        answer = client.get(BASE + "/escalations/handoffs?bucket=" + value, headers=as_user(1))
        assert answer.status_code == status, (value, answer.get_data(as_text=True))


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
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
            assert isinstance(body["error"]["details"], dict)
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


#: The keywords by which the document bounds a value.
BOUNDS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "enum",
    "pattern",
)
#: Validators that are no bound, each with why the document leaves it to the description.
NOT_BOUNDS = {
    ("BaselineSampleBody", "note"): "the text must be storable (no NUL, no lone surrogate)",
}
#: Every route's limit high enough for the probes.
NO_LIMITS = {
    "FLOWPILOT_ANALYTICS_LIMITS": dict.fromkeys(
        (
            "escalations",
            "escalation_handoffs",
            "psa_metrics",
            "business_hours",
            "business_hours_write",
            "baseline",
            "baseline_write",
            "savings",
        ),
        "100000 per minute",
    )
}


def bounds_of(schema: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {key: value for key, value in schema.items() if key in BOUNDS}


def validated_bounds(owner: Schema, name: str, field: fields.Field[t.Any]) -> dict[str, t.Any]:
    """What the document must state of a field: the bounds of its validators (what the API
    applies), and those its metadata declares (a check that cannot be a validator states its bound
    there)."""
    bounds = {key: value for key, value in field.metadata.items() if key in BOUNDS}
    low, high = (
        ("minItems", "maxItems") if isinstance(field, fields.List) else ("minLength", "maxLength")
    )
    for check in field.validators:
        if isinstance(check, checks.Range):
            if check.min is not None:
                bounds["minimum"] = check.min
                if not check.min_inclusive:
                    bounds["exclusiveMinimum"] = True
            if check.max is not None:
                bounds["maximum"] = check.max
                if not check.max_inclusive:
                    bounds["exclusiveMaximum"] = True
        elif isinstance(check, checks.Length):
            least, most = (
                (check.equal, check.equal) if check.equal is not None else (check.min, check.max)
            )
            bounds.update({k: v for k, v in ((low, least), (high, most)) if v is not None})
        elif isinstance(check, checks.OneOf):
            bounds["enum"] = list(check.choices)
        else:
            assert (type(owner).__name__, name) in NOT_BOUNDS, (type(owner).__name__, name, check)
    return bounds


def _walk_body(document: t.Any, schema: Schema, component: t.Any) -> int:
    """Compare a body component's bounds with its schema's, nested ones too; how many fields."""
    properties = component["properties"]
    assert set(properties) == set(schema.fields)
    walked = 0
    for name, field in schema.fields.items():
        assert bounds_of(properties[name]) == validated_bounds(schema, name, field), name
        walked += 1
        if isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            ref = properties[name]["items"]["$ref"].rsplit("/", 1)[1]
            walked += _walk_body(
                document, field.inner.schema, document["components"]["schemas"][ref]
            )
    return walked


def test_every_documented_bound_is_a_validators_and_every_validator_is_documented(
    app: t.Any, client: t.Any
) -> None:
    document = client.get(DOC).get_json()
    state = registration(app)
    declared = [(route, route.args_schema(state)) for route in reports.REPORT_ROUTES]
    walked = 0
    for route, args in declared:
        path = BASE + "/" + re.sub(r"<(\w+)>", r"{\1}", route.path)
        for method in route.methods:
            operation = document["paths"][path][method.lower()]
            if route.source == "json":
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                component = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
                walked += _walk_body(document, args, component)
                continue
            documented = {p["name"]: p["schema"] for p in operation.get("parameters", [])}
            assert set(documented) == set(args.fields), path
            for name, field in args.fields.items():
                assert bounds_of(documented[name]) == validated_bounds(args, name, field), (
                    path,
                    name,
                )
                walked += 1
    assert walked >= 45  # every parameter of every route, and every body field


def _probes(schema: t.Mapping[str, t.Any]) -> t.Iterator[tuple[t.Any, bool]]:
    """Values at each bound the document states and just outside it, with whether the document
    lets each through."""
    for value in schema.get("enum", ()):
        yield value, True
    if "enum" in schema:
        yield "not-" + str(schema["enum"][0]), False
    step = 1 if schema.get("type") == "integer" else 0.001
    if "minimum" in schema:
        exclusive = schema.get("exclusiveMinimum", False)
        yield schema["minimum"], not exclusive
        yield schema["minimum"] - step, False
        if exclusive:
            yield schema["minimum"] + step, True
    if "maximum" in schema:
        exclusive = schema.get("exclusiveMaximum", False)
        yield schema["maximum"], not exclusive
        yield schema["maximum"] + step, False
        if exclusive:
            yield schema["maximum"] - step, True
    for least, most in (("minLength", "maxLength"), ("minItems", "maxItems")):
        if schema.get(least):
            yield "7" * (schema[least] - 1), False
        if most in schema:
            yield "7" * schema[most], True
            yield "7" * (schema[most] + 1), False


def _named(response: t.Any, *path: str) -> bool:
    """Whether the answer refuses the value as invalid, naming it (``path`` into
    ``details.fields``)."""
    if response.status_code != 400:
        return False
    found: t.Any = response.get_json()["error"]["details"].get("fields", {})
    for part in path:
        if not isinstance(found, dict) or part not in found:
            return False
        found = found[part]
    return True


@pytest.mark.parametrize("app_config", [NO_LIMITS])
def test_the_api_takes_each_documented_bound_and_refuses_just_outside_it(client: t.Any) -> None:
    document = client.get(DOC).get_json()
    probed = 0
    for path, operations in document["paths"].items():
        for parameter in operations.get("get", {}).get("parameters", []):
            name, schema = parameter["name"], parameter["schema"]
            # a bound only declared (the cursor's length) is probed outside: inside, the value
            # must still be a real cursor
            declared_only = name == "cursor"
            for value, allowed in _probes(schema):
                if allowed and declared_only:
                    continue
                answer = client.get(path, query_string={name: value}, headers=as_user(1, "admin"))
                answer.get_data()  # a CSV streams: read it whole, so its request context ends
                assert _named(answer, name) is not allowed, (path, name, value, answer.get_json())
                probed += 1
    sample = document["components"]["schemas"]["BaselineSampleBody"]["properties"]
    good = {"seconds": 60, "measured_at": "2026-06-02T14:00:00Z"}
    for name in ("seconds", "note"):
        for value, allowed in _probes(sample[name]):
            answer = client.post(
                BASE + "/escalations/baseline",
                json={"samples": [{**good, name: value}]},
                headers=as_user(1, "admin"),
            )
            assert answer.status_code == (201 if allowed else 400), (name, value)
            assert _named(answer, "samples", "0", name) is not allowed
            probed += 1
    samples = document["components"]["schemas"]["BaselineBody"]["properties"]["samples"]
    for count in (samples["minItems"] - 1, samples["maxItems"] + 1, samples["maxItems"]):
        answer = client.post(
            BASE + "/escalations/baseline",
            json={"samples": [good] * count},
            headers=as_user(1, "admin"),
        )
        assert _named(answer, "samples") is not (count == samples["maxItems"]), count
        probed += 1
    assert probed >= 80


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
    # the test host signs in with X-* headers, which no security scheme names: without the
    # requirement, schemathesis does not leave out a cookie the host never reads and then expect a
    # refusal (calling with no identity at all is one of the fuzzed identities)
    document = client.get(DOC).get_json()
    del document["security"]
    schema = schemathesis.openapi.from_dict(document)
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


def test_a_refused_method_is_documented_with_allow_and_no_sign_in(client: t.Any) -> None:
    document = client.get("/api/v1/analytics/flowpilot/openapi.json").get_json()
    refused = document["paths"]["/api/v1/analytics/flowpilot/business-hours"]["put"]
    assert refused["security"] == [] and "Allow" in refused["responses"]["405"]["headers"]
    answer = client.put("/api/v1/analytics/flowpilot/business-hours")  # nobody signed in
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET, POST"
