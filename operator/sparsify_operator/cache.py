"""The operator's view of the cluster, kept by watches instead of read per reconcile (an
informer cache, as controller-runtime keeps one).

Reading the SparsifyJob, its Jobs and their pods from the API on every event cost three
requests per reconcile, about a dozen reconciles per SparsifyJob on its way to training: three
quarters of all the API traffic the operator caused (benchmarks/operator_scale.py). Now:
  - SparsifyJobs and stage Jobs come from the watch events Kopf already receives, primed by one
    list at startup and replaced by a relist at every resync (the safety net for a missed event);
  - the operator's own writes go in at once (read-your-writes: a status patch or a new Job is
    never seen stale by the next reconcile);
  - pods are read only once a Job has finished (termination messages, exit codes) and kept
    until the Job goes, since a finished Job's pods no longer change.
Thread-safe: Kopf calls handlers on several threads."""

from __future__ import annotations

import threading

from .api import LABEL_JOB

Key = tuple[str, str]  # (namespace, name)


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


def slim(obj: dict) -> dict:
    """The object without metadata.managedFields (often half its size, never read here)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def slim_pod(pod: dict) -> dict:
    """What observe() reads of a finished pod: its completion index, phase and container states."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return {
        "metadata": {"name": meta.get("name"), "annotations": meta.get("annotations") or {}},
        "status": {
            "phase": status.get("phase"),
            "containerStatuses": [{"name": c.get("name"), "state": c.get("state")} for c in status.get("containerStatuses") or []],
        },
    }


def _owner_key(job: dict) -> Key | None:
    name = (job["metadata"].get("labels") or {}).get(LABEL_JOB)
    return (job["metadata"]["namespace"], name) if name else None


def _key(obj: dict) -> Key:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _merged(cached: dict, listed: dict, snapshot: int | None) -> dict:
    """What a relist found, except where the cache holds a newer copy of the same object, plus
    what the cache saw appear after the list's snapshot."""
    out = {}
    for key, obj in listed.items():
        old = cached.get(key)
        same = old is not None and old["metadata"].get("uid") == obj["metadata"].get("uid")
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
        self._finished_pods: dict[str, list[dict]] = {}  # Job uid -> its pods, read once when it finished

    # ---- writes (watch events, the operator's own writes, relists) ------------------------

    def put_sparsifyjob(self, obj: dict) -> None:
        with self._lock:
            self._put(self._sparsifyjobs, _key(obj), obj)

    def put_job(self, obj: dict) -> None:
        owner = _owner_key(obj)
        if owner:
            with self._lock:
                self._put(self._jobs.setdefault(owner, {}), obj["metadata"]["name"], obj)

    def _put(self, store: dict, key, obj: dict) -> None:
        if _newer_or_equal(obj, store.get(key)):
            store[key] = slim(obj)

    def forget_sparsifyjob(self, namespace: str, name: str) -> None:
        with self._lock:
            self._sparsifyjobs.pop((namespace, name), None)

    def forget_job(self, obj: dict) -> None:
        owner = _owner_key(obj)
        with self._lock:
            jobs = self._jobs.get(owner) if owner else None
            if jobs is not None:
                jobs.pop(obj["metadata"]["name"], None)
                if not jobs:
                    del self._jobs[owner]
            self._finished_pods.pop(obj["metadata"].get("uid", ""), None)

    def replace(self, sparsifyjobs: list[dict], jobs: list[dict], snapshot: int | None) -> None:
        """A full relist taken at resourceVersion `snapshot`: what is gone is forgotten, what is
        newer replaces the cached copy, and what the cache learnt after the snapshot stays."""
        with self._lock:
            self._sparsifyjobs = _merged(self._sparsifyjobs, {_key(o): slim(o) for o in sparsifyjobs}, snapshot)
            listed: dict[Key, dict[str, dict]] = {}
            for j in jobs:
                owner = _owner_key(j)
                if owner:
                    listed.setdefault(owner, {})[j["metadata"]["name"]] = slim(j)
            merged = {owner: _merged(self._jobs.get(owner, {}), listed.get(owner, {}), snapshot) for owner in set(listed) | set(self._jobs)}
            self._jobs = {owner: js for owner, js in merged.items() if js}
            uids = {j["metadata"].get("uid") for js in self._jobs.values() for j in js.values()}
            self._finished_pods = {u: p for u, p in self._finished_pods.items() if u in uids}

    def put_finished_pods(self, job_uid: str, pods: list[dict]) -> None:
        with self._lock:
            self._finished_pods[job_uid] = [slim_pod(p) for p in pods]

    # ---- reads ----------------------------------------------------------------------------

    def sparsifyjob(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            return self._sparsifyjobs.get((namespace, name))

    def sparsifyjobs(self) -> list[dict]:
        with self._lock:
            return list(self._sparsifyjobs.values())

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
