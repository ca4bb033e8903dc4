"""The dead-letter file keeps every line whole, stays small, follows no link and keeps its owner."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd
import threading
import time
import typing as t

import pytest

from flowpilot_analytics import registration
from flowpilot_analytics.deadletter import COMPACT_BYTES, DeadLetterFile

from . import host
from .helpers import METRIC_READER, activity_rows, dead_letter_entries
from .helpers import journal_entry as entry

SETTING = "FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH"


@pytest.fixture
def store(tmp_path: t.Any) -> DeadLetterFile:
    return DeadLetterFile(str(tmp_path / "dead.jsonl"))


def keys(store: t.Any) -> list[str]:
    return [e["idempotency_key"] for e in store.pending()]


def cli(app: t.Any, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["flowpilot-analytics", *args])


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


# -- short writes and torn lines -------------------------------------------------------------------


@pytest.mark.parametrize("then", ["raises ENOSPC", "writes nothing"])
def test_a_short_write_is_cut_back_and_raised(
    store: DeadLetterFile, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    store.append(entry("A"))
    before = read(store.path)
    real_write = os.write
    calls: list[int] = []

    def full_disk(descriptor: int, data: t.Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(descriptor, bytes(data[: len(data) // 2]))
        if then == "writes nothing":
            return 0
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("flowpilot_analytics.deadletter.os.write", full_disk)
    for keep in (store.journal, store.append):
        calls.clear()
        with pytest.raises(OSError) as raised:
            keep(entry("B"), timeout=1.0)
        assert raised.value.errno == errno.ENOSPC and len(calls) == 2
        assert read(store.path) == before  # cut back to where the append began: nothing half kept
    monkeypatch.undo()
    store.append(entry("C"))
    assert keys(store) == ["A", "C"]
    assert store.torn() == 0


def test_an_append_never_glues_onto_a_torn_line(app: t.Any) -> None:
    store = registration(app).dead_letters
    store.append(entry("A"))
    cut = json.dumps(entry("B"), default=str)[:40]
    with open(
        store.path, "a", encoding="utf-8"
    ) as handle:  # a worker killed mid-write, or a full disk
        handle.write(cut)
    store.append(entry("C"))
    assert keys(store) == ["A", "C"]  # the torn line hides nothing
    assert (store.backlog(), store.torn()) == (2, 1)
    gauge = [p.value for p in _backlog_points() if p.attributes.get("location") == store.location]
    assert gauge == [2]  # the gauge still reports, so an alert on backlog > 0 can fire

    doctor = cli(app, "doctor")
    assert doctor.exit_code == 1
    assert (
        "BACKLOG 2 dead letters" in doctor.output and "TORN    1 torn lines found" in doctor.output
    )

    result = cli(app, "replay-activities")
    assert result.exit_code == 0, result.output  # everything else was written
    assert "written 2, already present 0, still failing 0, set aside 1" in result.output
    assert sorted(r["idempotency_key"] for r in activity_rows()) == ["A", "C"]
    rejected = store.path + ".rejected"
    assert os.stat(rejected).st_mode & 0o777 == 0o600
    [record] = [json.loads(line) for line in read(rejected).splitlines()]
    assert (record["reason"], record["line"]) == ("torn line: not JSON", cut)
    assert store.pending() == [] and store.torn() == 0

    doctor = cli(app, "doctor")
    assert doctor.exit_code == 0, doctor.output  # set aside: a warning, not a failure for ever
    assert "ok      no dead letters" in doctor.output
    assert (
        "WARNING 0 entries that can never be written and 1 torn lines set aside in" in doctor.output
    )
    assert "never replayed automatically" in doctor.output


def _backlog_points() -> list[t.Any]:
    data = METRIC_READER.get_metrics_data()
    return [
        point
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "flowpilot_analytics.dead_letters.backlog"
        for point in metric.data.data_points
    ]


# -- fsync, locks, compaction, the backlog's cache -------------------------------------------------


def test_only_dead_letters_proper_and_sync_are_fsynced(
    store: DeadLetterFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        "flowpilot_analytics.deadletter.os.fsync", lambda fd: synced.append(fd) or real_fsync(fd)
    )
    store.journal(entry("J"), timeout=1.0)
    store.settle("J")
    assert synced == []  # a kill -9 keeps the page cache; the hook syncs only when the write failed
    store.journal(entry("K"), timeout=1.0)
    store.sync()
    assert synced
    synced.clear()
    store.append(entry("L"), timeout=1.0)
    assert synced
    assert keys(store) == ["K", "L"]


def test_a_held_lock_is_waited_for_until_the_deadline_only(store: DeadLetterFile) -> None:
    store.append(entry("A"))
    holder = os.open(store.path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process in the middle of an append
    try:
        for keep in (
            lambda: store.journal(entry("B"), timeout=0.05),
            lambda: store.append(entry("B"), timeout=0.05),
            lambda: store.settle("A", timeout=0.05),
            lambda: store.journal(entry("B"), timeout=0.0),
        ):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                keep()
            assert time.monotonic() - started < 0.5
        threading.Timer(0.05, fcntl.flock, (holder, fcntl.LOCK_UN)).start()
        store.journal(entry("B"), timeout=2.0)  # released meanwhile: it waits, then appends
    finally:
        os.close(holder)
    assert keys(store) == ["A", "B"]


def test_the_journal_is_compacted_and_keeps_what_is_unsettled(store: DeadLetterFile) -> None:
    """Two writers (two workers of the app) journal and settle 3,000 activities at once; every 100th
    write "fails" and stays. Compactions rename the file under writers waiting for its lock."""
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        mine = DeadLetterFile(store.path)
        try:
            for i in range(1500):
                key = f"{name}-{i:04d}"
                mine.journal(entry(key), timeout=5.0)
                if i % 100 != 7:
                    mine.settle(key, timeout=5.0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    line = len(json.dumps(entry("a-0000"), default=str)) + 1
    size = os.path.getsize(store.path)
    print(f"\n3,000 journal+settle pairs, 30 left unsettled: the file is {size} bytes")
    assert size < COMPACT_BYTES + line  # 3,000 pairs uncompacted would be about 900 KB
    assert sorted(keys(store)) == sorted(f"{n}-{i:04d}" for n in "ab" for i in range(7, 1500, 100))
    assert store.backlog() == 30 and store.torn() == 0
    assert os.listdir(os.path.dirname(store.path)) == [
        "dead.jsonl"
    ]  # no temporary file left behind


def test_the_backlog_is_read_again_only_when_the_file_changed(
    store: DeadLetterFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(entry("A"))
    assert store.backlog() == 1
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: t.Any, *args: t.Any, **kwargs: t.Any) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("flowpilot_analytics.deadletter.os.open", counting_open)
    assert [store.backlog() for _ in range(5)] == [1] * 5
    assert opened == []  # a gauge scrape on an unchanged file reads nothing
    store.journal(entry("B"), timeout=1.0)
    opened.clear()
    assert store.backlog() == 2 and opened
    store.settle("B")
    assert store.backlog() == 1


# -- path safety -----------------------------------------------------------------------------------


def test_a_link_or_a_shared_folder_is_refused_at_startup(tmp_path: t.Any) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("not a dead-letter file\n")
    link = tmp_path / "dead.jsonl"
    link.symlink_to(target)
    with pytest.raises(ValueError, match=f"not a regular file.*{SETTING}"):
        host.create_app("sqlite://", FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(link))
    shared = tmp_path / "team"
    shared.mkdir()
    shared.chmod(0o770)
    with pytest.raises(ValueError, match=f"group-writable.*{SETTING}"):
        host.create_app(
            "sqlite://", FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(shared / "dead.jsonl")
        )
    shared.chmod(0o777)  # a folder not made yet, where anyone could make it first
    with pytest.raises(ValueError, match=f"{shared} is world-writable"):
        host.create_app(
            "sqlite://", FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(shared / "new" / "dead.jsonl")
        )


def test_a_world_writable_dead_letter_folder_is_refused_at_startup(tmp_path: t.Any) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ValueError, match="world-writable"):
        host.create_app(
            "sqlite://", FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(folder / "dead.jsonl")
        )


def test_a_new_dead_letter_folder_is_private(make_app: t.Any, tmp_path: t.Any) -> None:
    folder = tmp_path / "made-by-the-plugin"
    made = make_app(FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=str(folder / "dead.jsonl"))
    registration(made).dead_letters.append(dead_letter_entries(1)[0])
    assert folder.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("suffix", ["", ".lock", ".rejected", ".replaying.1"])
def test_a_link_planted_beside_the_store_is_never_followed(
    app: t.Any, tmp_path: t.Any, suffix: str
) -> None:
    store = registration(app).dead_letters
    store.append(entry("A"))
    with open(store.path, "a", encoding="utf-8") as handle:
        handle.write("{torn\n")  # something for the replay to set aside in .rejected
    target = tmp_path / "target.jsonl"
    planted = json.dumps(entry("PLANTED"), default=str) + "\n"
    target.write_text(planted)
    target.chmod(0o644)
    if suffix == "":
        os.replace(store.path, store.path + ".replaying.0")  # as a replay that died leaves it
    os.symlink(target, store.path + suffix)

    if suffix == "":
        for keep in (store.journal, store.append):
            with pytest.raises(OSError, match="symbolic link"):
                keep(entry("B"), timeout=1.0)
        with pytest.raises(OSError, match="symbolic link"):
            store.pending()
        doctor = cli(app, "doctor")
        assert doctor.exit_code == 1 and "UNREADABLE dead letters" in doctor.output
    result = cli(app, "replay-activities")
    assert result.exit_code == 1
    assert "symbolic link" in result.output
    assert target.read_text() == planted and target.stat().st_mode & 0o777 == 0o644  # untouched
    assert "PLANTED" not in [r["idempotency_key"] for r in activity_rows()]  # never copied in

    os.remove(store.path + suffix)
    result = cli(app, "replay-activities")
    assert result.exit_code == 0, result.output
    assert [r["idempotency_key"] for r in activity_rows()] == ["A"]
    assert store.pending() == [] and store.rejected().torn == 1


def test_a_second_name_for_the_file_is_refused(store: DeadLetterFile, tmp_path: t.Any) -> None:
    store.append(entry("A"))
    os.link(store.path, tmp_path / "another-name")
    with pytest.raises(OSError, match="one name"):
        store.append(entry("B"))


# -- the store's owner -----------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [True, False], ids=["file", "folder"])
def test_a_replay_as_another_user_is_refused_and_changes_nothing(
    app: t.Any, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    store = registration(app).dead_letters
    if existing:
        store.append(entry("A"))
    folder = os.path.dirname(store.path)

    def files() -> dict[str, bytes]:
        return {
            name: read(os.path.join(folder, name))
            for name in os.listdir(folder)
            if name.startswith("dead")
        }

    before = files()
    owner = pwd.getpwuid(os.stat(store.path if existing else folder).st_uid).pw_name
    monkeypatch.setattr(
        "flowpilot_analytics.deadletter.os.geteuid", lambda: 4242
    )  # e.g. `sudo flask ...`
    result = cli(app, "replay-activities")
    assert result.exit_code == 1
    assert f"belongs to user {owner} (uid {os.getuid()})" in result.output
    assert "runs as uid 4242" in result.output and f"sudo -u {owner}" in result.output
    assert files() == before  # no lock file, no file moved aside, nothing created
    assert activity_rows() == []
    monkeypatch.undo()
    assert cli(app, "replay-activities").exit_code == 0
    assert len(activity_rows()) == int(existing)
