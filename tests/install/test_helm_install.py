"""`helm install` brings the operator up as a pod (process-kubelet) with its ServiceAccount's
credentials; it reconciles a sample SparsifyJob; `helm uninstall` leaves nothing behind."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from localcluster.testing import create_namespace, helm, helm_install_operator, kubectl, wait_until
from sparsify_operator.api import GROUP, PLURAL, VERSION

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sparsify-operator"
STANDIN = REPO / "tests" / "standin"
pytestmark = pytest.mark.cluster


def lease_of(kube, name: str):
    try:
        lease = client.CoordinationV1Api(kube).read_namespaced_lease(name, "sparsify-system")
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise
    return lease if lease.spec.holder_identity else None


def leader_gauge(pod) -> str | None:
    """`sparsify_leader` as the pod serves it on its own IP (None: not serving)."""
    (port,) = [p.container_port for c in pod.spec.containers for p in c.ports or [] if p.name == "metrics"]
    try:
        text = urllib.request.urlopen(f"http://{pod.status.pod_ip}:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    return next((line.split()[1] for line in text.splitlines() if line.startswith("sparsify_leader ")), None)


def test_helm_install_reconcile_and_uninstall(cluster, core, kube):
    apps, custom, rbac = client.AppsV1Api(kube), client.CustomObjectsApi(kube), client.RbacAuthorizationV1Api(kube)
    team = create_namespace(core, "team")
    res = helm_install_operator(
        cluster.kubeconfig,
        CHART,
        {
            "watchNamespaces": f"{{{team}}}",
            "stages.workerCommand": f"{{python,{STANDIN / 'worker.py'}}}",
            "stages.trainLauncher": f"{{python,{STANDIN / 'torchrun.py'}}}",
        },
    )
    assert res.returncode == 0, res.stderr
    assert "watching: " + team in res.stdout  # NOTES.txt
    pods = core.list_namespaced_pod("sparsify-system", label_selector="app.kubernetes.io/instance=sparsify").items
    running = [p for p in pods if p.status.phase == "Running"]
    assert len(running) == 2  # two replicas: one leads, one stands by
    assert all(p.spec.service_account_name == "sparsify-sparsify-operator" for p in running)
    assert len({p.spec.node_name for p in running}) == 2  # placed apart by the scheduler (anti-affinity), run by the process-kubelet
    lease = wait_until(lambda: lease_of(kube, "sparsify-sparsify-operator"), 30, what="the leader Lease")
    (pod,) = [p for p in running if lease.spec.holder_identity.startswith(p.metadata.name + "_")]
    # Both replicas are up and serving on their own pod IPs (they share this machine's network),
    # one leading and one standing by: a standby that could not bind would not take over.
    wait_until(lambda: sorted(leader_gauge(p) for p in running) == ["0.0", "1.0"], 30, what="one leader and one standby serving metrics")
    assert leader_gauge(pod) == "1.0"
    pdb = client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget("sparsify-sparsify-operator", "sparsify-system")
    assert pdb.spec.min_available == 1

    kubectl(
        cluster.kubeconfig,
        "create",
        "secret",
        "generic",
        "sparsify-s3",
        "-n",
        team,
        "--from-literal=AWS_ACCESS_KEY_ID=local",
        "--from-literal=AWS_SECRET_ACCESS_KEY=local",
    )
    sample = yaml.safe_load((REPO / "manifests/samples/yolov5s-pruned-quantized.yaml").read_text())
    kubectl(cluster.kubeconfig, "apply", "-n", team, "-f", "-", input=json.dumps(sample))
    name = sample["metadata"]["name"]

    def finished():
        st = custom.get_namespaced_custom_object(GROUP, VERSION, team, PLURAL, name).get("status") or {}
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    st = wait_until(finished, 180, interval=1, what="sample SparsifyJob to finish under the in-cluster operator")
    assert st["phase"] == "Succeeded", json.dumps(st, indent=1)

    def leader_said_it_all():  # only the leader acts: every event is its own (posted a moment after the status)
        events = core.list_namespaced_event(team, field_selector=f"involvedObject.name={name}").items
        ours = [e for e in events if e.reporting_component == "sparsify-operator"]
        return any(e.reason == "Succeeded" for e in ours) and {e.reporting_instance for e in ours}

    assert wait_until(leader_said_it_all, 30, what="the run's events") == {pod.metadata.name}

    res = helm(cluster.kubeconfig, "uninstall", "sparsify", "-n", "sparsify-system", "--wait", "--timeout", "120s", check=False)
    assert res.returncode == 0, res.stderr
    selector = "app.kubernetes.io/instance=sparsify"
    wait_until(lambda: not core.list_namespaced_pod("sparsify-system", label_selector=selector).items, 60, what="operator pod gone")
    assert not apps.list_namespaced_deployment("sparsify-system", label_selector=selector).items
    assert not core.list_namespaced_service_account("sparsify-system", label_selector=selector).items
    assert not core.list_namespaced_service("sparsify-system", label_selector=selector).items
    assert not rbac.list_cluster_role(label_selector=selector).items
    assert not rbac.list_cluster_role_binding(label_selector=selector).items
    assert not rbac.list_role_binding_for_all_namespaces(label_selector=selector).items
    assert not rbac.list_role_for_all_namespaces(label_selector=selector).items
    assert not client.PolicyV1Api(kube).list_namespaced_pod_disruption_budget("sparsify-system", label_selector=selector).items
    admission = client.AdmissionregistrationV1Api(kube)
    assert not admission.list_validating_admission_policy(label_selector=selector).items
    assert not admission.list_validating_admission_policy_binding(label_selector=selector).items
    # Helm never deletes CRDs from crds/ (that would delete every SparsifyJob): they stay on purpose.
    assert client.ApiextensionsV1Api(kube).read_custom_resource_definition("sparsifyjobs.yolo-sparsify.io")
