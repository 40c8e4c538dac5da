"""Retry a failed reconcile with backoff (client-go's rate-limited requeue, per object): an API
error or a bug on one object is tried again after 1, 2, 4, ... 60 s instead of waiting for the
next event or the periodic resync, and never more than once at a time per object."""

from __future__ import annotations

import threading
from collections.abc import Callable

Key = tuple[str, str]


class Backoff:
    def __init__(self, run: Callable[[str, str], None], base: float = 1.0, cap: float = 60.0):
        self._run, self._base, self._cap = run, base, cap
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, threading.Timer] = {}
        self._lock = threading.Lock()

    def delay(self, failures: int) -> float:
        return min(self._cap, self._base * 2 ** (failures - 1))

    def failed(self, key: Key) -> float | None:
        """Schedule another try of `key`; the delay, or None if one is already scheduled."""
        with self._lock:
            self._failures[key] = self._failures.get(key, 0) + 1
            if key in self._timers:
                return None
            delay = self.delay(self._failures[key])
            timer = threading.Timer(delay, self._fire, args=(key,))
            timer.daemon = True
            self._timers[key] = timer
        timer.start()
        return delay

    def succeeded(self, key: Key) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def forget(self, key: Key) -> None:
        """The object is gone: no more tries."""
        with self._lock:
            self._failures.pop(key, None)
            timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()

    def stop(self) -> None:
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for t in timers:
            t.cancel()

    def pending(self) -> int:
        with self._lock:
            return len(self._timers)

    def _fire(self, key: Key) -> None:
        with self._lock:
            self._timers.pop(key, None)
        self._run(*key)


class KeyedLocks:
    """One lock per object (events arrive on several threads), dropped when the object goes."""

    def __init__(self):
        self._locks: dict[Key, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def forget(self, key: Key) -> None:
        with self._guard:
            self._locks.pop(key, None)

    def __len__(self) -> int:
        return len(self._locks)
