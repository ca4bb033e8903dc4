"""Read-replica freshness, whole: a standby's answer is cached only once it has replayed the latest
change.

With ``FLOWPILOT_ANALYTICS_BIND`` on PostgreSQL, three values travel, each passed explicitly:

- after the hook writes an activity on the primary, :func:`insert_position` is the WAL position a
  standby must replay to see it (the cache keeps the furthest one per account and route);
- before each read of a report, :meth:`Reads.observe` notes the position the standby has replayed
  (:func:`replay_position`; none on a primary or a promoted standby);
- after the report, :meth:`Reads.caught_up` says whether its oldest position reaches the required
  one; if not, the answer is served but not cached.

Without a bind nothing here runs: the read path gets no :class:`Reads` and every answer may be
cached.
"""

from __future__ import annotations

import sqlalchemy as sa


def wal_position(text: str) -> int:
    """A PostgreSQL WAL position (``16/B374D848``) as a number, for comparing."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def insert_position(connection: sa.Connection) -> str | None:
    """After a write on the primary: the WAL position
    a standby must replay to see it (PostgreSQL only)."""
    if connection.dialect.name != "postgresql":
        return None
    value = connection.exec_driver_sql("SELECT pg_current_wal_insert_lsn()::text").scalar()
    return None if value is None else str(value)


def replay_position(connection: sa.Connection) -> int | None:
    """Before a read: the position the server has replayed;
    ``None`` on a primary (or a promoted standby)."""
    if connection.dialect.name != "postgresql":
        return None
    value = connection.exec_driver_sql(
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END"
    ).scalar()
    return None if value is None else wal_position(str(value))


class Reads:
    """What one report's reads saw: the oldest replay
    position among them, a lower bound of their data."""

    def __init__(self) -> None:
        self.oldest: int | None = None

    def observe(self, connection: sa.Connection) -> None:
        """Note the replay position of the server ``connection`` is about to read from."""
        position = replay_position(connection)
        if position is not None and (self.oldest is None or position < self.oldest):
            self.oldest = position

    def caught_up(self, required: int | None) -> bool:
        """Whether the reads saw the change at WAL position
        ``required`` (reads on a primary always have)."""
        return required is None or self.oldest is None or self.oldest >= required
