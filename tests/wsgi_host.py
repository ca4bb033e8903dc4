"""The test host as a WSGI app for real worker processes (gunicorn); configured through the
environment."""

from __future__ import annotations

import os

from flask import Flask

from . import host


def create_app() -> Flask:
    return host.create_app(
        os.environ["FPA_TEST_DATABASE_URI"],
        FLOWPILOT_ANALYTICS_RATELIMIT_STORAGE_URI=os.environ["FPA_TEST_REDIS_URL"],
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=os.environ["FPA_TEST_DEAD_LETTERS"],
    )
