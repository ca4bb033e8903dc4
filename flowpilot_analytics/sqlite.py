"""SQLite engine setup a host should apply: SQLAlchemy's documented recipe for real transactions.

On Python < 3.12 pysqlite's legacy transaction mode sends no ``BEGIN`` before a ``SAVEPOINT``, so a
row the hook writes while the host has only read would commit on its own, escaping a later host
rollback. With this recipe every transaction starts with ``BEGIN`` and savepoints nest inside it.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa


def sqlite_transactional(engine: sa.Engine) -> None:
    """Make a pysqlite ``engine`` emit ``BEGIN`` itself (SQLAlchemy's "Serializable isolation" recipe)."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: t.Any, _record: t.Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")
