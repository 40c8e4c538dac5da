"""Operator fixtures: the CRD and RBAC installed from manifests/, and the operator running as
a process with its ServiceAccount's credentials (a missing permission fails a test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from localcluster.testing import kubectl, service_account_kubeconfig, wait_until
from sparsify_operator.api import GROUP, PLURAL, VERSION
from tests.support.operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "standin"
START_DEADLINE_SECONDS = 25  # the operator's start deadline in these tests (300 s by default)
OPERATOR_ENV = {"SPARSIFY_RESYNC_SECONDS": "5", "SPARSIFY_START_DEADLINE_SECONDS": str(START_DEADLINE_SECONDS)}


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


@pytest.fixture(scope="session")
def operator(operator_kubeconfig, tmp_path_factory):
    op = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator-log") / "operator.log", OPERATOR_ENV).start()
    yield op
    op.stop()
    errors = [line for line in op.output().splitlines() if "is forbidden: User" in line]
    assert not errors, "the operator hit RBAC denials:\n" + "\n".join(errors[:20])


@pytest.fixture(scope="session")
def custom(kube):
    return client.CustomObjectsApi(kube)


def wait_phase(custom, namespace, name, phases, timeout=120):
    def get():
        sj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return sj if (sj.get("status") or {}).get("phase") in phases else None

    return wait_until(get, timeout, interval=0.5, what=f"{namespace}/{name} phase in {phases}")
