"""Kopf wiring (thin): every event of a SparsifyJob or of one of its Jobs updates the cache
(cache.py) and leads to the same level-based `reconcile`, which reads only the cache; a
periodic resync relists into the cache and reconciles whatever is unfinished. No finalizers:
children are cleaned up by owner references, so deleting a SparsifyJob never waits for the
operator."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict

import kopf
from kubernetes import client, config as kube_config

from . import config, metrics
from .api import GROUP, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION
from .cache import Cache
from .kube import Kube, Refused
from .observe import observe, observe_needs_pods, observe_needs_waiting_pods
from .reconcile import TERMINAL, plan, refused
from .status import merge_patch, seconds_between

log = logging.getLogger("sparsify_operator")

_state: dict = {}
cache = Cache()
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def _kube() -> Kube:
    if "kube" not in _state:
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
        _state["kube"] = Kube(client.ApiClient())
        _state["config"] = config.from_env()
    return _state["kube"]


def reconcile(namespace: str, name: str) -> None:
    kube = _kube()
    with _locks[(namespace, name)]:  # one reconcile per object at a time (events arrive on several threads)
        sj = cache.sparsifyjob(namespace, name)
        if sj is None or sj["metadata"].get("deletionTimestamp"):
            return
        jobs = cache.jobs_of(sj)
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        pods, events = _pods_and_events(kube, jobs)
        p = plan(sj, observe(jobs, pods, events), _state["config"], now)
        for job_name, why in p.give_up:  # before the status says so: a restart then still sees it
            cache.put_job(kube.give_up(namespace, job_name, why))
            log.warning("%s/%s: stopped Job %s: %s", namespace, name, job_name, why)
        created = set()
        for manifest in p.create:
            try:
                new, obj = kube.create(manifest)
            except Refused as e:
                p.status, event = refused(sj, p.status, manifest["kind"], manifest["metadata"]["name"], e.status, e.message, now)
                p.events = [event]
                break
            if manifest["kind"] == "Job" and obj:
                cache.put_job(obj)  # read-your-writes: the next reconcile sees it even before its watch event
            if new and manifest["kind"] == "Job":
                created.add(manifest["metadata"]["name"])
                stage = manifest["metadata"]["labels"].get("yolo-sparsify.io/stage", "")
                metrics.JOBS_CREATED.labels(stage).inc()
                log.info("%s/%s: created Job %s", namespace, name, manifest["metadata"]["name"])
                kube.post_event(sj, "Normal", "JobCreated", f"created Job {manifest['metadata']['name']}")
        patch = merge_patch(sj.get("status"), p.status)
        if patch:
            cache.put_sparsifyjob(kube.patch_status(namespace, name, patch))  # the one status write of this reconcile
        for kind, reason, message in p.events:
            if reason in ("OOMRetry", "KilledRetry") and not created:
                continue  # the retry Job already existed: this was said before
            if reason in ("OOMRetry", "KilledRetry"):
                metrics.RETRIES.labels(reason).inc()
            kube.post_event(sj, kind, reason, message)
        metrics.observe_phase(namespace, name, p.status.get("phase"))
        for stage, st in (p.status.get("stages") or {}).items():
            old_phase = ((sj.get("status") or {}).get("stages") or {}).get(stage, {})
            old_phase = old_phase.get("phase") if isinstance(old_phase, dict) else None
            if st.get("phase") in ("Succeeded", "Failed") and old_phase != st["phase"]:
                seconds = seconds_between(st.get("startTime"), st.get("completionTime"))
                if seconds is not None:
                    metrics.STAGE_SECONDS.labels(stage, st["phase"]).observe(seconds)


def _pods_and_events(kube: Kube, jobs: list[dict]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """The pods of finished Jobs (read once, kept) and of Jobs whose pods are not up yet (read
    each time: they say why they are not starting), and the FailedCreate events of a Job that
    has no pod at all."""
    pods = _finished_pods(kube, jobs)
    events: dict[str, list[dict]] = {}
    for job in jobs:
        if observe_needs_waiting_pods(job):
            name = job["metadata"]["name"]
            pods[name] = kube.pods_of_job(job)
            if not pods[name]:
                events[name] = kube.failed_creates(job)
    return pods, events


def _finished_pods(kube: Kube, jobs: list[dict]) -> dict[str, list[dict]]:
    """Pods matter only once their Job has finished (exit codes, termination messages); a
    finished Job's pods no longer change, so they are read once and kept."""
    out: dict[str, list[dict]] = {}
    for job in jobs:
        if not observe_needs_pods(job):
            continue
        uid = job["metadata"]["uid"]
        pods = cache.finished_pods(uid)
        if pods is None:
            pods = kube.pods_of_job(job)
            cache.put_finished_pods(uid, pods)
        out[job["metadata"]["name"]] = pods
    return out


def safe_reconcile(namespace: str | None, name: str | None, logger: logging.Logger = log) -> None:
    """The operator outlives any one object: errors are logged, and the next event or the
    periodic resync tries again."""
    if not namespace or not name:
        return
    try:
        reconcile(namespace, name)
        metrics.RECONCILES.labels("ok").inc()
    except Exception as e:  # noqa: BLE001
        metrics.RECONCILES.labels("error").inc()
        logger.exception("reconcile of %s/%s failed: %s", namespace, name, e)


def configure(settings: kopf.OperatorSettings) -> None:
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True  # our resources are known: no need to watch CRDs (and no RBAC for it)
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # Only the operator's own Jobs are listed and watched, filtered by the API server (a cluster's
    # other Jobs never reach this process).
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_) -> None:
    configure(settings)
    _relist()  # the cache is complete before the first event is handled
    _state["resynced"] = time.monotonic()
    metrics.serve(config.metrics_port())
    threading.Thread(target=_resync_loop, name="resync", daemon=True).start()


@kopf.on.probe(id="resync", errors=kopf.ErrorsMode.PERMANENT)
def resync_is_alive(**_) -> float:
    """Liveness: the periodic resync (the safety net for anything a watch missed) must keep
    completing; a thread stuck in a call makes the pod restart instead of looking healthy."""
    age = time.monotonic() - _state.get("resynced", time.monotonic())
    limit = config.resync_seconds() * config.LIVENESS_MISSED_RESYNCS
    if age > limit:
        raise kopf.PermanentError(f"the resync loop has not completed for {age:.0f}s (limit {limit:.0f}s)")
    return round(age, 1)


def _resync_loop() -> None:
    """Level-based safety net: converge every unfinished SparsifyJob periodically, so a missed
    watch event (or an operator restart) never strands one."""
    stop = threading.Event()
    while not stop.wait(config.resync_seconds()):
        try:
            _relist()
            for sj in cache.sparsifyjobs():
                if (sj.get("status") or {}).get("phase") not in TERMINAL:
                    safe_reconcile(sj["metadata"]["namespace"], sj["metadata"]["name"])
            _state["resynced"] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            log.warning("resync failed: %s", e)


def _relist() -> None:
    """Two lists (SparsifyJobs, then stage Jobs) replace the cache: whatever a watch missed."""
    kube, namespaces = _kube(), config.watched_namespaces()
    sparsifyjobs, rv_sj = kube.list_sparsifyjobs(namespaces)
    jobs, rv_jobs = kube.list_stage_jobs(namespaces)
    cache.replace(sparsifyjobs, jobs, None if None in (rv_sj, rv_jobs) else min(rv_sj, rv_jobs))


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_sparsifyjob(event: dict, namespace: str, name: str, logger: logging.Logger, **_) -> None:
    if event.get("type") == "DELETED":
        cache.forget_sparsifyjob(namespace, name)
        metrics.observe_phase(namespace, name, None)
        return
    if _plain(event.get("object")):
        cache.put_sparsifyjob(event["object"])
    safe_reconcile(namespace, name, logger)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def on_stage_job(event: dict, body: kopf.Body, namespace: str, logger: logging.Logger, **_) -> None:
    if _plain(event.get("object")):
        (cache.forget_job if event.get("type") == "DELETED" else cache.put_job)(event["object"])
    safe_reconcile(namespace, (body.metadata.labels or {}).get(LABEL_JOB), logger)


def _plain(obj) -> bool:
    """A well-formed object (the operator outlives odd ones: it never crashes on them)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return isinstance(meta, dict) and isinstance(meta.get("name"), str) and isinstance(meta.get("namespace"), str)
