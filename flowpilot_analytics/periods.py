"""Reporting windows: the allowed ``period`` values and the UTC window each one means."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: ``period`` query values and their length in days.
PERIODS: dict[str, int] = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_PERIOD = "30d"


@dataclass(frozen=True)
class Window:
    """The closed interval ``[start, end]`` in UTC that a report covers."""

    period: str
    start: datetime
    end: datetime


def window_for(period: str, now: datetime) -> Window:
    """``[now - N days, now]`` for a validated ``period``."""
    return Window(period, now - timedelta(days=PERIODS[period]), now)
