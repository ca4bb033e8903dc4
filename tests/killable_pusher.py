"""A host process for the fault suite, run as ``python -m tests.killable_pusher MODE ...`` from the
checkout.

``kill-loop``: the test host (``tests/host.py``) pushes notes and time entries through the wrapped
fake PSA service, for ever, until the test kills it with SIGKILL. Each push has a unique external id
and is one of four shapes (outside a host transaction; after the host has read, then commit; an
expired ORM object whose columns the hook must re-read; after the host has written, then rollback).
Two lines per push go to the ``--out`` file, each with one unbuffered ``os.write`` (so a kill leaves
whole lines, and everything written before the kill):

    P <activity_type> <external_id> <account_id>
        the PSA's call returned (inside the wrapper)
    A <activity_type> <external_id> <account_id> <micros>
        the wrapped push returned: "accepted"

``READY`` goes to stdout once the app is up, so that the test's random kill delay starts there.

``memory``: pushes at a steady rate from many threads to a database that never answers, and prints
one JSON line: the process's RSS (``VmRSS``) after a warm-up and at the end, the pushes and the
slowest push.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import signal
import sys
import threading
import time
import types
import typing as t

import sqlalchemy as sa

from . import host
from .fake_psa import FakePsaService, TimeEntry
from .host import NOW, AISession, AISessionStep, db

#: Sessions the test creates before starting the pusher: ids 1..3, account = ACCOUNT_BASE + id.
SESSION_IDS = (1, 2, 3)
ACCOUNT_BASE = 10
#: A pusher that outlives its test (the parent died) ends by itself.
MAX_SECONDS = 120.0


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux), so that no pusher is ever left behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class ReportingPsa(FakePsaService):
    """The fake PSA, which also says (``P`` line) when its call returned, before the hook records
    anything."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.out = out
        self.current = ("", "", 0)
        self.calls = collections.deque(maxlen=4)  # type: ignore[assignment]  # the fake's call log, bounded

    def _said(self) -> None:
        kind, external, account = self.current
        os.write(self.out, f"P {kind} {external} {account}\n".encode())

    def push_note(self, session: t.Any, text: str, **kw: t.Any) -> dict[str, t.Any]:
        result = super().push_note(session, text, **kw)
        self._said()
        return result

    def push_time_entry(self, session: t.Any, minutes: float, **kw: t.Any) -> TimeEntry:
        result = super().push_time_entry(session, minutes, **kw)
        self._said()
        return result


def kill_loop(args: argparse.Namespace) -> None:
    app = host.create_app(
        args.uri,
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=args.dead_letters,
        FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS=args.timeout_ms,
    )
    out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    psa = app.extensions["test_analytics"].wrap_psa_service(ReportingPsa(out))
    ends = time.monotonic() + MAX_SECONDS
    with app.app_context():
        orm = {
            s.id: s
            for s in db.session.scalars(sa.select(AISession).where(AISession.id.in_(SESSION_IDS)))
        }
        assert sorted(orm) == list(SESSION_IDS), (
            f"the test creates sessions {SESSION_IDS}, found {sorted(orm)}"
        )
        db.session.commit()  # every ORM object is now expired: the hook must re-read its columns
        print("READY", flush=True)
        i = 0
        while time.monotonic() < ends:
            kind = "note_posted" if i % 2 == 0 else "time_entry_posted"
            shape = (i // 2) % 4
            session_id = SESSION_IDS[i % len(SESSION_IDS)]
            account = ACCOUNT_BASE + session_id
            external = f"{args.run}-{i}"
            plain = types.SimpleNamespace(
                id=session_id, account_id=account, psa_ticket_id=f"T-{session_id}"
            )
            pushed: t.Any = plain
            if shape == 1:  # the host has read: its transaction is open
                db.session.execute(sa.text("SELECT 1"))
            elif shape == 2:  # a committed (expired) ORM object, outside a host transaction
                pushed = orm[session_id]
            elif (
                shape == 3
            ):  # the host has written (and holds SQLite's write lock); it rolls back after
                db.session.add(
                    AISessionStep(account_id=account, session_id=session_id, created_at=NOW)
                )
                db.session.flush()
                pushed = orm[session_id]
            psa.current = (kind, external, account)
            psa.fixed_id = external
            started = time.perf_counter()
            if kind == "note_posted":
                psa.push_note(pushed, f"note {external}")
            else:
                psa.push_time_entry(pushed, float(i % 90))
            micros = int((time.perf_counter() - started) * 1e6)
            os.write(out, f"A {kind} {external} {account} {micros}\n".encode())
            if shape == 1:
                db.session.commit()
            elif shape == 3:
                db.session.rollback()
            i += 1


def memory(args: argparse.Namespace) -> None:
    app = host.create_app(
        args.uri,
        FLOWPILOT_ANALYTICS_DEAD_LETTER_PATH=args.dead_letters,
        FLOWPILOT_ANALYTICS_HOOK_TIMEOUT_MS=args.timeout_ms,
    )
    psa = app.extensions["test_psa"]
    psa.calls = collections.deque(maxlen=4)  # the fake's own call log must not grow either
    lock = threading.Lock()
    tickets = iter(range(args.pushes))
    figures: dict[str, t.Any] = {"max_ms": 0.0, "done": 0}
    started_at = time.perf_counter()

    def pusher() -> None:
        with app.app_context():
            while True:
                with lock:
                    i = next(tickets, None)
                if i is None:
                    return
                due = started_at + i / args.rate  # a steady rate: push i is due at i / rate seconds
                if due > time.perf_counter():
                    time.sleep(due - time.perf_counter())
                pushed = types.SimpleNamespace(id=i, account_id=1 + i % 3, psa_ticket_id=f"T-{i}")
                began = time.perf_counter()
                if i % 2:
                    psa.push_time_entry(pushed, 15.0)
                else:
                    psa.push_note(pushed, f"note {i}")
                took = (time.perf_counter() - began) * 1000
                with lock:
                    figures["max_ms"] = max(figures["max_ms"], took)
                    figures["done"] += 1
                    if figures["done"] == args.warmup:
                        gc.collect()
                        figures["rss_start_kb"] = rss_kb()
                        figures["start_s"] = time.perf_counter() - started_at

    figures["rss_before_kb"] = rss_kb()
    threads = [threading.Thread(target=pusher, daemon=True) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    ends = time.monotonic() + MAX_SECONDS
    for thread in threads:
        thread.join(max(0.0, ends - time.monotonic()))
    gc.collect()
    figures.update(
        rss_end_kb=rss_kb(),
        seconds=time.perf_counter() - started_at,
        pushes=args.pushes,
        measured=figures["done"] - args.warmup,
        alive=sum(thread.is_alive() for thread in threads),
    )
    print(json.dumps(figures), flush=True)
    os._exit(0)  # helper threads stuck on the hung server are daemons; do not wait for them


def main(argv: list[str] | None = None) -> None:
    die_with_parent()
    parser = argparse.ArgumentParser(prog="python -m tests.killable_pusher")
    modes = parser.add_subparsers(dest="mode", required=True)
    loop = modes.add_parser("kill-loop")
    loop.add_argument("--uri", required=True)
    loop.add_argument("--dead-letters", required=True)
    loop.add_argument("--out", required=True)
    loop.add_argument("--run", type=int, required=True)
    loop.add_argument("--timeout-ms", type=int, default=250)
    mem = modes.add_parser("memory")
    mem.add_argument("--uri", required=True)
    mem.add_argument("--dead-letters", required=True)
    mem.add_argument("--pushes", type=int, default=5000)
    mem.add_argument("--warmup", type=int, default=500)
    mem.add_argument("--threads", type=int, default=128)
    mem.add_argument("--rate", type=float, default=400.0)
    mem.add_argument("--timeout-ms", type=int, default=250)
    args = parser.parse_args(argv)
    (kill_loop if args.mode == "kill-loop" else memory)(args)


if __name__ == "__main__":
    main(sys.argv[1:])
