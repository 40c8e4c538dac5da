"""A de-duplicating, prioritised work queue of object keys (client-go's workqueue, for threads).

Watch events only say "this object may need a reconcile"; many events for one object while it
waits are one reconcile, not many (an object is queued at most once, and an object re-added
while a worker holds it is queued again only after that worker is done, so no two workers ever
reconcile the same object). Three priorities, so a burst of new objects or status chatter
never delays a finished stage's next Job: FINISHED (a stage Job just completed or failed),
NEW (an object seen for the first time), then everything else. A key re-added at a higher
priority moves up. `add_after` holds a key back (backoff after a failed reconcile, a deadline
to check later); `ExponentialBackoff` says for how long."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

FINISHED, NEW, NORMAL = 0, 1, 2  # lower runs first
PRIORITIES = (FINISHED, NEW, NORMAL)


class QueueMetrics:
    """What the queue reports (no-op here; metrics.py exports them to Prometheus)."""

    def added(self, coalesced: bool) -> None: ...
    def depth(self, n: int) -> None: ...
    def waited(self, seconds: float, priority: int) -> None: ...
    def worked(self, seconds: float) -> None: ...
    def retried(self) -> None: ...


@dataclass
class _Queued:
    since: float  # when it was first added (queue latency counts from here)
    priority: int


class WorkQueue:
    def __init__(self, metrics: QueueMetrics | None = None, clock: Callable[[], float] = time.monotonic):
        self._metrics = metrics or QueueMetrics()
        self._clock = clock
        self._cond = threading.Condition()
        self._lanes: tuple[deque, ...] = tuple(deque() for _ in PRIORITIES)
        self._queued: dict[Hashable, _Queued] = {}  # waiting to be handed out
        self._processing: dict[Hashable, float] = {}  # key -> since when a worker holds it
        self._again: dict[Hashable, _Queued] = {}  # added while processing: queued once it is done
        self._delayed: list[tuple[float, int, Hashable]] = []  # (due, seq, key)
        self._seq = itertools.count()
        self._shut = False

    # ---- producers -----------------------------------------------------------------------

    def add(self, key: Hashable, priority: int = NORMAL) -> None:
        with self._cond:
            if self._shut:
                return
            self._add(key, priority, self._clock())

    def add_after(self, key: Hashable, delay: float, priority: int = NORMAL) -> None:
        """Add `key` once `delay` seconds have passed (at once if it is already queued sooner)."""
        if delay <= 0:
            self.add(key, priority)
            return
        with self._cond:
            if self._shut:
                return
            heapq.heappush(self._delayed, (self._clock() + delay, next(self._seq), (key, priority)))
            self._cond.notify()

    def retry_after(self, key: Hashable, delay: float) -> None:
        """A failed reconcile: the key again after `delay` (counted as a retry)."""
        self._metrics.retried()
        self.add_after(key, delay)

    def _add(self, key: Hashable, priority: int, now: float) -> None:
        if key in self._processing:
            q = self._again.get(key)
            self._again[key] = _Queued(q.since if q else now, min(priority, q.priority) if q else priority)
            self._metrics.added(coalesced=q is not None)
            return
        q = self._queued.get(key)
        if q is not None:
            self._metrics.added(coalesced=True)
            if priority < q.priority:  # moves up: the old lane entry is skipped when reached
                q.priority = priority
                self._lanes[priority].append(key)
                self._cond.notify()
            return
        self._queued[key] = _Queued(now, priority)
        self._lanes[priority].append(key)
        self._metrics.added(coalesced=False)
        self._metrics.depth(len(self._queued))
        self._cond.notify()

    # ---- workers -------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key (highest priority, oldest first), held by the caller until `done(key)`;
        None once shut down or after `timeout` seconds with nothing to do."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._shut:
                    return None
                now = self._clock()
                self._promote_due(now)
                key = self._pop()
                if key is not None:
                    q = self._queued.pop(key)
                    self._processing[key] = now
                    self._metrics.waited(now - q.since, q.priority)
                    self._metrics.depth(len(self._queued))
                    return key
                waits = [t - now for t in (deadline, self._delayed[0][0] if self._delayed else None) if t is not None]
                if deadline is not None and now >= deadline:
                    return None
                self._cond.wait(max(0.0, min(waits)) if waits else None)

    def done(self, key: Hashable) -> None:
        with self._cond:
            since = self._processing.pop(key, None)
            if since is not None:
                self._metrics.worked(self._clock() - since)
            again = self._again.pop(key, None)
            if again is not None and not self._shut:
                self._queued[key] = again
                self._lanes[again.priority].append(key)
                self._metrics.depth(len(self._queued))
                self._cond.notify()

    def _pop(self) -> Hashable | None:
        for priority, lane in enumerate(self._lanes):
            while lane:
                key = lane.popleft()
                q = self._queued.get(key)
                if q is not None and q.priority == priority:  # not a stale entry of a key that moved up
                    return key
        return None

    def _promote_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, (key, priority) = heapq.heappop(self._delayed)
            self._add(key, priority, now)

    # ---- lifecycle and introspection -----------------------------------------------------

    def shut_down(self) -> None:
        with self._cond:
            self._shut = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued)

    def delayed(self) -> int:
        with self._cond:
            return len(self._delayed)

    def oldest_processing_seconds(self) -> float:
        """How long the longest-running reconcile has been running (a stuck one shows here)."""
        with self._cond:
            return self._clock() - min(self._processing.values()) if self._processing else 0.0


class ExponentialBackoff:
    """Per-key delay after failures: base, 2 x base, 4 x base ... up to cap; reset by `forget`
    (client-go's ItemExponentialFailureRateLimiter)."""

    def __init__(self, base: float = 1.0, cap: float = 60.0):
        self.base, self.cap = base, cap
        self._failures: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def when(self, key: Hashable) -> float:
        with self._lock:
            n = self._failures[key] = self._failures.get(key, 0) + 1
        return self.delay(n)

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2 ** (failures - 1))

    def failures(self, key: Hashable) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)
