"""The edges of the write routes and of exactness, found by an independent review: bodies that are
not declared JSON, nest past the parser or hide their length; a stored calendar this server cannot
read; wall seconds exact to the microsecond on PostgreSQL from a day on; the savings median equal to
the escalation median to the last bit."""

from __future__ import annotations

import io
import json
import typing as t
from datetime import timedelta

from flowpilot_analytics import registration

from . import factories as f
from .helpers import BASE, ESCALATIONS, as_user
from .host import NOW, db

CALENDAR = {
    "timezone": "UTC",
    "effective_from": "2026-01-01",
    "weekly": {"mon": [["09:00", "17:00"]]},
}
SAMPLES = {"samples": [{"seconds": 600.0, "measured_at": "2026-06-01T10:00:00Z"}]}
WRITES = ((BASE + "/business-hours", CALENDAR), (ESCALATIONS + "/baseline", SAMPLES))
ADMIN = as_user(1, "team_admin")


def _stored(client: t.Any) -> tuple[int, int]:
    versions = client.get(BASE + "/business-hours", headers=ADMIN).get_json()["versions"]
    samples = client.get(ESCALATIONS + "/baseline", headers=ADMIN).get_json()["samples"]
    return len(versions), len(samples)


def test_a_write_not_declared_json_is_refused(client: t.Any) -> None:
    """A cross-site form can post ``text/plain`` with a signed-in user's cookie: refused (415)."""
    for url, body in WRITES:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            response = client.post(
                url, data=json.dumps(body), content_type=content_type, headers=ADMIN
            )
            assert response.status_code == 415, (url, content_type)
            assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert _stored(client) == (0, 0)


def test_a_body_nested_past_the_parser_is_a_400(client: t.Any) -> None:
    deep = '{"samples":' + "[" * 5000 + "]" * 5000 + "}"
    for url, _ in WRITES:
        response = client.post(url, data=deep, content_type="application/json", headers=ADMIN)
        assert (
            response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_body"
        )
    assert _stored(client) == (0, 0)


def test_a_body_without_a_length_is_read_up_to_the_limit_only(client: t.Any) -> None:
    """A chunked upload has no ``Content-Length``: more than 1 MiB is still refused."""
    note = "x" * 1000
    samples = [{"seconds": 1.0, "measured_at": "2026-06-01T10:00:00Z", "note": note}] * 1000
    raw = json.dumps({"samples": samples}).encode()
    assert len(raw) > 1024 * 1024
    response = client.post(
        ESCALATIONS + "/baseline",
        input_stream=io.BytesIO(raw),
        content_type="application/json",
        headers=ADMIN,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_body"
    assert _stored(client) == (0, 0)


def test_a_stored_version_this_server_cannot_read_is_a_clear_409(app: t.Any, client: t.Any) -> None:
    """Its zone unknown here (an older tz database than the server that stored it): a 409 naming
    the version, never a 500 and never another calendar."""
    state = registration(app)
    definition = {**CALENDAR, "timezone": "Mars/Olympus_Mons", "holidays": []}
    with db.engine.begin() as connection:
        connection.execute(
            state.business_hours_io.insert().values(
                account_id=1,
                timezone="Mars/Olympus_Mons",
                effective_from=NOW.date(),
                definition=json.dumps(definition),
                created_at=NOW,
            )
        )
    for url in (BASE + "/business-hours", ESCALATIONS + "?clock=business"):
        response = client.get(url, headers=ADMIN)
        assert response.status_code == 409, url
        error = response.get_json()["error"]
        assert error["code"] == "calendar_unreadable" and error["details"]["version_id"] == 1


def test_wall_seconds_are_exact_from_a_day_on_and_savings_shares_the_median(client: t.Any) -> None:
    """163488.193437 s and 80335.473887 s: ``date_part`` would miss the last bit of the first on
    PostgreSQL, and ``(low + high) / 2`` the last bit of their median."""
    first, second = 163488.193437, 80335.473887
    f.escalation(1, f.at(days=5), first)
    f.escalation(1, f.at(days=4), second)
    f.commit()
    body = client.get(ESCALATIONS + "?period=7d", headers=ADMIN).get_json()
    median = second + (first - second) * 0.5
    assert body["median_seconds"] == median
    assert body["p95_seconds"] == second + (first - second) * 0.95
    items = client.get(ESCALATIONS + "/handoffs?period=7d", headers=ADMIN).get_json()["items"]
    assert [item["seconds"] for item in items] == [second, first]
    savings = client.get(ESCALATIONS + "/savings?period=7d", headers=ADMIN).get_json()
    assert savings["in_product"]["median_seconds"] == median
    assert savings["in_product"]["n"] == 2


def test_apps_with_different_minimums_never_share_cached_savings(make_app: t.Any) -> None:
    apps = [make_app(FLOWPILOT_ANALYTICS_BASELINE_MIN_SAMPLES=n) for n in (5, 20)]
    namespaces = {registration(app).cache.namespace for app in apps}
    assert len(namespaces) == 2


def test_baseline_import_keeps_a_quoted_note_whole_and_names_the_record_line(
    app: t.Any, client: t.Any, tmp_path: t.Any
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(
        'seconds,measured_at,note\n600,2026-06-01T10:00:00Z,"line one\r\nline two"\n'
        "700,2026-06-02T10:00:00Z,plain\n",
        encoding="utf-8",
        newline="",
    )
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["flowpilot-analytics", "baseline", "import", "--account", "1", str(good)]
    )
    assert result.exit_code == 0, result.output
    notes = [
        s["note"]
        for s in client.get(ESCALATIONS + "/baseline", headers=ADMIN).get_json()["samples"]
    ]
    assert notes == ["line one\r\nline two", "plain"]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        'seconds,measured_at,note\n600,2026-06-01T10:00:00Z,"two\nlines"\n-1,2026-06-02T10:00:00Z,x\n',
        encoding="utf-8",
    )
    result = runner.invoke(
        args=["flowpilot-analytics", "baseline", "import", "--account", "1", str(bad)]
    )
    assert result.exit_code == 2 and "line 4: seconds" in result.output
    assert len(client.get(ESCALATIONS + "/baseline", headers=ADMIN).get_json()["samples"]) == 2


def test_the_claim_interval_is_a_point_when_no_sample_spreads(client: t.Any) -> None:
    """Twenty identical stopwatch samples and one handoff: no 0 / 0, a 200 with a point interval."""
    f.escalation(1, f.at(days=1), 60)
    f.commit()
    samples = [{"seconds": 900, "measured_at": "2026-06-02T14:00:00Z"}] * 20
    client.post(ESCALATIONS + "/baseline", json={"samples": samples}, headers=ADMIN)
    body = client.get(ESCALATIONS + "/savings", headers=ADMIN).get_json()
    assert body["difference"]["median_interval"] == [840.0, 840.0]
    assert body["difference"]["mean_interval"] == [840.0, 840.0]
    assert body["claim"] is not None and body["reason"] is None
    assert timedelta(seconds=body["difference"]["median_seconds"]) == timedelta(minutes=14)
