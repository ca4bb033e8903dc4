"""An account's stored business-hours versions: the statements that read and append them, and the
account's calendar (its versions in creation order, with their ids) that the escalation metric
measures business seconds on.

Versions are append-only: a correction is a new version, which measures the claims from its
``effective_from`` on, while earlier claims keep the version they were measured on. What a version
means is :mod:`.business_hours`'; this module only stores and loads it.
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from .business_hours import (
    CalendarError,
    CalendarVersion,
    Measured,
    Micros,
    business_seconds_in_effect,
    in_effect_micros,
    load_version,
    version_index_at,
)
from .errors import Conflict
from .timeutil import as_utc


@dataclass(frozen=True)
class StoredVersion:
    """One stored version: its id, when it was created (aware UTC), by whom, and the version."""

    id: int
    created_at: datetime
    version: CalendarVersion


@dataclass(frozen=True)
class Calendar:
    """An account's versions in creation order (never empty)."""

    versions: tuple[StoredVersion, ...]

    def in_effect(self, instant: datetime) -> StoredVersion:
        """The version in effect at ``instant`` (:func:`~.business_hours.version_index_at`)."""
        index = version_index_at([v.version for v in self.versions], instant)
        assert index is not None  # a calendar has versions
        return self.versions[index]

    def measure(self, claims: t.Sequence[datetime], ends: t.Sequence[datetime]) -> Measured:
        """The business seconds of each ``[claim, end)`` on the version in effect at its claim
        (naive datetimes are UTC), and the position of the version each used."""
        return business_seconds_in_effect([v.version for v in self.versions], claims, ends)

    def measure_micros(self, claims: Micros, ends: Micros) -> tuple[Micros, npt.NDArray[np.intp]]:
        """:meth:`measure` on arrays of microseconds since the epoch: business microseconds, and
        the version positions."""
        return in_effect_micros([v.version for v in self.versions], claims, ends)

    def ids(self, positions: t.Iterable[int]) -> list[int]:
        """The ids of the versions at ``positions``, sorted, each once."""
        return sorted({self.versions[p].id for p in positions})


def versions_query(table: sa.Table) -> sa.Select[t.Any]:
    """The account's own versions (no client's) in creation order. Bound parameter:
    ``account_id``."""
    return (
        sa.select(table.c.id, table.c.created_at, table.c.definition)
        .where(table.c.account_id == sa.bindparam("account_id"), table.c.client_id.is_(None))
        .order_by(table.c.id)
    )


def client_versions_query(table: sa.Table) -> sa.Select[t.Any]:
    """Every client's versions of the account, in creation order, the client's id (as text) last.
    Bound parameter: ``account_id``."""
    return (
        sa.select(table.c.id, table.c.created_at, table.c.definition, table.c.client_id)
        .where(table.c.account_id == sa.bindparam("account_id"), table.c.client_id.is_not(None))
        .order_by(table.c.id)
    )


def client_calendars(rows: t.Iterable[t.Sequence[t.Any]]) -> dict[str, Calendar]:
    """:func:`client_versions_query`'s rows as one calendar per client (keyed by its id as text)."""
    found: dict[str, list[t.Sequence[t.Any]]] = {}
    for row in rows:
        found.setdefault(str(row[3]), []).append(row)
    return {client: Calendar(tuple(stored_versions(part))) for client, part in found.items()}


def stored_versions(rows: t.Iterable[t.Sequence[t.Any]]) -> list[StoredVersion]:
    """:func:`versions_query`'s rows as stored versions (the definition read back as stored).

    A stored version this server cannot read (its zone missing from an older time zone database
    than the one that accepted it) is a ``409 calendar_unreadable`` naming the version and the
    remedy, never a silent re-measure on another calendar."""
    versions = []
    for row in rows:
        try:
            version = load_version(json.loads(row[2]))
        except (CalendarError, ValueError) as exc:
            raise Conflict(
                f"Business-hours version {row[0]} cannot be read on this server ({exc}). If its "
                "time zone is missing, upgrade the tzdata package to the version the other "
                "servers run.",
                code="calendar_unreadable",
                details={"version_id": int(row[0])},
            ) from None
        versions.append(StoredVersion(int(row[0]), t.cast(datetime, as_utc(row[1])), version))
    return versions


def calendar_of(rows: t.Iterable[t.Sequence[t.Any]]) -> Calendar | None:
    """The account's calendar from :func:`versions_query`'s rows; ``None`` without a version."""
    versions = stored_versions(rows)
    return Calendar(tuple(versions)) if versions else None


def insert_values(
    account_id: object, version: CalendarVersion, created_at: datetime, created_by: object
) -> dict[str, object]:
    """The row of a new version (its canonical JSON, holidays expanded); a client's version keeps
    the client's id as text."""
    return {
        "account_id": account_id,
        "client_id": None if version.client_id is None else str(version.client_id),
        "timezone": version.timezone,
        "effective_from": version.effective_from,
        "definition": json.dumps(version.as_dict(), sort_keys=True, separators=(",", ":")),
        "created_at": created_at,
        "created_by": None if created_by is None else str(created_by),
    }
