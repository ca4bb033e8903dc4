"""Dead letters: activities the hook could not write, kept durably until ``replay-activities`` writes them.

By default the store is a JSON-lines file (one payload per line, appended under an exclusive lock and
fsynced), so it survives a database outage, which is exactly when it is needed. A host may choose a
table instead (:class:`DeadLetterTable`), e.g. one in another database bind than the activity table,
for when that table is missing or locked rather than the whole database down.
"""

from __future__ import annotations

import fcntl
import json
import os
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa

from .tables import as_utc


@contextmanager
def _locked(path: str, mode: str) -> t.Iterator[t.IO[str]]:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, mode, encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class DeadLetterFile:
    """Append-only JSON lines; ``drain`` hands the entries to a writer and keeps only those it could not write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.location = path

    def append(self, payload: t.Mapping[str, t.Any], session: t.Any = None) -> None:
        line = json.dumps({**payload, "created_at": _iso(payload["created_at"])}, sort_keys=True)
        with _locked(self.path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def pending(self) -> list[dict[str, t.Any]]:
        """Every entry not yet written, including those of an interrupted replay."""
        entries: list[dict[str, t.Any]] = []
        aside = self.path + ".replaying"
        if os.path.exists(aside):
            with open(aside, encoding="utf-8") as handle:
                entries += [json.loads(line) for line in handle if line.strip()]
        if os.path.exists(self.path):
            with _locked(self.path, "r") as handle:
                entries += [json.loads(line) for line in handle if line.strip()]
        return entries

    def drain(self, write: t.Callable[[dict[str, t.Any]], str]) -> ReplayReport:
        """Write every entry with ``write`` (returns ``"written"`` or ``"present"``); keep the failures.

        The entries are first moved aside (``<file>.replaying``) under the lock, so pushes that fail
        meanwhile append without waiting for the replay; failures go back to the file at the end. A
        replay interrupted half-way leaves ``.replaying`` behind, and the next replay starts with it.
        """
        report = ReplayReport()
        aside = self.path + ".replaying"
        if os.path.exists(self.path):
            with _locked(self.path, "r+") as handle:
                lines = handle.readlines()
                with open(aside, "a", encoding="utf-8") as out:
                    out.writelines(line if line.endswith("\n") else line + "\n" for line in lines if line.strip())
                    out.flush()
                    os.fsync(out.fileno())
                handle.seek(0)
                handle.truncate()
        if not os.path.exists(aside):
            return report
        kept: list[str] = []
        with open(aside, encoding="utf-8") as handle:
            entries = [line for line in handle if line.strip()]
        for line in entries:
            try:
                outcome = write(_load(json.loads(line)))
            except Exception as exc:  # kept for the next replay
                report.failed += 1
                report.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                kept.append(line)
                continue
            if outcome == "written":
                report.written += 1
            else:
                report.present += 1
        if kept:
            with _locked(self.path, "a") as handle:
                handle.writelines(kept)
                handle.flush()
                os.fsync(handle.fileno())
        os.remove(aside)
        return report


class DeadLetterTable:
    """The same store as a table ``(id, payload JSON text, created_at)``, written on its own connection."""

    def __init__(self, table: sa.Table, engine: t.Callable[[], sa.Engine]) -> None:
        self.table = table
        self._engine = engine
        self.location = f"table {table.name}"

    def append(self, payload: t.Mapping[str, t.Any], session: t.Any = None) -> None:
        """Insert the payload: inside the host's open transaction (a savepoint, as the hook does; SQLite
        allows one writer), else on a connection of its own."""
        line = json.dumps({**payload, "created_at": _iso(payload["created_at"])}, sort_keys=True)
        statement = self.table.insert().values(payload=line, created_at=datetime.now(timezone.utc))
        if session is not None and session.in_transaction():
            connection = session.connection(bind_arguments={"bind": self._engine()})
            with connection.begin_nested():
                connection.execute(statement)
            return
        with self._engine().begin() as connection:
            connection.execute(statement)

    def pending(self) -> list[dict[str, t.Any]]:
        with self._engine().connect() as connection:
            return [json.loads(row) for row in connection.scalars(
                sa.select(self.table.c.payload).order_by(self.table.c.id))]

    def drain(self, write: t.Callable[[dict[str, t.Any]], str]) -> ReplayReport:
        report = ReplayReport()
        with self._engine().connect() as connection:
            rows = connection.execute(sa.select(self.table.c.id, self.table.c.payload).order_by(self.table.c.id)).all()
        for row_id, line in rows:
            try:
                outcome = write(_load(json.loads(line)))
            except Exception as exc:  # kept for the next replay
                report.failed += 1
                report.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with self._engine().begin() as connection:
                connection.execute(self.table.delete().where(self.table.c.id == row_id))
            if outcome == "written":
                report.written += 1
            else:
                report.present += 1
        return report


def dead_letter_table(metadata: sa.MetaData, name: str) -> sa.Table:
    """The dead-letter table's declaration (reused when the host declares it)."""
    if name in metadata.tables:
        return metadata.tables[name]
    return sa.Table(name, metadata,
                    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
                    sa.Column("payload", sa.Text(), nullable=False),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))


@dataclass
class ReplayReport:
    """What ``replay-activities`` did."""

    written: int = 0
    present: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _iso(value: t.Any) -> t.Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _load(entry: dict[str, t.Any]) -> dict[str, t.Any]:
    entry["created_at"] = as_utc(entry["created_at"])
    return entry


def replay_one(connection: sa.Connection, table: sa.Table, payload: t.Mapping[str, t.Any]) -> str:
    """Insert one dead letter unless it is already there: same account, type and external id, or, for
    activities without an external id, same account, type, session and time."""
    c = table.c
    same = [c.account_id == payload["account_id"], c.activity_type == payload["activity_type"]]
    if payload.get("external_id") is not None:
        same.append(c.external_id == payload["external_id"])
    else:
        same += [c.external_id.is_(None), c.created_at == payload["created_at"],
                 c.session_id.is_(None) if payload.get("session_id") is None else c.session_id == payload["session_id"]]
    if connection.scalar(sa.select(sa.exists().where(*same))):
        return "present"
    connection.execute(table.insert().values(**{k: payload.get(k) for k in (
        "account_id", "session_id", "activity_type", "psa_ticket_id", "external_id", "minutes", "created_at")}))
    return "written"
