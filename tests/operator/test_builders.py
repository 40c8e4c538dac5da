"""Pure builders: spec -> Job/Service manifests."""

import json
import re

import pytest

from sparsify_operator.builders import (
    construct_job,
    construct_network_policy,
    construct_rendezvous_service,
    job_name,
    scaled_quantity,
)
from sparsify_operator.config import OperatorConfig
from sparsify_operator.spec import normalized
from tests.support.objects import stored_sparsifyjob

CFG = OperatorConfig(worker_command=("sparsify-worker",), train_launcher=("torchrun",))


def build(stage, sj=None, attempt=0, batch=None):
    sj = sj or stored_sparsifyjob()
    return construct_job(sj, normalized(sj["spec"]), stage, attempt, CFG, batch, {})


def env_of(job):
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_names_are_deterministic_and_owned():
    j = build("train", attempt=0, batch=64)
    assert j["metadata"]["name"] == "demo-train" == job_name("demo", "train")
    assert build("train", attempt=2, batch=16)["metadata"]["name"] == "demo-train-r2"
    (owner,) = j["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "yolo-sparsify.io/v1alpha1",
        "kind": "SparsifyJob",
        "name": "demo",
        "uid": "uid-1234",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_single_node_training_pod():
    j = build("train", batch=64)
    pod = j["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == [
        "sparsify-worker",
        "supervise",
        "--",
        "torchrun",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=4",
        "--no-python",
        "sparsify-worker",
        "train",
    ]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    # the worker's CUDA OOM (75) and a SIGKILL (137) fail the attempt at once; the operator resumes it
    assert j["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [75, 137]
    assert pod["restartPolicy"] == "Never" and "completionMode" not in j["spec"]
    assert j["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "64"


def test_a_training_attempt_receives_one_batch_size_its_own():
    """An OOM retry's pod gets the halved batch inside the spec it reads; nothing else says a
    batch size, so the worker has nothing to choose between."""
    j = build("train", attempt=1, batch=32)
    spec = json.loads(j["spec"]["template"]["metadata"]["annotations"]["yolo-sparsify.io/spec"])
    assert spec["training"]["batchSize"] == 32 and j["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "32"
    assert not [name for name in env_of(j) if "BATCH" in name]
    first = json.loads(build("train")["spec"]["template"]["metadata"]["annotations"]["yolo-sparsify.io/spec"])
    assert first["training"]["batchSize"] == 64  # the spec's own on the first attempt


def test_multi_node_training_is_an_indexed_job_with_rendezvous_at_index_0():
    sj = stored_sparsifyjob(training={"nodes": 3, "gpusPerNode": 8, "batchSize": 240})
    j = build("train", sj=sj, attempt=1, batch=240)
    assert (j["spec"]["completionMode"], j["spec"]["completions"], j["spec"]["parallelism"]) == ("Indexed", 3, 3)
    pod = j["spec"]["template"]["spec"]
    assert pod["subdomain"] == "demo-rdzv"
    cmd = pod["containers"][0]["command"]
    assert cmd[:6] == ["sparsify-worker", "supervise", "--", "torchrun", "--nnodes=3", "--nproc_per_node=8"]
    assert "--rdzv_backend=c10d" in cmd
    assert "--rdzv_endpoint=demo-train-r1-0.demo-rdzv.ml.svc.cluster.local:29500" in cmd
    assert "--rdzv_id=uid-1234-1" in cmd and "--standalone" not in cmd
    # the group fails whole: any rank's non-zero exit or disruption ends the attempt at once
    assert j["spec"]["backoffLimit"] == 0
    assert j["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "NotIn", "values": [0]}},
        {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
    policy = construct_network_policy(sj)
    train_pods = {"matchLabels": {"yolo-sparsify.io/sparsifyjob": "demo", "yolo-sparsify.io/stage": "train"}}
    assert policy["spec"] == {"podSelector": train_pods, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": train_pods}]}]}
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    svc = construct_rendezvous_service(sj)
    assert svc["spec"]["clusterIP"] == "None" and svc["metadata"]["name"] == "demo-rdzv"
    assert svc["spec"]["selector"] == {"yolo-sparsify.io/sparsifyjob": "demo", "yolo-sparsify.io/stage": "train"}


def test_kueue_queue_creates_suspended_jobs_with_the_queue_label():
    j = build("train", sj=stored_sparsifyjob(training={"queueName": "gpu-queue"}), batch=64)
    assert j["spec"]["suspend"] is True
    assert j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "suspend" not in build("train", batch=64)["spec"]


def test_cpu_stages_placement_and_no_gpu():
    bench = build("benchmark")
    pod = bench["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "c5.12xlarge"}
    assert "tolerations" not in pod and "nvidia.com/gpu" not in json.dumps(pod["containers"][0]["resources"])
    export = build("export")["spec"]["template"]["spec"]
    assert "tolerations" not in export  # the GPU taint keeps it off GPU nodes
    assert export["containers"][0]["command"] == ["sparsify-worker", "export"]


def test_security_defaults_and_credentials_only_by_reference():
    j = build("train", batch=64)
    pod = j["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert not any("SECRET" in n or "ACCESS_KEY" in n for n in env_of(j))


def test_workload_identity_uses_the_service_account_and_its_token():
    sj = stored_sparsifyjob(output={"bucket": "models", "serviceAccountName": "s3-writer", "endpoint": "http://minio:9000"})
    sj["spec"]["output"].pop("credentialsSecret")
    pod = build("export", sj=sj)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "s3-writer" and pod["automountServiceAccountToken"] is True
    assert "envFrom" not in pod["containers"][0]
    assert env_of(build("export", sj=sj))["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"


def spec_files(job):
    """What the pod finds in /etc/sparsify: its own annotations, mounted by the downward API."""
    tpl = job["spec"]["template"]
    (vol,) = [v for v in tpl["spec"]["volumes"] if v["name"] == "spec"]
    mount = next(m for m in tpl["spec"]["containers"][0]["volumeMounts"] if m["name"] == "spec")
    out = {}
    for item in vol["downwardAPI"]["items"]:
        key = item["fieldRef"]["fieldPath"].split("['")[1].rstrip("']")
        out[f"{mount['mountPath']}/{item['path']}"] = json.loads(tpl["metadata"]["annotations"][key])
    assert mount["readOnly"] is True
    return out


def test_stage_env_carries_the_contract():
    job = build("export")
    env = env_of(job)
    assert env["SPARSIFY_STAGE"] == "export" and env["SPARSIFY_RECIPE"] == "yolov5s-pruned-quantized"
    # every run its own prefix: a namesake created after this one was deleted never shares it
    assert env["SPARSIFY_OUTPUT_URI"] == "s3://models/sparsify/ml/demo/uid-1234"
    files = spec_files(job)
    assert env["SPARSIFY_SPEC_FILE"] == "/etc/sparsify/spec.json" and env["SPARSIFY_INPUTS_FILE"] == "/etc/sparsify/inputs.json"
    assert files["/etc/sparsify/spec.json"]["export"]["opset"] == 13  # defaults filled in
    assert files["/etc/sparsify/inputs.json"] == {}
    assert "SPARSIFY_SPEC" not in env  # a long inline recipe would not fit an environment variable


def test_a_64k_inline_recipe_reaches_the_pod_as_a_file_not_an_environment_variable():
    recipe = 'version: "1.1.0"\n' + ("# " + "é" * 100 + "\n") * 310  # 62 KiB; 187 KB JSON-escaped, past the 128 KiB env limit
    sj = stored_sparsifyjob(recipe={"inline": recipe, "targetArch": "yolov5s"})
    job = build("train", sj=sj, batch=64)
    assert spec_files(job)["/etc/sparsify/spec.json"]["recipe"]["inline"] == recipe
    assert max(len(e["value"]) for e in job["spec"]["template"]["spec"]["containers"][0]["env"]) < 4096


def test_operator_variables_always_win_over_the_specs_env():
    sj = stored_sparsifyjob(
        env=[
            {"name": "SPARSIFY_OUTPUT_URI", "value": "s3://models/sparsify/other-team/x"},
            {"name": "AWS_ENDPOINT_URL_S3", "value": "http://evil:9000"},
            {"name": "LD_PRELOAD", "value": "/x.so"},
            {"name": "PYTHONPATH", "value": "/x"},
            {"name": "MY_FLAG", "value": "1"},
        ]
    )
    env_list = build("train", sj=sj, batch=64)["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env_list]
    assert env_of({"spec": {"template": {"spec": {"containers": [{"env": env_list}]}}}})["SPARSIFY_OUTPUT_URI"].endswith(
        "/ml/demo/uid-1234"
    )
    assert "LD_PRELOAD" not in names and "PYTHONPATH" not in names and "AWS_ENDPOINT_URL_S3" not in names
    assert names.count("SPARSIFY_OUTPUT_URI") == 1 and names[0] == "MY_FLAG"  # the user's first: a duplicate is the operator's


def test_every_stage_requests_cpu_memory_and_disk_and_training_scales_with_gpus():
    train = build("train", sj=stored_sparsifyjob(training={"gpusPerNode": 4, "batchSize": 64}), batch=64)
    res = train["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "32", "memory": "192Gi", "ephemeral-storage": "80Gi", "nvidia.com/gpu": "4"}
    assert res["limits"] == {"nvidia.com/gpu": "4"}
    own = stored_sparsifyjob(
        training={"gpusPerNode": 2, "batchSize": 64, "resources": {"requests": {"memory": "100Gi"}, "limits": {"memory": "200Gi"}}}
    )
    res = build("train", sj=own, batch=64)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"]["memory"] == "100Gi" and res["requests"]["cpu"] == "16" and res["limits"]["memory"] == "200Gi"
    cfg = OperatorConfig(train_requests_per_gpu=(("cpu", "500m"),), train_limits_per_gpu=(("memory", "8Gi"),))
    sj = stored_sparsifyjob(training={"gpusPerNode": 3, "batchSize": 63})
    res = construct_job(sj, normalized(sj["spec"]), "train", 0, cfg, 63, {})["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "1500m", "nvidia.com/gpu": "3"} and res["limits"] == {"memory": "24Gi", "nvidia.com/gpu": "3"}
    for stage in ("validate", "export", "benchmark", "publish"):
        pod = build(stage)["spec"]["template"]["spec"]
        assert {"cpu", "memory", "ephemeral-storage"} <= set(pod["containers"][0]["resources"]["requests"])
        assert next(v for v in pod["volumes"] if v["name"] == "tmp")["emptyDir"]["sizeLimit"]
    assert next(v for v in train["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")["emptyDir"]["sizeLimit"] == "100Gi"
    assert scaled_quantity("1.5", 2) == "3" and scaled_quantity("0.5Gi", 3) == "1.5Gi"


def test_only_the_gpu_stage_is_queued():
    sj = stored_sparsifyjob(training={"queueName": "gpu-queue"})
    assert "suspend" not in build("validate", sj=sj)["spec"]
    assert "kueue.x-k8s.io/queue-name" not in build("export", sj=sj)["metadata"]["labels"]


def test_platform_defaults_fill_what_the_spec_leaves_empty():
    cfg = OperatorConfig(
        gpu_node_selector=(("node.kubernetes.io/instance-type", "p4d.24xlarge"),), s3_endpoint="http://minio:9000", queue_name="team-a"
    )
    sj = stored_sparsifyjob()
    spec = normalized(sj["spec"])
    train = construct_job(sj, spec, "train", 0, cfg, 64, {})
    assert train["spec"]["template"]["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "p4d.24xlarge"}
    assert train["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a" and train["spec"]["suspend"] is True
    assert env_of(train)["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    own = stored_sparsifyjob(training={"nodeSelector": {"pool": "mine"}})
    assert construct_job(own, normalized(own["spec"]), "train", 0, cfg, 64, {})["spec"]["template"]["spec"]["nodeSelector"] == {
        "pool": "mine"
    }


def test_a_node_dataset_cache_is_mounted_into_training_pods_only_when_the_platform_sets_one():
    assert "SPARSIFY_DATASET_CACHE" not in env_of(build("train", batch=64))
    cfg = OperatorConfig(dataset_cache_host_path="/var/lib/sparsify/datasets")
    sj = stored_sparsifyjob()
    train = construct_job(sj, normalized(sj["spec"]), "train", 0, cfg, 64, {})
    pod = train["spec"]["template"]["spec"]
    assert {"name": "datasets", "hostPath": {"path": "/var/lib/sparsify/datasets", "type": "DirectoryOrCreate"}} in pod["volumes"]
    assert env_of(train)["SPARSIFY_DATASET_CACHE"] == "/var/cache/sparsify-datasets"
    assert "SPARSIFY_DATASET_CACHE" not in env_of(construct_job(sj, normalized(sj["spec"]), "validate", 0, cfg, None, {}))


def test_the_platform_resizes_cpu_stages_per_stage_and_a_typo_stops_the_operator(monkeypatch):
    from sparsify_operator.config import from_env

    monkeypatch.setenv("SPARSIFY_CPU_STAGE_RESOURCES", json.dumps({"benchmark": {"requests": {"cpu": 2}, "limits": {"memory": "6Gi"}}}))
    cfg = from_env()
    sj = stored_sparsifyjob()
    bench = construct_job(sj, normalized(sj["spec"]), "benchmark", 0, cfg, None, {})["spec"]["template"]["spec"]["containers"][0]
    assert bench["resources"] == {"requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "4Gi"}, "limits": {"memory": "6Gi"}}
    export = construct_job(sj, normalized(sj["spec"]), "export", 0, cfg, None, {})["spec"]["template"]["spec"]["containers"][0]
    assert export["resources"]["requests"]["cpu"] == "2" and export["resources"]["limits"] == {"memory": "16Gi"}  # untouched
    for bad, says in (
        ({"bench": {"requests": {"cpu": "2"}}}, "unknown stage 'bench'"),
        ({"export": {"request": {"cpu": "2"}}}, "may only have requests and limits"),
        ({"export": {"requests": ["cpu"]}}, "must map resource names to quantities"),
        (["export"], "JSON object keyed by stage"),
    ):
        monkeypatch.setenv("SPARSIFY_CPU_STAGE_RESOURCES", json.dumps(bad))
        with pytest.raises(ValueError, match=re.escape(says)):
            from_env()
