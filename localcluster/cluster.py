"""The whole local cluster in one supervisor process: control plane, S3, process-kubelet.

`serve()` runs in the foreground until SIGTERM/SIGINT and then tears everything down.
`LocalCluster` is the client-side handle (tests, the demo, the CLI) that starts a supervisor
as a child process, waits until it is ready and stops it again."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .controlplane import ControlPlane, _tail, spawn, terminate
from .nodes import default_nodes
from .pki import KUBELET

INFO_FILE = "cluster.json"
READY_TIMEOUT = 180

log = logging.getLogger("localcluster")


@dataclass(frozen=True)
class ClusterInfo:
    state_dir: str
    kubeconfig: str
    server: str
    s3_endpoint: str
    nodes: list[str]
    supervisor_pid: int
    started_seconds: float
    runtime: str = "process"
    pod_s3_endpoint: str = ""  # where pods reach S3 (the containerd node's pods: not the host's loopback)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterInfo:
        return cls(**json.loads((state_dir / INFO_FILE).read_text()))


def serve(state_dir: Path, gpu_nodes: int, cpu_nodes: int, audit: bool = False, runtime: str = "process") -> None:
    """Start everything, write cluster.json, block until told to stop.

    runtime "process": the process-kubelet's simulated nodes (fast; every suite but one).
    runtime "containerd": one real node instead (containerd_node.py): real images and limits."""
    from . import s3
    from .kubelet import ProcessKubelet

    started = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / INFO_FILE).unlink(missing_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    containerd = runtime == "containerd"
    if containerd:
        from . import containerd_node
    cp = ControlPlane(state_dir, audit=audit, advertise_address=containerd_node.NODE_IP if containerd else "127.0.0.1")
    s3_proc = None
    kubelet = None
    try:
        cp.start()
        s3_proc, s3_endpoint = s3.start_server(state_dir / "logs" / "s3.log")
        pod_s3_endpoint = s3_endpoint
        if containerd:
            kubelet = containerd_node.ContainerdNode(state_dir, cp, int(s3_endpoint.rsplit(":", 1)[1])).start()
            pod_s3_endpoint, node_names = kubelet.s3_endpoint, [containerd_node.NODE_NAME]
        else:
            nodes = default_nodes(gpu_nodes, cpu_nodes)
            entrypoints = json.loads(os.environ.get("LOCALCLUSTER_IMAGE_ENTRYPOINTS", "{}"))
            kubelet = ProcessKubelet(cp.kubeconfig_for(KUBELET), nodes, state_dir, cp.apiserver_port, entrypoints).start()
            node_names = [n.name for n in nodes]
        _wait_default_service_account(cp.admin_kubeconfig)
        info = ClusterInfo(
            state_dir=str(state_dir),
            kubeconfig=str(cp.admin_kubeconfig),
            server=cp.server,
            s3_endpoint=s3_endpoint,
            pod_s3_endpoint=pod_s3_endpoint,
            runtime=runtime,
            nodes=node_names,
            supervisor_pid=os.getpid(),
            started_seconds=round(time.monotonic() - started, 2),
        )
        tmp = state_dir / f".{INFO_FILE}"
        tmp.write_text(json.dumps(info.__dict__, indent=2))
        tmp.replace(state_dir / INFO_FILE)  # its appearance is the readiness signal
        log.info("local cluster ready in %.1fs: KUBECONFIG=%s", info.started_seconds, info.kubeconfig)
        stop.wait()
    finally:
        (state_dir / INFO_FILE).unlink(missing_ok=True)
        if kubelet:
            kubelet.stop()
        if s3_proc:
            terminate(s3_proc)
        cp.stop()


def _wait_default_service_account(kubeconfig: Path, timeout: float = 60) -> None:
    """The controller-manager is working once it has created the default ServiceAccount."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.list_namespaced_service_account("default", field_selector="metadata.name=default").items:
            return
        time.sleep(0.3)
    raise RuntimeError("kube-controller-manager did not create the default ServiceAccount in time")


class LocalCluster:
    """Start/stop a supervisor (`python -m localcluster serve`) for a state dir."""

    def __init__(self, state_dir: Path, gpu_nodes: int = 2, cpu_nodes: int = 2, audit: bool = False, runtime: str = "process"):
        self.state_dir = Path(state_dir).resolve()
        self.gpu_nodes, self.cpu_nodes, self.audit, self.runtime = gpu_nodes, cpu_nodes, audit, runtime
        self.proc: subprocess.Popen | None = None
        self.info: ClusterInfo | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / "supervisor.log"

    def start(self, detach: bool = False) -> ClusterInfo:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / INFO_FILE).unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "localcluster",
            "serve",
            "--state",
            str(self.state_dir),
            "--gpu-nodes",
            str(self.gpu_nodes),
            "--cpu-nodes",
            str(self.cpu_nodes),
            "--runtime",
            self.runtime,
        ] + (["--audit"] if self.audit else [])
        if detach:  # outlives this process (make cluster): no death signal, own session
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(
                cmd, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        else:
            self.proc = spawn(cmd, self.log_path)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"local cluster failed to start (exit {self.proc.returncode}):\n{_tail(self.log_path, 40)}")
            if (self.state_dir / INFO_FILE).exists():
                self.info = ClusterInfo.load(self.state_dir)
                return self.info
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"local cluster not ready after {READY_TIMEOUT}s:\n{_tail(self.log_path, 40)}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, grace=30 if self.runtime == "process" else 150)  # a real node tears its pods down
            self.proc = None

    def __enter__(self) -> ClusterInfo:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_detached(state_dir: Path, timeout: float = 30) -> bool:
    """Stop a supervisor started with detach=True (make cluster-down). True if one was running."""
    pid_file = state_dir / "supervisor.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True
