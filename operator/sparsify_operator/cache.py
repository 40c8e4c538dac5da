"""The operator's view of the cluster, kept by watches instead of read per reconcile (an
informer cache, as controller-runtime keeps one).

  - SparsifyJobs, stage Jobs and stage pods come from the watch events Kopf receives, primed by
    one list at startup and replaced by an occasional relist (the safety net for a lost event);
  - the operator's own writes go in at once (read-your-writes: a status patch or a new Job is
    never seen stale by the next reconcile), and their echoes from the watch change nothing,
    so they cause no reconcile (`put_*` say whether anything changed);
  - a finished Job's pods are fixed once (the watched ones if they already show its end, else
    read from the API: the watches of Jobs and pods deliver in no common order) and kept
    until the Job goes;
  - only what `observe` reads is kept (`slim_*`), and a finished SparsifyJob is kept as a
    stub: its results are latched in its status, so its Jobs and pods are never needed again.
Thread-safe: handlers and workers call it from several threads."""

from __future__ import annotations

import threading
from enum import Enum

from .api import LABEL_JOB, TERMINAL
from .observe import STUCK_REASONS

Key = tuple[str, str]  # (namespace, name)
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


class Change(Enum):
    """What a watch event (or a write's answer) did to the cache."""

    NONE = "none"  # the same copy again (an echo of our own write, a relist)
    NEW = "new"  # first seen
    CHANGED = "changed"
    FINISHED = "finished"  # a stage Job that has just completed or failed


def _rv(obj: dict) -> int | None:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None


def _newer_or_equal(new: dict, old: dict | None) -> bool:
    """Keep whichever copy is newer. resourceVersions are etcd revisions; where one is not a
    number we cannot order them and the newcomer wins (as an informer would do)."""
    if old is None:
        return True
    a, b = _rv(new), _rv(old)
    return a is None or b is None or a >= b


def _same_version(new: dict, old: dict | None) -> bool:
    return old is not None and _rv(new) is not None and _rv(new) == _rv(old) and _uid(new) == _uid(old)


def _uid(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("uid")


def slim(obj: dict) -> dict:
    """The object without metadata.managedFields (often half its size, never read here)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def terminal(sj: dict) -> bool:
    status = sj.get("status")
    return isinstance(status, dict) and status.get("phase") in TERMINAL


def slim_sparsifyjob(sj: dict) -> dict:
    """A finished SparsifyJob is never reconciled again: its name, identity and phase suffice."""
    if not terminal(sj):
        return slim(sj)
    meta = sj.get("metadata") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "generation", "deletionTimestamp")
    return {
        "apiVersion": sj.get("apiVersion"),
        "kind": sj.get("kind"),
        "metadata": {k: meta[k] for k in keep if k in meta},
        "status": {"phase": sj["status"]["phase"]},
    }


def slim_job(job: dict) -> dict:
    """What observe(), jobs_of() and the pod reads use of a stage Job (its pod template, often
    most of its size, is never read back)."""
    meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "labels", "annotations", "ownerReferences")
    m = {k: meta[k] for k in keep if k in meta}
    if "ownerReferences" in m:
        m["ownerReferences"] = [{"uid": o.get("uid")} for o in m["ownerReferences"] or [] if isinstance(o, dict)]
    return {
        "metadata": m,
        "spec": {k: spec[k] for k in ("suspend", "completionMode") if k in spec},
        "status": {
            k: status[k]
            for k in ("conditions", "startTime", "completionTime", "active", "ready", "succeeded", "failed", "uncountedTerminatedPods")
            if k in status
        },
    }


def slim_pod(pod: dict) -> dict:
    """What observe() reads of a pod: its completion index, phase, scheduling and container states."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ann = meta.get("annotations") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k in (LABEL_JOB, JOB_UID_LABEL)},
            "annotations": {k: v for k, v in ann.items() if k == "batch.kubernetes.io/job-completion-index"},
        },
        "status": {
            "phase": status.get("phase"),
            "conditions": [c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "PodScheduled"],
            "containerStatuses": [{"name": c.get("name"), "state": c.get("state")} for c in status.get("containerStatuses") or []],
        },
    }


def _observed_part(pod: dict) -> tuple:
    """What of a slim pod can change a decision (observe() and waiting()): started or not, a
    waiting reason that will not clear by itself, being unschedulable, having ended. A pod
    going through ContainerCreating, or being scheduled, changes nothing decided."""
    s = pod["status"]
    states = [c.get("state") or {} for c in s["containerStatuses"]]
    stuck = [(w.get("reason"), w.get("message")) for w in (st.get("waiting") or {} for st in states) if w.get("reason") in STUCK_REASONS]
    unschedulable = [(c.get("reason"), c.get("message")) for c in s["conditions"] if c.get("status") == "False"]
    return s["phase"] in (None, "Pending"), s["phase"], repr(stuck), repr(unschedulable), repr([st.get("terminated") for st in states])


def finished(job: dict) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or []
    )


def owner_key(obj: dict) -> Key | None:
    """The SparsifyJob a stage Job or pod belongs to (its label)."""
    name = (obj["metadata"].get("labels") or {}).get(LABEL_JOB)
    return (obj["metadata"]["namespace"], name) if name else None


def key_of(obj: dict) -> Key:
    """A SparsifyJob's (namespace, name)."""
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _merged(cached: dict, listed: dict, snapshot: int | None) -> dict:
    """What a relist found, except where the cache holds a newer copy of the same object, plus
    what the cache saw appear after the list's snapshot."""
    out = {}
    for key, obj in listed.items():
        old = cached.get(key)
        same = old is not None and _uid(old) == _uid(obj)
        out[key] = old if same and not _newer_or_equal(obj, old) else obj
    for key, old in cached.items():
        rv = _rv(old)
        if key not in out and snapshot is not None and rv is not None and rv > snapshot:
            out[key] = old
    return out


class Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sparsifyjobs: dict[Key, dict] = {}
        self._jobs: dict[Key, dict[str, dict]] = {}  # (namespace, SparsifyJob name) -> Job name -> Job
        self._pods: dict[str, dict[str, dict]] = {}  # Job uid -> pod name -> pod, as watched (unfinished Jobs)
        self._finished_pods: dict[str, list[dict]] = {}  # Job uid -> its pods, read once when it finished

    # ---- writes (watch events, the operator's own writes, relists) ------------------------

    def put_sparsifyjob(self, obj: dict) -> Change:
        key = key_of(obj)
        with self._lock:
            old = self._sparsifyjobs.get(key)
            if _same_version(obj, old) or not _newer_or_equal(obj, old) and _uid(obj) == _uid(old):
                return Change.NONE
            self._sparsifyjobs[key] = slim_sparsifyjob(obj)
            if terminal(obj):  # its status holds everything; its children are never read again
                self._drop_children(key)
            return Change.NEW if old is None or _uid(old) != _uid(obj) else Change.CHANGED

    def put_job(self, obj: dict) -> Change:
        owner = owner_key(obj)
        if not owner:
            return Change.NONE
        name = obj["metadata"]["name"]
        with self._lock:
            if self._finished_owner(owner):
                return Change.NONE
            jobs = self._jobs.setdefault(owner, {})
            old = jobs.get(name)
            if _same_version(obj, old) or not _newer_or_equal(obj, old) and _uid(obj) == _uid(old):
                return Change.NONE
            jobs[name] = slim_job(obj)
            if finished(obj):
                return Change.NEW if old is None else (Change.CHANGED if finished(old) else Change.FINISHED)
            return Change.NEW if old is None else Change.CHANGED

    def put_pod(self, obj: dict) -> Change:
        """A stage pod from the watch: kept while its Job runs (why it does not start, if it
        does not); CHANGED only where what observe() reads changed."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        job_uid, owner = labels.get(JOB_UID_LABEL), owner_key(obj)
        if not job_uid or not owner:
            return Change.NONE
        new = slim_pod(obj)
        with self._lock:
            if self._finished_owner(owner) or job_uid in self._finished_pods:
                return Change.NONE  # its end is already fixed
            pods = self._pods.setdefault(job_uid, {})
            old = pods.get(new["metadata"]["name"])
            if old is not None and not _newer_or_equal(new, old) and _uid(new) == _uid(old):
                return Change.NONE
            pods[new["metadata"]["name"]] = new
            if old is not None and _uid(old) == _uid(new) and _observed_part(old) == _observed_part(new):
                return Change.NONE
            return Change.NEW if old is None else Change.CHANGED

    def forget_pod(self, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        job_uid = (meta.get("labels") or {}).get(JOB_UID_LABEL)
        with self._lock:
            pods = self._pods.get(job_uid or "")
            if pods is not None:
                pods.pop(meta.get("name"), None)
                if not pods:
                    del self._pods[job_uid]

    def _finished_owner(self, owner: Key) -> bool:
        sj = self._sparsifyjobs.get(owner)
        return sj is not None and terminal(sj)

    def _drop_children(self, owner: Key) -> None:
        for job in (self._jobs.pop(owner, None) or {}).values():
            uid = _uid(job) or ""
            self._pods.pop(uid, None)
            self._finished_pods.pop(uid, None)

    def forget_sparsifyjob(self, namespace: str, name: str) -> None:
        with self._lock:
            self._sparsifyjobs.pop((namespace, name), None)

    def forget_job(self, obj: dict) -> None:
        owner = owner_key(obj)
        with self._lock:
            jobs = self._jobs.get(owner) if owner else None
            if jobs is not None:
                jobs.pop(obj["metadata"]["name"], None)
                if not jobs:
                    del self._jobs[owner]
            self._finished_pods.pop(_uid(obj) or "", None)
            self._pods.pop(_uid(obj) or "", None)

    def replace(self, sparsifyjobs: list[dict], jobs: list[dict], snapshot: int | None) -> None:
        """A full relist taken at resourceVersion `snapshot`: what is gone is forgotten, what is
        newer replaces the cached copy, and what the cache learnt after the snapshot stays."""
        with self._lock:
            self._sparsifyjobs = _merged(self._sparsifyjobs, {key_of(o): slim_sparsifyjob(o) for o in sparsifyjobs}, snapshot)
            listed: dict[Key, dict[str, dict]] = {}
            for j in jobs:
                owner = owner_key(j)
                if owner and not self._finished_owner(owner):
                    listed.setdefault(owner, {})[j["metadata"]["name"]] = slim_job(j)
            owners = (set(listed) | set(self._jobs)) - {k for k in set(listed) | set(self._jobs) if self._finished_owner(k)}
            merged = {owner: _merged(self._jobs.get(owner, {}), listed.get(owner, {}), snapshot) for owner in owners}
            self._jobs = {owner: js for owner, js in merged.items() if js}
            uids = {_uid(j) for js in self._jobs.values() for j in js.values()}
            self._finished_pods = {u: p for u, p in self._finished_pods.items() if u in uids}
            self._pods = {u: p for u, p in self._pods.items() if u in uids}

    def put_finished_pods(self, job_uid: str, pods: list[dict]) -> None:
        with self._lock:
            self._finished_pods[job_uid] = [slim_pod(p) for p in pods]
            self._pods.pop(job_uid, None)

    # ---- reads ----------------------------------------------------------------------------

    def sparsifyjob(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            return self._sparsifyjobs.get((namespace, name))

    def sparsifyjobs(self) -> list[dict]:
        with self._lock:
            return list(self._sparsifyjobs.values())

    def unfinished(self) -> list[Key]:
        with self._lock:
            return [key for key, sj in self._sparsifyjobs.items() if not terminal(sj)]

    def jobs_of(self, sj: dict) -> list[dict]:
        """The SparsifyJob's Jobs: labelled with its name and owned by this very object (not a
        namesake deleted and created again)."""
        uid = sj["metadata"].get("uid")
        with self._lock:
            jobs = list(self._jobs.get((sj["metadata"]["namespace"], sj["metadata"]["name"]), {}).values())
        return [j for j in jobs if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])]

    def finished_pods(self, job_uid: str) -> list[dict] | None:
        with self._lock:
            return self._finished_pods.get(job_uid)

    def pods_of(self, job_uid: str) -> list[dict]:
        """The watched pods of an unfinished Job."""
        with self._lock:
            return list((self._pods.get(job_uid) or {}).values())

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {
                "sparsifyjobs": len(self._sparsifyjobs),
                "jobs": sum(len(js) for js in self._jobs.values()),
                "pods": sum(len(ps) for ps in self._pods.values()) + sum(len(ps) for ps in self._finished_pods.values()),
            }
