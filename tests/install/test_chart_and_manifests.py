"""Install paths: the Helm chart, the kustomize base/overlays and the GitOps pieces, checked
by helm itself and by the real API server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from localcluster.testing import helm, kubectl

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sparsify-operator"
pytestmark = pytest.mark.cluster

OPERATOR_RULES = {  # (apiGroup, resource) -> verbs: exactly what the operator's code calls
    ("yolo-sparsify.io", "sparsifyjobs"): {"get", "list", "watch"},
    ("yolo-sparsify.io", "sparsifyjobs/status"): {"get", "patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"create"},
    ("networking.k8s.io", "networkpolicies"): {"create"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create", "list"},
    ("events.k8s.io", "events"): {"create"},
}


def test_helm_lint_strict(cluster):
    out = helm(cluster.kubeconfig, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout


def test_chart_crd_is_the_manifests_crd():
    assert (CHART / "crds" / "sparsifyjobs.yaml").read_text() == (REPO / "manifests/base/crd.yaml").read_text()


def _rules(docs: list[dict], kind: str = "ClusterRole") -> dict:
    (role,) = [d for d in docs if d and d["kind"] == kind]
    out: dict = {}
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                out.setdefault((g, r), set()).update(rule["verbs"])
    return out


LEADER_ELECTION_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}  # in its own namespace only


def test_rbac_is_exactly_what_the_operator_uses(cluster):
    chart = list(yaml.safe_load_all(helm(cluster.kubeconfig, "template", "t", str(CHART), "-n", "ops").stdout))
    base = list(yaml.safe_load_all((REPO / "manifests/base/rbac.yaml").read_text()))
    assert _rules(chart) == OPERATOR_RULES
    assert _rules(base) == OPERATOR_RULES
    assert not any("*" in verbs for verbs in OPERATOR_RULES.values())
    for docs, namespace in ((chart, "ops"), (base, "sparsify-system")):
        (role,) = [d for d in docs if d and d["kind"] == "Role"]
        assert role["metadata"]["namespace"] == namespace and _rules(docs, "Role") == LEADER_ELECTION_RULES


@pytest.mark.parametrize("source", ["helm", "helm-namespaced", "kustomize-cluster-wide", "kustomize-single-namespace"])
def test_rendered_manifests_are_accepted_by_the_api_server(cluster, core, source):
    for ns in ("sparsify-system", "ml-team", "team-a", "team-b"):
        kubectl(cluster.kubeconfig, "create", "namespace", ns, check=False)
    if source.startswith("helm"):
        args = ["template", "sparsify", str(CHART), "-n", "sparsify-system", "--include-crds"]
        if source == "helm-namespaced":
            args += ["--set", "watchNamespaces={team-a,team-b}", "--set", "metrics.serviceMonitor.enabled=false"]
        rendered = helm(cluster.kubeconfig, *args).stdout
    else:
        overlay = source.removeprefix("kustomize-")
        rendered = kubectl(cluster.kubeconfig, "kustomize", str(REPO / "manifests/overlays" / overlay)).stdout
    res = kubectl(cluster.kubeconfig, "apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert res.returncode == 0, res.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "NetworkPolicy"} <= kinds


BAD_VALUES = [
    (["--set", "metrics.port=abc"], "/metrics/port': got string, want integer"),
    (["--set", "image.pullPolicy=Sometimes"], "value must be one of 'Always', 'IfNotPresent', 'Never'"),
    (["--set", "watchNamespaces={Bad_NS}"], "'Bad_NS' does not match pattern"),
    (["--set", "stages.env.AWS_SECRET_ACCESS_KEY=x"], "invalid propertyName 'AWS_SECRET_ACCESS_KEY'"),
    (["--set", "defaults.s3.endpoint=minio:9000"], "does not match pattern '^$|^https?://'"),
    (["--set", "replicas=0"], "at '/replicas': minimum: got 0, want 1"),
    (
        ["--set", "leaderElection.renewDeadlineSeconds=10"],
        "leaderElection needs retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
    ),
    (["--set", "replica=2"], "additional properties 'replica' not allowed"),
]


@pytest.mark.parametrize("args,message", BAD_VALUES, ids=[a[1] for a, _ in BAD_VALUES])
def test_values_schema_refuses_bad_values_clearly(cluster, args, message):
    res = helm(cluster.kubeconfig, "template", "t", str(CHART), *args, check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


def test_security_defaults_of_the_operator_pod(cluster):
    docs = [d for d in yaml.safe_load_all(helm(cluster.kubeconfig, "template", "t", str(CHART)).stdout) if d]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert not any("SECRET" in e["name"] or "PASSWORD" in e["name"] for e in c["env"])
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["resources"]["limits"]["memory"]


def test_argocd_health_check(tmp_path):
    from lupa import LuaRuntime

    script = (REPO / "manifests/gitops/argocd-health-sparsifyjob.lua").read_text()
    cm = yaml.safe_load((REPO / "manifests/gitops/argocd-cm-patch.yaml").read_text())
    assert cm["data"]["resource.customizations.health.yolo-sparsify.io_SparsifyJob"].strip() == script.strip()

    def health(obj: dict) -> tuple[str, str]:
        lua = LuaRuntime(unpack_returned_tuples=True)
        table = _to_lua(lua, obj)
        fn = lua.eval(f"function(obj)\n{script}\nend")
        res = fn(table)
        return res["status"], res["message"]

    def sj(conditions, phase="Training", generation=1):
        return {"metadata": {"generation": generation}, "status": {"phase": phase, "conditions": conditions}}

    def cond(kind, status, reason="", message="", gen=1):
        return {"type": kind, "status": status, "reason": reason, "message": message, "observedGeneration": gen}

    assert health({"metadata": {"generation": 1}})[0] == "Progressing"
    running = sj([cond("Ready", "False", "InProgress", "train: Job x is running"), cond("Stalled", "False", "NoFailure")])
    assert health(running) == ("Progressing", "Training: train: Job x is running")
    done = sj([cond("Ready", "True", "Succeeded", "all stages succeeded"), cond("Stalled", "False")], "Succeeded")
    assert health(done) == ("Healthy", "all stages succeeded")
    failed = sj(
        [cond("Ready", "False", "OOMKilled", "stage train failed"), cond("Stalled", "True", "OOMKilled", "stage train failed")], "Failed"
    )
    assert health(failed) == ("Degraded", "OOMKilled: stage train failed")
    stale = sj([cond("Ready", "True", "Succeeded", "old", gen=1)], "Succeeded", generation=2)
    assert health(stale)[0] == "Progressing"


def _to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def test_the_charts_admission_policy_enforces_its_image_allow_list(cluster, core):
    import json

    from localcluster.testing import wait_until

    kubectl(cluster.kubeconfig, "apply", "-f", str(REPO / "manifests/base/crd.yaml"))
    kubectl(cluster.kubeconfig, "wait", "--for=condition=Established", "crd/sparsifyjobs.yolo-sparsify.io", "--timeout=60s")
    kubectl(cluster.kubeconfig, "create", "namespace", "allow-list", check=False)
    rendered = helm(
        cluster.kubeconfig, "template", "allow", str(CHART), "--set", "admissionPolicy.imageAllowList={registry.example.com/ml/}"
    ).stdout
    policy = [d for d in yaml.safe_load_all(rendered) if d and d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert {d["kind"] for d in policy} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    kubectl(cluster.kubeconfig, "apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in policy))

    def dry_run(image):
        body = {
            "apiVersion": "yolo-sparsify.io/v1alpha1",
            "kind": "SparsifyJob",
            "metadata": {"name": "img"},
            "spec": {
                "model": {"arch": "yolov5s"},
                "recipe": {"preset": "pruned"},
                "dataset": {"uri": "s3://datasets/coco128/"},
                "training": {"image": image},
                "output": {"bucket": "models"},
            },
        }
        return kubectl(cluster.kubeconfig, "create", "--dry-run=server", "-n", "allow-list", "-f", "-", input=json.dumps(body), check=False)

    try:
        refused = wait_until(lambda: (r := dry_run("docker.io/someone/miner:latest")).returncode != 0 and r, 30, what="policy in force")
        assert (
            "training.image docker.io/someone/miner:latest is not allowed here: it must start with one of registry.example.com/ml/"
            in refused.stderr
        )
        assert dry_run("registry.example.com/ml/trainer:0.2.0").returncode == 0
    finally:
        kubectl(cluster.kubeconfig, "delete", "-f", "-", "--ignore-not-found", input="\n---\n".join(json.dumps(d) for d in policy))
