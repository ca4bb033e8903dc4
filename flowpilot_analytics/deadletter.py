"""Dead letters: activities the hook could not write, kept durably until ``replay-activities`` writes them.

By default the store is a JSON-lines file (one payload per line, appended under an exclusive lock and
fsynced, readable by its owner only), so it survives a database outage, which is exactly when it is
needed. A host may choose a table instead (:class:`DeadLetterTable`), for when the activity table is
missing or locked rather than the whole database down; when that table cannot be written within the hook
timeout either, the file takes the activity. Every payload carries its idempotency key, so replaying it
any number of times, from any number of processes at once, writes its row once.

The file also serves as a journal: on SQLite the hook records an activity there before waiting for the
host's transaction to end, and settles it (a ``{"settled": key}`` line) once the row is written, so a
process that dies in between leaves a dead letter, not a loss.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import stat
import time
import typing as t
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa

from .activities import error_text, insert_activity, legacy_key, validate_payload
from .deadline import DeadlineRunner
from .tables import set_tenant
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


def _open_private(path: str, flags: int) -> int:
    """``path`` opened with ``flags``, created 0600 in a 0700 folder when new (and tightened if wider)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    descriptor = os.open(path, flags | os.O_CREAT, FILE_MODE)
    if os.fstat(descriptor).st_mode & 0o077:  # a file made by an older version, or by hand
        os.fchmod(descriptor, FILE_MODE)
    return descriptor


@contextmanager
def _exclusive(path: str) -> t.Iterator[int]:
    """An exclusive lock on the file at ``path`` as it is now: if a replay renamed it away while we waited
    for the lock, open the new one (so nothing is ever appended to a file that was moved aside)."""
    while True:
        descriptor = _open_private(path, os.O_RDWR | os.O_APPEND)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            same = os.path.exists(path) and os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(descriptor)
    try:
        yield descriptor
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def _append_lines(path: str, lines: t.Sequence[str]) -> None:
    with _exclusive(path) as descriptor:
        os.write(descriptor, "".join(lines).encode("utf-8"))
        os.fsync(descriptor)


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line if line.endswith("\n") else line + "\n" for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def _line(payload: t.Mapping[str, t.Any]) -> str:
    return json.dumps({**payload, "created_at": _iso(payload["created_at"])}, sort_keys=True, default=str) + "\n"


class DeadLetterStore(t.Protocol):
    """Where the hook keeps activities it could not write, until a replay writes them."""

    #: Where the store is, for log lines and the replay's report.
    location: str
    #: ``file`` or ``table``, for the backlog gauge.
    kind: str

    def backlog(self) -> int | None:
        """How many dead letters wait, when that is cheap to read; else ``None``."""

    def append(self, payload: t.Mapping[str, t.Any], timeout: float = 5.0) -> None:
        """Keep one activity durably (within ``timeout`` seconds where the store is a database)."""

    def journal(self, payload: t.Mapping[str, t.Any]) -> None:
        """Keep an activity whose write is about to wait; :meth:`settle` drops it once written."""

    def settle(self, key: str) -> None:
        """The journaled activity with this idempotency key is written: it is no longer a dead letter."""

    def pending(self) -> list[dict[str, t.Any]]:
        """Every activity not yet written back."""

    def drain(self, write: t.Callable[[dict[str, t.Any]], str]) -> ReplayReport:
        """Hand every entry to ``write``; drop those written or present, keep the failures."""


def _unsettled(lines: t.Iterable[str]) -> tuple[list[str], set[str]]:
    """The entry lines, and the keys of the journal entries marked settled."""
    entries, settled = [], set()
    for line in lines:
        if line.startswith('{"settled": '):
            settled.add(json.loads(line)["settled"])
        else:
            entries.append(line)
    return entries, settled


def _key_of(line: str) -> t.Any:
    try:
        return json.loads(line).get("idempotency_key")
    except ValueError:
        return None


class DeadLetterFile:
    """Append-only JSON lines; ``drain`` hands the entries to a writer and keeps only those it could not write."""

    kind = "file"

    def __init__(self, path: str) -> None:
        check_directory(path)
        self.location = self.path = path
        self.replay_lock = path + ".lock"

    def backlog(self) -> int | None:
        """How many dead letters wait (a read of the local file)."""
        return len(self.pending())

    def append(self, payload: t.Mapping[str, t.Any], timeout: float = 5.0) -> None:
        _append_lines(self.path, [_line(payload)])

    def journal(self, payload: t.Mapping[str, t.Any]) -> None:
        self.append(payload)

    def settle(self, key: str) -> None:
        _append_lines(self.path, [json.dumps({"settled": key}) + "\n"])

    def _aside(self) -> list[str]:
        """Files moved aside by replays, oldest first (those of a replay that died come first)."""
        return sorted(glob.glob(glob.escape(self.path) + ".replaying*"))

    def pending(self) -> list[dict[str, t.Any]]:
        """Every entry not yet written (those of an interrupted replay included), journal entries settled left out."""
        lines = [line for path in [*self._aside(), self.path] for line in _read_lines(path)]
        entries, settled = _unsettled(lines)
        return [
            entry for entry in (json.loads(line) for line in entries) if entry.get("idempotency_key") not in settled
        ]

    def drain(self, write: t.Callable[[dict[str, t.Any]], str]) -> ReplayReport:
        """Write every entry with ``write`` (returns ``"written"`` or ``"present"``); keep the failures.

        One replay at a time holds ``<file>.lock`` (a second one waits for it, then finds what is left). The
        file is renamed aside (``<file>.replaying.<n>``) under its own lock, which takes a moment, so pushes
        failing meanwhile append to a new file without waiting for the replay; failures go back to that file
        at the end. A replay that dies half-way leaves its aside file, and the next one starts with it:
        entries it had written are then found present by their idempotency key.
        """
        report = ReplayReport()
        lock = _open_private(self.replay_lock, os.O_RDWR)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.exists(self.path):
                with _exclusive(self.path):
                    os.replace(self.path, f"{self.path}.replaying.{time.time_ns()}")
            aside = self._aside()
            lines = [line for path in aside for line in _read_lines(path)]
            entries, settled = _unsettled(lines)
            kept = [line for line in entries if _key_of(line) not in settled and not _replay_line(line, write, report)]
            if kept:
                _append_lines(self.path, kept)
            for path in aside:
                os.remove(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.close(lock)
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
    """The same store as a table ``(id, payload JSON text, created_at)``, written in a transaction of its own;
    the file ``spill`` takes what the table cannot within the timeout, and serves as the journal."""

    def __init__(
        self, table: sa.Table, engine: t.Callable[[], sa.Engine], deadlines: DeadlineRunner, spill: DeadLetterFile
    ) -> None:
        self.table = table
        self._engine = engine
        self._deadlines = deadlines
        self.spill = spill
        self.location = f"table {table.name}"

    kind = "table"

    def backlog(self) -> int | None:
        """``None``: counting the table needs the database, which an exporter thread must not wait on
        (``flask flowpilot-analytics doctor`` counts it)."""
        return None

    def append(self, payload: t.Mapping[str, t.Any], timeout: float = 5.0) -> None:
        """Insert the payload within ``timeout`` seconds; past it, or if the table fails, into the file."""
        statement = self.table.insert().values(payload=_line(payload).strip(), created_at=datetime.now(timezone.utc))
        engine = self._engine()  # resolved here: the helper thread has no app context

        def insert() -> None:
            with engine.begin() as connection:
                connection.execute(statement)

        try:
            if timeout <= 0.01:
                raise TimeoutError("no time left")
            self._deadlines.run(insert, timeout)
        except Exception:
            self.spill.append(payload)  # the late insert, if it lands, is replayed as "present"

    def journal(self, payload: t.Mapping[str, t.Any]) -> None:
        self.spill.journal(payload)

    def settle(self, key: str) -> None:
        self.spill.settle(key)

    def pending(self) -> list[dict[str, t.Any]]:
        with self._engine().connect() as connection:
            stored = [
                json.loads(row) for row in connection.scalars(sa.select(self.table.c.payload).order_by(self.table.c.id))
            ]
        return stored + self.spill.pending()

    def drain(self, write: t.Callable[[dict[str, t.Any]], str]) -> ReplayReport:
        """Write every stored entry (the file's too); an entry is deleted once written or found present, so a
        replay that dies half-way, or several replays at once, leave nothing doubled and nothing behind."""
        report = self.spill.drain(write)
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


def _python_type(column: sa.Column[t.Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


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
    for key in ("account_id", "session_id"):  # JSON holds UUID ids as text; the column wants UUIDs
        if isinstance(row[key], str) and _python_type(table.c[key]) is uuid.UUID:
            row[key] = uuid.UUID(row[key])
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
        with connection.begin():  # under row-level security the lookup must run as the activity's account
            set_tenant(connection, tenant_setting, row["account_id"])
            if connection.scalar(sa.select(sa.exists().where(*same))):
                return "present"
    return "written" if insert_activity(connection, table, tenant_setting, row) else "present"
