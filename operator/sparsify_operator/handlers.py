"""Kopf wiring (thin): every event of a SparsifyJob or of one of its Jobs, and a periodic
resync, leads to the same level-based `reconcile`. No finalizers: children are cleaned up by
owner references, so deleting a SparsifyJob never waits for the operator."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict

import kopf
from kubernetes import client, config as kube_config

from . import config
from .api import GROUP, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION
from .kube import Kube
from .observe import observe
from .reconcile import TERMINAL, plan
from .status import merge_patch

log = logging.getLogger("sparsify_operator")

_state: dict = {}
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
        sj = kube.get_sparsifyjob(namespace, name)  # fresh: the event's copy may be stale
        if sj is None or sj["metadata"].get("deletionTimestamp"):
            return
        jobs, pods = kube.children(sj)
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        p = plan(sj, observe(jobs, pods), _state["config"], now)
        for manifest in p.create:
            if kube.create(manifest) and manifest["kind"] == "Job":
                log.info("%s/%s: created Job %s", namespace, name, manifest["metadata"]["name"])
                kube.post_event(sj, "Normal", "JobCreated", f"created Job {manifest['metadata']['name']}")
        patch = merge_patch(sj.get("status"), p.status)
        if patch:
            kube.patch_status(namespace, name, patch)  # the one status write of this reconcile
        for kind, reason, message in p.events:
            kube.post_event(sj, kind, reason, message)


def safe_reconcile(namespace: str | None, name: str | None, logger: logging.Logger = log) -> None:
    """The operator outlives any one object: errors are logged, and the next event or the
    periodic resync tries again."""
    if not namespace or not name:
        return
    try:
        reconcile(namespace, name)
    except Exception as e:  # noqa: BLE001
        logger.exception("reconcile of %s/%s failed: %s", namespace, name, e)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_) -> None:
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True  # our resources are known: no need to watch CRDs (and no RBAC for it)
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    _kube()
    threading.Thread(target=_resync_loop, name="resync", daemon=True).start()


def _resync_loop() -> None:
    """Level-based safety net: converge every unfinished SparsifyJob periodically, so a missed
    watch event (or an operator restart) never strands one."""
    stop = threading.Event()
    while not stop.wait(config.resync_seconds()):
        try:
            for sj in _kube().list_sparsifyjobs(config.watched_namespaces()):
                if (sj.get("status") or {}).get("phase") not in TERMINAL:
                    safe_reconcile(sj["metadata"]["namespace"], sj["metadata"]["name"])
        except Exception as e:  # noqa: BLE001
            log.warning("resync failed: %s", e)


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_sparsifyjob(event: dict, namespace: str, name: str, logger: logging.Logger, **_) -> None:
    if event.get("type") != "DELETED":
        safe_reconcile(namespace, name, logger)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def on_stage_job(body: kopf.Body, namespace: str, logger: logging.Logger, **_) -> None:
    safe_reconcile(namespace, (body.metadata.labels or {}).get(LABEL_JOB), logger)
