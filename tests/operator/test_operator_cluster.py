"""The operator against the local control plane, with stand-in stage commands (the worker is
tested on its own). The operator runs with its ServiceAccount's RBAC."""

from __future__ import annotations

import json
import socket
import time

import pytest
from kubernetes import client

from localcluster import faults
from localcluster.testing import kubectl, wait_until
from sparsify_operator.api import GROUP, PLURAL, VERSION
from tests.support import objects
from tests.support.operator_process import OperatorProcess

from .conftest import OPERATOR_ENV, REPO, START_DEADLINE_SECONDS, wait_phase

pytestmark = pytest.mark.cluster


def manifest(name: str, env: dict | None = None, **updates) -> dict:
    return objects.sparsifyjob(name, env=env, **updates)


def create(custom, namespace, body):
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def jobs_of(batch, namespace, name):
    return batch.list_namespaced_job(namespace, label_selector=f"yolo-sparsify.io/sparsifyjob={name}").items


def exists(custom, namespace, name) -> bool:
    try:
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


def events_of(core, namespace, name, until=None, timeout=15):
    """(reason, message) of the object's events; with `until`, once the reasons satisfy it (the
    operator posts its events off the reconcile path, a moment after the status)."""

    def read():
        items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [(e.reason, e.message) for e in sorted(items, key=lambda e: e.event_time or e.first_timestamp)]

    if until is None:
        return read()

    def satisfied():
        events = read()
        return events if until([r for r, _ in events]) else None

    return wait_until(satisfied, timeout, what=f"events of {name}")


# ---- the API --------------------------------------------------------------------------------


def test_crd_explains_itself_and_every_sample_applies(cluster, crd, namespace):
    out = kubectl(cluster.kubeconfig, "explain", "sparsifyjob.spec.training.batchSize").stdout
    assert "Total batch size over all GPUs" in out
    samples = sorted((REPO / "manifests/samples").glob("*.yaml"))
    assert len(samples) == 7  # the seed's six rows and sparse transfer from a user's checkpoint
    for sample in samples:
        res = kubectl(cluster.kubeconfig, "apply", "--dry-run=server", "-n", namespace, "-f", str(sample), check=False)
        assert res.returncode == 0, f"{sample.name}: {res.stderr}"


INVALID = [
    ("preset for the other model", {"recipe": {"preset": "yolov5l-pruned"}}, "recipes are not interchangeable"),
    (
        "custom recipe for the other model",
        {"recipe": {"inline": "modifiers: []", "targetArch": "yolov5l"}},
        "recipe.targetArch does not match model.arch",
    ),
    ("custom recipe without its model", {"recipe": {"uri": "s3://r/recipe.yaml"}}, "must say which model it is written for"),
    ("two recipe sources", {"recipe": {"preset": "pruned", "uri": "s3://r/recipe.yaml"}}, "exactly one of preset, uri or inline"),
    ("unknown architecture", {"model": {"arch": "yolov5z"}}, 'supported values: "yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"'),
    (
        "v5.0 layout of a v7-only model",
        {"model": {"arch": "yolov5n", "layout": "v5.0"}},
        "model.layout v5.0 exists for yolov5s and yolov5l only",
    ),
    (
        "the seed's preset on another model",
        {"model": {"arch": "yolov5m"}},
        "the seed's pruned and pruned-quantized presets are published for the v5.0 layout",
    ),
    (
        "the seed's preset on the v7.0 layout",
        {"model": {"arch": "yolov5s", "layout": "v7.0"}},
        "use transfer-pruned or transfer-pruned-quantized",
    ),
    ("transfer without weights", {"recipe": {"preset": "transfer-pruned"}}, "the transfer-* presets start from dense weights"),
    (
        "target sparsity on a seed preset",
        {"recipe": {"preset": "pruned", "targetSparsity": 0.5}},
        "recipe.targetSparsity applies to the transfer-pruned",
    ),
    (
        "target sparsity out of range",
        {"recipe": {"preset": "transfer-pruned", "targetSparsity": 0.99}},
        "should be less than or equal to 0.9",
    ),
    ("malformed dataset URI", {"dataset": {"uri": "https://bucket/data"}}, "dataset.uri must be an S3 URI"),
    ("malformed weights URI", {"model": {"arch": "yolov5s", "weights": "/local/best.pt"}}, "model.weights must be empty or an S3 URI"),
    ("too many GPUs per node", {"training": {"gpusPerNode": 16}}, "should be less than or equal to 8"),
    ("zero nodes", {"training": {"nodes": 0}}, "should be greater than or equal to 1"),
    ("batch not divisible by GPUs", {"training": {"gpusPerNode": 4, "batchSize": 30}}, "must be divisible by nodes x gpusPerNode"),
    ("image size not a multiple of 32", {"training": {"imgSize": 500}}, "multiple of 32"),
    ("opset too low for quantized", {"export": {"opset": 11}}, "export.opset must be at least 13"),
    ("too few epochs for QAT", {"training": {"epochs": 2}}, "at least 4 for a pruned-quantized recipe"),
    ("no benchmark engine", {"benchmark": {"engines": []}}, "should have at least 1 items"),
    ("unknown engine", {"benchmark": {"engines": ["tensorrt"]}}, 'supported values: "deepsparse", "onnxruntime"'),
    ("bad bucket name", {"output": {"bucket": "My_Bucket"}}, "output.bucket must be an S3 bucket name"),
    ("credentials two ways", {"output": {"bucket": "m", "credentialsSecret": "s", "serviceAccountName": "sa"}}, "not both"),
    ("credentials in the spec", {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]}, "must not be written into the spec"),
    ("endpoint not a URL", {"output": {"bucket": "m", "endpoint": "minio:9000"}}, "output.endpoint must be an http(s) URL"),
    (
        "reserved env: the output location",
        {"env": [{"name": "SPARSIFY_OUTPUT_URI", "value": "s3://models/sparsify/other/x"}]},
        "env names starting with SPARSIFY_, AWS_, LD_ or PYTHON are reserved",
    ),
    ("reserved env: the spec itself", {"env": [{"name": "SPARSIFY_SPEC_FILE", "value": "/tmp/mine.json"}]}, "are reserved"),
    ("reserved env: S3 endpoint", {"env": [{"name": "AWS_ENDPOINT_URL_S3", "value": "http://elsewhere:9000"}]}, "are reserved"),
    ("reserved env: preload", {"env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}]}, "are reserved"),
    ("reserved env: python path", {"env": [{"name": "PYTHONPATH", "value": "/tmp"}]}, "are reserved"),
]


@pytest.mark.parametrize("case,update,message", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_are_refused_at_admission(cluster, crd, namespace, case, update, message):
    body = manifest("bad")
    for k, v in update.items():
        body["spec"][k] = v if k in ("recipe", "env") else {**body["spec"].get(k, {}), **v}
    res = kubectl(cluster.kubeconfig, "apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert res.returncode != 0, f"{case} was accepted"
    assert message in res.stderr, res.stderr


def test_long_names_and_spec_changes_are_refused(cluster, crd, namespace):
    long = manifest("x" * 41)
    res = kubectl(cluster.kubeconfig, "apply", "-n", namespace, "-f", "-", input=json.dumps(long), check=False)
    assert "at most 40 characters" in res.stderr
    for dotted in ("yolo.v5", "9lives"):  # a dot breaks the rendezvous Service's name; a digit first, its DNS label
        res = kubectl(cluster.kubeconfig, "apply", "-n", namespace, "-f", "-", input=json.dumps(manifest(dotted)), check=False)
        assert "metadata.name must be a DNS label" in res.stderr, res.stderr
    ok = manifest("fixed", env={"STANDIN_FAIL_STAGE": "validate"})
    kubectl(cluster.kubeconfig, "apply", "-n", namespace, "-f", "-", input=json.dumps(ok))
    ok["spec"]["training"]["batchSize"] = 32
    res = kubectl(cluster.kubeconfig, "apply", "-n", namespace, "-f", "-", input=json.dumps(ok), check=False)
    assert "spec is immutable" in res.stderr


# ---- the pipeline ---------------------------------------------------------------------------


def test_happy_path_reaches_succeeded_with_results_and_columns(cluster, operator, custom, core, batch, namespace):
    create(custom, namespace, manifest("happy"))
    sj = wait_phase(custom, namespace, "happy", ("Succeeded", "Failed"))
    st = sj["status"]
    assert st["phase"] == "Succeeded", json.dumps(st, indent=1)
    assert st["results"]["map50"] == 0.5123 and st["results"]["sparsity"] == 0.7412
    assert st["results"]["size"] == "2.3MB" and st["results"]["throughput"] == {"deepsparse": 396.7, "onnxruntime": 135.8}
    uid = sj["metadata"]["uid"]
    assert st["results"]["artifacts"]["onnx"] == f"s3://models/sparsify/{namespace}/happy/{uid}/model.onnx"
    assert set(st["stages"]) == {"validate", "train", "export", "benchmark", "publish"}
    assert all(s["phase"] == "Succeeded" and s["attempts"] == 1 for s in st["stages"].values())
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == sj["metadata"]["generation"]

    row = kubectl(cluster.kubeconfig, "get", "sj", "happy", "-n", namespace).stdout.splitlines()
    assert row[0].split()[:6] == ["NAME", "MODEL", "RECIPE", "PHASE", "MAP@0.5", "SIZE"]
    assert row[1].split()[:7] == ["happy", "yolov5s", "yolov5s-pruned-quantized", "Succeeded", "0.5123", "2.3MB", "396.7"]

    pods = {p.metadata.labels["yolo-sparsify.io/stage"]: p for p in core.list_namespaced_pod(namespace).items}
    assert pods["train"].spec.node_name.startswith("gpu-node-")
    assert pods["benchmark"].spec.node_name.startswith("cpu-node-")
    assert core.read_node(pods["benchmark"].spec.node_name).metadata.labels["node.kubernetes.io/instance-type"] == "c5.12xlarge"
    assert not pods["export"].spec.node_name.startswith("gpu-node-")
    launcher = json.loads(pods["train"].status.container_statuses[0].state.terminated.message)["launcher"]
    assert launcher["standalone"] is True and launcher["nproc_per_node"] == "2"
    said = events_of(core, namespace, "happy", until=lambda reasons: "Succeeded" in reasons)
    # one event per step a person wants to see: the first Job, each stage done with the next one's Job, the results
    assert [r for r, _ in said] == ["JobCreated", "StageSucceeded", "StageSucceeded", "StageSucceeded", "StageSucceeded", "Succeeded"]
    assert "validate succeeded (Job happy-validate" in said[1][1] and "train: created Job happy-train" in said[1][1]
    assert "all stages succeeded: mAP@0.5 0.5123" in said[-1][1]
    import urllib.request

    scrape = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    assert f'sparsify_jobs{{namespace="{namespace}",phase="Succeeded"}} 1.0' in scrape
    assert 'sparsify_stage_jobs_created_total{stage="publish"}' in scrape
    assert 'sparsify_stage_duration_seconds_count{result="Succeeded",stage="train"}' in scrape


def test_multi_node_training_uses_an_indexed_job_and_headless_service(operator, custom, core, batch, namespace):
    create(custom, namespace, manifest("multi", training={"nodes": 2, "gpusPerNode": 4, "batchSize": 64}))
    wait_phase(custom, namespace, "multi", ("Exporting", "Benchmarking", "Publishing", "Succeeded", "Failed"))
    train = batch.read_namespaced_job("multi-train", namespace)
    assert (train.spec.completion_mode, train.spec.completions, train.spec.parallelism) == ("Indexed", 2, 2)
    svc = core.read_namespaced_service("multi-rdzv", namespace)
    assert svc.spec.cluster_ip == "None" and svc.metadata.owner_references[0].kind == "SparsifyJob"
    pods = core.list_namespaced_pod(namespace, label_selector="yolo-sparsify.io/stage=train").items
    assert len(pods) == 2 and {p.spec.subdomain for p in pods} == {"multi-rdzv"}
    for p in pods:
        launched = json.loads(p.status.container_statuses[0].state.terminated.message)["launcher"]
        assert launched["nnodes"] == "2" and launched["nproc_per_node"] == "4" and launched["rdzv_backend"] == "c10d"
        assert launched["rdzv_endpoint"] == f"multi-train-0.multi-rdzv.{namespace}.svc.cluster.local:29500"
        assert launched["rdzv_resolved"].startswith("127.")  # index 0's pod, found by name from every pod
    assert {json.loads(p.status.container_statuses[0].state.terminated.message)["launcher"]["index"] for p in pods} == {"0", "1"}
    assert wait_phase(custom, namespace, "multi", ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"


def test_failing_stage_fails_the_sparsifyjob_with_its_reason(operator, custom, core, namespace):
    create(custom, namespace, manifest("broken", env={"STANDIN_FAIL_STAGE": "export"}))
    st = wait_phase(custom, namespace, "broken", ("Succeeded", "Failed"))["status"]
    assert st["phase"] == "Failed"
    export = st["stages"]["export"]
    assert (export["reason"], export["exitCode"], export["message"]) == ("BackoffLimitExceeded", 2, "stand-in failure in export")
    assert "benchmark" not in st["stages"]
    stalled = next(c for c in st["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and "stage export failed" in stalled["message"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "BackoffLimitExceeded"
    events_of(core, namespace, "broken", until=lambda reasons: "StageFailed" in reasons)


def test_oom_is_retried_with_half_the_batch_size(operator, custom, core, batch, namespace):
    create(custom, namespace, manifest("oom", env={"STANDIN_OOM_ABOVE_BATCH": 16}, training={"gpusPerNode": 1, "batchSize": 64}))
    st = wait_phase(custom, namespace, "oom", ("Succeeded", "Failed"))["status"]
    assert st["phase"] == "Succeeded", json.dumps(st["stages"], indent=1)
    train = st["stages"]["train"]
    assert train["batchSize"] == 16 and train["attempts"] == 3 and train["job"] == "oom-train-r2"
    assert [(r["batchSize"], r["reason"]) for r in train["retries"]] == [(64, "OOMKilled"), (32, "OOMKilled")]
    names = sorted(j.metadata.name for j in jobs_of(batch, namespace, "oom") if j.metadata.labels["yolo-sparsify.io/stage"] == "train")
    assert names == ["oom-train", "oom-train-r1", "oom-train-r2"]
    retries = [m for r, m in events_of(core, namespace, "oom", until=lambda reasons: "OOMRetry" in reasons) if r == "OOMRetry"]
    assert len(retries) == 2 and "batch size 32" in retries[0] + retries[1]


def test_a_cuda_oom_exit_fails_the_attempt_at_once_and_resumes_with_half_the_batch(operator, custom, core, batch, namespace):
    """The worker exits 75 on torch.cuda.OutOfMemoryError; the Job's podFailurePolicy fails the
    attempt without pod retries, and the operator halves the batch as for an OOM kill."""
    create(custom, namespace, manifest("cudaoom", env={"STANDIN_GPU_OOM_ABOVE_BATCH": 32}, training={"gpusPerNode": 1, "batchSize": 64}))
    st = wait_phase(custom, namespace, "cudaoom", ("Succeeded", "Failed"))["status"]
    assert st["phase"] == "Succeeded", json.dumps(st["stages"], indent=1)
    train = st["stages"]["train"]
    assert train["batchSize"] == 32 and train["job"] == "cudaoom-train-r1"
    assert train["retries"] == [{"attempt": 0, "job": "cudaoom-train", "reason": "GPUOutOfMemory", "batchSize": 64}]
    first = next(j for j in jobs_of(batch, namespace, "cudaoom") if j.metadata.name == "cudaoom-train")
    assert first.status.failed == 1  # one pod, no retries against backoffLimit: the policy failed the Job at once
    assert any(c.reason == "PodFailurePolicy" for c in first.status.conditions or [])
    (retry,) = [m for r, m in events_of(core, namespace, "cudaoom", until=lambda reasons: "OOMRetry" in reasons) if r == "OOMRetry"]
    assert "ran out of GPU memory (CUDA OOM) at batch size 64" in retry


def test_operator_killed_and_restarted_mid_stage_neither_duplicates_nor_stalls(operator, custom, batch, namespace):
    create(custom, namespace, manifest("restart", env={"STANDIN_TRAIN_SECONDS": 12}))
    wait_until(lambda: any(j.metadata.name == "restart-train" for j in jobs_of(batch, namespace, "restart")), 60, what="train Job")
    operator.kill()
    time.sleep(3)
    operator.start()
    st = wait_phase(custom, namespace, "restart", ("Succeeded", "Failed"))["status"]
    assert st["phase"] == "Succeeded"
    names = sorted(j.metadata.name for j in jobs_of(batch, namespace, "restart"))
    assert names == sorted(f"restart-{s}" for s in ("validate", "train", "export", "benchmark", "publish"))


def test_a_standby_takes_over_when_the_leader_is_killed_and_nothing_is_done_twice(
    operator, operator_kubeconfig, custom, core, batch, namespace, tmp_path
):
    standby = OperatorProcess(operator_kubeconfig, tmp_path / "standby.log", OPERATOR_ENV).start()
    try:
        time.sleep(2)  # a few of its tries at the Lease
        assert operator.leading() and not standby.leading()
        create(custom, namespace, manifest("failover", env={"STANDIN_TRAIN_SECONDS": 10}))
        wait_until(lambda: any(j.metadata.name == "failover-train" for j in jobs_of(batch, namespace, "failover")), 60, what="train Job")
        operator.kill()
        t0 = time.monotonic()
        standby.wait_leading(30)
        took = time.monotonic() - t0
        st = wait_phase(custom, namespace, "failover", ("Succeeded", "Failed"))["status"]
        assert st["phase"] == "Succeeded"
        names = sorted(j.metadata.name for j in jobs_of(batch, namespace, "failover"))
        assert names == sorted(f"failover-{s}" for s in ("validate", "train", "export", "benchmark", "publish"))
        said = events_of(core, namespace, "failover", until=lambda reasons: "Succeeded" in reasons)
        assert [r for r, _ in said] == ["JobCreated", "StageSucceeded", "StageSucceeded", "StageSucceeded", "StageSucceeded", "Succeeded"]
        print(f"\nthe standby led {took:.1f}s after the leader was killed (lease 10s, tries every 1s)")
        assert took < 10 + 2 + 3  # the lease duration, a try's period either side, and slack for a loaded machine
    finally:
        operator.start()  # back, as the standby now
        standby.stop()  # a clean shutdown releases the Lease: the session's operator leads again at its next try
        operator.wait_leading(30)


def test_a_replica_that_cannot_bind_its_metrics_port_exits_without_taking_the_lease(operator, operator_kubeconfig, kube, tmp_path):
    """Two replicas sharing a network want the same port: the one that cannot bind must say so
    and exit (its pod restarts, visibly), not hold the Lease while the healthy one stands by."""
    leases = client.CoordinationV1Api(kube)
    lease_name = "sparsify-operator"  # the session operator's (it watches every namespace)
    operator.stop()  # a clean shutdown releases the Lease: free for whoever tries next
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        clash = OperatorProcess(
            operator_kubeconfig, tmp_path / "clash.log", {**OPERATOR_ENV, "SPARSIFY_METRICS_PORT": str(taken.getsockname()[1])}
        )
        try:
            try:
                clash.start()
            except RuntimeError:
                pass  # exited before its liveness answered
            wait_until(lambda: clash.proc.poll() is not None, 60, what="the replica that cannot bind to exit")
            assert clash.proc.returncode != 0
            assert "cannot serve metrics on 0.0.0.0:" in clash.output() and "Address already in use" in clash.output()
            assert not leases.read_namespaced_lease(lease_name, "sparsify-system").spec.holder_identity
        finally:
            clash.kill()
            operator.start()
            operator.wait_leading(30)


def test_deleting_mid_run_leaves_nothing_behind_even_with_the_operator_down(operator, custom, core, batch, namespace):
    create(custom, namespace, manifest("gone", env={"STANDIN_TRAIN_SECONDS": 300}))
    wait_until(
        lambda: any(
            p.status.phase == "Running" for p in core.list_namespaced_pod(namespace, label_selector="yolo-sparsify.io/stage=train").items
        ),
        60,
        what="training pod running",
    )
    operator.stop()
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")
        wait_until(
            lambda: not exists(custom, namespace, "gone"), 10, what="SparsifyJob gone without waiting for the operator (no finalizer)"
        )
        wait_until(lambda: not jobs_of(batch, namespace, "gone"), 60, what="Jobs garbage-collected")
        wait_until(
            lambda: not core.list_namespaced_pod(namespace, label_selector="yolo-sparsify.io/sparsifyjob=gone").items,
            60,
            what="pods garbage-collected",
        )
    finally:
        operator.start()


def test_training_pod_killed_is_resumed_by_a_new_attempt_with_the_same_batch(operator, custom, core, namespace):
    create(custom, namespace, manifest("crash", env={"STANDIN_TRAIN_SECONDS": 8}))
    running = wait_until(
        lambda: [
            p
            for p in core.list_namespaced_pod(namespace, label_selector="yolo-sparsify.io/stage=train").items
            if p.status.phase == "Running"
        ],
        60,
        what="training pod running",
    )
    faults.kill_container(core, namespace, running[0].metadata.name)
    st = wait_phase(custom, namespace, "crash", ("Succeeded", "Failed"))["status"]
    assert st["phase"] == "Succeeded"
    train = st["stages"]["train"]
    assert train["attempts"] == 2 and train["job"] == "crash-train-r1" and train["batchSize"] == 64
    assert train["retries"] == [{"attempt": 0, "job": "crash-train", "reason": "Killed", "batchSize": 64}]
    events_of(core, namespace, "crash", until=lambda reasons: "KilledRetry" in reasons)


def test_operator_survives_a_garbage_status(cluster, operator, custom, kube, namespace):
    """(Malformed objects have a cluster of their own: test_malformed_objects.py.)"""
    ok = create(custom, namespace, manifest("garbage", env={"STANDIN_FAIL_STAGE": "validate"}))
    wait_phase(custom, namespace, "garbage", ("Failed",))
    # A user (or a buggy tool) scribbles over the status: the operator repairs it.
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "garbage",
        {"status": {"phase": "Bogus", "stages": {"train": "garbage"}, "conditions": [{"x": 1}]}},
    )

    def repaired():
        st = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "garbage")["status"]
        return st["phase"] == "Failed" and isinstance(st["stages"].get("validate"), dict) and "train" not in st["stages"]

    wait_until(repaired, 30, what="status repaired")
    assert ok["metadata"]["name"] == "garbage"
    assert operator.proc.poll() is None
    create(custom, namespace, manifest("after"))
    assert wait_phase(custom, namespace, "after", ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"


def test_queue_name_creates_a_suspended_job_for_kueue(operator, custom, batch, namespace):
    create(custom, namespace, manifest("queued", training={"queueName": "a100-queue"}))
    job = wait_until(
        lambda: next((j for j in jobs_of(batch, namespace, "queued") if j.metadata.name == "queued-train"), None), 60, what="train Job"
    )
    assert job.spec.suspend is True and job.metadata.labels["kueue.x-k8s.io/queue-name"] == "a100-queue"

    def suspended():
        st = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "queued").get("status") or {}
        return st.get("phase") == "Training" and st.get("stages", {}).get("train", {}).get("phase") == "Suspended"

    wait_until(suspended, 30, what="train stage reported as Suspended (waiting for Kueue admission)")
    batch.patch_namespaced_job("queued-train", namespace, {"spec": {"suspend": False}})  # what Kueue does on admission
    assert wait_phase(custom, namespace, "queued", ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"


# ---- hardening ------------------------------------------------------------------------------

BIG_RECIPE = 'version: "1.1.0"\n' + ("# " + "é" * 100 + "\n") * 310  # a recipe with long accented comments


def stage_status(custom, namespace, name, stage):
    st = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
    return st, (st.get("stages") or {}).get(stage) or {}


def test_a_missing_secret_is_said_at_once_and_fails_the_run_at_the_start_deadline(operator, custom, core, batch, namespace):
    body = manifest("nosecret")
    body["spec"]["output"]["credentialsSecret"] = "does-not-exist"
    t0 = time.monotonic()
    create(custom, namespace, body)
    said = wait_until(
        lambda: stage_status(custom, namespace, "nosecret", "validate")[1].get("waitingReason"), 60, what="the waiting reason in status"
    )
    seconds_to_reason = time.monotonic() - t0
    assert said == "CreateContainerConfigError"
    st, validate = stage_status(custom, namespace, "nosecret", "validate")
    assert "does-not-exist" in validate["waitingMessage"] and st["phase"] == "Validating"
    assert "does-not-exist" in next(c for c in st["conditions"] if c["type"] == "Ready")["message"]
    st = wait_phase(custom, namespace, "nosecret", ("Failed",), timeout=120)["status"]
    seconds_to_failed = time.monotonic() - t0
    validate = st["stages"]["validate"]
    assert validate["reason"] == "StartDeadlineExceeded" and "CreateContainerConfigError" in validate["message"]
    assert "does-not-exist" in next(c for c in st["conditions"] if c["type"] == "Stalled")["message"]
    job = batch.read_namespaced_job("nosecret-validate", namespace)
    assert job.spec.suspend is True and "StartDeadlineExceeded" in job.metadata.annotations["yolo-sparsify.io/failed"]
    wait_until(
        lambda: not core.list_namespaced_pod(namespace, label_selector="yolo-sparsify.io/sparsifyjob=nosecret").items,
        60,
        what="the stuck pod removed",
    )
    reasons = [r for r, _ in events_of(core, namespace, "nosecret", until=lambda reasons: "StageFailed" in reasons)]
    assert reasons.count("CreateContainerConfigError") == 1
    print(
        f"\nmissing Secret: reason in status after {seconds_to_reason:.1f}s, Failed after {seconds_to_failed:.1f}s "
        f"(start deadline {START_DEADLINE_SECONDS}s)"
    )


def test_an_unschedulable_training_pod_is_said_and_fails_at_the_start_deadline_freeing_nothing_held(operator, custom, core, namespace):
    create(custom, namespace, manifest("nowhere", training={"nodeSelector": {"pool": "does-not-exist"}}))
    wait_until(
        lambda: stage_status(custom, namespace, "nowhere", "train")[1].get("waitingReason") == "Unschedulable",
        90,
        what="Unschedulable in status",
    )
    assert "didn't match" in stage_status(custom, namespace, "nowhere", "train")[1]["waitingMessage"]
    st = wait_phase(custom, namespace, "nowhere", ("Failed",), timeout=120)["status"]
    assert st["stages"]["train"]["reason"] == "StartDeadlineExceeded" and "Unschedulable" in st["stages"]["train"]["message"]
    assert "export" not in st["stages"]


def test_a_quota_that_keeps_a_stage_job_from_creating_pods_is_said_and_fails_at_the_start_deadline(operator, custom, core, namespace):
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    wait_until(
        lambda: (core.read_namespaced_resource_quota("no-pods", namespace).status.hard or {}).get("pods") == "0",
        60,
        what="quota status computed",
    )
    create(custom, namespace, manifest("nopods"))
    wait_until(
        lambda: stage_status(custom, namespace, "nopods", "validate")[1].get("waitingReason") == "FailedCreate",
        60,
        what="FailedCreate in status",
    )
    assert "exceeded quota: no-pods" in stage_status(custom, namespace, "nopods", "validate")[1]["waitingMessage"]
    st = wait_phase(custom, namespace, "nopods", ("Failed",), timeout=120)["status"]
    assert st["stages"]["validate"]["reason"] == "StartDeadlineExceeded" and "FailedCreate" in st["stages"]["validate"]["message"]


def test_a_child_the_api_server_refuses_fails_the_run_with_its_message(operator, custom, core, namespace):
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}})
    wait_until(
        lambda: (core.read_namespaced_resource_quota("no-jobs", namespace).status.hard or {}).get("count/jobs.batch") == "0",
        60,
        what="quota status computed",
    )
    create(custom, namespace, manifest("refused"))
    st = wait_phase(custom, namespace, "refused", ("Failed",), timeout=60)["status"]
    stalled = next(c for c in st["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ChildRejected" and "exceeded quota: no-jobs" in stalled["message"] and "(403)" in stalled["message"]
    events_of(core, namespace, "refused", until=lambda reasons: "ChildRejected" in reasons)


def test_a_namesake_created_after_a_delete_is_a_new_run_with_its_own_output(operator, custom, namespace):
    first = create(custom, namespace, manifest("again"))
    done = wait_phase(custom, namespace, "again", ("Succeeded", "Failed"))["status"]
    assert done["results"]["artifacts"]["onnx"].endswith(f"/again/{first['metadata']['uid']}/model.onnx")
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")
    wait_until(lambda: not exists(custom, namespace, "again"), 30, what="deleted")
    second = create(custom, namespace, manifest("again"))  # what an Argo CD Replace sync does
    st = wait_phase(custom, namespace, "again", ("Succeeded", "Failed"))["status"]
    assert st["phase"] == "Succeeded", json.dumps(st, indent=1)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert st["results"]["artifacts"]["onnx"].endswith(f"/again/{second['metadata']['uid']}/model.onnx")


def test_results_survive_an_operator_restart_after_the_pods_are_gone(operator, custom, core, namespace):
    create(custom, namespace, manifest("kept"))
    before = wait_phase(custom, namespace, "kept", ("Succeeded", "Failed"))["status"]
    assert before["phase"] == "Succeeded" and before["results"]["map50"] == 0.5123
    operator.kill()
    try:
        core.delete_collection_namespaced_pod(namespace, label_selector="yolo-sparsify.io/sparsifyjob=kept", grace_period_seconds=0)
        wait_until(
            lambda: not core.list_namespaced_pod(namespace, label_selector="yolo-sparsify.io/sparsifyjob=kept").items,
            60,
            what="pods garbage-collected",
        )
    finally:
        operator.start().wait_leading()
    time.sleep(12)  # two resyncs of everything, as the leader
    after = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "kept")["status"]
    assert after["results"] == before["results"] and after["stages"] == before["stages"] and after["phase"] == "Succeeded"


def test_one_failed_rank_fails_the_group_at_once_and_the_whole_group_resumes(operator, custom, core, batch, namespace):
    create(
        custom,
        namespace,
        manifest(
            "rank", env={"STANDIN_FAIL_RANK": "1:0", "STANDIN_TRAIN_SECONDS": 60}, training={"nodes": 2, "gpusPerNode": 4, "batchSize": 64}
        ),
    )
    policy = wait_until(
        lambda: next(
            iter(
                client.NetworkingV1Api(core.api_client)
                .list_namespaced_network_policy(namespace, label_selector="yolo-sparsify.io/sparsifyjob=rank")
                .items
            ),
            None,
        ),
        60,
        what="the group's NetworkPolicy",
    )
    assert policy.spec.pod_selector.match_labels == {"yolo-sparsify.io/sparsifyjob": "rank", "yolo-sparsify.io/stage": "train"}
    assert policy.spec.ingress[0]._from[0].pod_selector.match_labels == policy.spec.pod_selector.match_labels
    retry = wait_until(
        lambda: next((j for j in jobs_of(batch, namespace, "rank") if j.metadata.name == "rank-train-r1"), None),
        60,
        what="the group's second attempt",
    )
    first = batch.read_namespaced_job("rank-train", namespace)
    failed_at = next(c.last_transition_time for c in first.status.conditions if c.type == "Failed" and c.status == "True")
    # rank 0 was still training (60 s) when rank 1 failed: the Job controller stopped it at once
    assert (failed_at - first.status.start_time).total_seconds() < 30
    assert (retry.metadata.creation_timestamp - failed_at).total_seconds() < 15
    st = wait_phase(custom, namespace, "rank", ("Succeeded", "Failed"), timeout=180)["status"]
    pods = [
        (
            p.metadata.name,
            p.status.phase,
            p.spec.node_name,
            [c.state.to_dict() for c in p.status.container_statuses or []],
            [(c.type, c.status, c.reason) for c in p.status.conditions or []],
        )
        for p in core.list_namespaced_pod(namespace).items
    ]
    assert st["phase"] == "Succeeded", json.dumps(st["stages"], indent=1) + "\n" + "\n".join(map(str, pods))
    train = st["stages"]["train"]
    assert train["attempts"] == 2 and train["retries"] == [{"attempt": 0, "job": "rank-train", "reason": "Error", "batchSize": 64}]
    (said,) = [m for r, m in events_of(core, namespace, "rank", until=lambda reasons: "KilledRetry" in reasons) if r == "KilledRetry"]
    assert "failed on one rank (Error, exit code 3)" in said


def test_a_64k_inline_recipe_reaches_the_pods_as_a_file(operator, custom, namespace):
    """62 KiB of recipe whose comments are not ASCII: JSON-escaped into an environment variable it
    would be 187 KB, past the kernel's 128 KiB per string, and the pod could not start."""
    body = manifest("bigrecipe")
    body["spec"]["recipe"] = {"inline": BIG_RECIPE, "targetArch": "yolov5s"}
    assert len(BIG_RECIPE.encode()) <= 65536 and len(json.dumps(BIG_RECIPE)) > 131072
    create(custom, namespace, body)
    st = wait_phase(custom, namespace, "bigrecipe", ("Succeeded", "Failed"))["status"]
    assert st["phase"] == "Succeeded", json.dumps(st["stages"], indent=1)


def test_admission_refuses_a_secret_or_service_account_its_creator_may_not_use(cluster, crd, core, kube, namespace):
    kubectl(cluster.kubeconfig, "apply", "-f", str(REPO / "manifests/base/admission-policy.yaml"))
    rbac = client.RbacAuthorizationV1Api(kube)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "tenant"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "team-creds"}, "stringData": {"AWS_ACCESS_KEY_ID": "x"}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "trainer-identity"}})
    rbac.create_namespaced_role(
        namespace,
        {"metadata": {"name": "sj-creator"}, "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get"]}]},
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "sj-creator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sj-creator"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
        },
    )
    as_tenant = ["--as", f"system:serviceaccount:{namespace}:tenant"]

    def apply(name, output, *flags):
        body = manifest(name, env={"STANDIN_FAIL_STAGE": "validate"})
        body["spec"]["output"] = {"bucket": "models", **output}
        return kubectl(cluster.kubeconfig, *as_tenant, "create", *flags, "-n", namespace, "-f", "-", input=json.dumps(body), check=False)

    # the policy takes a moment to be in force: probe with server-side dry runs (admission runs, nothing is stored)
    wait_until(
        lambda: apply("steal", {"credentialsSecret": "team-creds"}, "--dry-run=server").returncode != 0,
        30,
        what="the admission policy in force",
    )
    refused = apply("steal", {"credentialsSecret": "team-creds"})
    assert refused.returncode != 0
    assert f"system:serviceaccount:{namespace}:tenant may not read Secret team-creds" in refused.stderr
    res = apply("become", {"serviceAccountName": "trainer-identity"})
    assert res.returncode != 0 and "may not act as ServiceAccount trainer-identity" in res.stderr
    assert apply("plain", {}).returncode == 0  # nothing named: nothing to check
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "use-creds"},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["team-creds"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": ["trainer-identity"], "verbs": ["impersonate"]},
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "use-creds"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "use-creds"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
        },
    )
    wait_until(
        lambda: apply("allowed", {"credentialsSecret": "team-creds"}, "--dry-run=server").returncode == 0, 30, what="allowed once granted"
    )
    assert apply("allowed", {"credentialsSecret": "team-creds"}).returncode == 0
    assert apply("allowed-sa", {"serviceAccountName": "trainer-identity"}).returncode == 0
