"""Leader election on a coordination.k8s.io/v1 Lease (client-go's leaderelection, for threads).

Every replica runs the same process: watches fill its cache and queue, but only the holder of
the Lease reconciles. The holder renews every `retry_period`; a replica that finds the Lease
held takes it only once `lease_duration` has passed on its own clock since it last saw the
record change (no trust in other machines' clocks). The holder stops acting once it has not
renewed for `renew_deadline` (< lease_duration), before anyone else may take over, and every
write the operator makes checks `holding()` first (kube.py): a paused or partitioned leader
never writes after its successor started. A leader that shuts down releases the Lease, so the
standby takes over at its next try instead of waiting the lease out.

Why not Kopf's peering: it pauses operators of a *lower* priority; two replicas of the same
priority both keep running (with a warning), and nothing fences a paused one's writes."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("sparsify_operator")
MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 10.0  # a standby waits this long after the last renewal it saw
    renew_deadline: float = 7.0  # the leader stops acting when it has not renewed for this long
    retry_period: float = 1.0  # how often the leader renews and a standby tries

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(f"leader election needs 0 < retryPeriod < renewDeadline < leaseDuration, got {self}")


def _micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime(MICRO_TIME)


class LeaderElector:
    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing = Timing(),
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity, self.timing = namespace, name, identity, timing
        self.on_started, self.on_stopped, self.clock = on_started, on_stopped, clock
        self._leading = False
        self._renewed_at = float("-inf")  # when the last successful renewal began (our clock)
        self._observed: tuple | None = None  # the Lease record as last seen
        self._observed_at = float("-inf")  # when it last changed (our clock)
        self.transitions = 0  # times this replica became leader
        self.leading_event = threading.Event()

    # ---- what the rest of the operator asks ----------------------------------------------

    def holding(self) -> bool:
        """True while this replica may act: it leads and its last renewal is recent enough
        that no other replica can have taken over."""
        return self._leading and self.clock() - self._renewed_at < self.timing.renew_deadline

    @property
    def holder(self) -> str | None:
        return self._observed[0] if self._observed else None

    # ---- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
            stop.wait(self.timing.retry_period)
        self.release()

    def start(self, stop: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(stop,), name="leader-election", daemon=True)
        t.start()
        return t

    def step(self) -> None:
        """One try to acquire or renew; starts or stops leading accordingly."""
        began = self.clock()
        try:
            ok = self._try_acquire_or_renew()
        except Exception as e:  # noqa: BLE001  (an API error is a failed renewal, never a crash)
            log.warning("leader election: could not reach the Lease %s/%s: %s", self.namespace, self.name, getattr(e, "reason", e))
            ok = False
        if ok:
            self._renewed_at = began
            if not self._leading:
                self._leading = True
                self.transitions += 1
                self.leading_event.set()
                log.info("leader election: %s now leads (Lease %s/%s)", self.identity, self.namespace, self.name)
                self.on_started()
            return
        lost = self.holder not in (None, "", self.identity) or self.clock() - self._renewed_at >= self.timing.renew_deadline
        if self._leading and lost:
            self._leading = False
            self.leading_event.clear()
            log.error("leader election: %s lost the Lease %s/%s (holder now %s)", self.identity, self.namespace, self.name, self.holder)
            self.on_stopped()

    def _try_acquire_or_renew(self) -> bool:
        try:
            lease = self._call(self.api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            return self._create()
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.timing.lease_duration)
        if holder and holder != self.identity and self.clock() - self._observed_at < duration:
            return False  # held by another replica, and not yet expired by our clock
        now = _micro_now()
        mine = holder == self.identity
        lease["spec"] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timing.lease_duration),
            "acquireTime": spec.get("acquireTime") if mine and spec.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if mine else 1),
        }
        try:  # the resourceVersion makes this a compare-and-swap: two standbys cannot both win
            updated = self._call(self.api.replace_namespaced_lease, self.name, self.namespace, lease)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        self._see(updated)
        return True

    def _create(self) -> bool:
        now = _micro_now()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.timing.lease_duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            created = self._call(self.api.create_namespaced_lease, self.namespace, body)
        except ApiException as e:
            if e.status == 409:
                return False  # another replica created it first
            raise
        self._see(created)
        return True

    def _see(self, lease: dict) -> None:
        spec = lease.get("spec") or {}
        self._observed = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseTransitions"))
        self._observed_at = self.clock()

    def release(self) -> None:
        """Give the Lease up (a clean shutdown): the standby takes over at its next try."""
        if not self.holding():
            return
        self._leading = False
        self.leading_event.clear()
        try:
            lease = self._call(self.api.read_namespaced_lease, self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_now())
            self._call(self.api.replace_namespaced_lease, self.name, self.namespace, lease)
            log.info("leader election: %s released the Lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as e:  # noqa: BLE001  (the lease then simply expires)
            log.warning("leader election: could not release the Lease: %s", getattr(e, "reason", e))

    def _call(self, fn, *args) -> dict:
        timeout = (2, max(1.0, self.timing.renew_deadline / 2))
        return json.loads(fn(*args, _preload_content=False, _request_timeout=timeout).data)
