"""A real node for the local cluster: containerd + runc + the CNI bridge, with a real kubelet and
kube-proxy built from the same Kubernetes module as the control plane.

Opt-in (`python -m localcluster up --runtime containerd`): images really run as their user on a
read-only root filesystem, memory limits are the kernel's (an OOM is exit 137 from the kernel,
not an injected one), and the kubelet refuses what the pod security settings forbid.

What this machine needed (and a sandbox like it will):
- containerd's CRI `restrict_oom_score_adj`: lowering a sandbox's oom_score_adj needs
  CAP_SYS_RESOURCE, which a sandboxed root may lack ("can't get final child's PID from pipe");
- a sandbox (pause) image made here and named in `sandbox_image`: no registry is reachable;
- images imported with `ctr images import` and `imagePullPolicy: IfNotPresent`;
- the kubelet refuses a loopback node IP, so the node's address is the bridge's, inside a
  network namespace the cluster creates (netns.py).

One node serves every stage: it advertises `nvidia.com/gpu` (trainers land on it and train on
its CPU) and carries the c5 instance-type label the benchmark stage selects."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import binaries, netns
from .controlplane import ControlPlane, _tail, spawn, terminate, write_kubeconfig
from .nodes import GPU_RESOURCE, KUBELET_VERSION
from .pki import ADMIN, KUBELET

log = logging.getLogger("localcluster.containerd")

NODE_NAME = "ctr-node-0"
NODE_IP = "10.88.0.1"  # the bridge's address: node InternalIP, pods' gateway, forwarders' address
POD_CIDR = "10.88.0.0/16"
BRIDGE = "cni0"
PAUSE_IMAGE = f"localhost/localcluster/pause:{KUBELET_VERSION}"
NODE_LABELS = {"node.kubernetes.io/instance-type": "c5.12xlarge", "topology.kubernetes.io/zone": "local-a"}
NODE_GPUS = 1
TEARDOWN_SECONDS = 60


def containerd_root() -> Path:
    """Images outlive a cluster: imported once per machine, not per test session."""
    return binaries.cache_root() / "containerd"


def node_id(state_dir: Path) -> str:
    return "lc-" + hashlib.sha1(str(state_dir).encode()).hexdigest()[:8]


class NodeUnavailable(RuntimeError):
    """This machine cannot run the containerd node; the message says what is missing."""


def check_prerequisites() -> None:
    missing = [c for c in ("containerd", "runc", "ctr", "ip", "nsenter", "iptables", "podman") if not shutil.which(c)]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins (/usr/lib/cni)")
    if missing:
        raise NodeUnavailable(
            "the containerd node needs: " + ", ".join(missing) + " (Debian: apt-get install containerd runc "
            "containernetworking-plugins podman iproute2 iptables; `make node-deps` does it)"
        )


def containerd_config(root: Path, run_dir: Path, cni_conf_dir: Path) -> str:
    return f"""version = 2
root = "{root}/root"
state = "{run_dir}/state"
[grpc]
  address = "{run_dir}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf_dir}"
"""


def cni_config(ipam_dir: Path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "localcluster",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # nothing leaves the namespace: no NAT to anywhere
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


def kubelet_config(sock: Path, pod_logs: Path, resolv: Path) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{sock}",
        "podLogsDir": str(pod_logs),
        "resolvConf": str(resolv),
        "clusterDomain": "cluster.local",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "readOnlyPort": 0,
        "address": NODE_IP,
        "healthzBindAddress": "127.0.0.1",
        "maxPods": 30,
        # Imported images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "5s",
        "fileCheckFrequency": "0s",
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(kubeconfig: Path) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # 0: leave the kernel's conntrack sysctls alone (a sandbox may not allow writing them)
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


@dataclass
class ContainerdNode:
    state_dir: Path
    cp: ControlPlane
    s3_port: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    forwarders: list[netns.Forwarder] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = node_id(self.state_dir)
        self.run_dir = Path("/run") / self.id  # sockets: short paths (108-byte limit)
        self.kubelet_root = Path("/var/lib/localcluster") / self.id / "kubelet"
        self.netns_path = Path("/run/netns") / self.id
        self._lock = None
        self._netns_before: set[str] = set()

    @property
    def sock(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{NODE_IP}:{self.s3_port}"

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _in_netns(self, cmd: list[str]) -> list[str]:
        return ["nsenter", f"--net={self.netns_path}", *cmd]

    def ctr(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return ctr(self.sock, *args, **kw)

    def start(self) -> ContainerdNode:
        check_prerequisites()
        binaries.ensure_node()
        root = containerd_root()
        root.mkdir(parents=True, exist_ok=True)
        self._lock = open(root / "lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeUnavailable(f"another containerd node is using {root}; stop that local cluster first") from None
        reap_stale_nodes()  # the lock is ours: whatever another node left is stale
        self._netns_before = set(_netns_names())
        netns.create(self.id, BRIDGE, f"{NODE_IP}/16")
        # The API server and S3 stay on the host's loopback; pods reach them at the node's address.
        for port in (self.cp.apiserver_port, self.s3_port):
            self.forwarders.append(netns.Forwarder(self.netns_path, NODE_IP, port, port))
        self._start_containerd(root)
        _ensure_pause_image()
        self.import_images([PAUSE_IMAGE])
        self._start_kubelet()
        self._start_kube_proxy()
        self._wait_node_ready()
        return self

    def _start_containerd(self, root: Path) -> None:
        cni_dir = self.state_dir / "cni"
        (cni_dir / "net.d").mkdir(parents=True, exist_ok=True)
        (cni_dir / "net.d" / "10-localcluster.conflist").write_text(json.dumps(cni_config(cni_dir / "ipam"), indent=2))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "containerd.toml"
        config.write_text(containerd_config(root, self.run_dir, cni_dir / "net.d"))
        self.procs["containerd"] = spawn(self._in_netns(["containerd", "--config", str(config)]), self._log("containerd"))
        self._wait(lambda: self.ctr("version", capture_output=True).returncode == 0, "containerd", 30)

    def _start_kubelet(self) -> None:
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        resolv = self.state_dir / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")  # pods resolve nothing outside: no DNS server anywhere else
        config = self.state_dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(self.sock, self.state_dir / "pod-logs", resolv)))
        kubeconfig = write_kubeconfig(
            self.state_dir / "node-kubelet.kubeconfig", f"https://{NODE_IP}:{self.cp.apiserver_port}", self.cp.pki, KUBELET
        )
        labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
        cmd = [
            str(binaries.binary("kubelet")),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_root}",
            f"--cert-dir={self.kubelet_root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={labels}",
            "--v=1",
        ]
        self.procs["kubelet"] = spawn(self._in_netns(cmd), self._log("kubelet"))

    def _start_kube_proxy(self) -> None:
        kubeconfig = write_kubeconfig(
            self.state_dir / "kube-proxy.kubeconfig", f"https://{NODE_IP}:{self.cp.apiserver_port}", self.cp.pki, ADMIN
        )
        config = self.state_dir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(kubeconfig)))
        cmd = [str(binaries.binary("kube-proxy")), f"--config={config}", "--v=1"]
        self.procs["kube-proxy"] = spawn(self._in_netns(cmd), self._log("kube-proxy"))

    def _wait_node_ready(self, timeout: float = 120) -> None:
        from kubernetes import client, config

        api = client.CoreV1Api(config.new_client_from_config(str(self.cp.admin_kubeconfig)))
        deadline = time.monotonic() + timeout
        patched = False
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise NodeUnavailable(f"{name} exited with {proc.returncode}:\n{_tail(self._log(name))}")
            nodes = api.list_node(field_selector=f"metadata.name={NODE_NAME}").items
            if nodes:
                if not patched:  # an extended resource is advertised by patching the node's status
                    body = {"status": {"capacity": {GPU_RESOURCE: str(NODE_GPUS)}}}
                    api.patch_node_status(NODE_NAME, body)
                    patched = True
                node = api.read_node(NODE_NAME)
                ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
                if ready and (node.status.allocatable or {}).get(GPU_RESOURCE) == str(NODE_GPUS):
                    return
            time.sleep(0.5)
        raise NodeUnavailable(f"node {NODE_NAME} not Ready with {GPU_RESOURCE} after {timeout}s:\n{_tail(self._log('kubelet'), 30)}")

    def _wait(self, probe, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise NodeUnavailable(f"{name} exited with {proc.returncode}:\n{_tail(self._log(name))}")
            if probe():
                return
            time.sleep(0.2)
        raise NodeUnavailable(f"{name} not ready after {timeout}s:\n{_tail(self._log(name))}")

    def import_images(self, refs: list[str]) -> None:
        import_images(self.sock, refs)

    def stop(self) -> None:
        self._delete_pods()
        for name in ("kube-proxy", "kubelet"):
            if name in self.procs:
                terminate(self.procs.pop(name))
        self._kill_tasks()
        if "containerd" in self.procs:
            terminate(self.procs.pop("containerd"))
        for f in self.forwarders:
            f.close()
        self.forwarders.clear()
        for name in set(_netns_names()) - self._netns_before:  # pods' namespaces the runtime left behind
            if name.startswith("cni-"):
                netns.delete(name)
        netns.delete(self.id)
        _unmount_under(self.kubelet_root.parent)
        shutil.rmtree(self.kubelet_root.parent, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._lock:
            self._lock.close()
            self._lock = None

    def _delete_pods(self) -> None:
        """Let the kubelet tear pods down (volumes unmounted, sandboxes and their networks removed)."""
        if "kubelet" not in self.procs or self.procs["kubelet"].poll() is not None:
            return
        try:
            from kubernetes import client, config

            api = client.CoreV1Api(config.new_client_from_config(str(self.cp.admin_kubeconfig)))
            pods = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}").items
            for pod in pods:
                api.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
            deadline = time.monotonic() + TEARDOWN_SECONDS
            while time.monotonic() < deadline:
                listed = self.ctr("tasks", "ls", "-q", capture_output=True, text=True)
                if listed.returncode != 0 or not listed.stdout.split():
                    return
                time.sleep(1)
        except Exception as e:  # teardown goes on: what is left is killed below
            log.warning("deleting pods on %s: %s", NODE_NAME, e)

    def _kill_tasks(self) -> None:
        listed = self.ctr("tasks", "ls", "-q", capture_output=True, text=True)
        for task in listed.stdout.split() if listed.returncode == 0 else []:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, capture_output=True)
            self.ctr("tasks", "delete", "-f", task, capture_output=True)


def socket_of(state_dir: Path) -> Path:
    return Path("/run") / node_id(Path(state_dir).resolve()) / "containerd.sock"


def ctr(sock: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "--address", str(sock), "--namespace", "k8s.io", *args], **kw)


def import_images(sock: Path, refs: list[str]) -> dict[str, float]:
    """podman's images into containerd's k8s.io namespace (what the kubelet runs), each skipped
    when the same image ID is already there. Returns the seconds the import took, per image."""
    marks_file = containerd_root() / "imported.json"
    marks = json.loads(marks_file.read_text()) if marks_file.exists() else {}
    present = set(ctr(sock, "images", "ls", "-q", capture_output=True, text=True, check=True).stdout.split())
    todo = {}
    for ref in refs:
        image_id = _podman_image_id(ref)
        if image_id is None:
            raise NodeUnavailable(f"image {ref} is not built; run `make images` first")
        if marks.get(ref) != image_id or ref not in present:
            todo[ref] = image_id
    if not todo:
        return {}
    started = time.monotonic()
    # One archive for all: layers the images share (the trainer's and cpu-worker's 6 GB of
    # Python packages) are streamed once, and never land on disk as a tarball.
    save = subprocess.Popen(["podman", "save", "--multi-image-archive", "--format", "docker-archive", *todo], stdout=subprocess.PIPE)
    imported = ctr(sock, "images", "import", "-", stdin=save.stdout, capture_output=True, text=True)
    save.stdout.close()
    if save.wait() != 0 or imported.returncode != 0:
        raise NodeUnavailable(f"importing {', '.join(todo)} into containerd failed: {imported.stderr.strip()}")
    replaced = {marks[ref] for ref in todo if ref in marks} - set(todo.values())
    marks.update(todo)
    marks_file.write_text(json.dumps(marks, indent=2))
    # The runtime also names each image by its ID; the kubelet's image GC would drop the old
    # IDs, but it is off here (imported images cannot be pulled again): drop them ourselves.
    for image_id in replaced - set(marks.values()):
        ctr(sock, "images", "rm", f"sha256:{image_id}", capture_output=True)
    took = time.monotonic() - started
    log.info("imported %s into containerd in %.0fs", ", ".join(todo), took)
    return {ref: took for ref in todo}


def reap_stale_nodes() -> None:
    """What a node killed without its teardown (its supervisor SIGKILLed) leaves: containerd's
    shims keep their containers running after containerd dies. Called with the store's lock
    held, so no other node is running: every lc-* shim, mount, namespace and directory is stale."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and any(a.startswith(b"/run/lc-") for a in argv):
            _kill_tree(int(proc.name))
    for run_dir in Path("/run").glob("lc-*"):
        _unmount_under(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
    _unmount_under(Path("/var/lib/localcluster"))
    shutil.rmtree(Path("/var/lib/localcluster"), ignore_errors=True)
    for name in _netns_names():
        if name.startswith("lc-"):
            netns.delete(name)


def _kill_tree(pid: int) -> None:
    children = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                children.append(int(proc.name))
        except (OSError, IndexError):
            continue
    for child in children:
        _kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _podman_image_id(ref: str) -> str | None:
    out = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def _ensure_pause_image() -> None:
    image_of_pause_binary(PAUSE_IMAGE, user="65535:65535")


def image_of_pause_binary(ref: str, user: str | None = None) -> None:
    """A one-file image in podman: the pause binary as its entrypoint (no USER: runs as root)."""
    if _podman_image_id(ref):
        return
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "pause.tar"
        with tarfile.open(tar, "w") as t:
            t.add(binaries.binary("pause"), arcname="pause")
        changes = ["--change", 'ENTRYPOINT ["/pause"]', *(["--change", f"USER {user}"] if user else [])]
        subprocess.run(["podman", "import", *changes, str(tar), ref], check=True, capture_output=True)


def _netns_names() -> list[str]:
    try:
        return [p.name for p in Path("/run/netns").iterdir()]
    except FileNotFoundError:
        return []


def _unmount_under(path: Path) -> None:
    """Mounts a kubelet left (tmpfs volumes of pods it never tore down), deepest first."""
    prefix = str(path) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
