"""Reporting windows: the allowed ``period`` values and the UTC window each one means."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: ``period`` query values and their length in days.
PERIODS: dict[str, int] = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_PERIOD = "30d"
#: Longest ``since``/``until`` range, in days.
MAX_RANGE_DAYS = 366


@dataclass(frozen=True)
class Window:
    """The closed interval ``[start, end]`` in UTC that a report covers."""

    period: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Span:
    """The window a query asks for: a ``period`` ending
    now, or a ``since``/``until`` range (aware, UTC)."""

    period: str | None = DEFAULT_PERIOD
    since: datetime | None = None
    until: datetime | None = None

    def window(self, now: datetime) -> Window:
        """The window at ``now``: the custom range as given, or ``[now - N days, now]``."""
        if self.since is not None and self.until is not None:
            return Window("custom", self.since, self.until)
        return window_for(self.period or DEFAULT_PERIOD, now)


def window_for(period: str, now: datetime) -> Window:
    """``[now - N days, now]`` for a validated ``period``."""
    return Window(period, now - timedelta(days=PERIODS[period]), now)


def previous_window(window: Window) -> Window:
    """The equal-length window just before ``window``, ending one microsecond before it starts."""
    length = window.end - window.start
    before = window.start - timedelta(microseconds=1)
    return Window(window.period, before - length, before)
