"""Objects admission would never let through, on a cluster of their own: its CRD is permissive
(no schema, no CEL), so nothing else ever runs against a CRD that is not the real one."""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes import client

from localcluster.cluster import LocalCluster
from localcluster.testing import api_client, create_namespace, kubectl, service_account_kubeconfig, wait_until
from sparsify_operator.api import GROUP, VERSION
from tests.support import objects
from tests.support.operator_process import OperatorProcess

from .conftest import OPERATOR_ENV, REPO, wait_phase

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def permissive_cluster(tmp_path_factory):
    lc = LocalCluster(tmp_path_factory.mktemp("permissive-cluster"))
    info = lc.start()
    crd = yaml.safe_load((REPO / "manifests/base/crd.yaml").read_text())
    version = crd["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"].pop("x-kubernetes-validations")
    version["schema"]["openAPIV3Schema"].pop("required", None)
    version["schema"]["openAPIV3Schema"]["properties"]["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    version["additionalPrinterColumns"] = []
    kubectl(info.kubeconfig, "apply", "-f", "-", input=json.dumps(crd))
    kubectl(info.kubeconfig, "wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")
    for f in ("namespace.yaml", "rbac.yaml"):
        kubectl(info.kubeconfig, "apply", "-f", str(REPO / "manifests/base" / f))
    yield info
    lc.stop()


def test_a_malformed_object_fails_as_invalid_spec_and_the_operator_goes_on(permissive_cluster, tmp_path):
    kube = api_client(permissive_cluster.kubeconfig)
    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    wait_until(
        lambda: core.list_namespaced_service_account("sparsify-system", field_selector="metadata.name=sparsify-operator").items,
        30,
        what="operator ServiceAccount",
    )
    kubeconfig = service_account_kubeconfig(
        permissive_cluster.kubeconfig, core, "sparsify-system", "sparsify-operator", tmp_path / "kubeconfig"
    )
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log", OPERATOR_ENV).start()
    try:
        namespace = create_namespace(core, "malformed")
        for name, spec in (
            ("wrong-types", {"model": "yolov5s", "recipe": 7}),
            ("no-spec", None),
            ("negative", {**objects.STANDIN_SPEC, "training": {"batchSize": -8}}),
        ):
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SparsifyJob", "metadata": {"name": name}}
            if spec is not None:
                body["spec"] = spec
            # (the first apply may come before the new CRD is served: tried until it is taken)
            wait_until(
                lambda b=body: (
                    kubectl(permissive_cluster.kubeconfig, "apply", "-n", namespace, "-f", "-", check=False, input=json.dumps(b)).returncode
                    == 0
                ),
                30,
                what=f"{name} accepted by the permissive CRD",
            )
            st = wait_phase(custom, namespace, name, ("Failed",), timeout=30)["status"]
            stalled = next(c for c in st["conditions"] if c["type"] == "Stalled")
            assert stalled["reason"] == "InvalidSpec" and "spec" in stalled["message"], st
        # and the next well-formed one runs to the end (defaults from the operator, not the API server)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "sparsifyjobs", objects.sparsifyjob("after"))
        assert wait_phase(custom, namespace, "after", ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"
        assert op.proc.poll() is None
        assert "Traceback" not in op.output(), op.output()[-3000:]
    finally:
        op.stop()
