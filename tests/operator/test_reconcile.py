"""The reconcile decision, from observed Jobs/Pods to creations, status and events (pure)."""

import json

from sparsify_operator.builders import OperatorConfig
from sparsify_operator.observe import observe, observe_attempt, observe_needs_pods
from sparsify_operator.reconcile import halved_batch, plan
from sparsify_operator.status import merge_patch

from .factories import job, pod, sparsifyjob

CFG = OperatorConfig()
NOW = "2026-11-29T00:00:00Z"
OK = {
    "validate": json.dumps({"ok": True}),
    "train": json.dumps({"bestMap50": 0.52, "sparsity": 0.75, "epochs": 3, "checkpoint": "s3://m/best.pt"}),
    "export": json.dumps({"onnx": "s3://m/model.onnx", "sizeBytes": 7_500_000, "sizeGzipBytes": 2_300_000, "sparsity": 0.74}),
    "benchmark": json.dumps({"engines": {"deepsparse": {"imagesPerSecond": 396.7}, "onnxruntime": {"imagesPerSecond": 135.8}},
                             "nativeFraction": 0.92, "report": "s3://m/report.md"}),
    "publish": json.dumps({"results": "s3://m/results.json", "report": "s3://m/report.md"}),
}


def done(*stages):
    jobs = [job(s, state="Succeeded", batch=64 if s == "train" else None) for s in stages]
    pods = {j["metadata"]["name"]: [pod("Succeeded", 0, message=OK[s])] for j, s in zip(jobs, stages)}
    return jobs, pods


def test_new_sparsifyjob_starts_with_the_cheap_validate_stage():
    p = plan(sparsifyjob(), {}, CFG, NOW)
    assert [m["metadata"]["name"] for m in p.create] == ["demo-validate"]
    assert p.status["phase"] == "Validating"
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", "InProgress", 1)


def test_train_follows_validate_with_the_spec_batch_size():
    jobs, pods = done("validate")
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    (train,) = p.create
    assert train["metadata"]["name"] == "demo-train"
    assert train["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "64"


def test_running_stage_creates_nothing():
    jobs, pods = done("validate")
    jobs.append(job("train", state="Running", batch=64))
    pods["demo-train"] = [pod("Running")]
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Training"
    assert p.status["stages"]["train"]["phase"] == "Running"


def test_running_is_read_from_the_job_status_without_pods():
    running = job("train", state="Running", batch=64)
    assert observe_attempt({**running, "status": {**running["status"], "ready": 1}}, []).state == "Running"
    assert observe_attempt(running, []).state == "Pending"  # active, but its pod is not up yet
    assert not observe_needs_pods(running)
    assert observe_needs_pods(job("train", state="Succeeded")) and observe_needs_pods(job("train", state="Failed"))


def test_oom_retries_with_half_the_batch_then_gives_up():
    jobs, pods = done("validate")
    jobs.append(job("train", state="Failed", batch=64, reason="PodFailurePolicy"))
    pods["demo-train"] = [pod("Failed", 137, "OOMKilled")]
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    (retry,) = p.create
    assert retry["metadata"]["name"] == "demo-train-r1"
    assert retry["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "32"
    assert p.status["stages"]["train"]["retries"] == [{"attempt": 0, "job": "demo-train", "reason": "OOMKilled", "batchSize": 64}]
    assert ("Warning", "OOMRetry") in [(k, r) for k, r, _ in p.events]
    # second OOM -> r2 at 16; third OOM exhausts maxOOMRetries (2) -> Failed with the reason
    jobs.append(job("train", 1, state="Failed", batch=32, reason="PodFailurePolicy"))
    pods["demo-train-r1"] = [pod("Failed", 137, "OOMKilled")]
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert [m["metadata"]["name"] for m in p.create] == ["demo-train-r2"]
    jobs.append(job("train", 2, state="Failed", batch=16, reason="PodFailurePolicy"))
    pods["demo-train-r2"] = [pod("Failed", 137, "OOMKilled")]
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Failed"
    stalled = next(c for c in p.status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "OOMKilled" and "exit code 137" in stalled["message"]


def test_batch_halving_keeps_divisibility_by_world_size():
    assert halved_batch(64, 4) == 32 and halved_batch(24, 8) == 8 and halved_batch(8, 8) is None and halved_batch(1, 1) is None


def test_failed_stage_fails_the_sparsifyjob_with_reason_and_message():
    jobs, pods = done("validate", "train")
    jobs.append(job("export", state="Failed", reason="DeadlineExceeded"))
    pods["demo-export"] = [pod("Failed", 143, "Error", message=json.dumps({"error": "export timed out"}))]
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert p.status["phase"] == "Failed" and p.create == []
    assert p.status["stages"]["export"]["reason"] == "DeadlineExceeded"
    assert p.status["stages"]["export"]["message"] == "export timed out"
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "DeadlineExceeded" and "export" in ready["message"]


def test_all_stages_done_gives_results_for_kubectl_get():
    jobs, pods = done("validate", "train", "export", "benchmark", "publish")
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    r = p.status["results"]
    assert p.status["phase"] == "Succeeded" and p.create == []
    assert (r["map50"], r["sparsity"], r["size"], r["imagesPerSecond"]) == (0.52, 0.74, "2.3MB", 396.7)
    assert r["throughput"] == {"deepsparse": 396.7, "onnxruntime": 135.8}
    assert r["artifacts"]["onnx"] == "s3://m/model.onnx" and r["artifacts"]["results"] == "s3://m/results.json"
    assert p.status["recipe"] == "yolov5s-pruned-quantized"
    assert next(c for c in p.status["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_finished_run_is_never_restarted_even_if_its_jobs_are_gone():
    old = {"phase": "Succeeded", "conditions": [], "startTime": "t"}
    p = plan(sparsifyjob(status=old), {}, CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Succeeded"


def test_malformed_spec_becomes_a_failed_status_not_a_crash():
    sj = sparsifyjob()
    sj["spec"] = {"model": "yolov5s"}
    p = plan(sj, {}, CFG, NOW)
    assert p.status["phase"] == "Failed" and p.create == []
    assert next(c for c in p.status["conditions"] if c["type"] == "Stalled")["reason"] == "InvalidSpec"


def test_transitions_emit_events_once():
    jobs, pods = done("validate")
    first = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert ("Normal", "StageSucceeded") in [(k, r) for k, r, _ in first.events]
    again = plan(sparsifyjob(status=first.status), observe(jobs, pods), CFG, NOW)
    assert again.events == []
    assert merge_patch(first.status, again.status) == {}  # nothing to write either


def test_merge_patch_removes_vanished_keys():
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}}) == {"a": None, "b": {"d": None}}


def test_a_kill_that_is_not_oom_resumes_with_the_same_batch_up_to_backoff_limit():
    jobs, pods = done("validate")
    jobs.append(job("train", state="Failed", batch=64, reason="PodFailurePolicy"))
    pods["demo-train"] = [pod("Failed", 137, "Error")]
    sj = sparsifyjob(training={"backoffLimit": 1})
    p = plan(sj, observe(jobs, pods), CFG, NOW)
    assert [m["metadata"]["name"] for m in p.create] == ["demo-train-r1"]
    assert p.create[0]["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "64"
    jobs.append(job("train", 1, state="Failed", batch=64, reason="PodFailurePolicy"))
    pods["demo-train-r1"] = [pod("Failed", 137, "Error")]
    p = plan(sj, observe(jobs, pods), CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Failed" and p.status["stages"]["train"]["reason"] == "Killed"


def test_a_cuda_oom_is_retried_like_an_oom_kill_with_half_the_batch():
    jobs, pods = done("validate")
    jobs.append(job("train", state="Failed", batch=64, reason="PodFailurePolicy"))
    oom = json.dumps({"stage": "train", "error": "OutOfMemoryError: CUDA out of memory", "reason": "GPUOutOfMemory"})
    pods["demo-train"] = [pod("Failed", 75, "Error", message=oom)]
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    (retry,) = p.create
    assert retry["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "32"
    assert p.status["stages"]["train"]["retries"][0]["reason"] == "GPUOutOfMemory"
    (event,) = [m for k, r, m in p.events if r == "OOMRetry"]
    assert "ran out of GPU memory (CUDA OOM) at batch size 64" in event and "batch size 32" in event
    # a plain error exit (1) is a bug, not memory: the stage fails with the worker's message
    jobs[-1] = job("train", state="Failed", batch=64, reason="BackoffLimitExceeded")
    pods["demo-train"] = [pod("Failed", 1, "Error", message=json.dumps({"stage": "train", "error": "ValueError: bad"}))]
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Failed" and "ValueError: bad" in p.status["stages"]["train"]["message"]


def benchmark_summary(verdicts, dense_ips=(150.0, 140.0), dense_map=0.5):
    return json.dumps({"engines": {"deepsparse": {"imagesPerSecond": 300.0}, "onnxruntime": {"imagesPerSecond": 100.0}},
                       "nativeFraction": 0.73, "dense": {"map50": dense_map, "imagesPerSecond": dict(zip(("deepsparse", "onnxruntime"), dense_ips))},
                       "verdicts": verdicts})


def test_verdicts_become_conditions_and_a_failing_one_a_warning_event_once():
    slow = {"type": "NativelyRun", "ok": False, "reason": "PartlyNative", "message": "DeepSparse runs only 73% ... Fix: use SiLU"}
    fast = {"type": "FasterThanDense", "ok": True, "reason": "Faster", "message": "2.00x"}
    forged = {"type": "Ready", "ok": True, "reason": "Succeeded", "message": "a pod cannot write Ready"}
    jobs, pods = done("validate", "train", "export")
    jobs.append(job("benchmark", state="Succeeded"))
    pods["demo-benchmark"] = [pod("Succeeded", 0, message=benchmark_summary([slow, fast, forged, "junk"]))]
    p = plan(sparsifyjob(), observe(jobs, pods), CFG, NOW)
    by_type = {c["type"]: c for c in p.status["conditions"]}
    assert by_type["NativelyRun"]["status"] == "False" and by_type["NativelyRun"]["reason"] == "PartlyNative"
    assert by_type["FasterThanDense"]["status"] == "True"
    assert [c["type"] for c in p.status["conditions"]].count("Ready") == 1 and by_type["Ready"]["status"] == "False"
    assert ("Warning", "PartlyNative", slow["message"]) in p.events
    assert not [e for e in p.events if e[1] == "Faster"]
    r = p.status["results"]
    assert r["speedup"] == 2.0 and r["denseMap50"] == 0.5 and r["accuracyRetention"] == round(0.52 / 0.5, 3)
    # the next reconcile sees the condition already False: no second warning
    again = plan(sparsifyjob(status=p.status), observe(jobs, pods), CFG, NOW)
    assert not [e for e in again.events if e[1] == "PartlyNative"]
