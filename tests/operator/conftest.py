"""Operator fixtures: the CRD and RBAC installed from manifests/, and the operator running as
a process with its ServiceAccount's credentials (a missing permission fails a test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.controlplane import free_port
from localcluster.testing import kubectl, service_account_kubeconfig, wait_until

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "standin"
START_DEADLINE_SECONDS = 25  # the operator's start deadline in these tests (300 s by default)


@pytest.fixture(scope="session")
def crd(cluster, kube):
    kubectl(cluster.kubeconfig, "apply", "-f", str(REPO / "manifests/base/crd.yaml"))
    ext = client.ApiextensionsV1Api(kube)

    def established():
        c = ext.read_custom_resource_definition("sparsifyjobs.yolo-sparsify.io")
        return any(x.type == "Established" and x.status == "True" for x in c.status.conditions or [])

    wait_until(established, 30, what="CRD Established")
    # the OpenAPI document (kubectl explain, server-side dry-run) is published a moment later
    wait_until(
        lambda: kubectl(cluster.kubeconfig, "explain", "sparsifyjob.spec", check=False).returncode == 0, 30, what="CRD schema published"
    )
    return "sparsifyjobs.yolo-sparsify.io"


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster, core, crd, tmp_path_factory):
    for f in ("namespace.yaml", "rbac.yaml"):
        kubectl(cluster.kubeconfig, "apply", "-f", str(REPO / "manifests/base" / f))
    wait_until(
        lambda: core.list_namespaced_service_account("sparsify-system", field_selector="metadata.name=sparsify-operator").items,
        30,
        what="operator ServiceAccount",
    )
    return service_account_kubeconfig(
        cluster.kubeconfig, core, "sparsify-system", "sparsify-operator", tmp_path_factory.mktemp("operator") / "kubeconfig"
    )


class OperatorProcess:
    """`python -m sparsify_operator` with stand-in stage commands, as the ServiceAccount."""

    def __init__(self, kubeconfig: Path, log: Path, env: dict | None = None):
        self.kubeconfig, self.log, self.extra_env = kubeconfig, log, env or {}
        self.proc: subprocess.Popen | None = None
        self.port = free_port()
        self.metrics_port = free_port()

    def start(self) -> "OperatorProcess":
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SPARSIFY_WORKER_COMMAND": json.dumps(["python", str(STANDIN / "worker.py")]),
            "SPARSIFY_TRAIN_LAUNCHER": json.dumps(["python", str(STANDIN / "torchrun.py")]),
            "SPARSIFY_RESYNC_SECONDS": "5",
            "SPARSIFY_METRICS_PORT": str(self.metrics_port),
            "SPARSIFY_START_DEADLINE_SECONDS": str(START_DEADLINE_SECONDS),
            **self.extra_env,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparsify_operator", "--liveness", f"http://127.0.0.1:{self.port}/healthz"],
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )

        def live():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status == 200
            except OSError:
                return False

        wait_until(live, 60, what="operator liveness")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def operator(operator_kubeconfig, tmp_path_factory):
    op = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator-log") / "operator.log").start()
    yield op
    op.stop()
    errors = [line for line in op.output().splitlines() if "is forbidden: User" in line]
    assert not errors, "the operator hit RBAC denials:\n" + "\n".join(errors[:20])


@pytest.fixture(scope="session")
def custom(kube):
    return client.CustomObjectsApi(kube)


def wait_phase(custom, namespace, name, phases, timeout=120):
    def get():
        sj = custom.get_namespaced_custom_object("yolo-sparsify.io", "v1alpha1", namespace, "sparsifyjobs", name)
        return sj if (sj.get("status") or {}).get("phase") in phases else None

    return wait_until(get, timeout, interval=0.5, what=f"{namespace}/{name} phase in {phases}")
