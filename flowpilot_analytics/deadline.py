"""Run a blocking call on a helper thread and wait for it at most a deadline.

The hook uses it so that a database that stops answering (a hung server, an exhausted pool, a lock the
server-side timeouts do not cover) can never hold a PSA push longer than the deadline. The threads are
daemons, so a call stuck on a dead server never keeps the process from exiting; they start when work
arrives and end after a minute idle, and a forked child starts its own.
"""

from __future__ import annotations

import os
import queue
import threading
import typing as t
import weakref
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

T = t.TypeVar("T")
Job = tuple[Future[t.Any], t.Callable[[], t.Any]]

#: Every runner in this process, so that a forked child can start afresh (its parent's threads are gone).
_RUNNERS: weakref.WeakSet[DeadlineRunner] = weakref.WeakSet()


class DeadlineExceeded(TimeoutError):
    """The call did not finish in time; it may still finish later on its helper thread (``future``)."""

    def __init__(self, message: str, future: Future[t.Any]) -> None:
        super().__init__(message)
        self.future = future


class DeadlineRunner:
    """A small pool of daemon threads; :meth:`run` returns the call's result or raises within ``timeout``."""

    #: Seconds a helper thread waits for work before it ends.
    idle_seconds = 60.0

    def __init__(self, max_threads: int = 8, name: str = "flowpilot-analytics") -> None:
        self.max_threads = max_threads
        self.name = name
        self._reset()
        _RUNNERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._threads = 0
        self._waiting = 0  # queued jobs no thread has taken yet
        self._idle = 0  # threads waiting for a job

    def submit(self, call: t.Callable[[], T]) -> Future[T]:
        """Queue ``call``; a thread is started when the queued jobs outnumber the idle threads."""
        future: Future[T] = Future()
        with self._lock:
            self._queue.put((future, call))
            self._waiting += 1
            if self._waiting > self._idle and self._threads < self.max_threads:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
        return future

    def run(self, call: t.Callable[[], T], timeout: float) -> T:
        """``call()`` within ``timeout`` seconds, else :class:`DeadlineExceeded` (the call is cancelled if it
        has not started yet)."""
        future = self.submit(call)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise DeadlineExceeded(f"no answer within {timeout * 1000:.0f} ms", future) from None

    def _work(self) -> None:
        jobs = self._queue
        while True:
            with self._lock:
                self._idle += 1
            try:
                future, call = jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._waiting == 0:  # nothing queued meanwhile: end this thread
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._waiting -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # handed to the waiting caller, never lost in this thread
                    future.set_exception(exc)
            del future, call  # hold nothing (the app, its engine) while idle


def _after_fork_in_child() -> None:
    for runner in list(_RUNNERS):
        runner._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
