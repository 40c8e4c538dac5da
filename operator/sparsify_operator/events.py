"""Kubernetes Events, posted off the reconcile path (client-go's asynchronous event recorder):
a reconcile hands its events over and goes on; one thread posts them in order. Events are
best effort: a full backlog drops the newest (counted), and a replica that lost the leader
Lease posts nothing (the fence in kube.py)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("sparsify_operator")
Post = Callable[[dict, str, str, str], None]  # (SparsifyJob, type, reason, message)


class EventRecorder:
    def __init__(self, post: Post, backlog: int = 10_000, on_dropped: Callable[[], None] = lambda: None):
        self._post = post
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)
        self._on_dropped = on_dropped
        self._thread: threading.Thread | None = None

    def record(self, sj: dict, kind: str, reason: str, message: str) -> None:
        try:
            self._queue.put_nowait((sj, kind, reason, message))
        except queue.Full:
            self._on_dropped()

    def start(self) -> EventRecorder:
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued (up to `timeout`), then end."""
        self._queue.put(None)
        if self._thread:
            self._thread.join(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is posted (tests)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._post(*item)
            except Exception as e:  # noqa: BLE001  (never the end of the recorder)
                log.warning("could not post event %s: %s", item[2], e)
