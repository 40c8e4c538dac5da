"""Leader election on a real Lease (the local API server): one leader at a time, a standby takes
over only once the Lease has expired on its own clock, at once after a release, and a leader
that cannot renew stops acting (its writes are fenced) before anyone else may start. The
electors' clocks are the tests' own, so the timing is exact rather than slept for."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client

from sparsify_operator.kube import Kube, NotLeader
from sparsify_operator.leader import LeaderElector, Timing

pytestmark = pytest.mark.cluster
TIMING = Timing(lease_duration=10, renew_deadline=7, retry_period=1)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(kube, namespace, who, clock, **callbacks):
    return LeaderElector(kube, namespace, "sparsify-operator", who, TIMING, clock=clock, **callbacks)


def holder(kube, namespace) -> str:
    return client.CoordinationV1Api(kube).read_namespaced_lease("sparsify-operator", namespace).spec.holder_identity


def test_one_leader_and_a_standby_that_waits_the_lease_out_on_its_own_clock(kube, namespace):
    ca, cb = Clock(), Clock()
    said = []
    a = elector(kube, namespace, "a", ca, on_started=lambda: said.append("a leads"), on_stopped=lambda: said.append("a stops"))
    b = elector(kube, namespace, "b", cb, on_started=lambda: said.append("b leads"))
    a.step()
    b.step()
    assert a.holding() and not b.holding() and holder(kube, namespace) == "a"
    for _ in range(3):  # a renews, b keeps seeing a fresh record
        ca.t += 1
        cb.t += 1
        a.step()
        b.step()
    assert a.holding() and not b.holding()
    # a stops renewing (killed, paused, cut off): after its renew deadline it no longer acts
    ca.t += TIMING.renew_deadline
    assert not a.holding()
    # b saw the record last change 0 s ago on its clock: it waits the full lease duration
    cb.t += TIMING.lease_duration - 0.5
    b.step()
    assert not b.holding() and holder(kube, namespace) == "a"
    cb.t += 1
    b.step()
    assert b.holding() and holder(kube, namespace) == "b" and b.transitions == 1
    # a comes back: it sees b's record and stays a standby (and says it stopped leading)
    a.step()
    assert not a.holding() and said == ["a leads", "b leads", "a stops"]
    lease = client.CoordinationV1Api(kube).read_namespaced_lease("sparsify-operator", namespace)
    assert lease.spec.lease_transitions == 1 and lease.spec.lease_duration_seconds == 10


def test_a_released_lease_is_taken_at_the_standbys_next_try(kube, namespace):
    ca, cb = Clock(), Clock()
    a, b = elector(kube, namespace, "a", ca), elector(kube, namespace, "b", cb)
    a.step()
    b.step()
    a.release()  # a clean shutdown
    assert not a.holding() and holder(kube, namespace) == ""
    b.step()  # no waiting out the lease
    assert b.holding() and holder(kube, namespace) == "b"


def test_two_standbys_racing_for_an_expired_lease_never_both_win(kube, namespace):
    c0 = Clock()
    elector(kube, namespace, "gone", c0).step()  # a leader that then dies
    clocks = [Clock() for _ in range(4)]
    standbys = [elector(kube, namespace, f"s{i}", clocks[i]) for i in range(4)]
    for s in standbys:
        s.step()  # each sees the record, on its own clock
    for c in clocks:
        c.t += TIMING.lease_duration + 1
    barrier = threading.Barrier(len(standbys))

    def race(s):
        barrier.wait()
        s.step()

    threads = [threading.Thread(target=race, args=(s,)) for s in standbys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leaders = [s.identity for s in standbys if s.holding()]
    assert leaders == [holder(kube, namespace)]  # the resourceVersion made it a compare-and-swap


def test_a_replica_that_does_not_lead_never_writes(kube, namespace):
    ca = Clock()
    a = elector(kube, namespace, "a", ca)
    fenced = Kube(kube, fence=a.holding)
    sj = {"apiVersion": "v1", "kind": "x", "metadata": {"name": "x", "namespace": namespace, "uid": "u"}}
    with pytest.raises(NotLeader):
        fenced.post_event(sj, "Normal", "Test", "never posted")
    a.step()
    fenced.post_event(sj, "Normal", "Test", "posted while leading")
    ca.t += TIMING.renew_deadline  # could not renew for its deadline: stops before a standby may start
    with pytest.raises(NotLeader):
        fenced.create({"kind": "Job", "metadata": {"name": "x", "namespace": namespace}})
    messages = [e.message for e in client.CoreV1Api(kube).list_namespaced_event(namespace).items]
    assert messages == ["posted while leading"]
