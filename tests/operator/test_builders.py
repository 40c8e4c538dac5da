"""Pure builders: spec -> Job/Service manifests."""

import json

from sparsify_operator.builders import OperatorConfig, construct_job, construct_rendezvous_service, job_name
from sparsify_operator.spec import normalized

from .factories import sparsifyjob

CFG = OperatorConfig(worker_command=("sparsify-worker",), train_launcher=("torchrun",))


def build(stage, sj=None, attempt=0, batch=None):
    sj = sj or sparsifyjob()
    return construct_job(sj, normalized(sj["spec"]), stage, attempt, CFG, batch, {})


def env_of(job):
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_names_are_deterministic_and_owned():
    j = build("train", attempt=0, batch=64)
    assert j["metadata"]["name"] == "demo-train" == job_name("demo", "train")
    assert build("train", attempt=2, batch=16)["metadata"]["name"] == "demo-train-r2"
    (owner,) = j["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "yolo-sparsify.io/v1alpha1", "kind": "SparsifyJob", "name": "demo", "uid": "uid-1234",
                     "controller": True, "blockOwnerDeletion": True}


def test_single_node_training_pod():
    j = build("train", batch=64)
    pod = j["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["sparsify-worker", "supervise", "--", "torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=4",
                            "--no-python", "sparsify-worker", "train"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    # the worker's CUDA OOM (75) and a SIGKILL (137) fail the attempt at once; the operator resumes it
    assert j["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [75, 137]
    assert pod["restartPolicy"] == "Never" and "completionMode" not in j["spec"]
    assert env_of(j)["SPARSIFY_BATCH_SIZE"] == "64"
    assert j["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "64"


def test_multi_node_training_is_an_indexed_job_with_rendezvous_at_index_0():
    sj = sparsifyjob(training={"nodes": 3, "gpusPerNode": 8, "batchSize": 240})
    j = build("train", sj=sj, attempt=1, batch=240)
    assert (j["spec"]["completionMode"], j["spec"]["completions"], j["spec"]["parallelism"]) == ("Indexed", 3, 3)
    pod = j["spec"]["template"]["spec"]
    assert pod["subdomain"] == "demo-rdzv"
    cmd = pod["containers"][0]["command"]
    assert cmd[:6] == ["sparsify-worker", "supervise", "--", "torchrun", "--nnodes=3", "--nproc_per_node=8"]
    assert "--rdzv_backend=c10d" in cmd
    assert "--rdzv_endpoint=demo-train-r1-0.demo-rdzv.ml.svc.cluster.local:29500" in cmd
    assert "--rdzv_id=uid-1234-1" in cmd and "--standalone" not in cmd
    svc = construct_rendezvous_service(sj)
    assert svc["spec"]["clusterIP"] == "None" and svc["metadata"]["name"] == "demo-rdzv"
    assert svc["spec"]["selector"] == {"yolo-sparsify.io/sparsifyjob": "demo", "yolo-sparsify.io/stage": "train"}


def test_kueue_queue_creates_suspended_jobs_with_the_queue_label():
    j = build("train", sj=sparsifyjob(training={"queueName": "gpu-queue"}), batch=64)
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
    sj = sparsifyjob(output={"bucket": "models", "serviceAccountName": "s3-writer", "endpoint": "http://minio:9000"})
    sj["spec"]["output"].pop("credentialsSecret")
    pod = build("export", sj=sj)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "s3-writer" and pod["automountServiceAccountToken"] is True
    assert "envFrom" not in pod["containers"][0]
    assert env_of(build("export", sj=sj))["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"


def test_stage_env_carries_the_contract():
    env = env_of(build("export"))
    assert env["SPARSIFY_STAGE"] == "export" and env["SPARSIFY_RECIPE"] == "yolov5s-pruned-quantized"
    assert env["SPARSIFY_OUTPUT_URI"] == "s3://models/sparsify/ml/demo"
    assert json.loads(env["SPARSIFY_SPEC"])["export"]["opset"] == 13  # defaults filled in


def test_only_the_gpu_stage_is_queued():
    sj = sparsifyjob(training={"queueName": "gpu-queue"})
    assert "suspend" not in build("validate", sj=sj)["spec"]
    assert "kueue.x-k8s.io/queue-name" not in build("export", sj=sj)["metadata"]["labels"]


def test_platform_defaults_fill_what_the_spec_leaves_empty():
    cfg = OperatorConfig(gpu_node_selector=(("node.kubernetes.io/instance-type", "p4d.24xlarge"),), s3_endpoint="http://minio:9000",
                         queue_name="team-a")
    sj = sparsifyjob()
    spec = normalized(sj["spec"])
    train = construct_job(sj, spec, "train", 0, cfg, 64, {})
    assert train["spec"]["template"]["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "p4d.24xlarge"}
    assert train["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a" and train["spec"]["suspend"] is True
    assert env_of(train)["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    own = sparsifyjob(training={"nodeSelector": {"pool": "mine"}})
    assert construct_job(own, normalized(own["spec"]), "train", 0, cfg, 64, {})["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "mine"}
