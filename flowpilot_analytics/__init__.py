"""flowpilot_analytics: escalation and PSA analytics as a Flask extension and blueprint."""

from .escalations import METRIC_DEFINITION
from .extension import FlowpilotAnalytics
from .identity import Identity
from .signals import activity_recorded
from .sqlite import sqlite_transactional

__all__ = ["FlowpilotAnalytics", "Identity", "METRIC_DEFINITION", "activity_recorded", "sqlite_transactional"]
