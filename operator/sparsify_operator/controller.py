"""The controller (threads and API calls): watch events fill the cache and queue object keys
(handlers.py); K worker threads drain the de-duplicating work queue (workqueue.py), each
running the level-based `reconcile` of one object from the cache; a resync loop queues every
unfinished object each period (timers such as the start deadline need no event) and relists
into the cache now and then; only the replica holding the leader Lease reconciles (leader.py),
and its writes are fenced by it. Events go out through an asynchronous recorder (events.py)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from kubernetes import client

from . import config, metrics
from .api import LABEL_STAGE, Reason
from .cache import Cache, Change, key_of, owner_key, slim, slim_job, slim_sparsifyjob, terminal
from .config import LeaderElection, OperatorConfig
from .events import EventRecorder
from .kube import Kube, NotLeader, Refused
from .leader import LeaderElector, Timing
from .observe import observe, observe_needs_pods, observe_needs_waiting_pods
from .reconcile import plan, refused
from .status import merge_patch, seconds_between
from .workqueue import FINISHED, NEW, NORMAL, ExponentialBackoff, WorkQueue

log = logging.getLogger("sparsify_operator")
Key = tuple[str, str]
RETRY_REASONS = (Reason.OOM_RETRY, Reason.KILLED_RETRY)


@dataclass
class Runtime:
    """The operator's state between events (Kopf's memo.runtime)."""

    kube: Kube
    config: OperatorConfig
    cache: Cache = field(default_factory=Cache)
    queue: WorkQueue = field(default_factory=lambda: WorkQueue(metrics.QUEUE))
    backoff: ExponentialBackoff = field(default_factory=ExponentialBackoff)
    recorder: EventRecorder | None = None
    leader: LeaderElector | None = None
    namespaces: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    leader_stop: threading.Event = field(default_factory=threading.Event)  # set after the workers are done
    wake: threading.Event = field(default_factory=threading.Event)  # resync at once (a new leader)
    relist_due: bool = False
    resynced: float = field(default_factory=time.monotonic)
    relisted: float = field(default_factory=time.monotonic)
    threads: list[threading.Thread] = field(default_factory=list)
    _failed_creates_read: dict[str, float] = field(default_factory=dict)  # Job uid -> when its events were last read

    def failed_creates_due(self, job_uid: str) -> bool:
        """A Job without pods has its FailedCreate events read at most once a resync period (a
        field-selected list of events is one of the API server's costlier reads)."""
        now, last = time.monotonic(), self._failed_creates_read.get(job_uid)
        if last is not None and now - last < config.resync_seconds():
            return False
        if len(self._failed_creates_read) > 10_000:  # Jobs long gone: forget them
            self._failed_creates_read.clear()
        self._failed_creates_read[job_uid] = now
        return True

    def leading(self) -> bool:
        return self.leader is None or self.leader.holding()

    def enqueue(self, key: Key, change: Change, new_priority: int = NORMAL) -> None:
        """A watch event changed the cache: the object needs a reconcile. A stage Job that just
        finished goes first (the next stage waits on it), then `new_priority` for an object
        seen the first time (a new SparsifyJob: NEW), then the rest."""
        if change is Change.FINISHED:
            self.queue.add(key, FINISHED)
        elif change is Change.NEW:
            self.queue.add(key, new_priority)
        elif change is Change.CHANGED:
            self.queue.add(key, NORMAL)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- one reconcile ------------------------------------------------------------------------


def reconcile(rt: Runtime, namespace: str, name: str) -> None:
    """Observe the object's Jobs and pods in the cache, plan, carry the plan out: the creates,
    then one status write (the status as it is after them), then the events it implies."""
    kube, cache = rt.kube, rt.cache
    sj = cache.sparsifyjob(namespace, name)
    if sj is None or sj["metadata"].get("deletionTimestamp"):
        return
    metrics.observe_phase(namespace, name, _phase(sj))
    if terminal(sj):
        return  # a finished run's status is final (its results latched): nothing to read or decide
    now = _now()
    jobs = cache.jobs_of(sj)
    pods, failed_creates = _pods_and_events(rt, jobs, now)
    p = plan(sj, observe(jobs, pods, failed_creates), rt.config, now)
    status, events, announced, children_changed = p.status, p.events, [], False
    for job_name, why in p.give_up:  # before the status says so: a restart then still sees it
        cache.put_job(kube.give_up(namespace, job_name, why))
        children_changed = True
        log.warning("%s/%s: stopped Job %s: %s", namespace, name, job_name, why)
    for manifest in p.create:
        try:
            new, obj = kube.create(manifest)
        except Refused as e:
            status, event = refused(sj, p.status, manifest["kind"], manifest["metadata"]["name"], e.status, e.message, now)
            events, children_changed = [event], False
            break
        if manifest["kind"] != "Job":
            continue
        if obj:
            cache.put_job(obj)  # read-your-writes: what follows sees it even before its watch event
            children_changed = True
        if new:
            job_name = manifest["metadata"]["name"]
            metrics.JOBS_CREATED.labels(manifest["metadata"]["labels"].get(LABEL_STAGE, "")).inc()
            log.info("%s/%s: created Job %s", namespace, name, job_name)
            announced += p.announce.get(job_name, [])  # said once, by the reconcile that created it
    if children_changed:  # the status as it is now (the new Jobs' creation times): no second write for them
        again = plan(sj, observe(cache.jobs_of(sj), pods, failed_creates), rt.config, now)
        status, events = again.status, again.events
    patch = merge_patch(sj.get("status"), status)
    if patch:
        log.debug("%s/%s: status patch %s", namespace, name, patch)
        cache.put_sparsifyjob(kube.patch_status(namespace, name, patch))  # the one status write of this reconcile
    for kind, reason, message in [*announced, *events]:
        if reason in RETRY_REASONS:
            metrics.RETRIES.labels(reason).inc()
        if rt.recorder:
            rt.recorder.record(sj, kind, reason, message)
    _observe_metrics(namespace, name, sj.get("status"), status)


def _phase(sj: dict) -> str | None:
    status = sj.get("status")
    phase = status.get("phase") if isinstance(status, dict) else None
    return phase if isinstance(phase, str) else None


def _observe_metrics(namespace: str, name: str, old, new: dict) -> None:
    metrics.observe_phase(namespace, name, new.get("phase"))
    old_stages = old.get("stages") if isinstance(old, dict) else None
    for stage, st in (new.get("stages") or {}).items():
        before = (old_stages or {}).get(stage) if isinstance(old_stages, dict) else None
        before = before.get("phase") if isinstance(before, dict) else None
        if st.get("phase") in ("Succeeded", "Failed") and before != st["phase"]:
            seconds = seconds_between(st.get("startTime"), st.get("completionTime"))
            if seconds is not None:
                metrics.STAGE_SECONDS.labels(stage, st["phase"]).observe(seconds)


def _pods_and_events(rt: Runtime, jobs: list[dict], now: str) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """The pods observe() needs. A finished Job's: the watched ones when they already show its
    end (as many ended pods as the Job controller counted), else read from the API; kept from
    then on, since a finished Job's pods no longer change. A Job still starting: the watched
    pods (why it does not start). With no pod at all a while after its creation, the Job
    controller's FailedCreate events (a quota), read at most once a resync period per Job."""
    pods: dict[str, list[dict]] = {}
    events: dict[str, list[dict]] = {}
    for job in jobs:
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        if observe_needs_pods(job):
            kept = rt.cache.finished_pods(uid)
            if kept is None:
                watched = rt.cache.pods_of(uid)
                kept = watched if pods_show_the_end(job, watched) else rt.kube.pods_of_job(job)
                rt.cache.put_finished_pods(uid, kept)
            pods[name] = kept
        elif observe_needs_waiting_pods(job):
            pods[name] = rt.cache.pods_of(uid)
            age = seconds_between(job["metadata"].get("creationTimestamp"), now)
            if not pods[name] and age is not None and age >= failed_create_grace(rt.config) and rt.failed_creates_due(uid):
                events[name] = rt.kube.failed_creates(job)
    return pods, events


def failed_create_grace(cfg: OperatorConfig) -> float:
    """How long a Job may have no pod before the operator asks why (a quota refusing them): a
    tenth of the start deadline (30 s by default), so the reason is said well before the
    deadline fails the stage, while a Job controller merely busy creating pods is not asked."""
    return max(5.0, cfg.start_deadline_seconds / 10)


def pods_show_the_end(job: dict, pods: list[dict]) -> bool:
    """The watched pods of a finished Job already hold how it ended: at least as many ended
    (terminated) pods of the right phase as the Job controller counted, at least one."""
    status = job.get("status") or {}
    complete = any(c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or [])
    phase, counted = ("Succeeded", status.get("succeeded")) if complete else ("Failed", status.get("failed"))
    ended = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == phase
        and any((c.get("state") or {}).get("terminated") for c in (p.get("status") or {}).get("containerStatuses") or [])
    ]
    return len(ended) >= max(1, int(counted or 0))


def process(rt: Runtime, key: Key) -> None:
    """One item of the queue. The operator outlives any one object: an error is logged and the
    object queued again with backoff (1, 2, 4 ... 60 s); a success resets its backoff."""
    try:
        reconcile(rt, *key)
    except NotLeader:
        metrics.RECONCILES.labels("not-leader").inc()
        return  # the new leader reconciles it
    except Exception as e:  # noqa: BLE001
        metrics.RECONCILES.labels("error").inc()
        delay = rt.backoff.when(key)
        rt.queue.retry_after(key, delay)
        log.exception("reconcile of %s/%s failed: %s (again in %.0fs)", *key, e, delay)
        return
    metrics.RECONCILES.labels("ok").inc()
    rt.backoff.forget(key)


def _work(rt: Runtime) -> None:
    while not rt.stop.is_set():
        if not rt.leading():
            if rt.leader:
                rt.leader.leading_event.wait(1.0)
            continue
        key = rt.queue.get(timeout=1.0)
        if key is None:
            continue
        try:
            process(rt, key)
        finally:
            rt.queue.done(key)


# ---- resync, relist -----------------------------------------------------------------------


def _resync_loop(rt: Runtime) -> None:
    """Every resync period: one cheap read (the API answers: liveness), every unfinished object
    queued (decisions that wait on time, not events), and a full relist when one is due."""
    period = config.resync_seconds()
    while not rt.stop.is_set():
        rt.wake.wait(period)
        rt.wake.clear()
        if rt.stop.is_set():
            return
        try:
            due = rt.relist_due or time.monotonic() - rt.relisted >= config.relist_seconds()
            if due:
                relist(rt)
            else:
                rt.kube.ping(rt.namespaces)
            if rt.leading():
                for key in rt.cache.unfinished():
                    rt.queue.add(key, NORMAL)
            rt.resynced = time.monotonic()
        except Exception as e:  # noqa: BLE001
            log.warning("resync failed: %s", e)


def relist(rt: Runtime) -> None:
    """Three lists (SparsifyJobs, then stage Jobs and their pods) replace the cache: whatever a
    watch missed. Each page is cut to what the cache keeps as it arrives (a finished run's Jobs
    and pods are not kept at all), so memory does not peak with the cluster's history."""
    t0 = time.monotonic()
    sparsifyjobs, rv_sj = rt.kube.list_sparsifyjobs(rt.namespaces, keep=slim_sparsifyjob)
    finished = {key_of(sj) for sj in sparsifyjobs if terminal(sj)}

    def unless_finished(trim):
        return lambda obj: None if owner_key(obj) in finished else trim(obj)

    jobs, rv_jobs = rt.kube.list_stage_jobs(rt.namespaces, keep=unless_finished(slim_job))
    rt.cache.replace(sparsifyjobs, jobs, None if None in (rv_sj, rv_jobs) else min(rv_sj, rv_jobs))
    del sparsifyjobs, jobs
    pods, _ = rt.kube.list_stage_pods(rt.namespaces, keep=unless_finished(slim))
    for pod in pods:
        rt.cache.put_pod(pod)
    rt.relisted, rt.relist_due = time.monotonic(), False
    metrics.RELIST_SECONDS.observe(rt.relisted - t0)


# ---- lifecycle ----------------------------------------------------------------------------


def identity() -> str:
    """This replica's name in the Lease: the pod's name, and a suffix so a restarted process
    is a new holder."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def start(api_client: client.ApiClient, operator_config: OperatorConfig, election: LeaderElection | None = None) -> Runtime:
    """A runtime with a complete cache (relisted before the first event is handled), its workers,
    resync loop, event recorder and (unless disabled) leader election running."""
    election = election or config.leader_election()
    rt = Runtime(kube=Kube(api_client), config=operator_config, namespaces=config.watched_namespaces())
    if election.enabled:
        rt.leader = LeaderElector(
            api_client,
            election.namespace,
            election.name,
            identity(),
            Timing(election.lease_duration, election.renew_deadline, election.retry_period),
            on_started=lambda: _became_leader(rt),
            on_stopped=lambda: metrics.LEADER.set(0),
        )
        rt.kube.fence = rt.leader.holding
    metrics.LONGEST_RUNNING.set_function(rt.queue.oldest_processing_seconds)
    rt.recorder = EventRecorder(rt.kube.post_event, on_dropped=metrics.EVENTS_DROPPED.inc).start()
    relist(rt)
    rt.resynced = time.monotonic()
    for i in range(config.workers()):
        rt.threads.append(threading.Thread(target=_work, args=(rt,), name=f"reconcile-{i}", daemon=True))
    rt.threads.append(threading.Thread(target=_resync_loop, args=(rt,), name="resync", daemon=True))
    for t in rt.threads:
        t.start()
    if rt.leader:
        rt.threads.append(rt.leader.start(rt.leader_stop))
    else:
        _became_leader(rt)
    return rt


def _became_leader(rt: Runtime) -> None:
    """Leading from now: every unfinished object queued at once, and the resync loop woken for a
    relist (not here: the elector's thread must keep renewing). Not when the cache was relisted
    within a resync period: a replica that has just started (and relisted before its first
    event) would list the cluster's whole history twice in a row."""
    metrics.LEADER.set(1)
    metrics.LEADER_TRANSITIONS.inc()
    for key in rt.cache.unfinished():
        rt.queue.add(key, NEW)
    rt.relist_due = time.monotonic() - rt.relisted >= config.resync_seconds()
    rt.wake.set()


def shutdown(rt: Runtime) -> None:
    """Stop taking work, let the reconciles under way finish, post what is queued, release the
    Lease (the standby takes over at once)."""
    rt.stop.set()
    rt.wake.set()
    rt.queue.shut_down()
    for t in rt.threads:
        if t.name.startswith("reconcile-"):
            t.join(10)
    if rt.recorder:
        rt.recorder.stop()
    rt.leader_stop.set()
    if rt.leader:
        rt.leader.release()
    metrics.LEADER.set(0)
