"""The analytics page for team leads (``FLOWPILOT_ANALYTICS_DASHBOARD``): one HTML page and its
plain static files (the queue stat-card among them), served by the plugin's blueprint.

The page is gated like the JSON routes it calls (the lowest minimum role among them), answers a
caller it refuses with a small HTML page of its own (never the host's error pages, never a stack
trace), and is sent with a strict Content-Security-Policy: its script and styles are files, it calls
the API same-origin with the browser's cookies, and reads the API's address from a data attribute.
"""

from __future__ import annotations

import logging
import pathlib
import typing as t

from flask import (
    Blueprint,
    Response,
    current_app,
    got_request_exception,
    send_from_directory,
    url_for,
)
from markupsafe import escape
from werkzeug.exceptions import NotFound

from .config import Settings
from .errors import Forbidden, NotSignedIn
from .identity import require_role
from .state import AnalyticsState

logger = logging.getLogger(__name__)

#: Where the page's files live in the package (shipped by ``[options.package_data]``).
STATIC_DIR = pathlib.Path(__file__).parent / "static"
#: The page's template, filled with its addresses; not served as a file.
PAGE_TEMPLATE = "dashboard.html"
#: The files the static route serves, and their types: anything else is a 404.
STATIC_FILES: t.Mapping[str, str] = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "stat-card.js": "text/javascript",
}
#: The page's policy: its own files only, no inline script or style, calls to its own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
#: The route-role keys of the reports the page shows; it opens to the lowest of their minimums.
SHOWN_ROUTES = ("escalations", "psa_metrics", "savings")

_ERROR_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title} · FlowPilot analytics</title></head>
<body>
<h1>{title}</h1>
<p>{message}</p>
</body>
</html>
"""


def page_role(settings: Settings) -> str:
    """The lowest minimum role among the routes the page shows (``engineer`` by default)."""
    minimums = [settings.route_roles[key] for key in SHOWN_ROUTES]
    return min(minimums, key=settings.roles.index)


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _html(status: int, body: str) -> Response:
    response = current_app.response_class(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "private, no-store"
    return _secured(response)


def _refused(status: int, title: str, message: str) -> Response:
    return _html(status, _ERROR_PAGE.format(title=escape(title), message=escape(message)))


def register_dashboard(blueprint: Blueprint, state: AnalyticsState, base: str) -> None:
    """Add the page (``<base>/``) and its static files (``<base>/static/<file>``) to
    ``blueprint``."""
    template = (STATIC_DIR / PAGE_TEMPLATE).read_text(encoding="utf-8")
    minimum = page_role(state.settings)

    def page() -> Response:
        try:
            require_role(state.identity_loader(), state.settings.roles, minimum)
        except NotSignedIn as exc:
            return _refused(401, "Sign in to see analytics", exc.message)
        except Forbidden as exc:
            why = exc.message if exc.code == "unknown_role" else "Ask an admin if you need it."
            return _refused(
                403,
                "Not available for your role",
                f"The analytics page needs the role {minimum} or above. {why}",
            )
        except Exception as exc:  # the host's loader failed: a page, never a traceback or JSON
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=exc)
            logger.error(
                "the identity loader failed while opening the analytics page", exc_info=exc
            )
            return _refused(
                500, "Analytics failed", "The analytics page could not check who you are."
            )
        api = url_for(f"{blueprint.name}.dashboard").rstrip("/")
        html = template.replace("{{api}}", str(escape(api))).replace(
            "{{static}}", str(escape(api + "/static"))
        )
        return _html(200, html)

    def static(filename: str) -> Response:
        mimetype = STATIC_FILES.get(filename)
        if mimetype is None:
            raise NotFound()
        response = send_from_directory(STATIC_DIR, filename, mimetype=mimetype, max_age=0)
        response.headers["Cache-Control"] = "no-cache"  # revalidated, so an upgrade is seen at once
        return _secured(response)

    blueprint.add_url_rule(f"{base}/", "dashboard", page, methods=["GET"])
    blueprint.add_url_rule(
        f"{base}/static/<path:filename>", "dashboard_static", static, methods=["GET"]
    )
