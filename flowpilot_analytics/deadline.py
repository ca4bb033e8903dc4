"""Run a blocking call on a helper thread and wait for it at most a deadline.

The hook uses it so that a database that stops answering (a hung server, an exhausted pool, a lock
the server-side timeouts do not cover) can never hold a PSA push longer than the deadline. The
threads are daemons, so a call stuck on a dead server never keeps the process from exiting, and
they are started lazily in each process (a fork does not inherit them).
"""

from __future__ import annotations

import os
import queue
import threading
import typing as t
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

T = t.TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The call did not finish in time; it may still finish later on its helper thread (``future``)."""

    def __init__(self, message: str, future: Future[t.Any]) -> None:
        super().__init__(message)
        self.future = future


class DeadlineRunner:
    """A small pool of daemon threads; :meth:`run` returns the call's result or raises within ``timeout``."""

    def __init__(self, max_threads: int = 8, name: str = "flowpilot-analytics") -> None:
        self.max_threads = max_threads
        self.name = name
        self._lock = threading.Lock()
        self._pid = -1
        self._queue: queue.SimpleQueue[tuple[Future[t.Any], t.Callable[[], t.Any]]] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0

    def submit(self, call: t.Callable[[], T]) -> Future[T]:
        """Queue ``call``; a thread is started when none is idle (up to ``max_threads``)."""
        future: Future[T] = Future()
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's threads do not exist here
                self._pid, self._queue, self._threads, self._idle = os.getpid(), queue.SimpleQueue(), 0, 0
            self._queue.put((future, call))
            if self._idle == 0 and self._threads < self.max_threads:
                self._threads += 1
                threading.Thread(
                    target=self._work, args=(self._queue,), name=f"{self.name}-{self._threads}", daemon=True
                ).start()
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

    def _work(self, jobs: queue.SimpleQueue[tuple[Future[t.Any], t.Callable[[], t.Any]]]) -> None:
        while True:
            with self._lock:
                self._idle += 1
            future, call = jobs.get()
            with self._lock:
                self._idle -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the waiting caller, never lost in this thread
                future.set_exception(exc)
