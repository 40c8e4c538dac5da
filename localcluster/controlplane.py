"""etcd + kube-apiserver + kube-controller-manager + kube-scheduler as local processes.

Every component is the real binary (see binaries.py) on loopback ports picked at start.
Processes get their own process group and die with their parent (PR_SET_PDEATHSIG), so an
interrupted test run leaves nothing behind; `stop()` terminates them in reverse order."""

from __future__ import annotations

import base64
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import binaries
from .pki import ADMIN, CONTROLLER_MANAGER, KUBELET, PKI, SCHEDULER, ClientIdentity

SERVICE_CIDR = "10.0.0.0/24"
# Short node-loss timings so tests see eviction in seconds, not the 5-minute production default.
NODE_MONITOR_GRACE_SECONDS = 20
NOT_READY_TOLERATION_SECONDS = 15


class ControlPlaneError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    return subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, wait up to `grace`, then SIGKILL it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # also reaps stragglers left in the group
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def write_kubeconfig(path: Path, server: str, pki: PKI, ident: ClientIdentity, context: str = "localcluster") -> Path:
    b64 = lambda name: base64.b64encode(pki.path(name).read_bytes()).decode()  # noqa: E731
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [
            {
                "name": ident.file_stem,
                "user": {
                    "client-certificate-data": b64(f"{ident.file_stem}.crt"),
                    "client-key-data": b64(f"{ident.file_stem}.key"),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": ident.file_stem}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    state_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    apiserver_port: int = 0
    etcd_port: int = 0
    audit: bool = False  # write every request's metadata to logs/audit.log (the operator scale benchmark counts them)
    # The `kubernetes` Service's endpoint. With a containerd node, its address: pods reach the
    # API server there (netns.Forwarder), since the host's loopback is not theirs.
    advertise_address: str = "127.0.0.1"

    @property
    def pki(self) -> PKI:
        return PKI(self.state_dir / "pki")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def kubeconfig_for(self, ident: ClientIdentity) -> Path:
        return self.state_dir / f"{ident.file_stem}.kubeconfig"

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    @property
    def audit_log(self) -> Path:
        return self._log("audit")

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived", "ResponseStarted"],  # one line per request, when it completes
                    "rules": [{"level": "Metadata"}],
                }
            )
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=batch",
            "--audit-log-maxsize=100000",
            "--audit-log-maxbackup=0",
        ]  # MB: never rotate (0 would mean 100 MB)

    def start(self) -> ControlPlane:
        binaries.ensure_all()
        self.pki.ensure()
        self.etcd_port, peer, self.apiserver_port = free_port(), free_port(), free_port()
        cm_port, sched_port = free_port(), free_port()
        bin_ = binaries.binary
        p = self.pki.path
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.procs["etcd"] = spawn(
            [
                str(bin_("etcd")),
                "--name=local",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=local=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # a throwaway dev cluster: durability is not worth the fsync latency
                "--log-level=warn",
            ],
            self._log("etcd"),
        )
        self._wait(lambda: _http_ok(f"{etcd_url}/health"), "etcd", 30)

        self.procs["kube-apiserver"] = spawn(
            [
                str(bin_("kube-apiserver")),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--advertise-address={self.advertise_address}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={p('apiserver.crt')}",
                f"--tls-private-key-file={p('apiserver.key')}",
                f"--client-ca-file={p('ca.crt')}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p('sa.pub')}",
                f"--service-account-signing-key-file={p('sa.key')}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--default-not-ready-toleration-seconds={NOT_READY_TOLERATION_SECONDS}",
                f"--default-unreachable-toleration-seconds={NOT_READY_TOLERATION_SECONDS}",
                "--allow-privileged=true",
                "--profiling=false",
                "--shutdown-delay-duration=0s",
                "--v=1",
                *self._audit_flags(),
            ],
            self._log("kube-apiserver"),
        )
        ctx = ssl.create_default_context(cafile=str(p("ca.crt")))
        ctx.load_cert_chain(str(p("admin.crt")), str(p("admin.key")))
        self._wait(lambda: _http_ok(f"{self.server}/readyz", ctx), "kube-apiserver", 90)

        write_kubeconfig(self.admin_kubeconfig, self.server, self.pki, ADMIN)
        for ident in (CONTROLLER_MANAGER, SCHEDULER, KUBELET):
            write_kubeconfig(self.kubeconfig_for(ident), self.server, self.pki, ident)
        cm_kc = self.kubeconfig_for(CONTROLLER_MANAGER)
        self.procs["kube-controller-manager"] = spawn(
            [
                str(bin_("kube-controller-manager")),
                f"--kubeconfig={cm_kc}",
                f"--authentication-kubeconfig={cm_kc}",
                f"--authorization-kubeconfig={cm_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                f"--cert-dir={self.state_dir / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",  # each controller acts with its own RBAC identity
                f"--service-account-private-key-file={p('sa.key')}",
                f"--root-ca-file={p('ca.crt')}",
                f"--cluster-signing-cert-file={p('ca.crt')}",
                f"--cluster-signing-key-file={p('ca.key')}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
                "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle-controller",
                "--v=1",
            ],
            self._log("kube-controller-manager"),
        )
        sched_kc = self.kubeconfig_for(SCHEDULER)
        self.procs["kube-scheduler"] = spawn(
            [
                str(bin_("kube-scheduler")),
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--v=1",
            ],
            self._log("kube-scheduler"),
        )
        insecure = ssl._create_unverified_context()  # their self-signed serving certs; /healthz is public
        self._wait(lambda: _http_ok(f"https://127.0.0.1:{cm_port}/healthz", insecure), "kube-controller-manager", 60)
        self._wait(lambda: _http_ok(f"https://127.0.0.1:{sched_port}/healthz", insecure), "kube-scheduler", 60)
        return self

    def _wait(self, probe, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}; see {self._log(name)}:\n{_tail(self._log(name))}")
            if probe():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready after {timeout}s; see {self._log(name)}:\n{_tail(self._log(name))}")

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            terminate(self.procs.pop(name))


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
            return r.status == 200
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
