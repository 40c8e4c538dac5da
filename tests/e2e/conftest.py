"""End to end: the operator installed with its Helm chart, the real worker in every stage pod
(training with a real recipe, ONNX export, DeepSparse and ONNX Runtime), S3 on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcluster import s3 as local_s3
from localcluster.testing import create_namespace, helm, helm_install_operator, wait_until
from sparsify_operator.api import GROUP, PLURAL, VERSION
from tests.support import datasets, objects

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sparsify-operator"


@pytest.fixture(scope="session")
def e2e_namespace(cluster, core):
    return create_namespace(core, "e2e")


@pytest.fixture(scope="session")
def installed_operator(cluster, core, e2e_namespace):
    """The chart as a user installs it, with the local S3 as the platform's default endpoint."""
    res = helm_install_operator(
        cluster.kubeconfig,
        CHART,
        {"watchNamespaces": f"{{{e2e_namespace}}}", "defaults.s3.endpoint": cluster.s3_endpoint, "resyncSeconds": "10"},
    )
    assert res.returncode == 0, res.stderr
    yield
    helm(cluster.kubeconfig, "uninstall", "sparsify", "-n", "sparsify-system", "--wait", check=False)


@pytest.fixture(scope="session")
def dataset_uri(cluster, e2e_namespace, tmp_path_factory):
    """A generated YOLO dataset uploaded to the local S3, and the credentials Secret."""
    local_s3.create_bucket(cluster.s3_endpoint, "models")
    uri = datasets.upload_shapes(cluster.s3_endpoint, tmp_path_factory.mktemp("ds"))
    datasets.create_credentials_secret(cluster.kubeconfig, e2e_namespace)
    return uri


E2E_SPEC = {  # the real worker on tiny images: seconds per stage on two CPU cores
    "model": {"arch": "yolov5s", "activation": "Hardswish"},
    "recipe": {"preset": "pruned-quantized"},
    "training": {"nodes": 1, "gpusPerNode": 1, "maxOOMRetries": 2, "imgSize": 160},
    "export": {"imgSize": 160, "opset": 13},
    "benchmark": {"batchSize": 4, "imgSize": 160, "durationSeconds": 3, "rounds": 1, "compareDense": False},
    "output": {"bucket": "models", "prefix": "e2e", "credentialsSecret": "s3-credentials"},
}


def sparsifyjob(name: str, dataset: str, epochs: int = 5, batch: int = 16, **spec_updates) -> dict:
    training = {**E2E_SPEC["training"], "batchSize": batch, "epochs": epochs, **spec_updates.pop("training", {})}
    return objects.sparsifyjob(name, E2E_SPEC, dataset={"uri": dataset}, training=training, **spec_updates)


def get_status(custom, namespace: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}


def wait_finished(custom, namespace: str, name: str, timeout: float = 900) -> dict:
    return wait_until(
        lambda: (lambda st: st if st.get("phase") in ("Succeeded", "Failed") else None)(get_status(custom, namespace, name)),
        timeout,
        interval=2,
        what=f"{name} to finish",
    )


def pod_log(cluster, namespace: str, pod: str) -> str:
    logs = sorted(Path(cluster.state_dir, "pods").glob(f"{namespace}_{pod}_*/*/container.log"))
    return "".join(p.read_text(errors="replace") for p in logs)


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)[:6000]
