"""flowpilot_analytics: escalation and PSA analytics as a Flask extension and blueprint."""

from .escalations import METRIC_DEFINITION
from .extension import FlowpilotAnalytics
from .identity import Identity
from .signals import activity_recorded
from .sqlite import sqlite_transactional
from .state import registration

__all__ = [
    "FlowpilotAnalytics",
    "Identity",
    "METRIC_DEFINITION",
    "activity_recorded",
    "registration",
    "sqlite_transactional",
]
