"""Reporting windows: the allowed ``period`` values and the UTC window each one means."""

from __future__ import annotations

import typing as t
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


def window_from_args(args: t.Mapping[str, t.Any], now: datetime) -> Window:
    """The window a validated query asks for: a custom ``since``/``until`` range or a ``period``."""
    if args.get("since") is not None:
        return Window("custom", args["since"], args["until"])
    return window_for(args["period"], now)


def previous_window(window: Window) -> Window:
    """The equal-length window just before ``window``, ending one microsecond before it starts."""
    length = window.end - window.start
    return Window(
        window.period, window.start - length - timedelta(microseconds=1), window.start - timedelta(microseconds=1)
    )
