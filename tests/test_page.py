"""The packaged analytics page over HTTP (``FLOWPILOT_ANALYTICS_DASHBOARD``): off by default, gated
like the JSON routes with HTML 401/403 pages, a strict Content-Security-Policy, its static files,
another URL prefix, and apps in one process that do and do not serve it."""

from __future__ import annotations

import re
import typing as t

import pytest

from .helpers import BASE, as_user

PAGE = BASE + "/"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


@pytest.fixture
def app_config() -> dict[str, t.Any]:
    return {"FLOWPILOT_ANALYTICS_DASHBOARD": True}


def status(response: t.Any) -> int:
    with response:
        return int(response.status_code)


def text(response: t.Any) -> str:
    with response:  # a file response: closed, not left to the GC
        return t.cast(str, response.get_data(as_text=True))


@pytest.mark.usefixtures("app")  # the host's tables, for the JSON route
def test_off_by_default_there_is_neither_page_nor_static_route(make_app: t.Any) -> None:
    client = make_app().test_client()
    assert client.get(PAGE, headers=as_user(1)).status_code == 404
    assert client.get(BASE + "/static/dashboard.js").status_code == 404
    assert client.get(BASE + "/static/stat-card.js").status_code == 404
    assert client.get(BASE + "/escalations", headers=as_user(1)).status_code == 200  # API as before


def test_the_page_is_html_under_a_strict_policy_with_no_inline_script(client: t.Any) -> None:
    page = client.get(PAGE, headers=as_user(1, "engineer"))
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = text(page)
    assert f'<body data-api="{BASE}">' in html  # the API's address, for the script to read
    assert re.findall(r"<script\b[^>]*>", html) == [f'<script src="{BASE}/static/dashboard.js">']
    assert re.findall(r"<link\b[^>]*stylesheet[^>]*>", html) == [
        f'<link rel="stylesheet" href="{BASE}/static/dashboard.css">'
    ]
    assert "<style" not in html and not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)  # no inline event handlers
    assert "{{" not in html  # every address filled in
    assert "NOT 'minutes recovered'" in html and "claimed_at" not in html


def test_nobody_signed_in_gets_a_401_page_and_a_viewer_a_403_page(client: t.Any) -> None:
    anonymous = client.get(PAGE)
    assert anonymous.status_code == 401 and anonymous.mimetype == "text/html"
    assert "Sign in to see analytics" in text(anonymous)
    assert anonymous.headers["Content-Security-Policy"] == CSP
    viewer = client.get(PAGE, headers=as_user(1, "viewer"))
    assert viewer.status_code == 403 and viewer.mimetype == "text/html"
    body = text(viewer)
    assert "needs the role engineer or above" in body and "Traceback" not in body
    stranger = client.get(PAGE, headers=as_user(1, "intern"))
    assert stranger.status_code == 403 and "is not one of" in text(stranger)
    for role in ("engineer", "team_admin", "admin"):
        assert client.get(PAGE, headers=as_user(1, role)).status_code == 200, role


def test_the_page_opens_to_the_lowest_role_its_routes_need(make_app: t.Any) -> None:
    """The escalations' minimum (``engineer``) by default; raised with the routes' own."""
    higher = make_app(
        FLOWPILOT_ANALYTICS_DASHBOARD=True,
        FLOWPILOT_ANALYTICS_ROUTE_ROLES={"escalations": "team_admin"},
    ).test_client()
    assert higher.get(PAGE, headers=as_user(1, "engineer")).status_code == 403
    assert higher.get(PAGE, headers=as_user(1, "team_admin")).status_code == 200
    lower = make_app(
        FLOWPILOT_ANALYTICS_DASHBOARD=True,
        FLOWPILOT_ANALYTICS_ROUTE_ROLES={"psa_metrics": "viewer", "savings": "team_admin"},
    ).test_client()
    assert lower.get(PAGE, headers=as_user(1, "viewer")).status_code == 200


@pytest.mark.parametrize(
    ("name", "mimetype", "starts"),
    [
        ("dashboard.js", "text/javascript", "// The analytics page"),
        ("stat-card.js", "text/javascript", "// <flowpilot-queue-stat"),
        ("dashboard.css", "text/css", "/* The analytics page"),
    ],
)
def test_static_files_are_served_with_their_types(
    client: t.Any, name: str, mimetype: str, starts: str
) -> None:
    served = client.get(f"{BASE}/static/{name}")  # plain files: no sign-in needed
    assert served.status_code == 200 and served.mimetype == mimetype
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert text(served).startswith(starts)


@pytest.mark.parametrize(
    "name", ["dashboard.html", "nope.js", "../dashboard.py", "%2e%2e/state.py"]
)
def test_only_the_pages_files_are_served(client: t.Any, name: str) -> None:
    assert client.get(f"{BASE}/static/{name}").status_code == 404


def test_a_host_with_another_prefix_or_mounted_under_a_path(make_app: t.Any) -> None:
    client = make_app(
        FLOWPILOT_ANALYTICS_DASHBOARD=True, FLOWPILOT_ANALYTICS_URL_PREFIX="/internal"
    ).test_client()
    assert client.get(PAGE, headers=as_user(1)).status_code == 404
    page = client.get("/internal/analytics/flowpilot/", headers=as_user(1))
    html = text(page)
    assert page.status_code == 200 and 'data-api="/internal/analytics/flowpilot"' in html
    assert '<script src="/internal/analytics/flowpilot/static/dashboard.js">' in html
    mounted = client.get(
        "/internal/analytics/flowpilot/", headers=as_user(1), base_url="http://localhost/tools"
    )
    assert 'data-api="/tools/internal/analytics/flowpilot"' in text(mounted)  # SCRIPT_NAME kept


def test_two_apps_in_one_process_one_with_the_page(make_app: t.Any) -> None:
    with_page = make_app(FLOWPILOT_ANALYTICS_DASHBOARD=True).test_client()
    without = make_app().test_client()
    for _ in range(2):  # and again, in the other order of requests
        assert with_page.get(PAGE, headers=as_user(1)).status_code == 200
        assert without.get(PAGE, headers=as_user(1)).status_code == 404
        assert without.get(BASE + "/static/dashboard.js").status_code == 404
        assert status(with_page.get(BASE + "/static/dashboard.js")) == 200


def test_the_page_leaves_the_hosts_pages_hooks_and_errors_alone(make_app: t.Any) -> None:
    with_page, without = make_app(FLOWPILOT_ANALYTICS_DASHBOARD=True), make_app()
    for hooks in ("before_request_funcs", "after_request_funcs", "teardown_request_funcs"):
        assert getattr(with_page, hooks).get(None) == getattr(without, hooks).get(None)
    assert with_page.error_handler_spec.get(None) == without.error_handler_spec.get(None)
    client = with_page.test_client()
    missing = client.get("/host/nothing-here")
    assert missing.status_code == 404 and missing.mimetype == "text/html"  # Flask's, not ours
    assert "Content-Security-Policy" not in missing.headers
    host = client.get("/host/ping")
    assert host.get_json() == {"pong": "yes"} and "Content-Security-Policy" not in host.headers
    assert client.get(PAGE, headers=as_user(1)).status_code == 200
    assert client.post(PAGE, headers=as_user(1)).status_code == 405


def test_a_failing_identity_loader_is_an_html_500_page(
    make_app: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise KeyError("session secret sauce")

    from . import host

    app = make_app(
        host.create_app(
            str(make_app().config["SQLALCHEMY_DATABASE_URI"]),
            identity_loader=broken,
            FLOWPILOT_ANALYTICS_DASHBOARD=True,
        )
    )
    response = app.test_client().get(PAGE)
    body = text(response)
    assert response.status_code == 500 and response.mimetype == "text/html"
    assert "secret sauce" not in body and "Traceback" not in body
    assert response.headers["Content-Security-Policy"] == CSP
