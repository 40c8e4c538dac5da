"""API side effects for the operator: read children, create, patch status, post events."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import uuid

from kubernetes import client
from kubernetes.client.rest import ApiException

from .api import GROUP, LABEL_JOB, MANAGED_BY, PLURAL, VERSION

log = logging.getLogger("sparsify_operator")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Kube:
    def __init__(self, api_client: client.ApiClient):
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.instance = socket.gethostname()

    @staticmethod
    def _raw(resp) -> dict:
        return json.loads(resp.data)

    def get_sparsifyjob(self, namespace: str, name: str) -> dict | None:
        try:
            return self._raw(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list_sparsifyjobs(self, namespaces: list[str]) -> list[dict]:
        if not namespaces:
            return self._raw(self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False))["items"]
        out: list[dict] = []
        for ns in namespaces:
            out += self._raw(self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _preload_content=False))["items"]
        return out

    def children(self, sj: dict) -> tuple[list[dict], dict[str, list[dict]]]:
        """The SparsifyJob's Jobs (owned by this very object, not a namesake) and their pods."""
        ns, name, uid = sj["metadata"]["namespace"], sj["metadata"]["name"], sj["metadata"]["uid"]
        selector = f"{LABEL_JOB}={name}"
        jobs = self._raw(self.batch.list_namespaced_job(ns, label_selector=selector, _preload_content=False))["items"]
        jobs = [j for j in jobs if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])]
        pods = self._raw(self.core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False))["items"]
        by_job: dict[str, list[dict]] = {}
        for p in pods:
            by_job.setdefault((p["metadata"].get("labels") or {}).get("job-name", ""), []).append(p)
        return jobs, by_job

    def create(self, manifest: dict) -> bool:
        """True if created now, False if it already existed (a restarted operator, a race)."""
        ns = manifest["metadata"]["namespace"]
        try:
            if manifest["kind"] == "Job":
                self.batch.create_namespaced_job(ns, manifest)
            elif manifest["kind"] == "Service":
                self.core.create_namespaced_service(ns, manifest)
            else:
                raise ValueError(f"unexpected kind {manifest['kind']}")
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            if e.status == 403 and "NamespaceTerminating" in (e.body or ""):
                return False  # the namespace (and this SparsifyJob) is going away
            raise

    def patch_status(self, namespace: str, name: str, patch: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": patch})

    def post_event(self, sj: dict, kind: str, reason: str, message: str) -> None:
        meta = sj["metadata"]
        now = _now()
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": sj["apiVersion"], "kind": sj["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": kind, "reason": reason, "message": message[:1024],
            "source": {"component": MANAGED_BY}, "reportingComponent": MANAGED_BY, "reportingInstance": self.instance,
            "firstTimestamp": now, "lastTimestamp": now, "eventTime": _micro_now(), "action": reason, "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as e:  # events are best effort
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], e.reason)
