"""Dead letters: activities the hook could not write, kept durably until ``replay-activities``
writes them.

The store is a JSON-lines file (one payload per line, appended under an exclusive lock, readable by
its owner only), so it survives a database outage, which is exactly when it is needed. Every payload
carries its idempotency key, so replaying it any number of times, from any number of processes at
once, writes its row once.

The file is also the hook's journal: every activity is journaled there before its write (no fsync: a
killed process leaves it in the kernel's page cache) and settled (a ``{"settled": key}`` line) once
its row is written, so a process that dies in between leaves a dead letter, not a loss.
:meth:`DeadLetterFile.sync` makes the journal durable when the write failed;
:meth:`DeadLetterFile.append` (a dead letter proper) is fsynced. A settle cuts its own entry off the
file's end when nothing followed it; else it appends its line, and the file is rewritten without
what is settled once a quarter of it is (a look, at most :data:`COMPACT_MAX_BYTES` read, due each
time the file has grown by a quarter). So the file stays within a few times its unsettled entries,
whatever the number of pushes; one too large to read on a push is moved aside whole for the replay.

An append is whole or not at all (a short write on a full disk is cut back and raised), never glued
onto a partial line; a line that does not parse (a torn line) is counted apart, never hides the
others, and the replay sets it aside in ``<file>.rejected`` with the entries that can never be
written (a value the checks or the columns refuse), each with its reason. No file of the store is
opened through a symbolic link.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import pwd
import stat
import threading
import time
import typing as t
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa

from .activities import NoAccount, error_text, insert_activity, legacy_key, validate_payload
from .tables import set_tenant
from .timeutil import as_utc

logger = logging.getLogger("flowpilot_analytics.deadletter")

#: One dead letter as its JSON line reads back: the activity's fields by name.
Entry = dict[str, object]

FILE_MODE = 0o600
SETTING = "FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH"
#: Below this size a settle never reads the file: what is settled there costs less than a look.
COMPACT_BYTES = 64 * 1024
#: The most a settle reads (and parses) to compact the file, so that a push's share of the work
#: stays bounded whatever the backlog. A file past it when a look is due is moved aside whole (one
#: rename, as a replay does first), for the replay; a new file starts with the next append.
COMPACT_MAX_BYTES = 1024 * 1024
#: A look rewrites the file once at least this share of it is settled; the next look is due once
#: the file has grown by this share again, so each byte appended is read a bounded number of times.
COMPACT_SHARE = 4  # a quarter
#: What a settle line appended since a store's last look counts for (by any process: a store finds
#: them by their first bytes, without parsing): itself and about one entry of the hook's.
SETTLED_GUESS = 320
SETTLE_MARK = b'{"settled": '
#: How many of its own journal entries a store remembers the place of (to cut them back off the
#: file's end when they are settled and nothing followed them); older ones, dead letters mostly,
#: are settled with a line.
TRACKED = 1024
#: Seconds :meth:`DeadLetterFile.settle` waits for the file's lock unless told otherwise.
SETTLE_TIMEOUT = 1.0
#: Seconds a reader (the backlog gauge, ``doctor``) waits for the file's lock.
READ_TIMEOUT = 2.0
#: First and longest pause between two tries of a contended lock, in seconds.
POLL_FIRST, POLL_MAX = 0.0005, 0.002
#: Why a line that does not parse was set aside (``doctor`` counts these apart).
TORN = "torn line"

_NO_LINKS = (
    os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
)  # O_NONBLOCK: a FIFO planted there never blocks


def check_directory(path: str) -> None:
    """Refuse a dead-letter path in a folder others than its owner may write to (they could swap the
    files for links, or read them), or one that is not a regular file; raised at ``init_app``,
    naming the setting.

    A folder not made yet (it is made 0700 at the first write) must not be in a world-writable one,
    where anyone could make it first.
    """
    folder = os.path.dirname(os.path.abspath(path))
    shared = stat.S_IWGRP | stat.S_IWOTH
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder, shared = os.path.dirname(folder), stat.S_IWOTH
    mode = os.stat(folder).st_mode
    if mode & shared:
        who = "world" if mode & stat.S_IWOTH else "group"
        raise ValueError(
            f"The dead-letter folder {folder} is {who}-writable (mode {stat.S_IMODE(mode):o}); "
            f"choose a private folder with {SETTING}."
        )
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(found.st_mode):
        raise ValueError(
            f"The dead-letter path {path} is not a regular file (a symbolic link, folder or "
            f"device); choose another with {SETTING}."
        )


def _checked(path: str, descriptor: int, tighten: bool) -> int:
    """``descriptor`` if it is a regular file of one name (tightened to 0600 if wider), else closed
    and refused."""
    try:
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink > 1:
            raise OSError(
                errno.EPERM,
                f"{path} is not a regular file of one name; the dead-letter store refuses it",
            )
        if tighten and found.st_mode & 0o077:  # a file made by an older version, or by hand
            os.fchmod(descriptor, FILE_MODE)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _no_link(path: str, exc: OSError) -> OSError:
    if exc.errno == errno.ELOOP:
        return OSError(
            errno.ELOOP, f"{path} is a symbolic link; the dead-letter store follows none"
        )
    return exc


def _open(path: str, flags: int) -> int:
    """``path`` opened, created 0600 (in a 0700 folder) when new, never through a link."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    try:
        descriptor = os.open(path, flags | os.O_CREAT | _NO_LINKS, FILE_MODE)
    except OSError as exc:
        raise _no_link(path, exc) from None
    return _checked(path, descriptor, tighten=True)


def _open_existing(path: str, flags: int) -> int | None:
    """``path`` opened if it exists (else ``None``), never through a link."""
    try:
        descriptor = os.open(path, flags | _NO_LINKS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _no_link(path, exc) from None
    return _checked(path, descriptor, tighten=False)


def _create(path: str) -> int:
    """A new private file at ``path`` (never an existing one, never through a link), open for
    writing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINKS, FILE_MODE)


def _write_new(path: str, data: bytes) -> os.stat_result:
    """A new private file at ``path`` holding ``data``, fsynced (its name is not yet)."""
    descriptor = _create(path)
    try:
        _write_all(descriptor, data, 0)
        os.fsync(descriptor)
        return os.fstat(descriptor)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(descriptor)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError("the dead-letter file stayed locked past the deadline")


def _flock(descriptor: int, operation: int, deadline: float | None) -> None:
    """Take the lock, polling until ``deadline`` (``time.monotonic()``; ``None``: wait as long as it
    takes), so a contended lock never holds a push past its budget."""
    if deadline is None:
        fcntl.flock(descriptor, operation)
        return
    pause = POLL_FIRST
    while True:
        try:
            fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            _check_deadline(deadline)
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, POLL_MAX)


def _lock_current(path: str, descriptor: int, operation: int, deadline: float | None) -> bool:
    """Lock ``descriptor``; whether it still is the file at ``path`` (a replay or a compaction may
    have renamed it away while we waited: then the caller opens the new one, so nothing is ever
    appended to, or read from, a file that was moved aside)."""
    try:
        _flock(descriptor, operation, deadline)
        held = os.fstat(descriptor)
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
    except BaseException:
        os.close(descriptor)
        raise


@contextmanager
def _locked(path: str, deadline: float | None = None) -> t.Iterator[int]:
    """The file at ``path`` (created if need be) under an exclusive lock, released when it is
    closed."""
    while True:
        descriptor = _open(path, os.O_RDWR | os.O_APPEND)
        if _lock_current(path, descriptor, fcntl.LOCK_EX, deadline):
            break
        os.close(descriptor)
        _check_deadline(deadline)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def _read_locked(path: str, deadline: float) -> bytes:
    """The bytes of the file at ``path`` (empty if there is none), read under a shared lock, so
    whole."""
    while True:
        descriptor = _open_existing(path, os.O_RDONLY)
        if descriptor is None:
            return b""
        if _lock_current(path, descriptor, fcntl.LOCK_SH, deadline):
            break
        os.close(descriptor)
        _check_deadline(deadline)
    try:
        return _read_all(descriptor)
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, data: bytes, start: int) -> None:
    """Write all of ``data``, however short each write is; one that cannot finish (a full disk) cuts
    the file back to ``start`` and raises, so a line is kept whole or not at all."""
    view = memoryview(data)
    try:
        while view:
            written = os.write(descriptor, view)
            if written <= 0:
                raise OSError(errno.ENOSPC, "the dead-letter file took no more bytes")
            view = view[written:]
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, start)
        raise


def _append_at(descriptor: int, data: bytes) -> tuple[int, bytes]:
    """Append ``data`` (whole lines) to the locked file, on a line of its own: after a partial line
    (a torn tail) a newline ends it first, so it stays one torn line. Where it began, and the bytes
    written."""
    start = os.fstat(descriptor).st_size
    if start and os.pread(descriptor, 1, start - 1) != b"\n":
        data = b"\n" + data
    _write_all(descriptor, data, start)
    return start, data


def _append_to(descriptor: int, data: bytes) -> int:
    """:func:`_append_at`; the file's new size."""
    start, written = _append_at(descriptor, data)
    return start + len(written)


def _read_all(descriptor: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(descriptor, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _read(path: str) -> bytes:
    """The bytes of the file at ``path`` (empty when it is gone), never through a link."""
    descriptor = _open_existing(path, os.O_RDONLY)
    if descriptor is None:
        return b""
    try:
        return _read_all(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(path: str) -> None:
    descriptor = os.open(
        os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    )
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _line(payload: t.Mapping[str, object]) -> str:
    return (
        json.dumps(
            {**payload, "created_at": _iso(payload["created_at"])}, sort_keys=True, default=str
        )
        + "\n"
    )


Kind = t.Literal["entry", "settled", "torn"]


def _classify(raw: bytes) -> tuple[Kind, t.Any]:
    """What one stored line is: an entry (its payload), a settle line (its key), or torn (why)."""
    try:
        value = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return "torn", f"{TORN}: not JSON"
    return _kind(value)


def _parse_all(raws: list[bytes]) -> list[t.Any] | None:
    """Every line parsed in one call (a few times faster than one call a line, which a compaction's
    look on a push needs), or ``None`` unless each line is one whole JSON object: a torn line, which
    is then classified by itself. Lines that do not parse alone either fail here or merge into
    fewer values than lines."""
    if not all(raw.strip().startswith(b"{") and raw.strip().endswith(b"}") for raw in raws):
        return None
    try:
        values = json.loads(b"[" + b",".join(raws) + b"]")
    except ValueError:
        return None
    return values if isinstance(values, list) and len(values) == len(raws) else None


def _kind(value: object) -> tuple[Kind, t.Any]:
    """:func:`_classify`, for a line parsed."""
    if not isinstance(value, dict):
        return "torn", f"{TORN}: not a JSON object"
    if value.keys() == {"settled"}:
        if isinstance(value["settled"], str):
            return "settled", value["settled"]
        return "torn", f"{TORN}: a settle line without a key"
    if not isinstance(value.get("idempotency_key"), (str, type(None))):
        return "torn", f"{TORN}: an entry with a key that is not text"
    return "entry", value


@dataclass
class _Lines:
    """The lines of one or more store files, in order, classified."""

    items: list[tuple[Kind, bytes, t.Any]] = field(default_factory=list)
    settled: set[str] = field(default_factory=set)

    def read(self, data: bytes) -> _Lines:
        raws = [raw for raw in data.split(b"\n") if raw.strip()]
        values = _parse_all(raws)
        for i, raw in enumerate(raws):
            kind, value = _classify(raw) if values is None else _kind(values[i])
            self.items.append((kind, raw, value))
            if kind == "settled":
                self.settled.add(value)
        return self

    def current(self) -> list[bool]:
        """Per item, whether it is the entry that counts for its key: the hook journals an activity
        before reading the pushed object (``"partial": true``), then again, complete, under the same
        key. The last complete entry counts, wherever a partial one lands (a replay re-appends what
        it keeps); only a key with partial entries alone counts its last one."""
        last: dict[object, int] = {}
        complete: dict[object, int] = {}
        for i, (kind, _, value) in enumerate(self.items):
            if kind == "entry":
                key = value.get("idempotency_key")
                last[key] = i
                if value.get("partial") is not True:
                    complete[key] = i
        chosen = {**last, **complete}
        return [
            kind != "entry"
            or value.get("idempotency_key") is None
            or chosen[value.get("idempotency_key")] == i
            for i, (kind, _, value) in enumerate(self.items)
        ]

    def unsettled(self) -> list[tuple[bytes, Entry]]:
        """The entries not settled (dead letters, and journal entries whose write has not
        landed)."""
        return [
            (raw, value)
            for (kind, raw, value), current in zip(self.items, self.current())
            if kind == "entry" and current and value.get("idempotency_key") not in self.settled
        ]

    def torn(self) -> int:
        return sum(kind == "torn" for kind, _, _ in self.items)


class SetAside(t.NamedTuple):
    """What the replays set aside in ``<file>.rejected``: entries that can never be written, torn
    lines."""

    entries: int
    torn: int

    @property
    def total(self) -> int:
        return self.entries + self.torn


class DeadLetterStore(t.Protocol):
    """Where the hook keeps activities it could not write, until a replay writes them."""

    #: Where the store is, for log lines and the replay's report.
    location: str
    #: ``file`` or ``table``, for the backlog gauge.
    kind: str
    #: The file where replays set aside what can never be written, and torn lines.
    rejected_location: str

    def backlog(self) -> int | None:
        """How many dead letters wait, when that is cheap to read; else ``None``."""

    def append(self, payload: t.Mapping[str, object], timeout: float = 5.0) -> None:
        """Keep one activity durably, waiting at most ``timeout`` seconds for a lock or the
        database."""

    def journal(self, payload: t.Mapping[str, object], timeout: float = 5.0) -> None:
        """Keep an activity about to be written (not fsynced); :meth:`settle` drops it once
        written."""

    def settle(self, key: str, timeout: float = SETTLE_TIMEOUT) -> None:
        """The journaled activity with this idempotency key is written: it is no longer a dead
        letter."""

    def sync(self) -> None:
        """Make what was journaled durable (the write failed: the journal entry is the dead
        letter)."""

    def pending(self) -> list[Entry]:
        """Every activity not yet written back (torn lines left out: see :meth:`torn`)."""

    def torn(self) -> int:
        """How many stored lines do not parse (the next replay sets them aside)."""

    def rejected(self) -> SetAside:
        """What replays have set aside in :attr:`rejected_location`."""

    def check_owner(self) -> None:
        """Raise ``PermissionError`` (saying which user to run as) when this process is not the
        store's owner."""

    def drain(self, write: t.Callable[[Entry], str], retry_rejected: bool = False) -> ReplayReport:
        """Hand every entry to ``write``; drop those written or present, keep the failures that may
        pass, set aside those that never can (and torn lines)."""


class _Place(t.NamedTuple):
    """Where one journal append of this store went: its file (device, inode), offset, length and
    digest, and whether it was a partial entry."""

    file: tuple[int, int]
    start: int
    length: int
    digest: bytes
    partial: bool


@dataclass
class _Look:
    """What a store knows of the file it last looked at (device, inode): the size at which its next
    look is due, how many bytes the look found settled, and how many settle lines were appended
    since (counted up to ``scanned``)."""

    file: tuple[int, int]
    due: int
    settled: int
    scanned: int
    lines: int = 0


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _due(size: int) -> int:
    """When the next look at a file of ``size`` bytes is due: once it has grown by a
    :data:`COMPACT_SHARE` (and past :data:`COMPACT_BYTES`), and, while it can still be looked at,
    no later than just under :data:`COMPACT_MAX_BYTES`, so that a file mostly settled is compacted
    rather than moved aside."""
    due = max(COMPACT_BYTES, size + size // COMPACT_SHARE)
    ceiling = COMPACT_MAX_BYTES - COMPACT_BYTES
    return min(due, ceiling) if size < ceiling else due


def _cut(descriptor: int, places: list[_Place]) -> bool:
    """Cut one key's journal entries off the end of the locked file when they end it, one after the
    other, as this store wrote them in this very file (so no copy of the key is left elsewhere to
    come back unsettled); whether it did. The file is then as it was before they were journaled."""
    found = os.fstat(descriptor)
    here, start = (found.st_dev, found.st_ino), places[0].start
    if any(place.file != here for place in places):
        return False
    ends = [place.start + place.length for place in places]
    if ends[-1] != found.st_size or any(end != place.start for end, place in zip(ends, places[1:])):
        return False
    tail = os.pread(descriptor, found.st_size - start, start)
    if any(
        _digest(tail[place.start - start : place.start - start + place.length]) != place.digest
        for place in places
    ):
        return False
    try:
        os.ftruncate(descriptor, start)
    except OSError:
        return False
    return True


class DeadLetterFile:
    """Append-only JSON lines; ``drain`` hands the entries to a writer and keeps only those it could
    not write.

    Files beside it: ``<file>.lock`` (one replay at a time), ``<file>.replaying.<n>`` (entries a
    replay moved aside, or a file a settle found too large to compact and moved aside whole),
    ``<file>.rejected`` (what replays set aside), and for a moment the new file of a compaction
    (``<file>.compacting.<pid>.<n>``) or of ``.rejected`` (``<file>.rejected.<n>``). None is opened
    through a link, and every one is created 0600.
    """

    kind = "file"

    def __init__(self, path: str) -> None:
        check_directory(path)
        self.location = self.path = path
        self.replay_lock = path + ".lock"
        self.rejected_location = path + ".rejected"
        #: Where this store journaled each key not yet settled (the last :data:`TRACKED` keys).
        self._journaled: dict[str, list[_Place]] = {}
        #: This store's last look at the file, and when the next one is due.
        self._looked: _Look | None = None
        self._synced_name: tuple[int, int] | None = (
            None  # the file whose name this process made durable
        )
        self._counted: tuple[t.Any, tuple[int, int]] | None = (
            None  # (the files' stat, (backlog, torn))
        )
        self._threads = (os.getpid(), threading.Lock())

    @contextmanager
    def _appending(self, timeout: float) -> t.Iterator[int]:
        """The file locked for an append within ``timeout`` seconds: this process's threads queue on
        a lock of their own first (woken in turn, none polling), so only one of them at a time polls
        the file's lock."""
        deadline = time.monotonic() + timeout
        pid, lock = self._threads
        if (
            pid != os.getpid()
        ):  # a forked child: the parent's lock may have been held by a thread not copied
            self._threads = pid, lock = os.getpid(), threading.Lock()
        left = deadline - time.monotonic()
        if not (lock.acquire(timeout=left) if left > 0 else lock.acquire(blocking=False)):
            raise TimeoutError("the dead-letter file stayed locked past the deadline")
        try:
            with _locked(self.path, deadline) as descriptor:
                yield descriptor
        finally:
            lock.release()

    # -- writing -----------------------------------------------------------------------------------
    def append(self, payload: t.Mapping[str, object], timeout: float = 5.0) -> None:
        """Keep one activity durably (fsynced), waiting at most ``timeout`` seconds for the file's
        lock."""
        data = _line(payload).encode("utf-8")
        with self._appending(timeout) as descriptor:
            _append_to(descriptor, data)
            self._fsync(descriptor)

    def journal(self, payload: t.Mapping[str, object], timeout: float = 5.0) -> None:
        """Journal an activity before its write, without fsync (:meth:`sync` if the write fails);
        where it went is remembered, so that its settle can cut it off the file's end."""
        data = _line(payload).encode("utf-8")
        with self._appending(timeout) as descriptor:
            start, written = _append_at(descriptor, data)
            key = payload.get("idempotency_key")
            if isinstance(key, str):
                found = os.fstat(descriptor)
                self._remember(
                    key,
                    _Place(
                        (found.st_dev, found.st_ino),
                        start,
                        len(written),
                        _digest(written),
                        payload.get("partial") is True,
                    ),
                )

    def _remember(self, key: str, place: _Place) -> None:
        """Add ``place`` to the key's places; past :data:`TRACKED` keys, forget the oldest one whose
        last entry is complete (the hook journals nothing more under it, so its settle just appends
        a line) or, failing that, the oldest."""
        self._journaled.setdefault(key, []).append(place)
        if len(self._journaled) <= TRACKED:
            return
        oldest = next(iter(self._journaled))
        for known, places in self._journaled.items():
            if not places[-1].partial:
                oldest = known
                break
        del self._journaled[oldest]

    def settle(self, key: str, timeout: float = SETTLE_TIMEOUT) -> None:
        """Mark the journal entry ``key`` written (no fsync: a lost settle only means a replay finds
        the row present). When this store's entries for the key end the file, they are cut off it,
        so the push leaves nothing; else a ``{"settled": key}`` line is appended. Either way the
        file is compacted when that is due (:meth:`_tidy`)."""
        data = (json.dumps({"settled": key}) + "\n").encode("utf-8")
        with self._appending(timeout) as descriptor:
            places = self._journaled.pop(key, None)
            if not (places and _cut(descriptor, places)):
                _append_to(descriptor, data)
            self._tidy(descriptor)

    def sync(self) -> None:
        """fsync the file (and a replay's aside files, which may hold what was journaled)."""
        for path in [*self._aside(), self.path]:
            descriptor = _open_existing(path, os.O_RDONLY)
            if descriptor is None:
                continue
            try:
                if path == self.path:
                    self._fsync(descriptor)
                else:
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def _fsync(self, descriptor: int) -> None:
        """fsync the file, and its folder the first time this process makes a new file durable (its
        name)."""
        os.fsync(descriptor)
        found = os.fstat(descriptor)
        if self._synced_name != (found.st_dev, found.st_ino):
            _fsync_folder(self.path)
            self._synced_name = (found.st_dev, found.st_ino)

    # -- compacting --------------------------------------------------------------------------------
    def _tidy(self, descriptor: int) -> None:
        """After a settle: look at the locked file when a look is due (past :data:`COMPACT_BYTES`,
        and grown by a :data:`COMPACT_SHARE` since this store's last look at it, or that much
        settled by the count of settle lines appended since, by any process; or not looked at by
        this store) and rewrite it without what is settled once a quarter of it is. A file past
        :data:`COMPACT_MAX_BYTES` is not read on a push: it is moved aside whole for the replay,
        and a new file starts. So a push reads at most that much, each byte is read a bounded
        number of times, and the file stays within a few times what is unsettled; a failure leaves
        the file complete, to be tried again at a later look."""
        found = os.fstat(descriptor)
        here, size, look = (found.st_dev, found.st_ino), found.st_size, self._looked
        if look is not None and look.file == here:
            grown = size - look.scanned  # what was appended since (a cut only takes back its own)
            if 0 < grown <= COMPACT_MAX_BYTES:  # more is never read on a push: a look is due
                look.lines += os.pread(descriptor, grown, look.scanned).count(SETTLE_MARK)
            look.scanned = size
            settled = look.settled + look.lines * SETTLED_GUESS
            if grown <= COMPACT_MAX_BYTES and size < look.due and settled * COMPACT_SHARE < size:
                return
        if size <= COMPACT_BYTES:
            return
        try:
            if size > COMPACT_MAX_BYTES:
                self._seal()
            else:
                self._look(descriptor, here)
        except OSError as exc:
            self._looked = _Look(here, _due(size), 0, size)
            logger.warning(
                "could not compact the dead-letter file %s (%s)", self.path, error_text(exc)
            )

    def _look(self, descriptor: int, here: tuple[int, int]) -> None:
        """Read the locked file; rewrite it with only what must stay (:meth:`_kept`) when at least a
        :data:`COMPACT_SHARE` of it need not; note when the next look is due."""
        data = _read_all(descriptor)
        kept = self._kept(data)
        settled = len(data) - len(kept)
        if settled * COMPACT_SHARE >= len(data):
            self._looked = _Look(self._rewrite(kept), _due(len(kept)), 0, len(kept))
        else:
            self._looked = _Look(here, _due(len(data)), settled, len(data))

    def _kept(self, data: bytes) -> bytes:
        """What a compaction keeps of the file: its unsettled entries and torn lines, and the settle
        lines whose entry an aside file may hold."""
        lines = _Lines().read(data)
        entries = {
            value.get("idempotency_key") for kind, _, value in lines.items if kind == "entry"
        }
        replaying = bool(self._aside())
        return b"".join(
            raw + b"\n"
            for (kind, raw, value), current in zip(lines.items, lines.current())
            if kind == "torn"
            or (kind == "entry" and current and value.get("idempotency_key") not in lines.settled)
            or (kind == "settled" and replaying and value not in entries)
        )

    def _rewrite(self, data: bytes) -> tuple[int, int]:
        """Replace the locked file with ``data``: a new file in the same folder, fsynced, renamed
        over it. Appenders waiting for the lock then open the new file (see
        :func:`_lock_current`). The new file's (device, inode)."""
        temporary = f"{self.path}.compacting.{os.getpid()}.{time.time_ns()}"
        new = _write_new(temporary, data)
        try:
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_folder(self.path)
        self._synced_name = (new.st_dev, new.st_ino)
        return new.st_dev, new.st_ino

    def _seal(self) -> None:
        """Move the locked file aside whole (``<file>.replaying.<n>``, as a replay does first): one
        rename, whatever its size. Every reader and the replay read aside files with the file, so
        nothing in it is lost or doubled; the next append starts a new file."""
        os.replace(self.path, f"{self.path}.replaying.{time.time_ns()}")
        _fsync_folder(self.path)
        self._looked = None

    # -- reading -----------------------------------------------------------------------------------
    def _aside(self) -> list[str]:
        """Files moved aside by replays, oldest first (those of a replay that died come first)."""
        return sorted(glob.glob(glob.escape(self.path) + ".replaying*"))

    def _lines(self) -> _Lines:
        """Every stored line: the aside files', then the file's."""
        lines = _Lines()
        for path in self._aside():
            lines.read(_read(path))
        return lines.read(_read_locked(self.path, time.monotonic() + READ_TIMEOUT))

    def pending(self) -> list[Entry]:
        """Every entry not yet written (those of an interrupted replay included), settled ones and
        torn lines left out."""
        return [value for _, value in self._lines().unsettled()]

    def _counts(self) -> tuple[int, int]:
        """(backlog, torn lines), read again only when a file changed (inode, size, modification
        time)."""
        files = []
        for path in [*self._aside(), self.path]:
            try:
                found = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                continue
            files.append((path, found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns))
        key = tuple(files)
        counted = self._counted
        if counted is not None and counted[0] == key:
            return counted[1]
        lines = self._lines()
        counts = (len(lines.unsettled()), lines.torn())
        self._counted = (key, counts)
        return counts

    def backlog(self) -> int | None:
        """How many dead letters wait (a read of the local file, cached while it does not
        change)."""
        return self._counts()[0]

    def torn(self) -> int:
        """How many stored lines do not parse (cut by a crash or a full disk); a replay sets them
        aside."""
        return self._counts()[1]

    def rejected(self) -> SetAside:
        """What replays have set aside in ``<file>.rejected``."""
        entries = torn = 0
        for raw in _read(self.rejected_location).split(b"\n"):
            if raw.strip():
                line = _set_aside_line(raw)
                if line is not None and _classify(line)[0] == "entry":
                    entries += 1
                else:
                    torn += 1
        return SetAside(entries, torn)

    def check_owner(self) -> None:
        """Refuse to replay as another user than the store's owner (its file, or else its folder): a
        replay run with ``sudo`` would leave files the app cannot write, and the app would lose its
        dead letters."""
        target = (
            self.path if os.path.lexists(self.path) else os.path.dirname(os.path.abspath(self.path))
        )
        try:
            owner = os.lstat(target).st_uid
        except FileNotFoundError:
            return
        me = os.geteuid()
        if owner != me:
            name = _name(owner)
            raise PermissionError(
                f"The dead-letter store {target} belongs to {_user(owner)}, but this runs as "
                f"{_user(me)}. Run replay-activities as {name or f'uid {owner}'} "
                f"(e.g. `sudo -u {name or f'#{owner}'} flask flowpilot-analytics "
                "replay-activities`), so that the store stays theirs; nothing was changed."
            )

    # -- replaying ---------------------------------------------------------------------------------
    @contextmanager
    def replaying(self) -> t.Iterator[None]:
        """Hold ``<file>.lock``: one replay at a time (another waits for it, then finds what is
        left). With no folder yet there is nothing to replay from the file, and the folder is not
        made (by whoever runs it)."""
        if not os.path.isdir(os.path.dirname(os.path.abspath(self.path))):
            yield
            return
        lock = _open(self.replay_lock, os.O_RDWR)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)

    def drain(self, write: t.Callable[[Entry], str], retry_rejected: bool = False) -> ReplayReport:
        """Write every entry with ``write`` (returns ``"written"`` or ``"present"``); keep the
        failures that may pass, set aside in ``<file>.rejected`` the entries that never can, and
        torn lines.

        One replay at a time holds ``<file>.lock``. The file is renamed aside
        (``<file>.replaying.<n>``) under its own lock, which takes a moment, so pushes meanwhile
        append to a new file without waiting for the replay; kept entries go back to that file at
        the end. A replay that dies half-way leaves its aside file, and the next one starts with it:
        entries it had written are then found present by their idempotency key. With
        ``retry_rejected`` the entries set aside before are tried again.
        """
        report = ReplayReport()
        with self.replaying():
            self.drain_held(write, report, retry_rejected)
        return report

    def drain_held(
        self, write: t.Callable[[Entry], str], report: ReplayReport, retry: bool
    ) -> None:
        """:meth:`drain`, for a caller that holds :meth:`replaying`."""
        if retry:
            self._requeue_rejected(report)
        if os.path.lexists(self.path):
            with _locked(
                self.path
            ):  # no compaction runs meanwhile: a file of one left behind is stale
                os.replace(self.path, f"{self.path}.replaying.{time.time_ns()}")
                for stale in glob.glob(glob.escape(self.path) + ".compacting.*"):
                    with contextlib.suppress(OSError):
                        os.remove(stale)
        aside = self._aside()
        lines = _Lines()
        for path in aside:
            lines.read(_read(path))
        kept: list[bytes] = []
        rejected: list[bytes] = []
        for (kind, raw, value), current in zip(lines.items, lines.current()):
            if kind == "torn":
                rejected.append(_record(value, raw))
                report.torn += 1
            elif kind == "entry" and current and value.get("idempotency_key") not in lines.settled:
                action, reason = _replay_entry(value, write, report)
                if action == "keep":
                    kept.append(raw + b"\n")
                elif action == "set_aside":
                    rejected.append(_record(reason, raw))
        if rejected:
            self.set_aside(rejected)
        if kept:
            with _locked(self.path) as descriptor:
                _append_to(descriptor, b"".join(kept))
                self._fsync(descriptor)
        for path in aside:
            os.remove(path)

    def set_aside(self, records: t.Sequence[bytes]) -> None:
        """Append records to ``<file>.rejected``, fsynced (before their entries leave the store)."""
        with _locked(self.rejected_location) as descriptor:
            _append_to(descriptor, b"".join(records))
            os.fsync(descriptor)
        _fsync_folder(self.rejected_location)

    def _requeue_rejected(self, report: ReplayReport) -> None:
        """Move the entries set aside back into the store (into a new aside file, fsynced, first),
        leaving only the torn lines in ``<file>.rejected``."""
        if not os.path.lexists(self.rejected_location):
            return
        with _locked(self.rejected_location) as descriptor:
            retry: list[bytes] = []
            stay: list[bytes] = []
            for raw in _read_all(descriptor).split(b"\n"):
                if not raw.strip():
                    continue
                line = _set_aside_line(raw)
                if line is not None and _classify(line)[0] == "entry":
                    retry.append(line + b"\n")
                else:
                    stay.append(raw + b"\n")
            if not retry:
                return
            _write_new(f"{self.path}.replaying.{time.time_ns()}", b"".join(retry))
            _fsync_folder(self.path)
            temporary = f"{self.rejected_location}.{time.time_ns()}"
            _write_new(temporary, b"".join(stay))
            os.replace(temporary, self.rejected_location)
            _fsync_folder(self.path)
        report.requeued += len(retry)


def _set_aside_line(record: bytes) -> bytes | None:
    """The stored line a ``<file>.rejected`` record holds (``None`` for a record cut short)."""
    try:
        line = json.loads(record)["line"]
    except (ValueError, TypeError, KeyError):
        return None
    return line.encode("utf-8") if isinstance(line, str) else None


def _record(reason: str, raw: bytes) -> bytes:
    """One ``<file>.rejected`` record: when, why, and the line as it was stored."""
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (
        json.dumps({"at": at, "reason": reason, "line": raw.decode("utf-8", "backslashreplace")})
        + "\n"
    ).encode()


def _name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _user(uid: int) -> str:
    name = _name(uid)
    return f"user {name} (uid {uid})" if name else f"uid {uid}"


Action = t.Literal["done", "keep", "set_aside"]


def _replay_entry(
    entry: Entry, write: t.Callable[[Entry], str], report: ReplayReport
) -> tuple[Action, str]:
    """Replay one stored entry: done (written or present), kept for the next replay (a failure that
    may pass), or set aside (with the reason it can never be written)."""
    key = entry.get("idempotency_key")
    try:
        outcome = write(_load(entry))
    except Exception as exc:
        reason = _never_writable(exc)
        if reason is None:
            report.failed += 1
            report.errors.append(error_text(exc)[:200])
            return "keep", ""
        report.rejected += 1
        report.reasons.append(f"{key}: {reason}")
        return "set_aside", reason
    if outcome == "written":
        report.written += 1
    else:
        report.present += 1
    return "done", ""


def _never_writable(exc: Exception) -> str | None:
    """Why an entry can never be written, when its failure says so (a value the checks, the columns
    or a constraint refuse); ``None`` for a failure that may pass (the database down or locked, a
    missing table, an activity still without its account). One short line: the checks name the
    field, never its value, and of a database's message only the first line is kept (its detail,
    with the row's values, is not)."""
    if isinstance(exc, NoAccount):
        return None
    cause: BaseException | None = exc
    if isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError)):
        # insert_activity skips a row already there (ON CONFLICT DO NOTHING, or a savepoint on other
        # databases), so an integrity error here is a constraint the row breaks, never the
        # idempotency dedup
        cause = exc.orig
    elif isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError):
        cause = exc.orig  # a value the driver could not send
        if not isinstance(cause, (ValueError, TypeError, OverflowError)):
            return None
    elif not isinstance(exc, (ValueError, TypeError, OverflowError)):
        return None
    cause = cause or exc
    return f"{type(cause).__name__}: {str(cause).strip()}".splitlines()[0][:200]


@dataclass
class ReplayReport:
    """What ``replay-activities`` did."""

    written: int = 0
    present: int = 0
    #: Failures that may pass (kept for the next replay), and their errors.
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    #: Entries set aside as never writable, and why (``key: reason``).
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    #: Torn lines set aside.
    torn: int = 0
    #: Entries set aside before, moved back for this replay (``retry_rejected``).
    requeued: int = 0


def _iso(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _load(entry: Entry) -> Entry:
    """The entry with ``created_at`` read back as an aware UTC datetime (JSON holds it as text)."""
    created = entry.get("created_at")
    if isinstance(created, (str, datetime)):
        entry["created_at"] = as_utc(created)
    return entry


def _python_type(column: sa.ColumnElement[object]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def replay_one(
    connection: sa.Connection,
    table: sa.Table,
    tenant_setting: str | None,
    payload: t.Mapping[str, object],
) -> str:
    """Write one dead letter unless its row is already there; ``"written"`` or ``"present"``.

    The payload is checked as the hook checks it, against what ``table``'s columns can hold too (a
    bad one raises ``ValueError`` and is set aside). An entry from before idempotency keys gets a
    key derived from its content, and is also looked up the way 0.1 deduplicated it (same account,
    type and external id; or, without an external id, same account, type, session and time), since
    an older replay may have written it without a key.
    """
    activity = validate_payload(payload, table)
    if (
        _python_type(table.c.account_id) is uuid.UUID
    ):  # JSON holds UUID ids as text; the columns want UUIDs
        account, session = activity.account_id, activity.session_id
        activity = dataclasses.replace(
            activity,
            account_id=uuid.UUID(account) if isinstance(account, str) else account,
            session_id=uuid.UUID(session) if isinstance(session, str) else session,
        )
    if activity.idempotency_key is None:
        activity = dataclasses.replace(activity, idempotency_key=legacy_key(activity.row()))
        c = table.c
        same = [c.account_id == activity.account_id, c.activity_type == activity.activity_type]
        if activity.external_id is not None:
            same.append(c.external_id == activity.external_id)
        else:
            same += [
                c.external_id.is_(None),
                c.created_at == activity.created_at,
                c.session_id.is_(None)
                if activity.session_id is None
                else c.session_id == activity.session_id,
            ]
        with (
            connection.begin()
        ):  # under row-level security the lookup must run as the activity's account
            set_tenant(connection, tenant_setting, activity.account_id)
            if connection.scalar(sa.select(sa.exists().where(*same))):
                return "present"
    return "written" if insert_activity(connection, table, tenant_setting, activity) else "present"
