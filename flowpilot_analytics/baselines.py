"""An account's stopwatch baseline: the manual samples of the old, verbal handoff (seconds from
handoff to first action) that a savings claim pairs the in-product metric with.

The statements that read, append and delete samples, and the stored sample. What the samples mean
for a claim is :mod:`.savings`'; a sample is never edited (a wrong one is deleted and measured
again), and its note is the caller's words: stored and returned, never logged.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

#: Most samples one request (or one CSV import) may add.
MAX_SAMPLES_PER_REQUEST = 1000
#: Longest stopwatch sample accepted, in seconds (7 days).
MAX_SAMPLE_SECONDS = 7 * 86400
#: Longest note, in characters.
MAX_NOTE_LENGTH = 1000


@dataclass(frozen=True)
class NewSample:
    """A validated sample, before it is stored: ``measured_at`` aware UTC."""

    seconds: float
    measured_at: datetime
    note: str | None = None


@dataclass(frozen=True)
class StoredSample:
    """A stored sample (``BaselineSample``): ``measured_by`` is the recording user's id as text
    (``None`` when imported from the command line)."""

    id: int
    seconds: float
    measured_at: datetime
    note: str | None
    measured_by: str | None
    created_at: datetime


def samples_query(table: sa.Table) -> sa.Select[t.Any]:
    """The account's samples, oldest measurement first (ties by id). Bound: ``account_id``."""
    c = table.c
    return (
        sa.select(c.id, c.seconds, c.measured_at, c.note, c.measured_by, c.created_at)
        .where(c.account_id == sa.bindparam("account_id"))
        .order_by(c.measured_at, c.id)
    )


def delete_statement(table: sa.Table) -> sa.Delete:
    """Delete one sample of the account. Bound: ``account_id`` and ``sample_id``."""
    return sa.delete(table).where(
        table.c.account_id == sa.bindparam("account_id"),
        table.c.id == sa.bindparam("sample_id"),
    )


def stored(rows: t.Iterable[t.Sequence[t.Any]]) -> list[StoredSample]:
    """:func:`samples_query`'s rows as stored samples."""
    return [
        StoredSample(int(row[0]), float(row[1]), row[2], row[3], row[4], row[5]) for row in rows
    ]


def insert_values(
    account_id: object, sample: NewSample, created_at: datetime, measured_by: object
) -> dict[str, object]:
    """The row of a new sample."""
    return {
        "account_id": account_id,
        "seconds": float(sample.seconds),
        "measured_at": sample.measured_at,
        "note": sample.note,
        "measured_by": None if measured_by is None else str(measured_by),
        "created_at": created_at,
    }
