"""The de-duplicating work queue and the backoff (pure helpers, real threads)."""

import threading
import time

from sparsify_operator.workqueue import FINISHED, NEW, NORMAL, ExponentialBackoff, QueueMetrics, WorkQueue


class Recorded(QueueMetrics):
    def __init__(self):
        self.adds, self.coalesced, self.waits, self.retries = 0, 0, [], 0

    def added(self, coalesced):
        self.adds += 1
        self.coalesced += coalesced

    def waited(self, seconds, priority):
        self.waits.append((priority, seconds))

    def retried(self):
        self.retries += 1


def drain(q):
    out = []
    while (key := q.get(timeout=0)) is not None:
        out.append(key)
        q.done(key)
    return out


def test_many_events_for_one_object_are_one_reconcile():
    m = Recorded()
    q = WorkQueue(m)
    for _ in range(50):
        q.add(("ml", "a"))
    q.add(("ml", "b"))
    assert len(q) == 2 and drain(q) == [("ml", "a"), ("ml", "b")]
    assert (m.adds, m.coalesced) == (51, 49)


def test_finished_stages_go_first_then_new_objects_then_the_rest_and_a_key_moves_up():
    q = WorkQueue()
    q.add(("ml", "chatter-1"), NORMAL)
    q.add(("ml", "created"), NEW)
    q.add(("ml", "chatter-2"), NORMAL)
    q.add(("ml", "done"), FINISHED)
    q.add(("ml", "chatter-2"), FINISHED)  # its Job just finished: it jumps the queue, once
    assert drain(q) == [("ml", "done"), ("ml", "chatter-2"), ("ml", "created"), ("ml", "chatter-1")]


def test_a_key_added_while_a_worker_holds_it_waits_for_that_worker_and_runs_once_more():
    q = WorkQueue()
    q.add(("ml", "a"))
    key = q.get(timeout=0)
    q.add(("ml", "a"))
    q.add(("ml", "a"))
    assert q.get(timeout=0) is None  # never on two workers at once
    q.done(key)
    assert q.get(timeout=0) == ("ml", "a")


def test_no_two_workers_ever_hold_the_same_key():
    q = WorkQueue()
    held, overlaps, runs = set(), [], []
    lock = threading.Lock()

    def worker():
        while (key := q.get(timeout=0.3)) is not None:
            with lock:
                if key in held:
                    overlaps.append(key)
                held.add(key)
            time.sleep(0.002)
            with lock:
                held.discard(key)
                runs.append(key)
            q.done(key)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for i in range(400):
        q.add(("ml", f"sj-{i % 7}"))
    for t in threads:
        t.join()
    assert overlaps == [] and set(runs) == {("ml", f"sj-{i}") for i in range(7)}
    assert len(runs) < 400  # coalesced while waiting


def test_add_after_holds_a_key_back_and_get_wakes_for_it():
    m = Recorded()
    q = WorkQueue(m)
    t0 = time.monotonic()
    q.retry_after(("ml", "a"), 0.2)
    assert q.get(timeout=0) is None and q.delayed() == 1
    assert q.get(timeout=2) == ("ml", "a") and time.monotonic() - t0 >= 0.2
    assert m.retries == 1 and m.waits and m.waits[0][1] < 0.1  # latency counts from when it became due


def test_shut_down_wakes_every_waiting_worker():
    q = WorkQueue()
    got = []
    threads = [threading.Thread(target=lambda: got.append(q.get())) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    q.shut_down()
    for t in threads:
        t.join(2)
    assert got == [None, None, None]
    q.add(("ml", "late"))
    assert len(q) == 0


def test_backoff_doubles_up_to_its_cap_and_a_success_resets_it():
    b = ExponentialBackoff(base=0.5, cap=4)
    assert [b.when(("ml", "a")) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert b.when(("ml", "b")) == 0.5
    b.forget(("ml", "a"))
    assert b.when(("ml", "a")) == 0.5 and len(b) == 2


def test_the_longest_running_reconcile_is_visible():
    clock = [100.0]
    q = WorkQueue(clock=lambda: clock[0])
    q.add(("ml", "a"))
    key = q.get(timeout=0)
    clock[0] += 42
    assert q.oldest_processing_seconds() == 42
    q.done(key)
    assert q.oldest_processing_seconds() == 0
