"""The dead-letter journal stays bounded by what is unsettled, whatever the number of pushes (issue
22, item 7): on SQLite with and without a host transaction open around the pushes, and on
PostgreSQL; a large backlog never makes a push read more than COMPACT_MAX_BYTES, and compaction
never loses or doubles a dead letter, with several writers and a replay at once."""

from __future__ import annotations

import glob
import json
import os
import threading
import types
import typing as t

import pytest
import sqlalchemy as sa

from flowpilot_analytics import deadletter, registration
from flowpilot_analytics.deadletter import COMPACT_BYTES, COMPACT_MAX_BYTES, DeadLetterFile

from . import factories as f
from .fake_psa import FakePsaService
from .helpers import activity_rows
from .helpers import journal_entry as entry
from .host import db


def line(key: str) -> int:
    """The bytes of one journal entry as the store writes it."""
    return len(json.dumps(entry(key), default=str)) + 1


def size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def aside(path: str) -> list[str]:
    return sorted(glob.glob(glob.escape(path) + ".replaying*"))


def pending_keys(store: DeadLetterFile) -> list[str]:
    return sorted(e["idempotency_key"] for e in store.pending())


@pytest.fixture
def store(tmp_path: t.Any) -> DeadLetterFile:
    return DeadLetterFile(str(tmp_path / "dead.jsonl"))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every whole-file read a store makes under its lock (a compaction's look)."""
    seen: list[int] = []
    real = deadletter._read_all

    def counting(descriptor: int) -> bytes:
        data = real(descriptor)
        seen.append(len(data))
        return data

    monkeypatch.setattr(deadletter, "_read_all", counting)
    return seen


# -- through the hook ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host_transaction", "pushes"),
    [("none", 600), ("around each push", 600), ("around all the pushes", 2000)],
)
def test_the_journal_does_not_grow_with_the_pushes(
    app: t.Any, dialect: str, host_transaction: str, pushes: int
) -> None:
    """The tester's report: on SQLite the journal grew with every push. Pushes through the fake PSA
    with no host transaction, with one opened (a query) around each push, or with one around all
    of them (on SQLite the journal entries then stay until it ends: that many are live at once);
    then 300 more pushes of an expired ORM object with none. Before the fix, 2,000 entries settled
    at once left a file of about 560 KB that no later settle compacted again, and each later push
    added about 320 bytes."""
    psa = t.cast(FakePsaService, app.extensions["test_psa"])
    store = registration(app).dead_letters
    sess = f.session(1, f.at(days=1), ticket="T-1")
    pushed = types.SimpleNamespace(id=sess.id, account_id=1, psa_ticket_id="T-1")
    f.commit()
    largest = 0
    if host_transaction == "around all the pushes":
        db.session.execute(sa.text("SELECT 1"))
    for i in range(pushes):
        if host_transaction == "around each push":
            db.session.execute(sa.text("SELECT 1"))
        psa.push_time_entry(pushed, 1 + i % 50)
        if host_transaction == "around each push":
            db.session.commit()
        largest = max(largest, size(store.path))
    if host_transaction == "around all the pushes":
        if dialect == "sqlite":  # every entry is live until the host's transaction ends
            assert len(store.pending()) == pushes
        db.session.commit()
    settled_at_once = size(store.path)
    after: list[int] = []
    for i in range(300):  # an expired ORM object: a partial entry first, then the complete one
        psa.push_note(sess, f"note {i}")
        after.append(size(store.path))
    entry_bytes = line("0" * 36) + 40  # the hook's entries carry a few more fields
    print(
        f"\n{dialect}, host transaction {host_transaction}: {pushes} pushes, largest "
        f"{largest} bytes, {settled_at_once} once settled, {after[-1]} after 300 more"
    )
    if host_transaction != "around all the pushes" or dialect != "sqlite":
        assert largest <= COMPACT_BYTES + 4 * entry_bytes  # never more than a few in flight
    assert settled_at_once <= COMPACT_BYTES + entry_bytes  # all settled: compacted away
    assert max(after) <= COMPACT_BYTES + 4 * entry_bytes
    assert after[-1] <= settled_at_once  # the later pushes add nothing
    assert store.pending() == [] and store.torn() == 0
    assert aside(store.path) == []  # nothing was too large to compact
    rows = activity_rows()
    assert len(rows) == pushes + 300
    assert len({r["idempotency_key"] for r in rows}) == pushes + 300


# -- the store -------------------------------------------------------------------------------------


def test_a_settle_cuts_its_own_entries_off_the_end(store: DeadLetterFile) -> None:
    """Nothing followed the entry (one writer): the settle takes the file back to what it was."""
    store.append(entry("dead"))
    before = size(store.path)
    store.journal(entry("A", partial=True), timeout=1.0)
    store.journal(entry("A"), timeout=1.0)  # the complete entry, once the pushed object was read
    store.settle("A")
    assert size(store.path) == before
    assert pending_keys(store) == ["dead"]
    store.journal(entry("B"), timeout=1.0)
    store.journal(entry("C"), timeout=1.0)
    store.settle("B")  # C followed it: a settle line
    store.settle("C")  # its settle line followed B's entry: another
    assert size(store.path) == before + 2 * line("B") + 2 * (len(json.dumps({"settled": "B"})) + 1)
    assert pending_keys(store) == ["dead"]


def test_an_entry_another_store_wrote_after_is_settled_with_a_line(tmp_path: t.Any) -> None:
    """Two workers: the entry of one is no longer last once the other journaled; each settle leaves
    the other's entry whole."""
    path = str(tmp_path / "dead.jsonl")
    one, two = DeadLetterFile(path), DeadLetterFile(path)
    one.journal(entry("A"), timeout=1.0)
    two.journal(entry("B"), timeout=1.0)
    one.settle("A")
    assert pending_keys(one) == ["B"]
    two.settle("B")
    assert pending_keys(one) == [] and pending_keys(two) == []


def test_an_entry_moved_aside_by_a_replay_is_never_cut(store: DeadLetterFile) -> None:
    """A replay renamed the file while the write ran, and kept the partial entry (no account yet):
    the settle must cover that copy too, so it appends a line instead of cutting its complete entry
    off the new file."""
    store.journal(entry("A", partial=True, account_id=None), timeout=1.0)
    report = store.drain(lambda payload: "written" if payload["account_id"] else _no_account())
    assert (report.written, report.failed) == (0, 1)  # kept, back in the new file
    store.journal(entry("A"), timeout=1.0)
    store.settle("A")
    assert store.pending() == []


def _no_account() -> t.NoReturn:
    raise deadletter.NoAccount("no account yet", t.cast(t.Any, None))


def test_what_other_workers_settle_is_compacted_too(tmp_path: t.Any) -> None:
    """Eight workers each journal 300 activities in one long host transaction, then settle them: no
    worker alone settled a quarter of the file, and the settle lines grow it by less than that, yet
    the settled entries go; the pushes after (one at a time) leave nothing either."""
    path = str(tmp_path / "dead.jsonl")
    workers = [DeadLetterFile(path) for _ in range(8)]
    keys = [[f"{w}-{i:04d}" for i in range(300)] for w in range(8)]
    for i in range(300):
        for w, worker in enumerate(workers):
            worker.journal(entry(keys[w][i]), timeout=5.0)
    journaled = size(path)
    for i in range(300):
        for w, worker in enumerate(workers):
            worker.settle(keys[w][i])
    settled = size(path)
    for i in range(100):
        workers[i % 8].journal(entry(f"later-{i}"), timeout=5.0)
        workers[i % 8].settle(f"later-{i}")
    print(f"\n2,400 entries of 8 workers: {journaled} bytes journaled, {settled} once settled")
    assert journaled > 4 * COMPACT_BYTES
    assert settled <= COMPACT_BYTES and size(path) <= settled
    assert workers[0].pending() == [] and aside(path) == []


def test_a_store_that_forgets_places_never_strands_a_partial_entry(
    store: DeadLetterFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past TRACKED keys a store forgets where it journaled the oldest complete entry, never a
    partial one whose complete entry is still to come: a settle that cut only the complete entry
    would leave the partial one as a dead letter that never goes."""
    monkeypatch.setattr(deadletter, "TRACKED", 1)
    store.journal(entry("P", partial=True), timeout=1.0)  # the pushed object is being read
    store.journal(entry("Q"), timeout=1.0)  # another push meanwhile
    store.settle("Q")
    store.journal(entry("P"), timeout=1.0)
    store.settle("P")
    assert store.pending() == []


def test_a_torn_line_is_read_apart_whatever_follows_it(store: DeadLetterFile) -> None:
    """The file is parsed in one call when every line is whole; a torn line that ends like a whole
    one (here inside a text) must not merge with the next line, nor hide it."""
    store.append(entry("A"))
    cut = json.dumps(entry("B", external_id="ends}with}braces"), default=str)
    cut = cut[: cut.index("braces")]  # '{... "external_id": "ends}with}'
    with open(store.path, "a") as handle:
        handle.write(cut + "\n")
    store.journal(entry("C"), timeout=1.0)
    store.journal(entry("D"), timeout=1.0)
    store.settle("C")
    assert pending_keys(store) == ["A", "D"] and store.torn() == 1


def test_settled_lines_are_compacted_regardless_of_a_live_backlog(
    store: DeadLetterFile, reads: list[int]
) -> None:
    """A backlog of dead letters (about 600 KB, after an outage), then pushes from two workers whose
    entries interleave: the settled ones are compacted away however large the backlog, each look
    reads at most COMPACT_MAX_BYTES, and once the backlog is settled too (late writes) it goes."""
    backlog = [f"old-{i:05d}" for i in range(600 * 1024 // line("old-00000"))]
    with open(store.path, "w") as handle:
        handle.writelines(json.dumps(entry(key), default=str) + "\n" for key in backlog)
    live = size(store.path)
    other = DeadLetterFile(store.path)
    largest = 0
    for i in range(3000):
        store.journal(entry(f"a-{i:05d}"), timeout=5.0)
        other.journal(entry(f"b-{i:05d}"), timeout=5.0)
        store.settle(f"a-{i:05d}")
        other.settle(f"b-{i:05d}")
        largest = max(largest, size(store.path))
    print(f"\n{live} bytes live, 6,000 interleaved pushes: the file peaked at {largest} bytes")
    assert largest <= 2 * live + COMPACT_BYTES  # uncompacted: about 1.9 MB more
    assert max(reads) <= COMPACT_MAX_BYTES
    assert pending_keys(store) == backlog
    for key in backlog:  # their writes landed late after all
        store.settle(key)
    assert size(store.path) <= COMPACT_BYTES
    assert store.pending() == [] and aside(store.path) == []


def test_a_backlog_too_large_to_read_is_moved_aside_whole(
    store: DeadLetterFile, reads: list[int]
) -> None:
    """Past COMPACT_MAX_BYTES (real dead letters after an outage, or a file an older version let
    grow) a settle does not read the file: one rename moves it aside for the replay, the pushes
    after it go to a new file that stays small, and the replay writes every old entry once."""
    backlog = []
    with open(store.path, "w") as handle:
        written = 0
        while written <= 2 * COMPACT_MAX_BYTES:
            backlog.append(f"old-{len(backlog):06d}")
            handle.write(json.dumps(entry(backlog[-1]), default=str) + "\n")
            written += line(backlog[-1])
    before = os.stat(store.path)
    other = DeadLetterFile(store.path)
    for i in range(1000):
        store.journal(entry(f"a-{i:05d}"), timeout=5.0)
        other.journal(entry(f"b-{i:05d}"), timeout=5.0)
        store.settle(f"a-{i:05d}")
        other.settle(f"b-{i:05d}")
    assert max(reads, default=0) <= COMPACT_MAX_BYTES  # no push read the backlog
    [moved] = aside(store.path)
    assert os.stat(moved).st_ino == before.st_ino  # moved, not rewritten
    assert os.stat(moved).st_mode & 0o777 == 0o600
    assert size(store.path) <= COMPACT_BYTES
    assert pending_keys(store) == backlog
    written_keys: list[str] = []
    report = store.drain(
        lambda payload: written_keys.append(payload["idempotency_key"]) or "written"
    )
    assert report.written == len(backlog) and sorted(written_keys) == backlog
    assert store.pending() == [] and aside(store.path) == []


def test_writers_compactions_and_replays_at_once_lose_and_double_nothing(
    store: DeadLetterFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three workers journal and settle (every 10th write "fails" and stays, some settles come
    late, after other entries) while replays drain the file now and then; the thresholds are
    lowered so that compactions and moves aside happen all along. Every unsettled entry reaches a
    replay exactly once, no other entry is ever written twice, and the store ends empty."""
    monkeypatch.setattr(deadletter, "COMPACT_BYTES", 2 * 1024)
    monkeypatch.setattr(deadletter, "COMPACT_MAX_BYTES", 12 * 1024)
    happened: list[str] = []
    for name in ("_rewrite", "_seal"):
        real = getattr(DeadLetterFile, name)

        def counting(self: t.Any, *args: t.Any, _real: t.Any = real, _name: str = name) -> t.Any:
            happened.append(_name)
            return _real(self, *args)

        monkeypatch.setattr(DeadLetterFile, name, counting)
    errors: list[BaseException] = []
    written: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    turns = threading.Semaphore(0)  # a replay after every 300 pushes of a worker

    def write(payload: t.Mapping[str, t.Any]) -> str:
        with lock:
            written.append(payload["idempotency_key"])
        return "written"

    def worker(name: str) -> None:
        mine = DeadLetterFile(store.path)
        late: list[str] = []
        try:
            for i in range(1500):
                key = f"{name}-{i:04d}"
                mine.journal(entry(key), timeout=5.0)
                if i % 300 == 299:
                    turns.release()
                if i % 10 == 7:
                    continue  # a dead letter
                if i % 9 == 0:
                    late.append(key)  # settled after the next entries
                else:
                    mine.settle(key, timeout=5.0)
                if len(late) > 3:
                    mine.settle(late.pop(0), timeout=5.0)
            for key in late:
                mine.settle(key, timeout=5.0)
        except BaseException as exc:
            errors.append(exc)

    def replayer() -> None:
        mine = DeadLetterFile(store.path)
        try:
            while turns.acquire() and not done.is_set():
                mine.drain(write)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(name,)) for name in "abc"]
    replaying = threading.Thread(target=replayer)
    replaying.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    turns.release()
    replaying.join()
    assert errors == []
    print(f"\n{happened.count('_rewrite')} compactions, {happened.count('_seal')} moves aside")
    assert "_rewrite" in happened and "_seal" in happened
    store.drain(write)
    dead = {f"{n}-{i:04d}" for n in "abc" for i in range(7, 1500, 10)}
    assert dead <= set(written)  # every dead letter reached a replay
    assert [k for k in written if k in dead and written.count(k) > 1] == []
    # an entry in flight when a replay ran is written by it too (its row is then found present),
    # but never twice
    assert len(written) == len(set(written))
    assert store.pending() == [] and store.torn() == 0
    assert sorted(os.listdir(os.path.dirname(store.path))) in (
        ["dead.jsonl", "dead.jsonl.lock"],
        ["dead.jsonl.lock"],
    )


def test_a_settle_never_reads_a_large_tail_another_worker_appended(
    store: DeadLetterFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that looked at the file, then an outage's backlog appended by another worker: the
    next settle moves the file aside without reading what was appended (at most COMPACT_MAX_BYTES
    is read on a push, whatever grew since)."""
    for i in range(400):  # past COMPACT_BYTES, so this store has looked at the file
        store.journal(entry(f"mine-{i:04d}"), timeout=5.0)
    for i in range(0, 400, 2):
        store.settle(f"mine-{i:04d}")
    other = DeadLetterFile(store.path)
    backlog = []
    while size(store.path) <= 3 * COMPACT_MAX_BYTES:
        backlog.append(f"outage-{len(backlog):06d}")
        other.append(entry(backlog[-1]), timeout=5.0)
    sizes: list[int] = []
    real_pread = os.pread

    def counting(descriptor: int, length: int, offset: int) -> bytes:
        sizes.append(length)
        return real_pread(descriptor, length, offset)

    monkeypatch.setattr(deadletter.os, "pread", counting)
    store.settle("mine-0001")
    assert max(sizes, default=0) <= COMPACT_MAX_BYTES
    assert aside(store.path)  # the backlog went aside whole, for the replay
    want = sorted([f"mine-{i:04d}" for i in range(3, 400, 2)] + backlog)
    assert pending_keys(store) == want
