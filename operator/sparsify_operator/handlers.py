"""Kopf wiring (thin). Kopf watches SparsifyJobs, stage Jobs and stage pods; each event only
updates the cache and, if it changed anything, queues the owning SparsifyJob's key (an
`async` handler on Kopf's event loop: no thread pool to wait in, no API call). The work itself
is the controller's (controller.py): workers, resync, leader election. An echo of the
operator's own write changes nothing in the cache, so it queues nothing. What lives between
events is set up in `startup` into Kopf's memo and stopped in `cleanup`. No finalizers:
children are cleaned up by owner references, so deleting a SparsifyJob never waits for the
operator."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import kopf
from kubernetes import client
from kubernetes import config as kube_config

from . import config, controller, metrics
from .api import GROUP, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION
from .cache import Change
from .controller import Runtime
from .kube import TimedApiClient
from .workqueue import NEW

log = logging.getLogger("sparsify_operator")
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def _api_client() -> client.ApiClient:
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = max(8, 2 * config.workers())  # one connection per worker, and the recorder's, elector's, resync's
    return TimedApiClient(cfg)


class NoDiffBase(kopf.DiffBaseStorage):
    """No "last handled state": the operator has only event handlers and decides from what it
    observes, so it never needs one, and Kopf would otherwise deep-copy every object on every
    watch event to build it (a third of the operator's CPU in a burst of 500)."""

    def build(self, *, body, extra_fields=None):
        return None

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        pass


def configure(settings: kopf.OperatorSettings) -> None:
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True  # our resources are known: no need to watch CRDs (and no RBAC for it)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.chunk_size = 500  # Kopf's own initial lists come in pages too, not as one response of every object
    settings.queueing.idle_timeout = 1.0  # Kopf's per-object task goes a second after its last event (not 5 s): fewer held at once
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # Only the operator's own Jobs and pods are listed and watched, filtered by the API server
    # (a cluster's other Jobs and pods never reach this process).
    settings.watching.label_selectors["batch", "jobs"] = SELECTOR
    settings.watching.label_selectors["", "pods"] = SELECTOR
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per event ("Handler ... succeeded")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    configure(settings)
    # The port first: a replica that cannot serve its metrics exits (and its pod restarts,
    # visibly) before it ever runs for the leader Lease, instead of holding the Lease while
    # Kopf retries this handler and the healthy replica stands by.
    port, address = config.metrics_port(), config.listen_address()
    try:
        metrics.serve(port, address)
    except OSError as e:
        raise kopf.PermanentError(
            f"cannot serve metrics on {address}:{port} ({e.strerror}): another process in this pod's network holds the port;"
            " set another metrics.port, or listenOnPodIP where replicas share the node's network (hostNetwork)"
        ) from e
    memo.runtime = controller.start(_api_client(), config.from_env())


@kopf.on.startup()
async def measure_event_loop_lag(**_) -> None:
    """Kopf reads every watch stream and calls every handler on one event loop: how late its
    timers fire is how long a watch event waits before its handler runs."""
    asyncio.get_running_loop().create_task(_loop_lag())


async def _loop_lag(period: float = 0.25) -> None:
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(period)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, time.monotonic() - t0 - period))


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_) -> None:
    rt: Runtime | None = memo.get("runtime")
    if rt:
        controller.shutdown(rt)


@kopf.on.probe(id="resync", errors=kopf.ErrorsMode.PERMANENT)
def resync_is_alive(memo: kopf.Memo, **_) -> float:
    """Liveness: the periodic resync (it reads from the API every period) must keep completing,
    and no reconcile may hang; a thread stuck in a call makes the pod restart instead of
    looking healthy."""
    rt: Runtime | None = memo.get("runtime")
    age = time.monotonic() - rt.resynced if rt else 0.0
    limit = config.resync_seconds() * config.LIVENESS_MISSED_RESYNCS
    if age > limit:
        raise kopf.PermanentError(f"the resync loop has not completed for {age:.0f}s (limit {limit:.0f}s)")
    stuck = rt.queue.oldest_processing_seconds() if rt else 0.0
    if stuck > limit:
        raise kopf.PermanentError(f"a reconcile has been running for {stuck:.0f}s (limit {limit:.0f}s)")
    return round(age, 1)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_sparsifyjob(event: dict, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    rt: Runtime = memo.runtime
    if event.get("type") == "DELETED":
        rt.cache.forget_sparsifyjob(namespace, name)
        rt.backoff.forget((namespace, name))
        metrics.observe_phase(namespace, name, None)
        return
    if _plain(event.get("object")):
        rt.enqueue((namespace, name), rt.cache.put_sparsifyjob(event["object"]), new_priority=NEW)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def on_stage_job(event: dict, namespace: str, memo: kopf.Memo, **_) -> None:
    rt: Runtime = memo.runtime
    _on_child(rt, event, namespace, rt.cache.put_job, rt.cache.forget_job)


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def on_stage_pod(event: dict, namespace: str, memo: kopf.Memo, **_) -> None:
    rt: Runtime = memo.runtime
    _on_child(rt, event, namespace, rt.cache.put_pod, rt.cache.forget_pod)


def _on_child(rt: Runtime, event: dict, namespace: str, put: Callable[[dict], Change], forget: Callable[[dict], None]) -> None:
    """A stage Job or pod changed: into the cache, and its SparsifyJob queued if that mattered."""
    obj = event.get("object")
    if not _plain(obj):
        return
    owner = (obj["metadata"].get("labels") or {}).get(LABEL_JOB)
    if event.get("type") == "DELETED":
        forget(obj)
        if owner:
            rt.queue.add((namespace, owner))  # a child gone: the next reconcile sees whether that matters
        return
    change = put(obj)
    if owner:
        rt.enqueue((namespace, owner), change)


def _plain(obj) -> bool:
    """A well-formed object (the operator outlives odd ones: it never crashes on them)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return isinstance(meta, dict) and isinstance(meta.get("name"), str) and isinstance(meta.get("namespace"), str)
