"""Dead letters: activities the hook could not write, kept durably until ``replay-activities`` writes them.

By default the store is a JSON-lines file (one payload per line, appended under an exclusive lock and
fsynced, readable by its owner only), so it survives a database outage, which is exactly when it is
needed. A host may choose a table instead (:class:`DeadLetterTable`), e.g. one in another database
bind than the activity table, for when that table is missing or locked rather than the whole database
down. Every payload carries its idempotency key, so replaying it any number of times, from any number
of processes at once, writes its row once.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa

from .activities import error_text, insert_activity, legacy_key, validate_payload
from .deadline import DeadlineRunner
from .timeutil import as_utc

FILE_MODE = 0o600


def check_directory(path: str) -> None:
    """Refuse a dead-letter file in a folder anyone may write to (they could replace or read the file)."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory) and os.stat(directory).st_mode & stat.S_IWOTH:
        raise ValueError(
            f"The dead-letter folder {directory} is world-writable; choose a private folder "
            f"with FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH."
        )


@contextmanager
def _locked(path: str, flags: int) -> t.Iterator[t.IO[str]]:
    """``path`` opened with ``flags`` (created 0600, in a 0700 folder when new) under an exclusive lock."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    descriptor = os.open(path, flags | os.O_CREAT, FILE_MODE)
    if os.fstat(descriptor).st_mode & 0o077:  # a file made by an older version, or by hand
        os.fchmod(descriptor, FILE_MODE)
    mode = "a+" if flags & os.O_APPEND else "r+"
    with os.fdopen(descriptor, mode, encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            handle.seek(0)
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _append_lines(path: str, lines: t.Iterable[str]) -> None:
    with _locked(path, os.O_RDWR | os.O_APPEND) as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())


def _line(payload: t.Mapping[str, t.Any]) -> str:
    return json.dumps({**payload, "created_at": _iso(payload["created_at"])}, sort_keys=True, default=str) + "\n"


class DeadLetterStore(t.Protocol):
    """Where the hook keeps activities it could not write, until a replay writes them."""

    #: Where the store is, for log lines and the replay's report.
    location: str

    def append(self, payload: t.Mapping[str, t.Any]) -> None:
        """Keep one activity durably."""

    def pending(self) -> list[dict[str, t.Any]]:
        """Every activity not yet written back."""

    def drain(self, write: t.Callable[[dict[str, t.Any]], str]) -> ReplayReport:
        """Hand every entry to ``write``; drop those written or present, keep the failures."""


class DeadLetterFile:
    """Append-only JSON lines; ``drain`` hands the entries to a writer and keeps only those it could not write."""

    def __init__(self, path: str) -> None:
        check_directory(path)
        self.location = self.path = path
        self.aside = path + ".replaying"
        self.replay_lock = path + ".lock"

    def append(self, payload: t.Mapping[str, t.Any]) -> None:
        _append_lines(self.path, [_line(payload)])

    def pending(self) -> list[dict[str, t.Any]]:
        """Every entry not yet written, including those of an interrupted replay."""
        entries: list[dict[str, t.Any]] = []
        for path in (self.aside, self.path):
            if os.path.exists(path):
                with _locked(path, os.O_RDWR) as handle:
                    entries += [json.loads(line) for line in handle if line.strip()]
        return entries

    def drain(self, write: t.Callable[[dict[str, t.Any]], str]) -> ReplayReport:
        """Write every entry with ``write`` (returns ``"written"`` or ``"present"``); keep the failures.

        One replay at a time holds ``<file>.lock`` (a second one waits for it, then finds what is left).
        The entries are first moved aside (``<file>.replaying``) under the file's lock, so pushes that fail
        meanwhile append without waiting for the replay; failures go back to the file at the end. A replay
        that dies half-way leaves ``.replaying`` behind, and the next one starts with it: entries it had
        written are then found present by their idempotency key.
        """
        report = ReplayReport()
        with _locked(self.replay_lock, os.O_RDWR):
            if os.path.exists(self.path):
                with _locked(self.path, os.O_RDWR) as handle:
                    lines = [line if line.endswith("\n") else line + "\n" for line in handle if line.strip()]
                    if lines:
                        _append_lines(self.aside, lines)
                    handle.seek(0)
                    handle.truncate()
                    handle.flush()
                    os.fsync(handle.fileno())
            if not os.path.exists(self.aside):
                return report
            with _locked(self.aside, os.O_RDWR) as handle:
                entries = [line for line in handle if line.strip()]
            kept = [line for line in entries if not _replay_line(line, write, report)]
            if kept:
                _append_lines(self.path, kept)
            os.remove(self.aside)
        return report


def _replay_line(line: str, write: t.Callable[[dict[str, t.Any]], str], report: ReplayReport) -> bool:
    """Replay one stored entry; whether it is done with (written or present)."""
    try:
        outcome = write(_load(json.loads(line)))
    except Exception as exc:  # kept for the next replay
        report.failed += 1
        report.errors.append(error_text(exc)[:200])
        return False
    if outcome == "written":
        report.written += 1
    else:
        report.present += 1
    return True


class DeadLetterTable:
    """The same store as a table ``(id, payload JSON text, created_at)``, written on its own connection."""

    def __init__(
        self, table: sa.Table, engine: t.Callable[[], sa.Engine], deadlines: DeadlineRunner, timeout_ms: int
    ) -> None:
        self.table = table
        self._engine = engine
        self._deadlines = deadlines
        self._timeout_ms = timeout_ms
        self.location = f"table {table.name}"

    def append(self, payload: t.Mapping[str, t.Any]) -> None:
        """Insert the payload in a transaction of its own, within the hook's deadline."""
        statement = self.table.insert().values(payload=_line(payload).strip(), created_at=datetime.now(timezone.utc))
        engine = self._engine()  # resolved here: the helper thread has no app context

        def insert() -> None:
            with engine.begin() as connection:
                connection.execute(statement)

        self._deadlines.run(insert, self._timeout_ms / 1000.0)

    def pending(self) -> list[dict[str, t.Any]]:
        with self._engine().connect() as connection:
            return [
                json.loads(row) for row in connection.scalars(sa.select(self.table.c.payload).order_by(self.table.c.id))
            ]

    def drain(self, write: t.Callable[[dict[str, t.Any]], str]) -> ReplayReport:
        """Write every stored entry; an entry is deleted once written (or found present), so a replay that
        dies half-way, or several replays at once, leave nothing doubled and nothing behind."""
        report = ReplayReport()
        with self._engine().connect() as connection:
            rows = connection.execute(sa.select(self.table.c.id, self.table.c.payload).order_by(self.table.c.id)).all()
        for row_id, line in rows:
            if _replay_line(line, write, report):
                with self._engine().begin() as connection:
                    connection.execute(self.table.delete().where(self.table.c.id == row_id))
        return report


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


def replay_one(
    connection: sa.Connection, table: sa.Table, tenant_setting: str | None, payload: t.Mapping[str, t.Any]
) -> str:
    """Write one dead letter unless its row is already there; ``"written"`` or ``"present"``.

    The payload is checked as the hook checks it (a bad one raises ``ValueError`` and stays stored).
    An entry from before idempotency keys gets a key derived from its content, and is also looked up
    the way 0.1 deduplicated it (same account, type and external id; or, without an external id, same
    account, type, session and time), since an older replay may have written it without a key.
    """
    row = validate_payload(payload)
    if row["idempotency_key"] is None:
        row["idempotency_key"] = legacy_key(row)
        c = table.c
        same = [c.account_id == row["account_id"], c.activity_type == row["activity_type"]]
        if row["external_id"] is not None:
            same.append(c.external_id == row["external_id"])
        else:
            same += [
                c.external_id.is_(None),
                c.created_at == row["created_at"],
                c.session_id.is_(None) if row["session_id"] is None else c.session_id == row["session_id"],
            ]
        if connection.scalar(sa.select(sa.exists().where(*same))):
            connection.rollback()
            return "present"
        connection.rollback()
    return "written" if insert_activity(connection, table, tenant_setting, row) else "present"
