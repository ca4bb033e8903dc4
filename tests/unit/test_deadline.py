"""The deadline runner: calls bounded in time, and a queue bounded in length while helper threads
hang."""

from __future__ import annotations

import threading

import pytest

from flowpilot_analytics.deadline import DeadlineExceeded, DeadlineRunner, Saturated


def test_a_full_queue_refuses_at_once_and_frees_up_when_the_threads_do() -> None:
    runner = DeadlineRunner(max_threads=2, max_waiting=3)
    release = threading.Event()
    running = threading.Barrier(3)

    def hang() -> bool:
        running.wait(30)
        return release.wait(30)

    stuck = [runner.submit(hang) for _ in range(2)]
    running.wait(30)  # both threads are busy: nothing of theirs is queued any more
    queued = [runner.submit(lambda: "later") for _ in range(3)]
    with pytest.raises(Saturated):
        runner.submit(lambda: "no room")
    with pytest.raises(Saturated):  # run() refuses without waiting either
        runner.run(lambda: "no room", 10.0)
    release.set()
    assert [f.result(30) for f in stuck] == [True, True]
    assert [f.result(30) for f in queued] == ["later"] * 3
    assert runner.run(lambda: "room again", 30.0) == "room again"


def test_no_time_left_is_refused_without_queueing() -> None:
    runner = DeadlineRunner(max_threads=1, max_waiting=1)
    with pytest.raises(DeadlineExceeded):
        runner.run(lambda: "never", 0.0)
    assert runner.run(lambda: "queued nothing", 30.0) == "queued nothing"
