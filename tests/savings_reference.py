"""The savings report computed here from the test's own data: handoffs seeded with a known delay,
stopwatch samples as posted, and the figures the route must answer (numpy, not the plugin's
queries)."""

from __future__ import annotations

import random
import typing as t
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from flowpilot_analytics.savings import savings as pure_savings

from . import factories as f
from .host import NOW, db

UTC = timezone.utc
#: The contract's fields of one stored sample.
SAMPLE_KEYS = {"id", "seconds", "measured_at", "note", "measured_by", "created_at"}


@dataclass(frozen=True)
class Handoff:
    """One seeded claimed handoff: its account, its claim (aware UTC) and the seconds to its first
    action (``None`` without one)."""

    account: int
    claimed_at: datetime
    delta: float | None


def store(account: int, claimed_at: datetime, delta: float | None) -> Handoff:
    """A claimed handoff in its own session: a step 30 s before the claim (never its first action),
    then, with a delta, the first action and a later step."""
    naive = claimed_at.astimezone(UTC).replace(tzinfo=None)
    sess = f.session(account, naive - timedelta(hours=1))
    f.handoff(sess, naive)
    f.step(sess, naive - timedelta(seconds=30))
    if delta is not None:
        gap = timedelta(seconds=delta)
        f.step(sess, naive + gap)
        f.step(sess, naive + gap + timedelta(seconds=45))
        delta = gap.total_seconds()  # as the database holds it: whole microseconds
    db.session.flush()
    return Handoff(account, claimed_at.astimezone(UTC), delta)


def seed(
    rng: random.Random,
    account: int,
    count: int,
    delay: t.Callable[[random.Random], float],
    *,
    days: float = 40,
    no_action: float = 0.2,
) -> list[Handoff]:
    """``count`` handoffs claimed over the last ``days`` days (so some outside a 30-day window),
    ``no_action`` of them without a first action, the others after ``delay(rng)`` seconds."""
    made = []
    for _ in range(count):
        claimed = NOW - timedelta(seconds=round(rng.uniform(60, days * 86400), 3))
        delta = None if rng.random() < no_action else round(delay(rng), 3)
        made.append(store(account, claimed, delta))
    f.commit()
    return made


def samples(
    rng: random.Random, count: int, seconds: t.Callable[[random.Random], float]
) -> list[dict[str, t.Any]]:
    """Stopwatch samples as a caller posts them: measured this year in three spellings of the
    instant (``Z``, no offset, +02:00), some with a note, some without the key."""
    made: list[dict[str, t.Any]] = []
    for i in range(count):
        moment = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(seconds=rng.randrange(280 * 86400))
        spelling = i % 3
        if spelling == 0:
            text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif spelling == 1:
            text = moment.replace(tzinfo=None).isoformat()
        else:
            text = moment.astimezone(timezone(timedelta(hours=2))).isoformat()
        sample: dict[str, t.Any] = {"seconds": round(seconds(rng), 3), "measured_at": text}
        if i % 4 == 1:
            sample["note"] = f"desk {i}, ticket #{rng.randrange(10_000)}"
        elif i % 4 == 2:
            sample["note"] = None
        made.append(sample)
    return made


def instant(text: str) -> datetime:
    """An ISO 8601 instant as the contract reads it: no offset means UTC."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def in_window(
    handoffs: t.Iterable[Handoff], account: int, start: datetime, end: datetime
) -> list[float]:
    """The deltas of ``account``'s handoffs claimed in ``[start, end]`` that have a first action."""
    return [
        h.delta
        for h in handoffs
        if h.account == account and start <= h.claimed_at <= end and h.delta is not None
    ]


def summary(values: t.Sequence[float]) -> dict[str, t.Any]:
    """Size, linear-interpolation median and mean (``None`` without values)."""
    if not values:
        return {"n": 0, "median_seconds": None, "mean_seconds": None}
    return {
        "n": len(values),
        "median_seconds": float(np.percentile(values, 50)),
        "mean_seconds": float(np.mean(values)),
    }


def expected(
    baseline: t.Sequence[dict[str, t.Any]],
    deltas: t.Sequence[float],
    min_samples: int = 20,
) -> dict[str, t.Any]:
    """The body's ``baseline``, ``in_product``, ``difference``, ``extrapolated``, ``claim`` and
    ``reason`` from the samples as posted and the window's deltas.

    The figures are numpy's; the bootstrap intervals, the method and the words are the package's
    pure function applied to *these* values (the HTTP tests check that the route hands it the right
    samples and minimum, not the bootstrap itself).
    """
    values = [float(s["seconds"]) for s in baseline]
    moments = [instant(s["measured_at"]) for s in baseline]
    base = summary(values)
    base["first_measured_at"] = min(moments) if moments else None
    base["last_measured_at"] = max(moments) if moments else None
    product = summary(deltas)
    pure = pure_savings(values, deltas, min_samples=min_samples).as_dict()
    difference: dict[str, t.Any] | None = None
    extrapolated: dict[str, t.Any] | None = None
    if len(values) >= min_samples and deltas:
        median = base["median_seconds"] - product["median_seconds"]
        mean = base["mean_seconds"] - product["mean_seconds"]
        pure_difference = t.cast(dict[str, t.Any], pure["difference"])
        difference = {
            "median_seconds": median,
            "median_interval": pure_difference["median_interval"],
            "mean_seconds": mean,
            "mean_interval": pure_difference["mean_interval"],
            "confidence": 0.95,
            "method": pure_difference["method"],
        }
        low, high = pure_difference["mean_interval"]
        extrapolated = {
            "handoffs": len(deltas),
            "total_seconds": mean * len(deltas),
            "total_interval": [low * len(deltas), high * len(deltas)],
        }
    return {
        "baseline": base,
        "in_product": product,
        "difference": difference,
        "extrapolated": extrapolated,
        "claim": pure["claim"],
        "reason": pure["reason"],
    }


def same(actual: t.Any, expected: t.Any) -> bool:
    """Equal, floats to 1e-6 relative (the databases' seconds are floats), instants as instants."""
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(same(actual[k], expected[k]) for k in expected)
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(same(a, e) for a, e in zip(actual, expected))
        )
    if isinstance(expected, datetime):
        return isinstance(actual, str) and instant(actual) == expected and _has_offset(actual)
    if isinstance(expected, float):
        return (
            isinstance(actual, int | float)
            and not isinstance(actual, bool)
            and abs(actual - expected) <= 1e-6 * max(1.0, abs(expected))
        )
    return bool(actual == expected)


def _has_offset(text: str) -> bool:
    moment = datetime.fromisoformat(text)
    return moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
