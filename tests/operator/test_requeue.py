"""Backoff for failed reconciles and per-object locks (pure helpers, real threads and timers)."""

import threading
import time

from sparsify_operator.requeue import Backoff, KeyedLocks


def test_a_failing_object_is_tried_again_with_growing_delays_and_one_timer_at_a_time():
    tries: list[float] = []
    done = threading.Event()

    def run(namespace, name):
        tries.append(time.monotonic())
        if len(tries) < 3:
            backoff.failed((namespace, name))  # what safe_reconcile does when the reconcile raises
        else:
            backoff.succeeded((namespace, name))
            done.set()

    backoff = Backoff(run, base=0.05, cap=1.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 10)] == [0.05, 0.1, 0.2, 1.0]
    start = time.monotonic()
    assert backoff.failed(("ml", "a")) == 0.05
    assert backoff.failed(("ml", "a")) is None  # already scheduled: not twice
    assert done.wait(5)
    # each failure doubles the wait (the duplicate call above counted as a failure too: 0.2 s, then 0.4 s)
    assert tries[0] - start >= 0.05 and tries[1] - tries[0] >= 0.2 and tries[2] - tries[1] >= 0.4 - 0.01
    assert backoff.pending() == 0


def test_a_deleted_object_is_not_tried_again():
    ran = []
    backoff = Backoff(lambda ns, name: ran.append(name), base=0.2)
    backoff.failed(("ml", "gone"))
    backoff.forget(("ml", "gone"))
    time.sleep(0.4)
    assert ran == [] and backoff.pending() == 0


def test_locks_are_one_per_object_and_dropped_with_it():
    locks = KeyedLocks()
    assert locks(("ml", "a")) is locks(("ml", "a")) and locks(("ml", "a")) is not locks(("ml", "b"))
    locks.forget(("ml", "a"))
    assert len(locks) == 1
