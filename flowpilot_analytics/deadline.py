"""Run a blocking call on a helper thread and wait for it at most a deadline.

The hook uses it so that a database that stops answering (a hung server, an exhausted pool, a lock
the server-side timeouts do not cover) can never hold a PSA push longer than the deadline. The
threads are daemons, so a call stuck on a dead server never keeps the process from exiting; they
start when work arrives and end after a minute idle, and a forked child starts its own.
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
Job = tuple[Future[object], t.Callable[[], object]]

#: Every runner in this process, so that a forked child can start afresh (its parent's threads are
#: gone).
_RUNNERS: weakref.WeakSet[DeadlineRunner] = weakref.WeakSet()


class DeadlineExceeded(TimeoutError):
    """The call did not finish in time; it may still finish later on its helper thread
    (``future``)."""

    def __init__(self, message: str, future: Future[object]) -> None:
        super().__init__(message)
        self.future = future


class Saturated(RuntimeError):
    """Every helper thread is busy and the queue is full: the call was not queued at all."""


class DeadlineRunner:
    """A small pool of daemon threads; :meth:`run` returns the call's result or raises within
    ``timeout``.

    The queue is bounded: while the database hangs, every thread waits on it and each new call would
    wait in the queue, holding its arguments, for as long as the hang lasts; past ``max_waiting``
    queued calls :meth:`submit` refuses at once (:class:`Saturated`), so memory stays flat however
    long the hang.
    """

    #: Seconds a helper thread waits for work before it ends.
    idle_seconds = 60.0

    def __init__(
        self, max_threads: int = 8, name: str = "flowpilot-analytics", max_waiting: int = 64
    ) -> None:
        self.max_threads = max_threads
        self.max_waiting = max_waiting
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
        """Queue ``call``; a thread is started when the queued jobs outnumber the idle threads.
        Raises :class:`Saturated` instead when ``max_waiting`` calls already wait (cancelled ones
        included, until a thread drops them)."""
        future: Future[T] = Future()
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise Saturated(
                    f"{self._threads} helper threads busy and {self._waiting} calls queued"
                )
            self._queue.put((t.cast("Future[object]", future), call))
            self._waiting += 1
            if self._waiting > self._idle and self._threads < self.max_threads:
                self._threads += 1
                threading.Thread(
                    target=self._work, name=f"{self.name}-{self._threads}", daemon=True
                ).start()
        return future

    def run(self, call: t.Callable[[], T], timeout: float) -> T:
        """``call()`` within ``timeout`` seconds, else :class:`DeadlineExceeded` (the call is
        cancelled if it has not started yet); :class:`Saturated` at once when the queue is full, and
        :class:`DeadlineExceeded` at once when no time is left."""
        if timeout <= 0:
            raise DeadlineExceeded("no time left", Future())
        future = self.submit(call)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise DeadlineExceeded(
                f"no answer within {timeout * 1000:.0f} ms", t.cast("Future[object]", future)
            ) from None

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
                except (
                    BaseException
                ) as exc:  # handed to the waiting caller, never lost in this thread
                    future.set_exception(exc)
            del future, call  # hold nothing (the app, its engine) while idle


def _after_fork_in_child() -> None:
    for runner in list(_RUNNERS):
        runner._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
