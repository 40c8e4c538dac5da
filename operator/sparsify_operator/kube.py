"""API side effects for the operator: list (to prime and resync the cache), read a finished
Job's pods, create, patch status, post events. Every write first asks the fence (leader.py)
whether this replica may still act; one that may not raises NotLeader instead of writing."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from . import metrics
from .api import ANNOTATION_FAILED, GROUP, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION

log = logging.getLogger("sparsify_operator")
# Every call is bounded (connect, read seconds): a hung connection must never hold a worker
# thread forever while the liveness probe stays green.
TIMEOUT = (5, 30)
LIST_TIMEOUT = (5, 120)
PAGE = 500  # relists come in pages: a cluster with thousands of Jobs is never one giant response
Keep = Callable[[dict], dict | None] | None  # what a list keeps of each item, page by page


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TimedApiClient(client.ApiClient):
    """The Kubernetes client, each request timed by verb and resource
    (`sparsify_api_request_duration_seconds`, like client-go's rest_client_request_latency):
    where a slow reconcile waits shows there."""

    def request(self, method, url, *args, **kwargs):
        t0 = time.monotonic()
        try:
            return super().request(method, url, *args, **kwargs)
        finally:
            metrics.API_LATENCY.labels(method, resource_of(url)).observe(time.monotonic() - t0)


def resource_of(url: str) -> str:
    """'jobs', 'sparsifyjobs/status', ... from a request URL (the resource after the namespace,
    or after the group version for cluster-wide calls)."""
    parts = urllib.parse.urlsplit(url).path.strip("/").split("/")
    if "namespaces" in parts[:-1]:
        parts = parts[parts.index("namespaces") + 2 :]
    else:
        parts = parts[3:] if parts[:1] == ["apis"] else parts[2:]
    if not parts:
        return "namespaces"
    return parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")


class NotLeader(Exception):
    """This replica does not (or no longer) hold the leader Lease: it must not write."""


class Kube:
    def __init__(self, api_client: client.ApiClient, fence: Callable[[], bool] = lambda: True):
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.instance = socket.gethostname()
        self.fence = fence

    def _may_write(self) -> None:
        if not self.fence():
            raise NotLeader("this replica does not hold the leader Lease")

    def ping(self, namespaces: list[str]) -> None:
        """One cheap read the operator is allowed (cluster-wide, or in its first namespace): proves
        the API server answers (the resync loop's heartbeat)."""
        kw = {"limit": 1, "_preload_content": False, "_request_timeout": TIMEOUT}
        if namespaces:
            self.custom.list_namespaced_custom_object(GROUP, VERSION, namespaces[0], PLURAL, **kw)
        else:
            self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)

    @staticmethod
    def _raw(resp) -> dict:
        return json.loads(resp.data)

    def _paged(self, call, *args, keep: Keep = None, **kwargs) -> dict:
        """All pages of a list; the result carries the first page's resourceVersion (the
        snapshot every page is served from). `keep` maps each item to what is kept of it (None:
        dropped) page by page, so a relist of 50,000 Jobs never holds more than one page of
        whole objects."""
        first, items, token = None, [], None
        while True:
            page = self._raw(call(*args, limit=PAGE, _continue=token, _preload_content=False, _request_timeout=LIST_TIMEOUT, **kwargs))
            page_items = page.pop("items", None) or []
            first = first or page
            items += page_items if keep is None else [k for k in map(keep, page_items) if k is not None]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return {**first, "items": items}

    def list_sparsifyjobs(self, namespaces: list[str], keep: Keep = None) -> tuple[list[dict], int | None]:
        """Every SparsifyJob (in the watched namespaces) and the oldest list's resourceVersion."""
        if not namespaces:
            lists = [self._paged(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, keep=keep)]
        else:
            lists = [self._paged(self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, keep=keep) for ns in namespaces]
        return _items_and_oldest_rv(lists)

    def list_stage_jobs(self, namespaces: list[str], keep: Keep = None) -> tuple[list[dict], int | None]:
        """Every Job this operator made (in the watched namespaces) and the oldest list's resourceVersion."""
        return self._list_ours(self.batch.list_job_for_all_namespaces, self.batch.list_namespaced_job, namespaces, keep)

    def list_stage_pods(self, namespaces: list[str], keep: Keep = None) -> tuple[list[dict], int | None]:
        """Every pod of a Job this operator made (in the watched namespaces)."""
        return self._list_ours(self.core.list_pod_for_all_namespaces, self.core.list_namespaced_pod, namespaces, keep)

    def _list_ours(self, cluster_wide, namespaced, namespaces: list[str], keep: Keep) -> tuple[list[dict], int | None]:
        """What carries the operator's label, selected by the API server, cluster-wide or per namespace."""
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        if not namespaces:
            return _items_and_oldest_rv([self._paged(cluster_wide, label_selector=selector, keep=keep)])
        return _items_and_oldest_rv([self._paged(namespaced, ns, label_selector=selector, keep=keep) for ns in namespaces])

    def pods_of_job(self, job: dict) -> list[dict]:
        """The pods of this very Job (by its uid, not a namesake's)."""
        selector = f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
        return self._raw(
            self.core.list_namespaced_pod(
                job["metadata"]["namespace"], label_selector=selector, _preload_content=False, _request_timeout=TIMEOUT
            )
        )["items"]

    def failed_creates(self, job: dict) -> list[dict]:
        """The Job controller's FailedCreate events for this Job (why it has no pod: a quota, a
        policy)."""
        selector = f"involvedObject.uid={job['metadata']['uid']},reason=FailedCreate"
        return self._raw(
            self.core.list_namespaced_event(
                job["metadata"]["namespace"], field_selector=selector, _preload_content=False, _request_timeout=TIMEOUT
            )
        )["items"]

    def give_up(self, namespace: str, name: str, why: str) -> dict:
        """Stop a stage Job whose pods could not start: the annotation records why (and is what
        a restarted operator reads), suspending it removes its pods and frees what they hold."""
        self._may_write()
        body = {"metadata": {"annotations": {ANNOTATION_FAILED: why[:1024]}}, "spec": {"suspend": True}}
        return self._raw(self.batch.patch_namespaced_job(name, namespace, body, _preload_content=False, _request_timeout=TIMEOUT))

    def create(self, manifest: dict) -> tuple[bool, dict | None]:
        """(True, the object) if created now; (False, the existing Job) if it already existed
        (a restarted operator, a race); (False, None) if its namespace is going away or a
        namesake was being deleted meanwhile (the next reconcile creates it). Raises Refused
        when the API server will refuse this object whatever is retried."""
        self._may_write()
        ns = manifest["metadata"]["namespace"]
        try:
            if manifest["kind"] == "Job":
                return True, self._raw(self.batch.create_namespaced_job(ns, manifest, _preload_content=False, _request_timeout=TIMEOUT))
            if manifest["kind"] == "Service":
                return True, self._raw(self.core.create_namespaced_service(ns, manifest, _preload_content=False, _request_timeout=TIMEOUT))
            if manifest["kind"] == "NetworkPolicy":
                return True, self._raw(
                    self.networking.create_namespaced_network_policy(ns, manifest, _preload_content=False, _request_timeout=TIMEOUT)
                )
            raise ValueError(f"unexpected kind {manifest['kind']}")
        except ApiException as e:
            if e.status == 409:
                return False, self._existing_job(manifest) if manifest["kind"] == "Job" else None
            if e.status == 403 and "NamespaceTerminating" in body_text(e):
                return False, None  # the namespace (and this SparsifyJob) is going away
            if 400 <= (e.status or 0) < 500 and e.status != 429:
                raise Refused(e.status, server_message(e)) from e
            raise

    def _existing_job(self, manifest: dict) -> dict | None:
        """The Job a create collided with: what we missed, so the next reconcile sees it; None if
        it went away meanwhile (a deleted namesake's Job, garbage-collected)."""
        try:
            return self._raw(
                self.batch.read_namespaced_job(
                    manifest["metadata"]["name"], manifest["metadata"]["namespace"], _preload_content=False, _request_timeout=TIMEOUT
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, patch: dict) -> dict:
        """Merge-patch the status subresource; the object as it is now."""
        self._may_write()
        return self._raw(
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": patch}, _preload_content=False, _request_timeout=TIMEOUT
            )
        )

    def post_event(self, sj: dict, kind: str, reason: str, message: str) -> None:
        self._may_write()
        meta = sj["metadata"]
        now = _now()
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": sj["apiVersion"],
                "kind": sj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGED_BY},
            "reportingComponent": MANAGED_BY,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": _micro_now(),
            "action": reason,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body, _request_timeout=TIMEOUT)
        except (ApiException, OSError) as e:  # events are best effort
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], getattr(e, "reason", e))


class Refused(Exception):
    """The API server refused to create a child (a quota, an admission policy, an invalid
    object): a 4xx that is not a conflict or throttling, so retrying cannot help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def server_message(e: ApiException) -> str:
    try:
        return json.loads(body_text(e)).get("message") or str(e.reason)
    except (TypeError, ValueError, AttributeError):
        return str(e.reason)


def body_text(e: ApiException) -> str:
    """The response body of a failed call (bytes when the call did not preload content)."""
    body = e.body or ""
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)


def _items_and_oldest_rv(lists: list[dict]) -> tuple[list[dict], int | None]:
    """The items, and the oldest list's resourceVersion as a number (None where one is not)."""
    items = [item for lst in lists for item in lst["items"]]
    try:
        return items, min(int(lst["metadata"]["resourceVersion"]) for lst in lists)
    except (KeyError, TypeError, ValueError):
        return items, None
