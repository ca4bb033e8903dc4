"""Every setting: defaults, validation with messages that name the key, normalisation, removed
keys."""

from __future__ import annotations

import math
import typing as t

import pytest
from flask import Flask

from flowpilot_analytics import FlowpilotAnalytics
from flowpilot_analytics.config import DEFAULTS, SETTINGS, Settings, apply_defaults

from ..host import db, load_identity

SECRET = {"SECRET_KEY": "s"}


def settings(**config: t.Any) -> Settings:
    return Settings.from_config({**SECRET, **config})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"FLOWPILOT_ANALYTICS_ROUTE_ROLES": {"escalations": "boss"}}, "not in"),
        ({"FLOWPILOT_ANALYTICS_ROLES": []}, "non-empty"),
        ({"FLOWPILOT_ANALYTICS_ROLES": "admin"}, "non-empty"),
        ({"FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS": -1}, "seconds"),
        ({"FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS": math.nan}, "seconds"),
        ({"FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS": 1e20}, "seconds"),
        ({"FLOWPILOT_ANALYTICS_CLOCK_SKEW_SECONDS": True}, "seconds"),
        ({"FLOWPILOT_ANALYTICS_TABLES": {"tickets": "x"}}, "unknown keys"),
        ({"FLOWPILOT_ANALYTICS_TABLES": "ai_sessions"}, "TABLES must be a mapping"),
        ({"FLOWPILOT_ANALYTICS_ROUTE_ROLES": ["engineer"]}, "ROUTE_ROLES must be a mapping"),
        ({"FLOWPILOT_ANALYTICS_COLUMNS": {"handoffs.owner": "x"}}, "is not"),
        (
            {
                "FLOWPILOT_ANALYTICS_ROLES": ["a", "b"],
                "FLOWPILOT_ANALYTICS_ROUTE_ROLES": {"escalations": "a"},
            },
            "not in",
        ),
        ({"FLOWPILOT_ANALYTICS_ROUTE_ROLES": {"psa-metrics": "admin"}}, "unknown routes"),
        ({"FLOWPILOT_ANALYTICS_BUCKET_EDGES_SECONDS": [60, 30]}, "increasing"),
        ({"FLOWPILOT_ANALYTICS_BUCKET_EDGES_SECONDS": []}, "increasing"),
        ({"FLOWPILOT_ANALYTICS_CACHE_TTL": -5}, "CACHE_TTL"),
        ({"FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS": 0}, "HOOK_TIMEOUT_MS"),
        ({"FLOWPILOT_ANALYTICS_LIMITS": {"psa_metrics": "lots"}}, r"LIMITS\['psa_metrics'\]"),
        ({"FLOWPILOT_ANALYTICS_LIMITS": {"escalations": 5}}, r"LIMITS\['escalations'\]"),
        (
            {"FLOWPILOT_ANALYTICS_LIMITS": {"psa_metrics": "100/hour;2/minute"}},
            r"LIMITS\['psa_metrics'\].*one rate limit per key",
        ),
        (
            {"FLOWPILOT_ANALYTICS_LIMITS": {"escalations": "0/minute"}},
            r"LIMITS\['escalations'\].*the amount is 0",
        ),
        ({"FLOWPILOT_ANALYTICS_LIMITS": "15 per minute"}, "LIMITS must be a mapping"),
        (
            {"FLOWPILOT_ANALYTICS_CACHE_TTLS": 5},
            "CACHE_TTLS \\(did you mean FLOWPILOT_ANALYTICS_CACHE_TTL\\?\\)",
        ),
        ({"FLOWPILOT_ANALYTICS_VARY_HEADERS": "Cookie"}, "VARY_HEADERS"),
        ({"FLOWPILOT_ANALYTICS_TENANT_SETTING": "nodot"}, "TENANT_SETTING"),
        ({"FLOWPILOT_ANALYTICS_ID_TYPE": "bigint"}, "ID_TYPE"),
        ({"FLOWPILOT_ANALYTICS_BASELINE_MIN_SAMPLES": 1}, "BASELINE_MIN_SAMPLES must be a whole"),
        ({"FLOWPILOT_ANALYTICS_BASELINE_MIN_SAMPLES": 1001}, "from 2 to 1000, got 1001"),
        ({"FLOWPILOT_ANALYTICS_BASELINE_MIN_SAMPLES": "20"}, "BASELINE_MIN_SAMPLES"),
        ({"FLOWPILOT_ANALYTICS_URL_PREFIX": "api"}, "URL_PREFIX"),
        ({"FLOWPILOT_ANALYTICS_DASHBOARD": "yes"}, "DASHBOARD must be True or False, got 'yes'"),
        ({"FLOWPILOT_ANALYTICS_DASHBOARD": 1}, "DASHBOARD must be True or False"),
        (
            {"FLOWPILOT_ANALYTICS_OPENAPI_SECURITY": "oauth2"},
            "OPENAPI_SECURITY must be 'cookie' or 'bearer', got 'oauth2'",
        ),
        ({"FLOWPILOT_ANALYTICS_OPENAPI_SECURITY": None}, "OPENAPI_SECURITY must be 'cookie'"),
        (
            {"FLOWPILOT_ANALYTICS_BIND": "replica", "SQLALCHEMY_BINDS": {"reports": "sqlite://"}},
            "SQLALCHEMY_BINDS",
        ),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(config: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(**config)


@pytest.mark.parametrize(
    ("key", "replacement"),
    [
        ("FLOWPILOT_ANALYTICS_PSA_SERVICE_METHODS", "methods="),
        ("FLOWPILOT_ANALYTICS_SQLITE_TEXT_OFFSETS", "UTC text"),
        ("FLOWPILOT_ANALYTICS_PSA_METRICS_LIMIT", "FLOWPILOT_ANALYTICS_LIMITS = {'psa_metrics'"),
        ("FLOWPILOT_ANALYTICS_ESCALATIONS_LIMIT", "FLOWPILOT_ANALYTICS_LIMITS = {'escalations'"),
        (
            "FLOWPILOT_ANALYTICS_HANDOFFS_LIMIT",
            "FLOWPILOT_ANALYTICS_LIMITS = {'escalation_handoffs'",
        ),
        ("FLOWPILOT_ANALYTICS_CURSOR_SECRET", "SECRET_KEY_FALLBACKS"),
        ("FLOWPILOT_ANALYTICS_CACHE_MAX_BYTES", "32 MiB"),
        ("FLOWPILOT_ANALYTICS_DEAD_LETTER_TABLE", "DEAD_LETTER_PATH"),
        ("FLOWPILOT_ANALYTICS_MAX_RANGE_DAYS", "366 days"),
    ],
)
def test_a_removed_setting_still_set_is_a_startup_error_naming_the_replacement(
    key: str, replacement: str
) -> None:
    app = Flask("old_host")
    app.config.update({**SECRET, key: {"note_posted": "post"} if "METHODS" in key else True})
    with pytest.raises(ValueError, match=replacement) as raised:
        FlowpilotAnalytics().init_app(app, db=db, identity_loader=load_identity)
    assert key in str(raised.value)


def test_bad_settings_fail_at_init_app_not_at_the_first_request() -> None:
    app = Flask("bad")
    app.config.update({**SECRET, "FLOWPILOT_ANALYTICS_ROLES": []})
    with pytest.raises(ValueError, match="FLOWPILOT_ANALYTICS_ROLES"):
        FlowpilotAnalytics().init_app(app, db=db, identity_loader=load_identity)
    assert "flowpilot_analytics" not in app.extensions


def test_a_cursor_key_is_required_and_other_mistakes_are_named_first() -> None:
    with pytest.raises(ValueError, match="set the app's SECRET_KEY"):
        Settings.from_config({})
    with pytest.raises(ValueError, match="BUCKET_EDGES"):
        Settings.from_config({"FLOWPILOT_ANALYTICS_BUCKET_EDGES_SECONDS": [5, 1]})
    assert Settings.from_config({"SECRET_KEY": "c"}).cursor_secret == "c"
    assert "s3cret" not in repr(Settings.from_config({"SECRET_KEY": "s3cret"}))  # never printed


@pytest.mark.parametrize("max_age", [0, -1, 1.5, "1d", True, None])
def test_a_cursor_lifetime_is_a_whole_number_of_seconds(max_age: t.Any) -> None:
    with pytest.raises(ValueError, match="FLOWPILOT_ANALYTICS_CURSOR_MAX_AGE"):
        settings(FLOWPILOT_ANALYTICS_CURSOR_MAX_AGE=max_age)


def test_cursor_keys_follow_flasks_rotation() -> None:
    assert settings().cursor_max_age == 86400  # a day
    rotated = Settings.from_config(
        {"SECRET_KEY": "new", "SECRET_KEY_FALLBACKS": ["older", b"oldest"]}
    )
    assert (rotated.cursor_secret, rotated.cursor_fallbacks) == ("new", ("older", b"oldest"))
    assert settings(SECRET_KEY_FALLBACKS=None).cursor_fallbacks == ()
    assert "older" not in repr(rotated)  # never printed
    for bad in ("older", ["older", ""], [1], 5):
        with pytest.raises(ValueError, match="SECRET_KEY_FALLBACKS"):
            settings(SECRET_KEY_FALLBACKS=bad)


def test_defaults_and_normalisation() -> None:
    s = settings()
    assert s.route_roles == {
        "escalations": "engineer",
        "psa_metrics": "team_admin",
        "business_hours": "engineer",
        "business_hours_write": "team_admin",
        "baseline": "team_admin",
        "baseline_write": "team_admin",
        "savings": "team_admin",
    }
    assert s.baseline_min_samples == 20
    assert s.dashboard is False  # the page is opt-in
    assert s.tables == {
        "sessions": "ai_sessions",
        "steps": "ai_session_steps",
        "handoffs": "session_handoffs",
    }
    assert s.bucket_edges == (60.0, 300.0, 900.0, 3600.0, 14400.0)
    assert (s.cache_storage_uri, s.ratelimit_storage_uri) == ("memory://", "memory://")
    assert s.dead_letter_path.endswith("flowpilot_analytics_dead_letters.jsonl")
    merged = settings(
        FLOWPILOT_ANALYTICS_ROUTE_ROLES={"psa_metrics": "admin"},
        RATELIMIT_STORAGE_URI="redis://r:1/0",
    )
    # the calendar's keys follow the reports' unless set: a custom ladder keeps working unchanged
    assert merged.route_roles == {
        "escalations": "engineer",
        "psa_metrics": "admin",
        "business_hours": "engineer",
        "business_hours_write": "admin",
        "baseline": "admin",
        "baseline_write": "admin",
        "savings": "admin",
    }
    own = settings(FLOWPILOT_ANALYTICS_ROUTE_ROLES={"business_hours_write": "admin"})
    assert own.route_roles["business_hours_write"] == "admin"
    assert own.route_roles["psa_metrics"] == "team_admin"
    assert merged.ratelimit_storage_uri == "redis://r:1/0"  # the host's limiter storage, as before
    assert merged.cache_storage_uri == "memory://"  # no longer inferred from the limiter's
    assert (
        settings(FLOWPILOT_ANALYTICS_COLUMNS={"handoffs.claimed_at": "accepted"}).host_column(
            "handoffs", "claimed_at"
        )
        == "accepted"
    )


def test_the_openapi_security_scheme_is_the_hosts_session_cookie_or_a_bearer_token() -> None:
    cookie = settings().openapi_security
    assert (cookie["type"], cookie["in"], cookie["name"]) == ("apiKey", "cookie", "session")
    renamed = settings(SESSION_COOKIE_NAME="host_session").openapi_security
    assert renamed["name"] == "host_session"  # the cookie the host's sessions really use
    bearer = settings(FLOWPILOT_ANALYTICS_OPENAPI_SECURITY="bearer").openapi_security
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")


def test_settings_are_frozen_and_apps_never_share_a_default_object() -> None:
    s = settings()
    with pytest.raises(AttributeError):
        s.cache_ttl = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.tables["steps"] = "x"  # type: ignore[index]
    first, second = Flask("a"), Flask("b")
    apply_defaults(first.config)
    first.config["FLOWPILOT_ANALYTICS_TABLES"]["handoffs"] = "escalations"
    apply_defaults(second.config)
    assert second.config["FLOWPILOT_ANALYTICS_TABLES"] == {}
    assert DEFAULTS["FLOWPILOT_ANALYTICS_TABLES"] == {}


def test_settings_are_filled_with_setdefault_and_touch_nothing_else() -> None:
    app = Flask("host")
    app.config.update(
        {**SECRET, "FLOWPILOT_ANALYTICS_CACHE_TTL": 5, "SQLALCHEMY_DATABASE_URI": "sqlite://"}
    )
    db.init_app(app)
    FlowpilotAnalytics().init_app(app, db=db, identity_loader=load_identity)
    assert app.config["FLOWPILOT_ANALYTICS_URL_PREFIX"] == "/api/v1"
    assert app.config["FLOWPILOT_ANALYTICS_CACHE_TTL"] == 5
    assert app.config["FLOWPILOT_ANALYTICS_LIMITS"] == {}  # the routes declare the defaults
    assert not [key for key in app.config if key.startswith("RATELIMIT_")]
    assert {key for key in app.config if key.startswith("FLOWPILOT_ANALYTICS_")} == set(DEFAULTS)


def test_every_setting_is_documented_and_named_once() -> None:
    keys = [s.key for s in SETTINGS]
    assert len(keys) == len(set(keys)) and all(s.doc.strip() for s in SETTINGS)
    # a setting nobody would set is a constant; the 21st (BASELINE_MIN_SAMPLES) is a policy a team
    # lead owns (how many stopwatch samples before a claim), not a constant of the plugin; the 22nd
    # (OPENAPI_SECURITY) is a fact of the host (how its callers sign in: a session cookie or a
    # bearer token) that the plugin cannot see, and the OpenAPI document must state it for clients;
    # the 23rd (DASHBOARD) is the host's choice whether the plugin serves an HTML page at all (a
    # host with its own page, or an API-only deployment, must be able to leave it off)
    assert len(keys) <= 23


def test_each_declaration_fills_one_field_and_every_field_has_one() -> None:
    from dataclasses import fields

    from_flask = {
        "cursor_secret",
        "cursor_fallbacks",
    }  # SECRET_KEY and SECRET_KEY_FALLBACKS, Flask's own
    declared = [s.field for s in SETTINGS]
    assert len(declared) == len(set(declared))
    assert set(declared) | from_flask == {f.name for f in fields(Settings)}
    assert not set(declared) & from_flask


def test_the_configuration_reference_is_generated_from_the_code_and_written_once() -> None:
    import pathlib

    root = pathlib.Path(__file__).parents[2]
    assert "{include} _generated/settings.md" in (root / "docs" / "configuration.md").read_text(
        encoding="utf-8"
    )
    assert "settings_table()" in (root / "docs" / "conf.py").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "| key | default | meaning |" not in readme  # one place: the generated page
    assert len(readme.splitlines()) <= 150
