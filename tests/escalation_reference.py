"""Seeded escalation data and an independent reference (numpy), shared by the report-option and
drill-down tests."""

from __future__ import annotations

import random
import typing as t
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from . import factories as f

EDGES = (60, 300, 900, 3600, 14400)
UTC = timezone.utc


def seed(rng: random.Random) -> list[tuple[int, int | None, datetime, float | None]]:
    """Handoffs of account 1 (and noise in account 2): (account, engineer, claimed_at, delta or
    None)."""
    made = []
    for _ in range(70):
        account = rng.choice([1, 1, 1, 2])
        claimed = f.at(seconds_ago=rng.uniform(0, 75 * 86400)).replace(microsecond=0)
        engineer = rng.choice([7, 8, 9, None])
        sess = f.session(account, claimed - timedelta(hours=1))
        f.handoff(sess, claimed, claimed_by=engineer)
        delta = (
            None
            if rng.random() < 0.2
            else rng.choice([5, 59, 60, 200, 899, 2000, 3600, 20000, 86400.5])
        )
        if delta is not None:
            f.step(sess, claimed + timedelta(seconds=delta))
        made.append((account, engineer, claimed, delta))
    f.commit()
    return made


def reference(
    rows: t.Iterable[tuple[int, int | None, datetime, float | None]],
    start: datetime,
    end: datetime,
    engineer: t.Any = "all",
) -> dict[str, t.Any]:
    picked = [
        r
        for r in rows
        if r[0] == 1
        and start <= r[2].replace(tzinfo=UTC) <= end
        and (engineer == "all" or r[1] == engineer)
    ]
    deltas = sorted(r[3] for r in picked if r[3] is not None)
    stats = (
        (
            float(np.mean(deltas)),
            float(np.percentile(deltas, 50)),
            float(np.percentile(deltas, 95)),
            float(np.percentile(deltas, 90)),
        )
        if deltas
        else (None, None, None, None)
    )
    buckets = [0] * (len(EDGES) + 1)
    for delta in deltas:
        buckets[sum(delta >= e for e in EDGES)] += 1
    return {
        "n_handoffs_claimed": len(picked),
        "n_handoffs_with_action": len(deltas),
        "avg_seconds": stats[0],
        "median_seconds": stats[1],
        "p95_seconds": stats[2],
        "p90_seconds": stats[3],
        "buckets": buckets,
        "no_action": len(picked) - len(deltas),
    }


def wilson(successes: int, trials: int) -> list[float] | None:
    """The 95 % Wilson score interval the obvious way: the two roots ``p`` of
    ``(successes / trials - p) ** 2 = z ** 2 * p * (1 - p) / trials`` (``None`` with no trial)."""
    if not trials:
        return None
    z2 = 1.959963984540054**2
    share = successes / trials
    roots = np.roots([1 + z2 / trials, -(2 * share + z2 / trials), share * share])
    low, high = sorted(float(np.real(r)) for r in roots)
    return [min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0)]


def same(body: t.Mapping[str, t.Any], expected: t.Mapping[str, t.Any]) -> None:
    for key in (
        "n_handoffs_claimed",
        "n_handoffs_with_action",
        "avg_seconds",
        "median_seconds",
        "p95_seconds",
        "p90_seconds",
    ):
        want = expected[key]
        assert body[key] == (pytest.approx(want, abs=1e-6) if want is not None else None), key
