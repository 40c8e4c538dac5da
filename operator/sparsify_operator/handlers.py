"""Kopf wiring (thin): every event of a SparsifyJob or of one of its Jobs updates the cache
(cache.py) and leads to the same level-based `reconcile`, which reads only the cache; a
periodic resync relists into the cache and reconciles whatever is unfinished; a reconcile that
fails is tried again with backoff (requeue.py). What lives between events (API client, config,
cache, locks, the resync thread) is set up in `startup` into Kopf's memo and stopped in
`cleanup`. No finalizers: children are cleaned up by owner references, so deleting a
SparsifyJob never waits for the operator."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field

import kopf
from kubernetes import client
from kubernetes import config as kube_config

from . import config, metrics
from .api import GROUP, LABEL_JOB, LABEL_MANAGED_BY, LABEL_STAGE, MANAGED_BY, PLURAL, TERMINAL, VERSION, Reason
from .cache import Cache
from .config import OperatorConfig
from .kube import Kube, Refused
from .observe import observe, observe_needs_pods, observe_needs_waiting_pods
from .reconcile import plan, refused
from .requeue import Backoff, KeyedLocks
from .status import merge_patch, seconds_between

log = logging.getLogger("sparsify_operator")
RETRY_REASONS = (Reason.OOM_RETRY, Reason.KILLED_RETRY)


@dataclass
class Runtime:
    """The operator's state between events (Kopf's memo.runtime)."""

    kube: Kube
    config: OperatorConfig
    cache: Cache = field(default_factory=Cache)
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    backoff: Backoff | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    resynced: float = field(default_factory=time.monotonic)


def _api_client() -> client.ApiClient:
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    return client.ApiClient()


def reconcile(rt: Runtime, namespace: str, name: str) -> None:
    kube, cache = rt.kube, rt.cache
    with rt.locks((namespace, name)):  # one reconcile per object at a time (events arrive on several threads)
        sj = cache.sparsifyjob(namespace, name)
        if sj is None or sj["metadata"].get("deletionTimestamp"):
            return
        jobs = cache.jobs_of(sj)
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        pods, events = _pods_and_events(rt, jobs)
        p = plan(sj, observe(jobs, pods, events), rt.config, now)
        for job_name, why in p.give_up:  # before the status says so: a restart then still sees it
            cache.put_job(kube.give_up(namespace, job_name, why))
            log.warning("%s/%s: stopped Job %s: %s", namespace, name, job_name, why)
        for manifest in p.create:
            try:
                new, obj = kube.create(manifest)
            except Refused as e:
                p.status, event = refused(sj, p.status, manifest["kind"], manifest["metadata"]["name"], e.status, e.message, now)
                p.events = [event]
                break
            if manifest["kind"] != "Job":
                continue
            if obj:
                cache.put_job(obj)  # read-your-writes: the next reconcile sees it even before its watch event
            if new:  # what the plan says about this Job is said once, by the reconcile that created it
                metrics.JOBS_CREATED.labels(manifest["metadata"]["labels"].get(LABEL_STAGE, "")).inc()
                log.info("%s/%s: created Job %s", namespace, name, manifest["metadata"]["name"])
                for kind, reason, message in p.announce.get(manifest["metadata"]["name"], []):
                    if reason in RETRY_REASONS:
                        metrics.RETRIES.labels(reason).inc()
                    kube.post_event(sj, kind, reason, message)
        patch = merge_patch(sj.get("status"), p.status)
        if patch:
            cache.put_sparsifyjob(kube.patch_status(namespace, name, patch))  # the one status write of this reconcile
        for kind, reason, message in p.events:
            kube.post_event(sj, kind, reason, message)
        _observe_metrics(namespace, name, sj.get("status"), p.status)


def _observe_metrics(namespace: str, name: str, old: dict | None, new: dict) -> None:
    metrics.observe_phase(namespace, name, new.get("phase"))
    old_stages = (old or {}).get("stages") if isinstance(old, dict) else None
    for stage, st in (new.get("stages") or {}).items():
        before = (old_stages or {}).get(stage) if isinstance(old_stages, dict) else None
        before = before.get("phase") if isinstance(before, dict) else None
        if st.get("phase") in TERMINAL and before != st["phase"]:
            seconds = seconds_between(st.get("startTime"), st.get("completionTime"))
            if seconds is not None:
                metrics.STAGE_SECONDS.labels(stage, st["phase"]).observe(seconds)


def _pods_and_events(rt: Runtime, jobs: list[dict]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """The pods of finished Jobs (read once, kept) and of Jobs whose pods are not up yet (read
    each time: they say why they are not starting), and the FailedCreate events of a Job that
    has no pod at all."""
    pods = _finished_pods(rt, jobs)
    events: dict[str, list[dict]] = {}
    for job in jobs:
        if observe_needs_waiting_pods(job):
            name = job["metadata"]["name"]
            pods[name] = rt.kube.pods_of_job(job)
            if not pods[name]:
                events[name] = rt.kube.failed_creates(job)
    return pods, events


def _finished_pods(rt: Runtime, jobs: list[dict]) -> dict[str, list[dict]]:
    """Pods matter only once their Job has finished (exit codes, termination messages); a
    finished Job's pods no longer change, so they are read once and kept."""
    out: dict[str, list[dict]] = {}
    for job in jobs:
        if not observe_needs_pods(job):
            continue
        uid = job["metadata"]["uid"]
        pods = rt.cache.finished_pods(uid)
        if pods is None:
            pods = rt.kube.pods_of_job(job)
            rt.cache.put_finished_pods(uid, pods)
        out[job["metadata"]["name"]] = pods
    return out


def safe_reconcile(rt: Runtime, namespace: str | None, name: str | None, logger: logging.Logger = log) -> None:
    """The operator outlives any one object: an error is logged and the object tried again
    with backoff (and by the next event or resync, whichever comes first)."""
    if not namespace or not name:
        return
    try:
        reconcile(rt, namespace, name)
    except Exception as e:  # noqa: BLE001
        metrics.RECONCILES.labels("error").inc()
        delay = rt.backoff.failed((namespace, name)) if rt.backoff else None
        logger.exception("reconcile of %s/%s failed: %s%s", namespace, name, e, f" (again in {delay:.0f}s)" if delay else "")
        return
    metrics.RECONCILES.labels("ok").inc()
    if rt.backoff:
        rt.backoff.succeeded((namespace, name))


def configure(settings: kopf.OperatorSettings) -> None:
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True  # our resources are known: no need to watch CRDs (and no RBAC for it)
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # Only the operator's own Jobs are listed and watched, filtered by the API server (a cluster's
    # other Jobs never reach this process).
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def start(api_client: client.ApiClient, operator_config: OperatorConfig) -> Runtime:
    """A runtime with a complete cache (relisted before the first event is handled) and its
    resync thread running."""
    rt = Runtime(kube=Kube(api_client), config=operator_config)
    rt.backoff = Backoff(lambda namespace, name: safe_reconcile(rt, namespace, name))
    relist(rt)
    rt.resynced = time.monotonic()
    threading.Thread(target=_resync_loop, args=(rt,), name="resync", daemon=True).start()
    return rt


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    configure(settings)
    memo.runtime = start(_api_client(), config.from_env())
    metrics.serve(config.metrics_port())


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_) -> None:
    rt: Runtime | None = memo.get("runtime")
    if rt:
        rt.stop.set()
        if rt.backoff:
            rt.backoff.stop()


@kopf.on.probe(id="resync", errors=kopf.ErrorsMode.PERMANENT)
def resync_is_alive(memo: kopf.Memo, **_) -> float:
    """Liveness: the periodic resync (the safety net for anything a watch missed) must keep
    completing; a thread stuck in a call makes the pod restart instead of looking healthy."""
    rt: Runtime | None = memo.get("runtime")
    age = time.monotonic() - rt.resynced if rt else 0.0
    limit = config.resync_seconds() * config.LIVENESS_MISSED_RESYNCS
    if age > limit:
        raise kopf.PermanentError(f"the resync loop has not completed for {age:.0f}s (limit {limit:.0f}s)")
    return round(age, 1)


def _resync_loop(rt: Runtime) -> None:
    """Level-based safety net: converge every unfinished SparsifyJob periodically, so a missed
    watch event (or an operator restart) never strands one."""
    while not rt.stop.wait(config.resync_seconds()):
        try:
            relist(rt)
            for sj in rt.cache.sparsifyjobs():
                if (sj.get("status") or {}).get("phase") not in TERMINAL:
                    safe_reconcile(rt, sj["metadata"]["namespace"], sj["metadata"]["name"])
            rt.resynced = time.monotonic()
        except Exception as e:  # noqa: BLE001
            log.warning("resync failed: %s", e)


def relist(rt: Runtime) -> None:
    """Two lists (SparsifyJobs, then stage Jobs) replace the cache: whatever a watch missed."""
    namespaces = config.watched_namespaces()
    sparsifyjobs, rv_sj = rt.kube.list_sparsifyjobs(namespaces)
    jobs, rv_jobs = rt.kube.list_stage_jobs(namespaces)
    rt.cache.replace(sparsifyjobs, jobs, None if None in (rv_sj, rv_jobs) else min(rv_sj, rv_jobs))


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_sparsifyjob(event: dict, namespace: str, name: str, logger: logging.Logger, memo: kopf.Memo, **_) -> None:
    rt: Runtime = memo.runtime
    if event.get("type") == "DELETED":
        rt.cache.forget_sparsifyjob(namespace, name)
        rt.locks.forget((namespace, name))
        if rt.backoff:
            rt.backoff.forget((namespace, name))
        metrics.observe_phase(namespace, name, None)
        return
    if _plain(event.get("object")):
        rt.cache.put_sparsifyjob(event["object"])
    safe_reconcile(rt, namespace, name, logger)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def on_stage_job(event: dict, body: kopf.Body, namespace: str, logger: logging.Logger, memo: kopf.Memo, **_) -> None:
    rt: Runtime = memo.runtime
    if _plain(event.get("object")):
        (rt.cache.forget_job if event.get("type") == "DELETED" else rt.cache.put_job)(event["object"])
    safe_reconcile(rt, namespace, (body.metadata.labels or {}).get(LABEL_JOB), logger)


def _plain(obj) -> bool:
    """A well-formed object (the operator outlives odd ones: it never crashes on them)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return isinstance(meta, dict) and isinstance(meta.get("name"), str) and isinstance(meta.get("namespace"), str)
