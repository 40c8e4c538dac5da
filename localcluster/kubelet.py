"""The process-kubelet: registers local nodes, keeps them Ready (status + Leases), and runs
the pods the real scheduler binds to them as local processes (see pod_worker.py).

Fault injection goes through the API, so tests and people use kubectl for it:
  pod annotation  localcluster.dev/fault=kill[:container][#n]   SIGKILL a container (reason Error)
                  localcluster.dev/fault=oom[:container][#n]    SIGKILL it as the OOM killer (OOMKilled, 137)
  node annotation localcluster.dev/fault=not-ready              the node is lost: its processes die,
                                                                 heartbeats stop, Ready=False
Each distinct pod value acts once; change the `#n` suffix to inject again."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from .faults import FAULT_ANNOTATION
from .nodes import MANAGED_LABEL, NodeSpec, node_manifest, node_status
from .pod_host import NodeRuntime
from .pod_worker import PodWorker
from .volumes import VolumeBuilder

log = logging.getLogger("localcluster.kubelet")

LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 5.0
PASSTHROUGH_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE")


def _micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ProcessKubelet:
    def __init__(
        self,
        kubeconfig: Path,
        nodes: list[NodeSpec],
        state_dir: Path,
        apiserver_port: int,
        image_entrypoints: dict[str, list[str]] | None = None,
        bin_path: str | None = None,
    ):
        cfg = client.Configuration()
        config.load_kube_config(str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.coord = client.CoordinationV1Api(self.api_client)
        self.nodes = {n.name: n for n in nodes}
        self.state_dir = state_dir
        self.apiserver_port = apiserver_port
        self.image_entrypoints = image_entrypoints or {}
        # "The image" of every container is the local Python environment this kubelet runs in.
        self.bin_path = bin_path or os.path.dirname(sys.executable)
        package_root = str(Path(__file__).resolve().parent.parent)
        self.runtime_paths = sorted({os.path.normpath(sys.prefix), os.path.normpath(sys.base_prefix), package_root})
        self.stopping = threading.Event()
        self.lost_nodes: set[str] = set()
        self.workers: dict[str, PodWorker] = {}
        self.workers_lock = threading.Lock()
        self.pids: set[int] = set()
        self._next_ip = int(ipaddress.ip_address("127.1.0.2"))
        self.volume_builder = VolumeBuilder(self.secret_data, self.config_map_data, self.issue_token)
        self.runtime = NodeRuntime(state_dir, self.runtime_paths, self.image_entrypoints, self.volume_builder, self.stopping)
        self.threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> ProcessKubelet:
        (self.state_dir / "pods").mkdir(parents=True, exist_ok=True)
        for spec in self.nodes.values():
            self._register(spec)
        for target in (self._heartbeat_loop, self._watch_pods, self._watch_nodes):
            t = threading.Thread(target=self._forever(target), name=target.__name__, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self.workers_lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        for w in workers:
            w.join(10)
        for pid in list(self.pids):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _forever(self, fn):
        def loop() -> None:
            while not self.stopping.is_set():
                try:
                    fn()
                except Exception as e:  # the API may be briefly away; never die
                    if self.stopping.is_set():
                        return
                    log.warning("%s: %s; retrying", fn.__name__, e)
                    time.sleep(1.0)

        return loop

    def track(self, pid: int) -> None:
        self.pids.add(pid)

    # ---- nodes -----------------------------------------------------------------------------

    def _register(self, spec: NodeSpec) -> None:
        manifest = node_manifest(spec)
        try:
            self.core.create_node(manifest)
        except ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_node(spec.name, {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": manifest["spec"]})
        self._post_status(spec, ready=True)

    def _post_status(self, spec: NodeSpec, ready: bool, reason: str = "", message: str = "") -> None:
        self.core.patch_node_status(spec.name, {"status": node_status(spec, ready, _now(), reason, message)})

    def _renew_lease(self, name: str) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": _micro_now()},
        }
        try:
            self.coord.patch_namespaced_lease(name, "kube-node-lease", {"spec": body["spec"]})
        except ApiException as e:
            if e.status != 404:
                raise
            node = self.core.read_node(name)
            body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid}]
            self.coord.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat_loop(self) -> None:
        while True:
            for name, spec in self.nodes.items():
                if name in self.lost_nodes:
                    continue
                self._renew_lease(name)
                self._post_status(spec, ready=True)
            if self.stopping.wait(HEARTBEAT_SECONDS):
                return

    def _watch_nodes(self) -> None:
        w = watch.Watch()
        for event in w.stream(self.core.list_node, label_selector=f"{MANAGED_LABEL}=true", timeout_seconds=60):
            if self.stopping.is_set():
                w.stop()
                return
            node = event["raw_object"]
            name = node["metadata"]["name"]
            if name not in self.nodes:
                continue
            fault = (node["metadata"].get("annotations") or {}).get(FAULT_ANNOTATION, "")
            if fault.startswith("not-ready") and name not in self.lost_nodes:
                self._lose_node(name)
            elif not fault.startswith("not-ready") and name in self.lost_nodes:
                log.info("node %s recovered", name)
                self.lost_nodes.discard(name)
                self._post_status(self.nodes[name], ready=True)

    def _lose_node(self, name: str) -> None:
        log.info("fault: node %s lost", name)
        self.lost_nodes.add(name)
        self._post_status(self.nodes[name], False, "NodeLost", "localcluster fault injection: node lost")
        with self.workers_lock:
            lost = [w for w in self.workers.values() if w.pod["spec"].get("nodeName") == name]
        for w in lost:
            w.abandon_now()

    # ---- pods ------------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=")
        seen = set()
        for pod in pods.items:
            raw = self.api_client.sanitize_for_serialization(pod)
            seen.add(raw["metadata"]["uid"])
            self._on_pod(raw, deleted=False)
        with self.workers_lock:
            gone = [w for uid, w in self.workers.items() if uid not in seen]
        for w in gone:
            w.abandon_now()
        w = watch.Watch()
        for event in w.stream(
            self.core.list_pod_for_all_namespaces,
            field_selector="spec.nodeName!=",
            resource_version=pods.metadata.resource_version,
            timeout_seconds=120,
        ):
            if self.stopping.is_set():
                w.stop()
                return
            if event["type"] == "ERROR":
                return  # e.g. 410 Gone: re-list
            self._on_pod(event["raw_object"], deleted=event["type"] == "DELETED")

    def _on_pod(self, pod: dict, deleted: bool) -> None:
        node = pod["spec"].get("nodeName")
        uid = pod["metadata"]["uid"]
        if node not in self.nodes:
            return
        with self.workers_lock:
            worker = self.workers.get(uid)
        if deleted:
            if worker:
                worker.abandon_now()
            return
        if node in self.lost_nodes:
            return
        if worker is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                if pod["metadata"].get("deletionTimestamp"):
                    self.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
                return  # finished before this kubelet started: nothing to run
            worker = PodWorker(self, pod, self._allocate_ip())
            with self.workers_lock:
                self.workers[uid] = worker
            worker.start()
            self._refresh_namespace_hosts(pod["metadata"]["namespace"], except_uid=uid)
        worker.update(pod)  # a fault a test asked for is in the pod's annotations: the worker acts on it

    def worker_finished(self, worker: PodWorker) -> None:
        with self.workers_lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]
        worker.cleanup()

    def _allocate_ip(self) -> str:
        with self.workers_lock:
            ip = str(ipaddress.ip_address(self._next_ip))
            self._next_ip += 1
        return ip

    def hosts_content(self, namespace: str, worker: PodWorker) -> str:
        """/etc/hosts for a pod: itself plus every pod of its namespace that has a hostname and
        subdomain (what a headless Service's DNS would resolve, e.g. Indexed Job pods)."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        with self.workers_lock:
            peers = [w for w in self.workers.values() if w.ns == namespace]
        if worker not in peers:
            peers.append(worker)
        for w in peers:
            spec = w.pod["spec"]
            host = spec.get("hostname") or w.pod_name
            names = [host]
            if spec.get("subdomain"):
                fqdn = f"{host}.{spec['subdomain']}.{namespace}.svc"
                names = [f"{fqdn}.cluster.local", fqdn, host]
            lines.append(f"{w.pod_ip}\t{' '.join(names)}")
        return "\n".join(lines) + "\n"

    def _refresh_namespace_hosts(self, namespace: str, except_uid: str) -> None:
        with self.workers_lock:
            peers = [w for w in self.workers.values() if w.ns == namespace and w.uid != except_uid]
        for w in peers:
            if (w.dir / "hosts").exists():
                w.refresh_hosts()

    def base_env(self, pod: dict, pod_ip: str) -> dict[str, str]:
        port = str(self.apiserver_port)
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        env.update(
            {
                "PATH": f"{self.bin_path}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/tmp",
                "HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"],
                # The `kubernetes` Service's ClusterIP is not routable here: point in-cluster clients
                # straight at the API server (its certificate names 127.0.0.1).
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": port,
                "KUBERNETES_SERVICE_PORT_HTTPS": port,
                "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # ---- API helpers used by workers --------------------------------------------------------

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """Raw (base64) values, as the API returns them."""
        try:
            return self.core.read_namespaced_secret(name, namespace).data or {}
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def secret_values(self, namespace: str, name: str) -> dict[str, str] | None:
        import base64

        raw = self.secret_data(namespace, name)
        return None if raw is None else {k: base64.b64decode(v).decode(errors="replace") for k, v in raw.items()}

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            return self.core.read_namespaced_config_map(name, namespace).data or {}
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def issue_token(self, namespace: str, service_account: str, audiences: list[str], expiration: int, pod: dict) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences or None,
                "expirationSeconds": max(600, expiration),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
            },
        }
        resp = self.core.create_namespaced_service_account_token(service_account, namespace, body)
        return resp.status.token

    def patch_pod_status(self, worker: PodWorker, status: dict) -> bool:
        try:
            self.core.patch_namespaced_pod_status(worker.pod_name, worker.ns, {"metadata": {"uid": worker.uid}, "status": status})
            return True
        except ApiException as e:
            if e.status in (404, 409, 422):
                if e.status == 404:
                    worker.abandon_now()
                return False
            log.warning("status update for %s/%s failed: %s", worker.ns, worker.pod_name, e.reason)
            return False
        except Exception as e:  # connection trouble: report again on the next change
            log.warning("status update for %s/%s failed: %s", worker.ns, worker.pod_name, e)
            return False

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(
                name, namespace, body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}, grace_period_seconds=0
            )
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("final delete of %s/%s failed: %s", namespace, name, e.reason)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
