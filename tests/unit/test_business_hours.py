"""Business hours, pure: validating a calendar version, holidays from the holidays package and from
an iCalendar feed, the version in effect, and business seconds checked against a deliberately simple
reference (the rules read literally: every boundary instant made with zoneinfo, and the calendar
asked at each segment's start)."""

from __future__ import annotations

import functools
import random
import typing as t
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from flowpilot_analytics import business_hours as bh
from flowpilot_analytics.business_hours import CalendarError, parse_version

UTC = timezone.utc
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
NINE_TO_FIVE = {day: [["09:00", "17:00"]] for day in WEEKDAYS}
ROUND_THE_CLOCK = {day: [["00:00", "24:00"]] for day in bh.DAYS}


def version(
    zone: str,
    weekly: t.Mapping[str, t.Any],
    holidays: t.Sequence[str] = (),
    start: str = "2026-01-01",
) -> bh.CalendarVersion:
    return parse_version(
        {"timezone": zone, "effective_from": start, "weekly": weekly, "holidays": list(holidays)}
    )


# -- the reference ---------------------------------------------------------------------------------


class Reference:
    """Business time from the rules as written: a weekday's interval ``[s, e)`` is open from the
    instant of wall time ``day s`` to that of ``day e`` (or ``day+1 e`` when ``e <= s``), with
    ``fold=0``; a holiday closes ``[its 00:00, the next day's 00:00)``; overlaps are simply both
    open."""

    def __init__(
        self, zone: str, weekly: t.Mapping[str, t.Any], holidays: t.Sequence[str] = ()
    ) -> None:
        self.zone = ZoneInfo(zone)
        self.weekly = {
            bh.DAYS.index(day): [(self.minutes(s), self.minutes(e)) for s, e in pairs]
            for day, pairs in weekly.items()
        }
        self.holidays = {date.fromisoformat(day) for day in holidays}

    @staticmethod
    def minutes(hhmm: str) -> int:
        hours, minutes = hhmm.split(":")
        return int(hours) * 60 + int(minutes)

    @functools.cache  # noqa: B019 (a test's few instances)
    def wall(self, day: date, minutes: int) -> datetime:
        return (
            (datetime.combine(day, time()) + timedelta(minutes=minutes))
            .replace(tzinfo=self.zone)
            .astimezone(UTC)
        )

    def shifts(self, day: date) -> list[tuple[datetime, datetime]]:
        return [
            (self.wall(day, s), self.wall(day, e if e > s else e + 1440))
            for s, e in self.weekly.get(day.weekday(), [])
        ]

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone).date()
        near = [local + timedelta(days=k) for k in range(-2, 2)]
        if any(
            self.wall(d, 0) <= moment < self.wall(d + timedelta(days=1), 0)
            for d in near
            if d in self.holidays
        ):
            return False
        return any(low <= moment < high for d in near for low, high in self.shifts(d))

    def seconds(self, claim: datetime, action: datetime) -> float:
        if action <= claim:
            return 0.0
        first, last = claim.astimezone(self.zone).date(), action.astimezone(self.zone).date()
        cuts = {claim, action}
        for k in range(-2, (last - first).days + 2):
            day = first + timedelta(days=k)
            cuts |= {self.wall(day, 0)} | {edge for pair in self.shifts(day) for edge in pair}
        points = sorted(c for c in cuts if claim <= c <= action)
        total = sum(
            (high - low for low, high in zip(points, points[1:]) if self.is_open(low)),
            timedelta(),
        )
        return total.total_seconds()


def handoffs(
    rng: random.Random, ref: Reference, start: datetime, days: int, n: int
) -> list[tuple[datetime, datetime]]:
    """Random claims in ``[start, start + days]``, a quarter of them on an interval's edge (to the
    microsecond), and gaps from negative to four days."""
    pairs = []
    for _ in range(n):
        claim = start + timedelta(microseconds=rng.randrange(days * 86_400_000_000))
        if rng.random() < 0.25:
            day = claim.astimezone(ref.zone).date()
            edges = [edge for pair in ref.shifts(day) for edge in pair] or [ref.wall(day, 0)]
            claim = rng.choice(edges) + timedelta(microseconds=rng.choice((-1, 0, 0, 1)))
        kind = rng.random()
        if kind < 0.1:
            gap = -rng.randrange(3_600_000_000)
        elif kind < 0.4:
            gap = rng.randrange(600_000_000)
        elif kind < 0.7:
            gap = rng.randrange(12 * 3_600_000_000)
        else:
            gap = rng.randrange(4 * 86_400_000_000)
        pairs.append((claim, claim + timedelta(microseconds=gap)))
    return pairs


SCENARIOS = {
    # US Eastern office hours, Thanksgiving, across the November DST change
    "new_york_9_to_5": (
        "America/New_York",
        NINE_TO_FIVE,
        ["2026-11-26"],
        datetime(2026, 10, 20, tzinfo=UTC),
        50,
    ),
    # a split shift six days a week in a zone with a half-hour offset and no DST
    "kolkata_split": (
        "Asia/Kolkata",
        {day: [["09:30", "13:00"], ["14:00", "18:30"]] for day in (*WEEKDAYS, "sat")},
        ["2026-10-02"],
        datetime(2026, 9, 20, tzinfo=UTC),
        30,
    ),
    # nights Monday to Friday, the October DST change, and Christmas cutting Thursday night's shift
    # at 00:00
    "london_nights": (
        "Europe/London",
        {day: [["22:00", "06:00"]] for day in WEEKDAYS},
        ["2026-10-26", "2026-12-25"],
        datetime(2026, 10, 15, tzinfo=UTC),
        75,
    ),
    # intervals in and around the 02:00 changes (a gap in March, an overlap in November),
    # overlapping ones, 24:00
    **{
        f"new_york_dst_{month}": (
            "America/New_York",
            {
                "sun": [
                    ["01:30", "02:30"],
                    ["02:15", "03:15"],
                    ["02:40", "03:05"],
                    ["23:00", "24:00"],
                ],
                "mon": [["00:00", "01:45"]],
            },
            [],
            start,
            5,
        )
        for month, start in (
            ("march", datetime(2026, 3, 6, tzinfo=UTC)),
            ("november", datetime(2026, 10, 30, tzinfo=UTC)),
        )
    },
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_business_seconds_match_the_reference(name: str) -> None:
    zone, weekly, holidays, start, days = SCENARIOS[name]
    ref = Reference(zone, weekly, holidays)
    calendar = version(zone, weekly, holidays)
    pairs = handoffs(random.Random(name), ref, start, days, 120)
    expected = [ref.seconds(c, a) for c, a in pairs]
    assert (
        bh.business_seconds_many(calendar, [c for c, _ in pairs], [a for _, a in pairs]) == expected
    )
    assert [bh.business_seconds(calendar, c, a) for c, a in pairs[:20]] == expected[:20]
    assert sum(1 for value in expected if value > 0) > 20  # the data does measure something


def test_the_worked_examples() -> None:
    calendar = version("America/New_York", NINE_TO_FIVE, ["2026-11-26"])
    new_york = ZoneInfo("America/New_York")
    friday_evening = datetime(2026, 11, 13, 17, 50, tzinfo=new_york)
    monday_morning = datetime(2026, 11, 16, 8, 10, tzinfo=new_york)
    assert (
        monday_morning - friday_evening
    ).total_seconds() == 224_400  # 62 h 20 min on the wall clock
    assert (
        bh.business_seconds(calendar, friday_evening, monday_morning) == 0.0
    )  # closed all the way
    # 10 min on Friday and 10 min on Monday
    friday, monday = (
        datetime(2026, 11, 13, 16, 50, tzinfo=new_york),
        datetime(2026, 11, 16, 9, 10, tzinfo=new_york),
    )
    assert bh.business_seconds(calendar, friday, monday) == 1200.0
    # Wednesday 16:00 to Monday 10:00 over Thanksgiving: 1 h + 0 + 8 h + 1 h
    wednesday, next_monday = (
        datetime(2026, 11, 25, 16, tzinfo=new_york),
        datetime(2026, 11, 30, 10, tzinfo=new_york),
    )
    assert bh.business_seconds(calendar, wednesday, next_monday) == 36_000.0
    # a claim outside hours starts counting at the next opening; the interval is half-open
    assert (
        bh.business_seconds(calendar, datetime(2026, 11, 16, 7, tzinfo=new_york), monday) == 600.0
    )
    opening = datetime(2026, 11, 16, 9, tzinfo=new_york)
    assert bh.business_seconds(calendar, opening, opening + timedelta(microseconds=1)) == 1e-6
    closing = datetime(2026, 11, 16, 17, tzinfo=new_york)
    assert bh.business_seconds(calendar, closing, closing + timedelta(hours=15)) == 0.0
    assert bh.business_seconds(calendar, monday, friday) == 0.0  # a negative gap


def test_a_holiday_cuts_the_night_shift_before_it_but_not_its_own_into_the_next_day() -> None:
    calendar = version(
        "Europe/London", {day: [["22:00", "06:00"]] for day in WEEKDAYS}, ["2026-12-25"]
    )
    london = ZoneInfo("Europe/London")
    # Thursday 24th 22:00-24:00 (Christmas cuts 00:00-06:00), Friday's night: only Saturday
    # 00:00-06:00
    claim, action = (
        datetime(2026, 12, 24, 20, tzinfo=london),
        datetime(2026, 12, 26, 12, tzinfo=london),
    )
    assert bh.business_seconds(calendar, claim, action) == 8 * 3600.0


def test_round_the_clock_is_the_wall_clock_across_dst() -> None:
    calendar = version("America/New_York", ROUND_THE_CLOCK)
    new_york = ZoneInfo("America/New_York")
    for day, hours in ((date(2026, 3, 8), 23), (date(2026, 11, 1), 25), (date(2026, 11, 2), 24)):
        start = datetime.combine(day, time(), tzinfo=new_york)
        end = datetime.combine(day + timedelta(days=1), time(), tzinfo=new_york)
        assert bh.business_seconds(calendar, start, end) == hours * 3600.0
    rng = random.Random(7)
    pairs = []
    for around in (datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)):
        for _ in range(200):
            claim = around + timedelta(
                microseconds=rng.randrange(-3 * 86_400_000_000, 86_400_000_000)
            )
            pairs.append((claim, claim + timedelta(microseconds=rng.randrange(3 * 86_400_000_000))))
    measured = bh.business_seconds_many(calendar, [c for c, _ in pairs], [a for _, a in pairs])
    assert measured == [(a - c).total_seconds() for c, a in pairs]


def test_a_round_the_clock_span_of_decades_is_one_interval() -> None:
    start, end = datetime(1990, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC)
    clock = bh.BusinessClock(version("Europe/Berlin", ROUND_THE_CLOCK), start, end)
    assert clock.count == 1
    assert clock.seconds(start, end) == (end - start).total_seconds()
    # overnight shifts every night merge across midnight too; weekdays only leave one interval a
    # week
    nights = {day: [["00:00", "06:00"], ["18:00", "24:00"]] for day in bh.DAYS}
    assert bh.BusinessClock(version("UTC", nights), start, start + timedelta(days=10)).count == 11
    office = bh.BusinessClock(
        version("UTC", {day: [["00:00", "24:00"]] for day in WEEKDAYS}), start, end
    )
    assert 2600 < office.count < 2612  # one per week over 50 years


def test_naive_datetimes_are_utc_and_a_clock_refuses_what_it_does_not_cover() -> None:
    calendar = version("UTC", NINE_TO_FIVE)
    naive = datetime(2026, 11, 16, 8)
    assert bh.business_seconds(calendar, naive, naive + timedelta(hours=2)) == 3600.0
    clock = bh.BusinessClock(
        calendar, datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 17, tzinfo=UTC)
    )
    with pytest.raises(ValueError, match="span"):
        clock.seconds(datetime(2026, 11, 16, 8, tzinfo=UTC), datetime(2026, 11, 18, tzinfo=UTC))
    assert (
        clock.seconds(datetime(2026, 11, 18, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC)) == 0.0
    )


# -- the version in effect -------------------------------------------------------------------------


def test_two_versions_each_handoff_on_the_one_in_effect_at_its_claim() -> None:
    now = datetime(2026, 11, 20, 15, tzinfo=UTC)
    changed = (now - timedelta(days=20)).date()
    weekly = {day: [["08:00", "12:00"], ["13:00", "17:00"]] for day in WEEKDAYS}
    versions = [
        version("Europe/Berlin", ROUND_THE_CLOCK, start="2026-01-01"),
        version("America/Chicago", weekly, ["2026-11-11"], start=changed.isoformat()),
    ]
    refs = [
        Reference("Europe/Berlin", ROUND_THE_CLOCK),
        Reference("America/Chicago", weekly, ["2026-11-11"]),
    ]
    change = datetime.combine(changed, time(), tzinfo=ZoneInfo("America/Chicago"))
    assert versions[1].start == change
    rng = random.Random(20)
    pairs = handoffs(rng, refs[1], now - timedelta(days=40), 40, 150)
    pairs.append(
        (change - timedelta(days=1), change + timedelta(days=1))
    )  # spans the change: the old clock
    measured = bh.business_seconds_in_effect(versions, [c for c, _ in pairs], [a for _, a in pairs])
    expected_index = [0 if claim < change else 1 for claim, _ in pairs]
    assert measured.version_indexes == expected_index
    assert set(expected_index) == {0, 1}
    assert measured.seconds == [refs[i].seconds(c, a) for i, (c, a) in zip(expected_index, pairs)]
    assert measured.seconds[-1] == 2 * 86400.0


def test_the_vectorised_measure_equals_the_reference_to_the_microsecond() -> None:
    """The arrays the reports measure with (:func:`bh.in_effect_micros`) give what the day-by-day
    reference gives, each handoff on its version, including claims before every version and
    actions at or before their claim."""
    import numpy as np

    now = datetime(2026, 11, 20, 15, tzinfo=UTC)
    changed = (now - timedelta(days=20)).date()
    night = {day: [["22:00", "06:00"]] for day in bh.DAYS}
    versions = [
        version("Europe/London", night, ["2026-10-25"], start="2026-09-01"),
        version("Asia/Kolkata", NINE_TO_FIVE, start=changed.isoformat()),
    ]
    refs = [
        Reference("Europe/London", night, ["2026-10-25"]),
        Reference("Asia/Kolkata", NINE_TO_FIVE),
    ]
    rng = random.Random(7)
    pairs = handoffs(rng, refs[0], now - timedelta(days=90), 90, 300)
    pairs += [(claim, claim - timedelta(minutes=5)) for claim, _ in pairs[:20]]
    claims = np.array([bh.micros(c) for c, _ in pairs], dtype=np.int64)
    actions = np.array([bh.micros(a) for _, a in pairs], dtype=np.int64)
    measured, used = bh.in_effect_micros(versions, claims, actions)
    starts = [v.start for v in versions]
    expected_index = [0 if claim < starts[1] else 1 for claim, _ in pairs]
    assert used.tolist() == expected_index
    expected = [
        round(refs[i].seconds(c, a) * 1_000_000) for i, (c, a) in zip(expected_index, pairs)
    ]
    assert measured.tolist() == expected
    listed = bh.business_seconds_in_effect(versions, [c for c, _ in pairs], [a for _, a in pairs])
    assert listed.seconds == [m / 1_000_000 for m in expected]


def test_version_at_latest_start_then_newest_created_then_earliest() -> None:
    berlin, tokyo = "Europe/Berlin", "Asia/Tokyo"
    versions = [
        version(berlin, NINE_TO_FIVE, start="2026-03-01"),
        version(tokyo, NINE_TO_FIVE, start="2026-06-01"),
        version(
            berlin, ROUND_THE_CLOCK, start="2026-03-01"
        ),  # same start as the first, created later
        version(berlin, NINE_TO_FIVE, start="2026-01-01"),  # created last, starts first
    ]
    march = datetime(2026, 3, 1, tzinfo=ZoneInfo(berlin))
    june_tokyo = datetime(2026, 6, 1, tzinfo=ZoneInfo(tokyo))
    assert bh.version_index_at(versions, march - timedelta(microseconds=1)) == 3
    assert bh.version_index_at(versions, march) == 2
    assert bh.version_index_at(versions, june_tokyo - timedelta(microseconds=1)) == 2
    assert bh.version_index_at(versions, june_tokyo) == 1
    assert (
        bh.version_index_at(versions, datetime(2020, 1, 1, tzinfo=UTC)) == 3
    )  # before every start
    assert (
        bh.version_index_at(versions[:3], datetime(2020, 1, 1, tzinfo=UTC)) == 2
    )  # earliest, newest of a tie
    assert bh.version_at(versions, june_tokyo) is versions[1]
    assert bh.version_at([], june_tokyo) is None


# -- validation ------------------------------------------------------------------------------------


def test_the_canonical_form_echoes_seven_days_sorted_and_sorted_holidays() -> None:
    data = {
        "timezone": "Europe/Berlin",
        "effective_from": "2026-05-04",
        "weekly": {
            "mon": [["13:00", "17:00"], ["09:00", "12:00"], ["11:00", "13:00"]],
            "fri": [["22:00", "06:00"], ["18:00", "22:00"]],
            "sat": [["12:00", "08:00"], ["00:00", "24:00"], ["12:00", "08:00"]],
        },
        "holidays": ["2026-12-25", "2026-05-01", "2026-12-25"],
        "client_id": {"opaque": [1]},
    }
    calendar = parse_version(data)
    assert calendar.as_dict() == {
        "timezone": "Europe/Berlin",
        "effective_from": "2026-05-04",
        "weekly": {
            "mon": [["09:00", "12:00"], ["11:00", "13:00"], ["13:00", "17:00"]],
            "tue": [],
            "wed": [],
            "thu": [],
            "fri": [["18:00", "22:00"], ["22:00", "06:00"]],
            "sat": [["00:00", "24:00"], ["12:00", "08:00"]],
            "sun": [],
        },
        "holidays": ["2026-05-01", "2026-12-25"],
        "holiday_calendar": None,
        "client_id": {"opaque": [1]},
    }
    assert bh.load_version(calendar.as_dict()) == calendar
    assert calendar.start == datetime(2026, 5, 3, 22, tzinfo=UTC)
    from_python = parse_version(
        {**data, "effective_from": date(2026, 5, 4), "holidays": [date(2026, 12, 25)]}
    )
    assert (from_python.effective_from, from_python.holidays) == (
        date(2026, 5, 4),
        (date(2026, 12, 25),),
    )


def test_overlapping_and_touching_intervals_merge_as_instants() -> None:
    weekly = {
        "mon": [["13:00", "17:00"], ["09:00", "12:00"], ["11:00", "13:30"]],
        "tue": [["20:00", "02:00"]],
    }
    calendar = version("Asia/Kolkata", weekly)
    assert parse_version(calendar.as_dict()) == calendar
    start, end = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 10, tzinfo=UTC)
    kolkata = ZoneInfo("Asia/Kolkata")
    clock = bh.BusinessClock(calendar, start, end)
    assert clock.intervals[:2] == [
        (datetime(2026, 6, 1, 9, tzinfo=kolkata), datetime(2026, 6, 1, 17, tzinfo=kolkata)),
        (datetime(2026, 6, 2, 20, tzinfo=kolkata), datetime(2026, 6, 3, 2, tzinfo=kolkata)),
    ]
    assert (
        clock.seconds(start, end)
        == Reference("Asia/Kolkata", weekly).seconds(start, end)
        == 2 * 14 * 3600.0
    )


def test_an_interval_ending_in_the_spring_gap_is_not_merged_as_wall_times() -> None:
    weekly = {"sun": [["01:30", "02:30"], ["02:15", "03:15"], ["02:40", "03:05"]]}
    new_york = ZoneInfo("America/New_York")
    day = datetime(2026, 3, 8, tzinfo=new_york)
    # 02:30 does not exist: with fold=0 it is 03:30 EDT, so the first interval is an hour long, the
    # second (02:15 read as 03:15 EDT, to 03:15) is empty and the third (03:40 EDT to 03:05) is less
    # than empty; merged as wall times they would last 45 minutes
    measured = bh.business_seconds(
        version("America/New_York", weekly), day, day + timedelta(days=1)
    )
    assert (
        measured
        == Reference("America/New_York", weekly).seconds(day, day + timedelta(days=1))
        == 3600.0
    )


def test_the_holiday_calendar_is_expanded_once_for_ten_years() -> None:
    data = {
        "timezone": "America/New_York",
        "effective_from": "2026-04-01",
        "weekly": NINE_TO_FIVE,
        "holidays": ["2026-11-26", "2026-12-24"],
        "holiday_calendar": {"country": "US", "subdivision": "NY"},
    }
    calendar = parse_version(data)
    days = set(calendar.holidays)
    assert {date(2026, 11, 26), date(2035, 11, 22), date(2026, 12, 24), date(2026, 1, 1)} <= days
    assert min(days) == date(2026, 1, 1) and max(days) < date(2036, 1, 1)
    assert list(calendar.holidays) == sorted(days)  # sorted, Thanksgiving 2026 once
    assert date(2026, 2, 12) in days  # Lincoln's Birthday: New York's, not the nation's
    assert (
        date(2026, 2, 12)
        not in parse_version({**data, "holiday_calendar": {"country": "US"}}).holidays
    )
    stored = calendar.as_dict()
    assert stored["holiday_calendar"] == {"country": "US", "subdivision": "NY"}
    assert (
        bh.load_version({**stored, "holidays": []}).holidays == ()
    )  # a stored version is never re-expanded
    gone = {
        **stored,
        "holiday_calendar": {"country": "XX"},
    }  # nor broken by a package that dropped a code
    assert bh.load_version(gone).holiday_calendar == bh.HolidayCalendar("XX")


def test_iana_zones_are_the_ones_tz_accepts() -> None:
    from flowpilot_analytics.schemas import iana_zones

    assert bh.iana_zones() == iana_zones()
    assert "Europe/Berlin" in bh.iana_zones() and "CET" not in bh.iana_zones()


BASE: dict[str, t.Any] = {
    "timezone": "America/New_York",
    "effective_from": "2026-01-01",
    "weekly": NINE_TO_FIVE,
}


_DROP = object()


def _with(**changes: t.Any) -> dict[str, t.Any]:
    return {key: value for key, value in {**BASE, **changes}.items() if value is not _DROP}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([["timezone", "UTC"]], "_schema"),
        (_with(colour="blue"), "colour"),
        (_with(timezone="CET"), "timezone"),
        (_with(timezone="WET"), "timezone"),
        (_with(timezone="Mars/Olympus_Mons"), "timezone"),
        (_with(timezone="localtime"), "timezone"),
        (_with(timezone=1), "timezone"),
        (_with(timezone=_DROP), "timezone"),
        (_with(effective_from="2026-02-30"), "effective_from"),
        (_with(effective_from="20260101"), "effective_from"),
        (_with(effective_from="2026-01-01T00:00"), "effective_from"),
        (_with(effective_from="0999-01-01"), "effective_from"),
        (_with(effective_from=_DROP), "effective_from"),
        (_with(weekly=[["09:00", "17:00"]]), "weekly"),
        (_with(weekly={}), "weekly"),
        (_with(weekly={"mon": [], "sat": None}), "weekly"),
        (_with(weekly={"monday": [["09:00", "17:00"]]}), "weekly.monday"),
        (_with(weekly={"mon": "09:00-17:00"}), "weekly.mon"),
        (_with(weekly={"mon": ["09:00-17:00"]}), "weekly.mon[0]"),
        (_with(weekly={"mon": [["09:00", "12:00"], ["13:00"]]}), "weekly.mon[1]"),
        (_with(weekly={"mon": [["09:00", "12:00"], ["13:00", "14:00", "15:00"]]}), "weekly.mon[1]"),
        (_with(weekly={"tue": [["09:00", "12:00"], ["13:00", "13:00"]]}), "weekly.tue[1]"),
        (_with(weekly={"mon": [["09:00", "12:00"], ["9:00", "17:00"]]}), "weekly.mon[1][0]"),
        (_with(weekly={"wed": [["25:00", "26:00"]]}), "weekly.wed[0][0]"),
        (_with(weekly={"wed": [["09:00", "12:60"]]}), "weekly.wed[0][1]"),
        (_with(weekly={"wed": [["24:00", "06:00"]]}), "weekly.wed[0][0]"),
        (_with(weekly={"wed": [["20:00", "24:01"]]}), "weekly.wed[0][1]"),
        (_with(weekly={"wed": [[900, "17:00"]]}), "weekly.wed[0][0]"),
        (_with(weekly={"sun": [[f"{h:02d}:00", f"{h:02d}:30"] for h in range(11)]}), "weekly.sun"),
        (_with(holidays="2026-12-25"), "holidays"),
        (_with(holidays=["2026-12-25", "2026-13-01"]), "holidays[1]"),
        (_with(holidays=["2026-12-25", 20261226]), "holidays[1]"),
        (
            _with(
                holidays=[(date(2026, 1, 1) + timedelta(days=i)).isoformat() for i in range(5001)]
            ),
            "holidays",
        ),
        (_with(holiday_calendar="US"), "holiday_calendar"),
        (_with(holiday_calendar={"country": "XX"}), "holiday_calendar.country"),
        (_with(holiday_calendar={"country": "us"}), "holiday_calendar.country"),
        (_with(holiday_calendar={"subdivision": "NY"}), "holiday_calendar.country"),
        (
            _with(holiday_calendar={"country": "US", "subdivision": "ZZ"}),
            "holiday_calendar.subdivision",
        ),
        (_with(holiday_calendar={"country": "US", "region": "NY"}), "holiday_calendar.region"),
    ],
)
def test_a_bad_calendar_names_the_field(data: dict[str, t.Any], field: str) -> None:
    with pytest.raises(CalendarError) as caught:
        parse_version(data)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError) and caught.value.message


def test_the_holiday_limit_counts_the_expanded_dates() -> None:
    own = [(date(2040, 1, 1) + timedelta(days=i)).isoformat() for i in range(4950)]
    assert len(parse_version(_with(holidays=own)).holidays) == 4950
    with pytest.raises(CalendarError) as caught:
        parse_version(_with(holidays=own, holiday_calendar={"country": "US"}))
    assert caught.value.field == "holidays"


def test_ten_intervals_a_day_and_24_00_as_an_end_are_fine() -> None:
    ten = [[f"{h:02d}:00", f"{h:02d}:30"] for h in range(10)]
    calendar = parse_version(
        _with(weekly={"sun": ten, "mon": [["18:00", "24:00"]], "tue": [["00:00", "24:00"]]})
    )
    assert len(calendar.weekly[6]) == 10
    assert calendar.as_dict()["weekly"]["mon"] == [["18:00", "24:00"]]
    assert calendar.weekly[1] == ((0, 1440),)


# -- iCalendar feeds -------------------------------------------------------------------------------

FEED = b"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//flowpilot//tests//EN
BEGIN:VEVENT
UID:independence@example.com
DTSTAMP:20250101T000000Z
DTSTART;VALUE=DATE:20200704
RRULE:FREQ=YEARLY
EXDATE;VALUE=DATE:20280704
SUMMARY:Independence Day
END:VEVENT
BEGIN:VEVENT
UID:shutdown@example.com
DTSTAMP:20250101T000000Z
DTSTART;VALUE=DATE:20261224
DTEND;VALUE=DATE:20261227
SUMMARY:Winter shutdown
END:VEVENT
BEGIN:VEVENT
UID:offsite@example.com
DTSTAMP:20250101T000000Z
DTSTART:20261110T090000Z
DTEND:20261110T170000Z
SUMMARY:Offsite (timed)
END:VEVENT
BEGIN:VEVENT
UID:cancelled@example.com
DTSTAMP:20250101T000000Z
DTSTART;VALUE=DATE:20260601
STATUS:CANCELLED
SUMMARY:Called off
END:VEVENT
END:VCALENDAR
"""


def test_an_ics_feed_gives_its_all_day_events_recurring_ones_expanded() -> None:
    start, end = bh.holiday_span(date(2026, 3, 15))
    assert (start, end) == (date(2026, 1, 1), date(2036, 1, 1))
    days = bh.holidays_from_ics(FEED.replace(b"\n", b"\r\n"), start, end)
    fourths = [date(year, 7, 4) for year in range(2026, 2036) if year != 2028]
    assert days == sorted([*fourths, date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 26)])
    assert bh.holidays_from_ics(FEED, date(2026, 12, 25), date(2027, 1, 1)) == [
        date(2026, 12, 25),
        date(2026, 12, 26),
    ]
    calendar = parse_version(_with(holidays=[day.isoformat() for day in days]))
    assert len(calendar.holidays) == 12


def test_an_unreadable_ics_feed_is_an_error() -> None:
    with pytest.raises(CalendarError) as caught:
        bh.holidays_from_ics(b"not a calendar", date(2026, 1, 1), date(2027, 1, 1))
    assert caught.value.field == "ics"
