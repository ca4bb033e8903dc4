"""Signals in the plugin's own blinker namespace (Flask's namespace is for Flask's signals)."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent after the post-push hook records an activity row, with ``sender=app`` and ``activity=`` the
#: recorded payload (a dict). Not sent for a deduplicated retry or when recording failed.
activity_recorded = _signals.signal("flowpilot-analytics-activity-recorded")
