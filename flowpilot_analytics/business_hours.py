"""Business hours: an account's calendar versions, and the business seconds of a handoff on them.

A **version** (:func:`parse_version`) is a zone, the date it takes effect (00:00 of that date in its
zone), the open intervals of each weekday and the holidays (whole local days). Its business time is
the union of the weekly intervals turned into instants (a local time converts as zoneinfo does with
``fold=0``) minus every holiday's local day, 00:00-24:00 (which also cuts a shift from the night
before).

The **business seconds** of a handoff are the length of ``[claim, action)`` inside the business time
of the version in effect at the claim (:func:`version_index_at`); a negative gap counts 0. A
:class:`BusinessClock` turns one version into sorted, disjoint UTC intervals over the span a report
needs, with a running total of open time, so each handoff then costs two bisects; everything is
counted in integer microseconds, so the result is exact. Pure: no Flask, SQL or HTTP.
"""

from __future__ import annotations

import bisect
import functools
import re
import typing as t
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import numpy.typing as npt

#: The weekdays, Monday first (``date.weekday()`` order), as ``weekly`` names them.
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_INTERVALS_PER_DAY = 10
MAX_HOLIDAYS = 5000
#: A ``holiday_calendar`` is expanded for this many years from ``effective_from``'s year.
HOLIDAY_CALENDAR_YEARS = 10
#: The keys a version may have (``client_id`` is kept as given, for a later use).
KEYS = ("timezone", "effective_from", "weekly", "holidays", "holiday_calendar", "client_id")
#: ``effective_from`` years accepted, as for ``since``/``until`` (keeps every instant in
#: ``datetime``'s range).
MIN_YEAR, MAX_YEAR = 1970, 9000

#: Minutes from a day's 00:00: ``(start, end)`` with ``start < end``; an end past 1440 is on the
#: next day.
Interval = tuple[int, int]

_DAY_MINUTES = 1440
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_FOREVER = 2**63
#: A sentinel interval start and end after every instant (int64's largest value).
_NEVER = np.iinfo(np.int64).max
#: Microseconds since the epoch, one per handoff.
Micros = npt.NDArray[np.int64]


class CalendarError(ValueError):
    """A calendar that cannot be stored: ``field`` is the path of the bad value (e.g.
    ``weekly.mon[1][0]``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class HolidayCalendar:
    """A country (ISO 3166-1 alpha-2) and optional subdivision of the ``holidays`` package."""

    country: str
    subdivision: str | None = None


@dataclass(frozen=True)
class CalendarVersion:
    """One validated calendar version; :meth:`as_dict` is its canonical, storable form."""

    timezone: str
    effective_from: date
    #: Seven days, Monday first: each day's intervals, sorted (overlaps merge as instants, in the
    #: clock).
    weekly: tuple[tuple[Interval, ...], ...]
    #: Sorted, without repeats; a ``holiday_calendar``'s dates are already in.
    holidays: tuple[date, ...] = ()
    #: Where holidays came from (provenance only: its dates are in ``holidays``).
    holiday_calendar: HolidayCalendar | None = None
    client_id: object = None

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @functools.cached_property
    def start(self) -> datetime:
        """The instant the version takes effect: 00:00 of ``effective_from`` in its zone (UTC)."""
        return datetime.combine(self.effective_from, time(), tzinfo=self.zone).astimezone(_UTC)

    def as_dict(self) -> dict[str, object]:
        calendar = self.holiday_calendar
        return {
            "timezone": self.timezone,
            "effective_from": self.effective_from.isoformat(),
            "weekly": {
                name: [[_hhmm(start), _hhmm(end)] for start, end in day]
                for name, day in zip(DAYS, self.weekly)
            },
            "holidays": [day.isoformat() for day in self.holidays],
            "holiday_calendar": None
            if calendar is None
            else {"country": calendar.country, "subdivision": calendar.subdivision},
            "client_id": self.client_id,
        }


# -- validation ------------------------------------------------------------------------------------


def parse_version(data: Mapping[str, object]) -> CalendarVersion:
    """A calendar version as POSTed, validated; a ``holiday_calendar`` is expanded into explicit
    holidays (:data:`HOLIDAY_CALENDAR_YEARS` years from ``effective_from``'s), once, so a package
    upgrade never rewrites a stored version. Raises :class:`CalendarError`."""
    return _parse(data, expand=True)


def load_version(data: Mapping[str, object]) -> CalendarVersion:
    """A stored version (:meth:`CalendarVersion.as_dict`), validated the same way, except that its
    ``holiday_calendar`` is neither looked up nor expanded again: it reads back exactly as it was
    stored."""
    return _parse(data, expand=False)


def _parse(data: Mapping[str, object], expand: bool) -> CalendarVersion:
    if not isinstance(data, Mapping):
        raise CalendarError("_schema", "A calendar version is a JSON object.")
    unknown = sorted(str(key) for key in data if key not in KEYS)
    if unknown:
        raise CalendarError(unknown[0], f"Unknown field; a calendar version has {', '.join(KEYS)}.")
    for required in ("timezone", "effective_from", "weekly"):
        if data.get(required) is None:
            raise CalendarError(required, "Missing: this field is required.")
    zone_name = data["timezone"]
    if not isinstance(zone_name, str) or zone_name not in iana_zones():
        raise CalendarError(
            "timezone", f"{zone_name!r} is not an IANA time zone name (e.g. 'Europe/Berlin')."
        )
    effective_from = _date(data["effective_from"], "effective_from")
    if not MIN_YEAR <= effective_from.year <= MAX_YEAR:
        raise CalendarError(
            "effective_from", f"The year must lie between {MIN_YEAR} and {MAX_YEAR}."
        )
    weekly = _weekly(data["weekly"])
    days = _holidays(data.get("holidays"))
    calendar = _holiday_calendar(data.get("holiday_calendar"), known=expand)
    if calendar is not None and expand:
        days |= _expand(calendar, effective_from.year)
    if len(days) > MAX_HOLIDAYS:
        raise CalendarError(
            "holidays", f"At most {MAX_HOLIDAYS} holidays ({len(days)} given or expanded)."
        )
    return CalendarVersion(
        timezone=zone_name,
        effective_from=effective_from,
        weekly=weekly,
        holidays=tuple(sorted(days)),
        holiday_calendar=calendar,
        client_id=data.get("client_id"),
    )


@functools.lru_cache(maxsize=1)
def iana_zones() -> frozenset[str]:
    """The zone names ``tz`` accepts (the rule of :func:`flowpilot_analytics.schemas.iana_zones`,
    which a leaf cannot import): CET, EET, MET and WET are refused, since PostgreSQL reads them as
    fixed offsets."""
    return frozenset(zoneinfo.available_timezones()) - {
        "localtime",
        "Factory",
        "posixrules",
        "posix/localtime",
        "CET",
        "EET",
        "MET",
        "WET",
    }


def _date(value: object, field: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise CalendarError(field, f"{value!r} is not a date (YYYY-MM-DD).")


def _weekly(value: object) -> tuple[tuple[Interval, ...], ...]:
    if not isinstance(value, Mapping):
        raise CalendarError(
            "weekly", "An object of weekdays (mon ... sun), each a list of [start, end] pairs."
        )
    for name in value:
        if name not in DAYS:
            raise CalendarError(
                f"weekly.{name}", f"Unknown weekday; the days are {', '.join(DAYS)}."
            )
    week = tuple(_day(value.get(name), f"weekly.{name}") for name in DAYS)
    if not any(week):
        raise CalendarError(
            "weekly",
            "No day has an open interval: a calendar that is never open would measure every "
            "handoff as 0 business seconds.",
        )
    return week


def _day(value: object, field: str) -> tuple[Interval, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise CalendarError(field, 'A list of ["HH:MM", "HH:MM"] pairs.')
    if len(value) > MAX_INTERVALS_PER_DAY:
        raise CalendarError(field, f"At most {MAX_INTERVALS_PER_DAY} intervals a day.")
    intervals = []
    for index, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise CalendarError(f"{field}[{index}]", 'An interval is a pair ["HH:MM", "HH:MM"].')
        start = _minutes(pair[0], f"{field}[{index}][0]", end=False)
        end = _minutes(pair[1], f"{field}[{index}][1]", end=True)
        if start == end:
            raise CalendarError(f"{field}[{index}]", "The start equals the end.")
        # an end at or before its start is on the next day
        intervals.append((start, end if end > start else end + _DAY_MINUTES))
    # overlaps merge once turned into instants (merged as wall times, an end in a DST gap would
    # move)
    return tuple(sorted(set(intervals)))


def _minutes(value: object, field: str, end: bool) -> int:
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match:
        hours, minutes = int(match[1]), int(match[2])
        if (hours < 24 and minutes < 60) or (end and hours == 24 and minutes == 0):
            return hours * 60 + minutes
    allowed = "00:00-23:59, or 24:00 as an end" if end else "00:00-23:59"
    raise CalendarError(field, f"{value!r} is not a time HH:MM ({allowed}).")


def _hhmm(minutes: int) -> str:
    if minutes > _DAY_MINUTES:
        minutes -= _DAY_MINUTES
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _holidays(value: object) -> set[date]:
    if value is None:
        return set()
    if not isinstance(value, (list, tuple)):
        raise CalendarError("holidays", "A list of dates (YYYY-MM-DD).")
    if len(value) > MAX_HOLIDAYS:
        raise CalendarError("holidays", f"At most {MAX_HOLIDAYS} holidays ({len(value)} given).")
    return {_date(item, f"holidays[{index}]") for index, item in enumerate(value)}


def _holiday_calendar(value: object, known: bool) -> HolidayCalendar | None:
    """The ``holiday_calendar`` object; with ``known``, its codes checked against the ``holidays``
    package (not when reading a stored version back, which a package that dropped a code must not
    make unreadable)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise CalendarError("holiday_calendar", 'An object {"country": "US", "subdivision": "NY"}.')
    for key in value:
        if key not in ("country", "subdivision"):
            raise CalendarError(
                f"holiday_calendar.{key}", "Unknown field; the fields are country and subdivision."
            )
    country, subdivision = value.get("country"), value.get("subdivision")
    if not isinstance(country, str):
        raise CalendarError(
            "holiday_calendar.country", "A country code (ISO 3166-1 alpha-2, e.g. 'US')."
        )
    if subdivision is not None and not isinstance(subdivision, str):
        raise CalendarError(
            "holiday_calendar.subdivision", "A subdivision code of the country (e.g. 'NY')."
        )
    if not known:
        return HolidayCalendar(country, subdivision)
    import holidays

    supported = holidays.list_supported_countries()
    if country not in supported:
        raise CalendarError(
            "holiday_calendar.country", f"{country!r} is not a country the holidays package knows."
        )
    if subdivision is not None and subdivision not in supported[country]:
        raise CalendarError(
            "holiday_calendar.subdivision",
            f"{subdivision!r} is not a subdivision of {country} the package knows.",
        )
    return HolidayCalendar(country, subdivision)


def _expand(calendar: HolidayCalendar, first_year: int) -> set[date]:
    import holidays

    years = range(first_year, first_year + HOLIDAY_CALENDAR_YEARS)
    try:
        found = holidays.country_holidays(
            calendar.country, subdiv=calendar.subdivision, years=years
        )
    except NotImplementedError as exc:  # the package's "not available" for a country or subdivision
        raise CalendarError("holiday_calendar", str(exc)) from exc
    days = set(found)
    if not days:  # e.g. years past the package's data (2100 today): never silently none at all
        raise CalendarError(
            "holiday_calendar",
            f"The holidays package has no {calendar.country} holidays for {years[0]}-{years[-1]}; "
            "give them as explicit holidays instead.",
        )
    return days


def holidays_from_ics(data: bytes, start: date, end: date) -> list[date]:
    """The days in ``[start, end)`` of an iCalendar feed's all-day events, recurring ones expanded,
    sorted: a holiday is a whole local day, so timed and cancelled events are ignored. Raises
    :class:`CalendarError` (field ``ics``) for a feed that cannot be read."""
    import icalendar
    import recurring_ical_events  # type: ignore[import-untyped]

    try:
        calendar = icalendar.Calendar.from_ical(data)
        events = recurring_ical_events.of(calendar).between(start, end)
    except ValueError as exc:  # recurring_ical_events' InvalidCalendar is one too
        raise CalendarError("ics", f"Not a readable iCalendar feed: {exc}") from exc
    days: set[date] = set()
    one_day = timedelta(days=1)
    for event in events:
        begins, ends = event.get("DTSTART"), event.get("DTEND")
        if (
            begins is None
            or isinstance(begins.dt, datetime)
            or str(event.get("STATUS", "")).upper() == "CANCELLED"
        ):
            continue
        first: date = begins.dt
        # DTEND of an all-day event is exclusive; missing (or not after DTSTART), the event is one
        # day
        stop = (
            ends.dt
            if ends is not None and type(ends.dt) is date and ends.dt > first
            else first + one_day
        )
        day = max(first, start)
        while day < min(stop, end):
            days.add(day)
            day += one_day
    return sorted(days)


def holiday_span(effective_from: date) -> tuple[date, date]:
    """``[Jan 1 of effective_from's year, + HOLIDAY_CALENDAR_YEARS years)``: the dates a feed is
    expanded over."""
    return date(effective_from.year, 1, 1), date(effective_from.year + HOLIDAY_CALENDAR_YEARS, 1, 1)


# -- which version is in effect --------------------------------------------------------------------


def version_index_at(versions: Sequence[CalendarVersion], instant: datetime) -> int | None:
    """The position in ``versions`` (in creation order) of the version in effect at ``instant``: the
    latest start at or before it, the newest created between equal starts; before every start, the
    earliest starting one. ``None`` without versions."""
    timeline = _Timeline(versions)
    return timeline.index_at(_micros(instant)) if versions else None


def version_at(versions: Sequence[CalendarVersion], instant: datetime) -> CalendarVersion | None:
    """The version in effect at ``instant`` (see :func:`version_index_at`)."""
    index = version_index_at(versions, instant)
    return None if index is None else versions[index]


class _Timeline:
    """The versions' distinct starts in order, each with the position of the version that wins
    it."""

    def __init__(self, versions: Sequence[CalendarVersion]) -> None:
        winners: dict[int, int] = {}
        for index, version in enumerate(versions):
            winners[_micros(version.start)] = index  # a later creation overwrites an equal start
        self.starts = sorted(winners)
        self.winners = [winners[start] for start in self.starts]

    def index_at(self, moment: int) -> int:
        return self.winners[max(bisect.bisect_right(self.starts, moment) - 1, 0)]


# -- business seconds ------------------------------------------------------------------------------


class BusinessClock:
    """A version's business time over ``[start, end]`` as sorted, disjoint, non-touching UTC
    intervals (in microseconds since the epoch) with the open time before each: measuring a handoff
    is two bisects.

    Built in O(days x intervals a day + holidays in the span); adjacent intervals merge (across
    midnight too), so a round-the-clock calendar is one interval however long the span."""

    def __init__(self, version: CalendarVersion, start: datetime, end: datetime) -> None:
        self.version = version
        self.first, self.last = _micros(start), _micros(end)
        starts, ends = _business_time(version, self.first, self.last)
        self.count = len(starts)
        # a sentinel interval after every instant spares the bounds check on each lookup
        self._starts, self._ends = [*starts, _FOREVER], [*ends, _FOREVER]
        #: ``_before[i]``: the open microseconds of the intervals before interval ``i``.
        self._before = [0]
        for low, high in zip(starts, ends):
            self._before.append(self._before[-1] + high - low)
        self._array_starts = np.array([*starts, _NEVER], dtype=np.int64)
        self._array_ends = np.array([*ends, _NEVER], dtype=np.int64)
        self._array_before = np.array(self._before, dtype=np.int64)

    @property
    def intervals(self) -> list[tuple[datetime, datetime]]:
        """The business intervals, as UTC datetimes (for inspection)."""
        return [
            (_instant(low), _instant(high)) for low, high in zip(self._starts[:-1], self._ends[:-1])
        ]

    def measure_many(self, claims: Iterable[int], actions: Iterable[int]) -> list[int]:
        """Open microseconds in each ``[claim, action)`` (microseconds since the epoch), 0 when the
        action is not after the claim. Raises ``ValueError`` for a pair outside the clock's span."""
        starts, ends, before, right = self._starts, self._ends, self._before, bisect.bisect_right
        first, last = self.first, self.last
        measured = []
        for claim, action in zip(claims, actions):
            if action <= claim:
                measured.append(0)
                continue
            if claim < first or action > last:
                raise ValueError("A handoff lies outside the clock's span.")
            at_action = right(ends, action)
            at_claim = right(ends, claim, 0, at_action)
            into_action, into_claim = action - starts[at_action], claim - starts[at_claim]
            measured.append(
                before[at_action]
                + (into_action if into_action > 0 else 0)
                - before[at_claim]
                - (into_claim if into_claim > 0 else 0)
            )
        return measured

    def measure_array(self, claims: Micros, actions: Micros) -> Micros:
        """:meth:`measure_many` on arrays, vectorised (the same integer arithmetic)."""
        live = actions > claims
        if np.any(live & ((claims < self.first) | (actions > self.last))):
            raise ValueError("A handoff lies outside the clock's span.")
        starts, ends, before = self._array_starts, self._array_ends, self._array_before
        at_action = np.searchsorted(ends, actions, side="right")
        at_claim = np.searchsorted(ends, claims, side="right")
        into_action = np.maximum(actions - starts[at_action], 0)
        into_claim = np.maximum(claims - starts[at_claim], 0)
        measured = before[at_action] + into_action - before[at_claim] - into_claim
        return t.cast(Micros, np.where(live, measured, 0))

    def seconds(self, claim: datetime, action: datetime) -> float:
        """Business seconds of ``[claim, action)`` (a naive datetime is UTC)."""
        return self.measure_many([_micros(claim)], [_micros(action)])[0] / 1_000_000


def business_seconds(version: CalendarVersion, claim: datetime, action: datetime) -> float:
    """The business seconds of one handoff ``[claim, action)`` on ``version`` (0 for a negative
    gap)."""
    return business_seconds_many(version, [claim], [action])[0]


def business_seconds_many(
    version: CalendarVersion, claims: Sequence[datetime], actions: Sequence[datetime]
) -> list[float]:
    """:func:`business_seconds` of each pair, with one :class:`BusinessClock` built for all of them
    (over the earliest claim to the latest action); a naive datetime is UTC."""
    if len(claims) != len(actions):
        raise ValueError("claims and actions differ in length.")
    return _seconds(version, [_micros(c) for c in claims], [_micros(a) for a in actions])


class Measured(t.NamedTuple):
    """Business seconds per handoff, and the position of the version each one used."""

    seconds: list[float]
    version_indexes: list[int]


def business_seconds_in_effect(
    versions: Sequence[CalendarVersion], claims: Sequence[datetime], actions: Sequence[datetime]
) -> Measured:
    """Each handoff on the version in effect at its claim (``versions`` in creation order, not
    empty): one clock per version used, over the span of that version's handoffs."""
    if not versions:
        raise ValueError("No calendar version.")
    if len(claims) != len(actions):
        raise ValueError("claims and actions differ in length.")
    timeline = _Timeline(versions)
    claimed = [_micros(c) for c in claims]
    acted = [_micros(a) for a in actions]
    used = [timeline.index_at(claim) for claim in claimed]
    groups: dict[int, list[int]] = {}
    for position, index in enumerate(used):
        groups.setdefault(index, []).append(position)
    seconds = [0.0] * len(claims)
    for index, positions in groups.items():
        measured = _seconds(
            versions[index], [claimed[p] for p in positions], [acted[p] for p in positions]
        )
        for position, value in zip(positions, measured):
            seconds[position] = value
    return Measured(seconds, used)


def in_effect_micros(
    versions: Sequence[CalendarVersion], claims: Micros, actions: Micros
) -> tuple[Micros, npt.NDArray[np.intp]]:
    """:func:`business_seconds_in_effect` on arrays of microseconds since the epoch, vectorised:
    the business microseconds of each ``[claim, action)`` and the position of the version each
    used."""
    if not versions:
        raise ValueError("No calendar version.")
    timeline = _Timeline(versions)
    starts = np.array(timeline.starts, dtype=np.int64)
    winners = np.array(timeline.winners, dtype=np.intp)
    used = winners[np.maximum(np.searchsorted(starts, claims, side="right") - 1, 0)]
    measured = np.zeros(len(claims), dtype=np.int64)
    for index in np.unique(used).tolist():
        chosen = used == index
        claimed, acted = claims[chosen], actions[chosen]
        live = acted > claimed
        if not live.any():
            continue
        first, last = int(claimed[live].min()), int(acted[live].max())
        clock = BusinessClock(versions[index], _instant(first), _instant(last))
        measured[chosen] = clock.measure_array(claimed, acted)
    return measured, used


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, or of a naive one read as UTC."""
    return _micros(moment)


def _seconds(version: CalendarVersion, claims: list[int], actions: list[int]) -> list[float]:
    first, last = _FOREVER, -_FOREVER
    for claim, action in zip(claims, actions):
        if action > claim:
            first, last = min(first, claim), max(last, action)
    if first > last:  # no pair has time to measure
        return [0.0] * len(claims)
    clock = BusinessClock(version, _instant(first), _instant(last))
    return [micros / 1_000_000 for micros in clock.measure_many(claims, actions)]


def _business_time(version: CalendarVersion, first: int, last: int) -> tuple[list[int], list[int]]:
    """The business intervals within ``[first, last]``, as parallel lists of starts and ends."""
    zone = version.zone
    # a day's intervals end before 00:00 two days later: a day of margin either side covers zone
    # oddities
    first_day = _instant(first).astimezone(zone).date() - timedelta(days=2)
    last_day = _instant(last).astimezone(zone).date() + timedelta(days=1)
    shifts: list[tuple[int, int]] = []
    day = first_day
    while day <= last_day:
        for start, end in version.weekly[day.weekday()]:
            low, high = _wall(day, start, zone), _wall(day, end, zone)
            if low < high:  # a wall time in a spring-forward gap can invert a short interval
                shifts.append((low, high))
        day += timedelta(days=1)
    shifts.sort()
    holidays = version.holidays
    chosen = holidays[
        bisect.bisect_left(holidays, first_day) : bisect.bisect_right(
            holidays, last_day + timedelta(days=1)
        )
    ]
    closed = [(_wall(holiday, 0, zone), _wall(holiday, _DAY_MINUTES, zone)) for holiday in chosen]
    opened = [
        (max(low, first), min(high, last))
        for low, high in _union(shifts)
        if high > first and low < last
    ]
    return _subtract(opened, _union(closed))


def _union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted intervals merged where they overlap or touch."""
    merged: list[tuple[int, int]] = []
    for low, high in intervals:
        if merged and low <= merged[-1][1]:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _subtract(
    opened: list[tuple[int, int]], closed: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """``opened`` minus ``closed`` (both sorted and disjoint), as parallel lists of starts and
    ends."""
    starts: list[int] = []
    ends: list[int] = []
    index = 0
    for low, high in opened:
        while index < len(closed) and closed[index][1] <= low:
            index += 1
        cursor, probe = low, index
        while probe < len(closed) and closed[probe][0] < high:
            if closed[probe][0] > cursor:
                starts.append(cursor)
                ends.append(closed[probe][0])
            cursor = max(cursor, closed[probe][1])
            probe += 1
        if cursor < high:
            starts.append(cursor)
            ends.append(high)
    return starts, ends


def _wall(day: date, minutes: int, zone: zoneinfo.ZoneInfo) -> int:
    """The instant (microseconds since the epoch) of a wall time ``minutes`` after ``day``'s 00:00
    in ``zone`` (``fold=0``: a time in a gap or an overlap takes the offset from before the
    change)."""
    local = datetime.combine(day, time()) + timedelta(minutes=minutes)
    return (local.replace(tzinfo=zone) - _EPOCH) // _MICROSECOND


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, or of a naive one read as UTC."""
    return (moment - (_EPOCH_NAIVE if moment.tzinfo is None else _EPOCH)) // _MICROSECOND


def _instant(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)
