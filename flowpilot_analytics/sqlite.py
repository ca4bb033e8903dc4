"""SQLite engine setup a host may apply: SQLAlchemy's documented recipe for real pysqlite
transactions.

On Python < 3.12 pysqlite's legacy transaction mode sends no ``BEGIN`` before reads or a
``SAVEPOINT``, so a host's own savepoints can commit on their own. With this recipe every
transaction starts with ``BEGIN`` and savepoints nest inside it. The plugin's hook does not need it
(it writes in transactions of its own); the demo, the test host and the benchmark use it.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa


def sqlite_transactional(engine: sa.Engine) -> None:
    """Make a pysqlite ``engine`` emit ``BEGIN`` itself (SQLAlchemy's "Serializable isolation"
    recipe)."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: t.Any, _record: t.Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")
