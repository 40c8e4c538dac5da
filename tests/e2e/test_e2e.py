"""SparsifyJobs end to end on the local cluster, real worker code in every stage."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from kubernetes import client

from localcluster import faults
from localcluster import s3 as local_s3
from localcluster.testing import wait_until
from sparsify_operator.api import GROUP, PLURAL, VERSION
from tests.support.recipes import recipe, weighted_target

from .conftest import dump, pod_log, sparsifyjob, wait_finished

pytestmark = [pytest.mark.cluster, pytest.mark.worker]


@pytest.fixture(scope="module")
def api(kube):
    return client.CustomObjectsApi(kube), client.BatchV1Api(kube)


def s3(cluster):
    return local_s3.client(cluster.s3_endpoint)


def objects(cluster, prefix: str) -> list[str]:
    out = s3(cluster).list_objects_v2(Bucket="models", Prefix=prefix)
    return sorted(o["Key"] for o in out.get("Contents", []))


def train_pods(core, ns, name, phase="Running"):
    return [
        p
        for p in core.list_namespaced_pod(ns, label_selector=f"yolo-sparsify.io/sparsifyjob={name},yolo-sparsify.io/stage=train").items
        if p.status.phase == phase
    ]


def test_happy_path_results_in_status_match_the_artifacts_in_s3(
    cluster, core, api, installed_operator, dataset_uri, e2e_namespace, tmp_path
):
    custom, _ = api
    uid = custom.create_namespaced_custom_object(
        GROUP, VERSION, e2e_namespace, PLURAL, sparsifyjob("happy", dataset_uri, epochs=4, benchmark={"compareDense": True, "rounds": 2})
    )["metadata"]["uid"]
    st = wait_finished(custom, e2e_namespace, "happy")
    assert st["phase"] == "Succeeded", dump(st)
    r = st["results"]
    run = f"e2e/{e2e_namespace}/happy/{uid}"  # every run its own prefix
    assert r["artifacts"]["onnx"] == f"s3://models/{run}/model.onnx"
    assert r["throughput"]["deepsparse"] > 0 and r["throughput"]["onnxruntime"] > 0 and r["deepsparseNativeFraction"] > 0
    # the ONNX in S3 loads and runs, and its measured sparsity is what status says
    import onnxruntime as ort

    from sparsify_worker.onnx_stats import weight_sparsity

    path = tmp_path / "model.onnx"
    s3(cluster).download_file("models", f"{run}/model.onnx", str(path))
    sparsity, int8_convs = weight_sparsity(path)
    assert sparsity == pytest.approx(r["sparsity"], abs=1e-4) and int8_convs > 50
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": np.zeros((1, 3, 160, 160), np.float32)})
    assert out[0].shape[0] == 1
    results = json.loads(s3(cluster).get_object(Bucket="models", Key=f"{run}/results.json")["Body"].read())
    assert results["sparsity"] == r["sparsity"] and results["map50"] == r["map50"]
    assert results["throughput"] == {k: v for k, v in r["throughput"].items()}
    assert r["sizeGzipBytes"] == results["sizeGzipBytes"]
    # the report and its plot sit next to the ONNX; the dense reference ran on the same node
    keys = objects(cluster, f"{run}/")
    assert {f"{run}/{k}" for k in ("benchmark.md", "accuracy-vs-throughput.png", "report.md")} <= set(keys)
    bench = json.loads(s3(cluster).get_object(Bucket="models", Key=f"{run}/benchmark.json")["Body"].read())
    assert bench["dense"]["engines"]["onnxruntime"]["imagesPerSecond"] > 0 and bench["dense"]["sizeGzipBytes"] > r["sizeGzipBytes"]


def test_training_pod_killed_mid_epoch_resumes_from_the_last_checkpoint(cluster, core, api, installed_operator, dataset_uri, e2e_namespace):
    custom, _ = api
    uid = custom.create_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, sparsifyjob("crash", dataset_uri, epochs=6))[
        "metadata"
    ]["uid"]
    prefix = f"e2e/{e2e_namespace}/crash/{uid}/checkpoints/"
    wait_until(lambda: f"{prefix}last.pt" in objects(cluster, prefix), 600, interval=0.5, what="the first epoch's checkpoint in S3")
    (pod,) = train_pods(core, e2e_namespace, "crash")
    time.sleep(1.0)  # into the next epoch
    faults.kill_container(core, e2e_namespace, pod.metadata.name)
    st = wait_finished(custom, e2e_namespace, "crash")
    assert st["phase"] == "Succeeded", dump(st)
    train = st["stages"]["train"]
    assert train["retries"][0]["reason"] == "Killed" and train["job"] == "crash-train-r1"
    (retried,) = train_pods(core, e2e_namespace, "crash", "Succeeded")
    summary = json.loads(retried.status.container_statuses[0].state.terminated.message)
    assert summary["resumed"] is True and summary["startEpoch"] >= 1  # the epoch counter continued
    assert summary["epochs"] == 6 and summary["quantized"] is True  # the schedule ran to its end (QAT)
    assert abs(summary["sparsity"] - weighted_target(recipe("yolov5s-pruned-quantized"))) <= 0.01  # masks intact


def test_oom_during_qat_resumes_with_half_the_batch_size(cluster, core, api, installed_operator, dataset_uri, e2e_namespace):
    custom, _ = api
    custom.create_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, sparsifyjob("oom", dataset_uri, epochs=5, batch=16))

    def in_qat():
        pods = train_pods(core, e2e_namespace, "oom")
        return pods and "QAT started" in pod_log(cluster, e2e_namespace, pods[0].metadata.name) and pods[0]

    pod = wait_until(in_qat, 600, interval=0.3, what="training to reach QAT")
    faults.oom_kill_container(core, e2e_namespace, pod.metadata.name)  # QAT needs ~3x memory: the seed's OOM
    st = wait_finished(custom, e2e_namespace, "oom")
    assert st["phase"] == "Succeeded", dump(st)
    train = st["stages"]["train"]
    assert train["retries"] == [{"attempt": 0, "job": "oom-train", "reason": "OOMKilled", "batchSize": 16}]
    assert train["batchSize"] == 8 and train["job"] == "oom-train-r1"
    events = [e.reason for e in core.list_namespaced_event(e2e_namespace, field_selector="involvedObject.name=oom").items]
    assert "OOMRetry" in events
    (retried,) = train_pods(core, e2e_namespace, "oom", "Succeeded")
    summary = json.loads(retried.status.container_statuses[0].state.terminated.message)
    assert summary["resumed"] is True and summary["batchSize"] == 8 and summary["quantized"] is True


def test_a_cuda_oom_in_qat_exits_75_and_resumes_with_half_the_batch(cluster, core, api, installed_operator, dataset_uri, e2e_namespace):
    """A real torch.cuda.OutOfMemoryError in the worker (raised on CPU at a chosen step: step 13
    is the first of QAT here, 48 images at batch 16, QAT in the last of 5 epochs) goes through
    torchrun, the supervisor's exit 75, the podFailurePolicy and the operator's half-batch retry."""
    custom, _ = api
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        e2e_namespace,
        PLURAL,
        sparsifyjob("cudaoom", dataset_uri, epochs=5, batch=16, env=[{"name": "YOLO_SPARSIFY_FAULT_CUDA_OOM", "value": "13:8"}]),
    )
    st = wait_finished(custom, e2e_namespace, "cudaoom")
    assert st["phase"] == "Succeeded", dump(st)
    train = st["stages"]["train"]
    assert train["retries"] == [{"attempt": 0, "job": "cudaoom-train", "reason": "GPUOutOfMemory", "batchSize": 16}]
    assert train["batchSize"] == 8 and train["job"] == "cudaoom-train-r1"
    (failed,) = train_pods(core, e2e_namespace, "cudaoom", "Failed")
    term = failed.status.container_statuses[0].state.terminated
    assert term.exit_code == 75 and "CUDA out of memory" in json.loads(term.message)["error"]
    (retried,) = train_pods(core, e2e_namespace, "cudaoom", "Succeeded")
    summary = json.loads(retried.status.container_statuses[0].state.terminated.message)
    assert summary["resumed"] is True and summary["startEpoch"] == 4 and summary["quantized"] is True


def test_operator_restarted_mid_stage_no_duplicates_and_the_run_completes(
    cluster, core, api, installed_operator, dataset_uri, e2e_namespace
):
    custom, batch = api
    custom.create_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, sparsifyjob("restart", dataset_uri, epochs=4))
    wait_until(lambda: train_pods(core, e2e_namespace, "restart"), 600, interval=0.5, what="training running")
    coordination = client.CoordinationV1Api(core.api_client)
    holder = coordination.read_namespaced_lease("sparsify-sparsify-operator", "sparsify-system").spec.holder_identity
    (op,) = [
        p
        for p in core.list_namespaced_pod("sparsify-system", label_selector="app.kubernetes.io/instance=sparsify").items
        if holder.startswith(p.metadata.name + "_")
    ]
    # the leader killed: the standby takes over once the Lease expires, the Deployment brings a new standby
    core.delete_namespaced_pod(op.metadata.name, "sparsify-system", grace_period_seconds=0)
    st = wait_finished(custom, e2e_namespace, "restart")
    assert st["phase"] == "Succeeded", dump(st)
    jobs = sorted(
        j.metadata.name for j in batch.list_namespaced_job(e2e_namespace, label_selector="yolo-sparsify.io/sparsifyjob=restart").items
    )
    assert jobs == sorted(f"restart-{s}" for s in ("validate", "train", "export", "benchmark", "publish"))
    new_holder = coordination.read_namespaced_lease("sparsify-sparsify-operator", "sparsify-system").spec.holder_identity
    assert new_holder and not new_holder.startswith(op.metadata.name + "_")


def test_deleted_mid_training_leaves_no_jobs_and_no_half_written_result(cluster, core, api, installed_operator, dataset_uri, e2e_namespace):
    custom, batch = api
    uid = custom.create_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, sparsifyjob("gone", dataset_uri, epochs=8))[
        "metadata"
    ]["uid"]
    prefix = f"e2e/{e2e_namespace}/gone/{uid}/"
    wait_until(lambda: f"{prefix}checkpoints/last.pt" in objects(cluster, prefix), 600, interval=0.5, what="a checkpoint")
    custom.delete_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, "gone")
    selector = "yolo-sparsify.io/sparsifyjob=gone"
    wait_until(lambda: not batch.list_namespaced_job(e2e_namespace, label_selector=selector).items, 60, what="Jobs gone")
    wait_until(lambda: not core.list_namespaced_pod(e2e_namespace, label_selector=selector).items, 60, what="pods gone")
    time.sleep(2)
    kept = objects(cluster, prefix)
    assert f"{prefix}checkpoints/last.pt" in kept  # what was published stays
    assert f"{prefix}results.json" not in kept and f"{prefix}model.onnx" not in kept  # no result claimed
    assert not [k for k in kept if k.endswith((".part", ".tmp"))]
    with pytest.raises(client.ApiException) as e:
        custom.get_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, "gone")
    assert e.value.status == 404
