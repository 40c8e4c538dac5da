"""The reconcile decision, from observed Jobs/Pods to creations, status and events (pure)."""

import json

from sparsify_operator.config import OperatorConfig
from sparsify_operator.observe import observe, observe_attempt, observe_needs_pods
from sparsify_operator.reconcile import plan
from sparsify_operator.retry_policy import halved_batch
from sparsify_operator.start_deadline import start_overdue
from sparsify_operator.status import merge_patch
from tests.support.objects import job, pod, stored_sparsifyjob

CFG = OperatorConfig()
NOW = "2026-11-29T00:00:00Z"
OK = {
    "validate": json.dumps({"ok": True}),
    "train": json.dumps({"bestMap50": 0.52, "sparsity": 0.75, "epochs": 3, "checkpoint": "s3://m/best.pt"}),
    "export": json.dumps({"onnx": "s3://m/model.onnx", "sizeBytes": 7_500_000, "sizeGzipBytes": 2_300_000, "sparsity": 0.74}),
    "benchmark": json.dumps(
        {
            "engines": {"deepsparse": {"imagesPerSecond": 396.7}, "onnxruntime": {"imagesPerSecond": 135.8}},
            "nativeFraction": 0.92,
            "report": "s3://m/report.md",
        }
    ),
    "publish": json.dumps({"results": "s3://m/results.json", "report": "s3://m/report.md"}),
}


def done(*stages):
    jobs = [job(s, state="Succeeded", batch=64 if s == "train" else None) for s in stages]
    pods = {j["metadata"]["name"]: [pod("Succeeded", 0, message=OK[s])] for j, s in zip(jobs, stages)}
    return jobs, pods


def test_new_sparsifyjob_starts_with_the_cheap_validate_stage():
    p = plan(stored_sparsifyjob(), {}, CFG, NOW)
    assert [m["metadata"]["name"] for m in p.create] == ["demo-validate"]
    assert p.status["phase"] == "Validating"
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", "InProgress", 1)


def test_train_follows_validate_with_the_spec_batch_size():
    jobs, pods = done("validate")
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    (train,) = p.create
    assert train["metadata"]["name"] == "demo-train"
    assert train["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "64"


def test_running_stage_creates_nothing():
    jobs, pods = done("validate")
    jobs.append(job("train", state="Running", batch=64))
    pods["demo-train"] = [pod("Running")]
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
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
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    (retry,) = p.create
    assert retry["metadata"]["name"] == "demo-train-r1"
    assert retry["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "32"
    assert p.status["stages"]["train"]["retries"] == [{"attempt": 0, "job": "demo-train", "reason": "OOMKilled", "batchSize": 64}]
    # said once, by the reconcile that creates the retry (a Job that already exists says nothing again)
    assert [r for _, r, _ in p.announce["demo-train-r1"]] == ["OOMRetry"]
    assert "OOMRetry" not in [r for _, r, _ in p.events]
    # second OOM -> r2 at 16; third OOM exhausts maxOOMRetries (2) -> Failed with the reason
    jobs.append(job("train", 1, state="Failed", batch=32, reason="PodFailurePolicy"))
    pods["demo-train-r1"] = [pod("Failed", 137, "OOMKilled")]
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert [m["metadata"]["name"] for m in p.create] == ["demo-train-r2"]
    jobs.append(job("train", 2, state="Failed", batch=16, reason="PodFailurePolicy"))
    pods["demo-train-r2"] = [pod("Failed", 137, "OOMKilled")]
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Failed"
    stalled = next(c for c in p.status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "OOMKilled" and "exit code 137" in stalled["message"]


def test_batch_halving_keeps_divisibility_by_world_size():
    assert halved_batch(64, 4) == 32 and halved_batch(24, 8) == 8 and halved_batch(8, 8) is None and halved_batch(1, 1) is None


def test_failed_stage_fails_the_sparsifyjob_with_reason_and_message():
    jobs, pods = done("validate", "train")
    jobs.append(job("export", state="Failed", reason="DeadlineExceeded"))
    pods["demo-export"] = [pod("Failed", 143, "Error", message=json.dumps({"error": "export timed out"}))]
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert p.status["phase"] == "Failed" and p.create == []
    assert p.status["stages"]["export"]["reason"] == "DeadlineExceeded"
    assert p.status["stages"]["export"]["message"] == "export timed out"
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "DeadlineExceeded" and "export" in ready["message"]


def test_all_stages_done_gives_results_for_kubectl_get():
    jobs, pods = done("validate", "train", "export", "benchmark", "publish")
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    r = p.status["results"]
    assert p.status["phase"] == "Succeeded" and p.create == []
    assert (r["map50"], r["sparsity"], r["size"], r["imagesPerSecond"]) == (0.52, 0.74, "2.3MB", 396.7)
    assert r["throughput"] == {"deepsparse": 396.7, "onnxruntime": 135.8}
    assert r["artifacts"]["onnx"] == "s3://m/model.onnx" and r["artifacts"]["results"] == "s3://m/results.json"
    assert p.status["recipe"] == "yolov5s-pruned-quantized"
    assert next(c for c in p.status["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_finished_run_is_never_restarted_even_if_its_jobs_are_gone():
    old = {"phase": "Succeeded", "conditions": [], "startTime": "t"}
    p = plan(stored_sparsifyjob(status=old), {}, CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Succeeded"


def test_malformed_spec_becomes_a_failed_status_not_a_crash():
    sj = stored_sparsifyjob()
    sj["spec"] = {"model": "yolov5s"}
    p = plan(sj, {}, CFG, NOW)
    assert p.status["phase"] == "Failed" and p.create == []
    assert next(c for c in p.status["conditions"] if c["type"] == "Stalled")["reason"] == "InvalidSpec"


def test_transitions_emit_events_once():
    jobs, pods = done("validate")
    first = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert ("Normal", "StageSucceeded") in [(k, r) for k, r, _ in first.events]
    again = plan(stored_sparsifyjob(status=first.status), observe(jobs, pods), CFG, NOW)
    assert again.events == []
    assert merge_patch(first.status, again.status) == {}  # nothing to write either


def test_merge_patch_removes_vanished_keys():
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}}) == {"a": None, "b": {"d": None}}


def test_a_kill_that_is_not_oom_resumes_with_the_same_batch_up_to_backoff_limit():
    jobs, pods = done("validate")
    jobs.append(job("train", state="Failed", batch=64, reason="PodFailurePolicy"))
    pods["demo-train"] = [pod("Failed", 137, "Error")]
    sj = stored_sparsifyjob(training={"backoffLimit": 1})
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
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    (retry,) = p.create
    assert retry["metadata"]["annotations"]["yolo-sparsify.io/batch-size"] == "32"
    assert p.status["stages"]["train"]["retries"][0]["reason"] == "GPUOutOfMemory"
    (event,) = [m for k, r, m in p.announce["demo-train-r1"] if r == "OOMRetry"]
    assert "ran out of GPU memory (CUDA OOM) at batch size 64" in event and "batch size 32" in event
    # a plain error exit (1) is a bug, not memory: the stage fails with the worker's message
    jobs[-1] = job("train", state="Failed", batch=64, reason="BackoffLimitExceeded")
    pods["demo-train"] = [pod("Failed", 1, "Error", message=json.dumps({"stage": "train", "error": "ValueError: bad"}))]
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Failed" and "ValueError: bad" in p.status["stages"]["train"]["message"]


def benchmark_summary(verdicts, dense_ips=(150.0, 140.0), dense_map=0.5):
    return json.dumps(
        {
            "engines": {"deepsparse": {"imagesPerSecond": 300.0}, "onnxruntime": {"imagesPerSecond": 100.0}},
            "nativeFraction": 0.73,
            "dense": {"map50": dense_map, "imagesPerSecond": dict(zip(("deepsparse", "onnxruntime"), dense_ips))},
            "verdicts": verdicts,
        }
    )


def test_verdicts_become_conditions_and_a_failing_one_a_warning_event_once():
    slow = {"type": "NativelyRun", "ok": False, "reason": "PartlyNative", "message": "DeepSparse runs only 73% ... Fix: use SiLU"}
    fast = {"type": "FasterThanDense", "ok": True, "reason": "Faster", "message": "2.00x"}
    forged = {"type": "Ready", "ok": True, "reason": "Succeeded", "message": "a pod cannot write Ready"}
    jobs, pods = done("validate", "train", "export")
    jobs.append(job("benchmark", state="Succeeded"))
    pods["demo-benchmark"] = [pod("Succeeded", 0, message=benchmark_summary([slow, fast, forged, "junk"]))]
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    by_type = {c["type"]: c for c in p.status["conditions"]}
    assert by_type["NativelyRun"]["status"] == "False" and by_type["NativelyRun"]["reason"] == "PartlyNative"
    assert by_type["FasterThanDense"]["status"] == "True"
    assert [c["type"] for c in p.status["conditions"]].count("Ready") == 1 and by_type["Ready"]["status"] == "False"
    assert ("Warning", "PartlyNative", slow["message"]) in p.events
    assert not [e for e in p.events if e[1] == "Faster"]
    r = p.status["results"]
    assert r["speedup"] == 2.0 and r["denseMap50"] == 0.5 and r["accuracyRetention"] == round(0.52 / 0.5, 3)
    # the next reconcile sees the condition already False: no second warning
    again = plan(stored_sparsifyjob(status=p.status), observe(jobs, pods), CFG, NOW)
    assert not [e for e in again.events if e[1] == "PartlyNative"]


# ---- hardening: latched results, pods that cannot start, refused children, groups --------------


def test_a_finished_runs_status_is_never_rewritten_even_when_its_pods_are_gone():
    jobs, pods = done("validate", "train", "export", "benchmark", "publish")
    finished = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW).status
    assert finished["phase"] == "Succeeded" and finished["results"]["map50"] == 0.52
    # an operator restarted after pod garbage collection: the Jobs are there, their pods are not
    again = plan(stored_sparsifyjob(status=finished), observe(jobs, {}), CFG, "2026-11-30T00:00:00Z")
    assert again.status == finished and again.create == [] and again.events == []
    assert merge_patch(finished, again.status) == {}


def pending(stage="validate", created="2026-11-29T00:00:00Z", **status):
    j = job(stage, state="Pending")
    j["metadata"]["creationTimestamp"] = created
    j["status"] = {"active": 1, **status}
    return j


def waiting_pod(reason, message):
    return {
        "metadata": {},
        "status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": reason, "message": message}}}]},
    }


def test_a_pod_that_cannot_start_is_said_at_once_and_fails_the_stage_at_the_start_deadline():
    j = pending()
    pods = {"demo-validate": [waiting_pod("CreateContainerConfigError", 'secret "s3-creds" not found')]}
    early = plan(stored_sparsifyjob(), observe([j], pods), CFG, "2026-11-29T00:00:30Z")
    st = early.status["stages"]["validate"]
    assert (st["phase"], st["waitingReason"], st["waitingMessage"]) == (
        "Pending",
        "CreateContainerConfigError",
        'secret "s3-creds" not found',
    )
    assert early.status["phase"] == "Validating" and early.give_up == []
    ready = next(c for c in early.status["conditions"] if c["type"] == "Ready")
    assert 'secret "s3-creds" not found' in ready["message"] and "300s" in ready["message"]
    assert ("Warning", "CreateContainerConfigError") in [(k, r) for k, r, _ in early.events]
    assert plan(stored_sparsifyjob(status=early.status), observe([j], pods), CFG, "2026-11-29T00:01:00Z").events == []  # said once
    late = plan(stored_sparsifyjob(status=early.status), observe([j], pods), CFG, "2026-11-29T00:05:01Z")
    assert late.status["phase"] == "Failed" and late.create == []
    assert late.status["stages"]["validate"]["reason"] == "StartDeadlineExceeded"
    assert late.give_up == [
        ("demo-validate", 'StartDeadlineExceeded: CreateContainerConfigError: secret "s3-creds" not found (not started within 300s)')
    ]
    # what a restarted operator sees afterwards: the Job it stopped, with its annotation
    j["metadata"]["annotations"]["yolo-sparsify.io/failed"] = late.give_up[0][1]
    j["spec"]["suspend"] = True
    a = observe_attempt(j, [])
    assert (a.state, a.reason) == ("Failed", "StartDeadlineExceeded") and "s3-creds" in a.message


def test_unschedulable_and_failed_create_are_reasons_too_and_kueue_held_jobs_are_not_late():
    unsched = {
        "metadata": {},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/4 nodes are available"}],
        },
    }
    a = observe_attempt(pending("train"), [unsched])
    assert (a.waiting_reason, a.waiting_message) == ("Unschedulable", "0/4 nodes are available")
    quota = [{"reason": "FailedCreate", "message": "exceeded quota: pods", "lastTimestamp": "2026-11-29T00:00:05Z"}]
    a = observe_attempt(pending("train", active=0), [], quota)
    assert (a.waiting_reason, a.waiting_message) == ("FailedCreate", "exceeded quota: pods")
    held = pending("train")
    held["spec"]["suspend"] = True
    jobs, pods = done("validate")
    p = plan(stored_sparsifyjob(), observe([*jobs, held], pods), CFG, "2026-11-30T00:00:00Z")
    assert p.give_up == [] and p.status["stages"]["train"]["phase"] == "Suspended"


def test_a_failed_rank_fails_the_group_and_the_whole_group_resumes_as_a_new_attempt():
    sj = stored_sparsifyjob(training={"nodes": 2, "gpusPerNode": 4, "batchSize": 64, "backoffLimit": 1})
    jobs, pods = done("validate")
    group = job("train", state="Failed", batch=64, reason="PodFailurePolicy")
    group["spec"]["completionMode"] = "Indexed"
    jobs.append(group)
    first = pod("Failed", 1, "Error", message=json.dumps({"error": "NCCL error on rank 5"}), index=1)
    first["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = "2026-11-29T00:00:01Z"
    stopped = pod("Failed", 137, "Error", index=0)  # stopped by the Job controller because of the first
    stopped["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = "2026-11-29T00:00:09Z"
    pods["demo-train"] = [stopped, first]
    p = plan(sj, observe(jobs, pods), CFG, NOW)
    assert [m["kind"] for m in p.create] == ["Service", "NetworkPolicy", "Job"]
    assert p.create[-1]["metadata"]["name"] == "demo-train-r1"
    assert p.status["stages"]["train"]["retries"] == [{"attempt": 0, "job": "demo-train", "reason": "Error", "batchSize": 64}]
    (msg,) = [m for _, r, m in p.announce["demo-train-r1"] if r == "KilledRetry"]
    assert "failed on one rank (Error, exit code 1)" in msg
    # backoffLimit group restarts are spent: the next failure fails the run with the first rank's words
    retry = job("train", 1, state="Failed", batch=64, reason="PodFailurePolicy")
    retry["spec"]["completionMode"] = "Indexed"
    jobs.append(retry)
    pods["demo-train-r1"] = [first]
    p = plan(sj, observe(jobs, pods), CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Failed" and p.status["stages"]["train"]["message"] == "NCCL error on rank 5"


def test_a_single_node_failure_that_is_not_a_kill_is_not_resumed():
    jobs, pods = done("validate")
    jobs.append(job("train", state="Failed", batch=64))
    pods["demo-train"] = [pod("Failed", 1, "Error", message=json.dumps({"error": "bad recipe"}))]
    p = plan(stored_sparsifyjob(), observe(jobs, pods), CFG, NOW)
    assert p.create == [] and p.status["phase"] == "Failed"


def test_a_refused_child_fails_the_run_with_the_servers_message():
    from sparsify_operator.reconcile import refused

    p = plan(stored_sparsifyjob(), {}, CFG, NOW)
    status, event = refused(
        stored_sparsifyjob(), p.status, "Job", "demo-validate", 403, 'jobs.batch "demo-validate" is forbidden: exceeded quota: no-jobs', NOW
    )
    assert status["phase"] == "Failed" and status["completionTime"] == NOW
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ChildRejected" and "exceeded quota: no-jobs" in stalled["message"] and "(403)" in stalled["message"]
    assert event[:2] == ("Warning", "ChildRejected")


def test_a_job_whose_pods_just_finished_is_not_late_and_a_recreated_pod_starts_its_own_clock():
    finishing = pending("train", active=0, succeeded=2)  # before the Job controller adds Complete
    finishing["status"]["startTime"] = "2026-11-29T00:00:00Z"
    a = observe_attempt(finishing, [])
    assert a.state == "Running" and not start_overdue(a, CFG, "2026-11-29T02:00:00Z")
    retried = pending("train", active=1, failed=1)  # 2 h of training, then the pod was recreated
    retried["status"]["startTime"] = "2026-11-29T00:00:00Z"
    new_pod = waiting_pod("ContainerCreating", "")
    new_pod["metadata"]["creationTimestamp"] = "2026-11-29T02:00:00Z"
    a = observe_attempt(retried, [new_pod])
    assert a.state == "Pending" and a.pending_since == "2026-11-29T02:00:00Z"
    assert not start_overdue(a, CFG, "2026-11-29T02:01:00Z") and start_overdue(a, CFG, "2026-11-29T02:05:01Z")
    running = {"metadata": {}, "status": {"phase": "Running"}}
    group = pending("train", active=2)
    assert observe_attempt(group, [running, running]).state == "Running"
    assert observe_attempt(group, [running, new_pod]).state == "Pending"  # a group runs only when every rank does


# ---- writes: one status patch per real change, one event per step a person wants to see --------


def stage_job_at(stage, state, created):
    j = job(stage, state=state, batch=64 if stage == "train" else None)
    j["metadata"]["creationTimestamp"] = created
    if state == "Pending":
        j["status"] = {"active": 1, "startTime": "t0"}
    if state == "Running":
        j["status"].update(ready=1)
    return j


def test_a_whole_lifecycle_is_one_status_patch_per_change_and_one_event_per_step():
    """As the controller runs it: plan, create, plan again with the created Job (its creation
    time is the stage's start), one status patch of the difference, the second plan's events."""
    from sparsify_operator.api import LABEL_STAGE, STAGES

    status, patches, events, jobs, pods = {}, 0, [], [], {}
    created = "2026-11-29T00:00:00Z"

    def step(t):
        nonlocal status, patches
        p = plan(stored_sparsifyjob(status=status), observe(jobs, pods), CFG, t)
        for manifest in p.create:
            jobs.append(stage_job_at(manifest["metadata"]["labels"][LABEL_STAGE], "Pending", created))
        if p.create:
            p = plan(stored_sparsifyjob(status=status), observe(jobs, pods), CFG, t)
        patches += bool(merge_patch(status, p.status))
        events.extend(p.events)
        status = p.status

    step(created)
    for i, stage in enumerate(STAGES):
        assert status["stages"][stage]["startTime"] == created and "runningTime" not in status["stages"][stage]
        step(created)  # nothing new: nothing written
        jobs[-1] = stage_job_at(stage, "Running", created)
        step(f"2026-11-29T00:0{i}:10Z")
        assert status["stages"][stage]["runningTime"] == f"2026-11-29T00:0{i}:10Z"
        step(f"2026-11-29T00:0{i}:20Z")  # still running: the time it was first seen running stays
        assert status["stages"][stage]["runningTime"] == f"2026-11-29T00:0{i}:10Z"
        jobs[-1] = job(stage, state="Succeeded", batch=64 if stage == "train" else None)
        jobs[-1]["metadata"]["creationTimestamp"] = created
        pods[jobs[-1]["metadata"]["name"]] = [pod("Succeeded", 0, message=OK[stage])]
        step(f"2026-11-29T00:0{i}:30Z")
    assert status["phase"] == "Succeeded"
    # the first create, then per stage: running, and done together with the next stage's create
    assert patches == 1 + 2 * len(STAGES)
    assert [r for _, r, _ in events] == ["JobCreated"] + ["StageSucceeded"] * 4 + ["Succeeded"]
    assert events[1][2] == "validate succeeded (Job demo-validate); train: created Job demo-train"
    assert "all stages succeeded: mAP@0.5 0.52, 2.3MB, 396.7 img/s" in events[-1][2]
    assert patches + len(events) + len(STAGES) <= 25  # status patches + events + Job creates


def test_a_job_whose_pods_ended_before_the_job_controller_says_so_stays_running():
    for status in (
        {"active": 0, "uncountedTerminatedPods": {"succeeded": ["pod-uid"]}},
        {"active": 0, "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]},
        {"active": 0, "succeeded": 1},
    ):
        j = stage_job_at("validate", "Pending", NOW)
        j["status"] = status
        assert observe_attempt(j, []).state == "Running", status
    j = stage_job_at("validate", "Pending", NOW)
    j["status"] = {"active": 0}
    assert observe_attempt(j, [pod("Succeeded", 0)]).state == "Running"  # plain to see in its pod
    assert observe_attempt(j, []).state == "Pending"  # nothing has run yet


def test_a_failed_run_is_one_warning_with_the_stage_its_reason_and_message():
    jobs, pods = done("validate", "train")
    jobs.append(job("export", state="Failed"))
    pods["demo-export"] = [pod("Failed", 2, "Error", message=json.dumps({"error": "stand-in failure in export"}))]
    old = plan(stored_sparsifyjob(), observe(jobs[:2], pods), CFG, NOW).status
    p = plan(stored_sparsifyjob(status=old), observe(jobs, pods), CFG, NOW)
    assert p.status["phase"] == "Failed"
    assert p.events == [
        ("Warning", "StageFailed", "stage export failed (Job demo-export): BackoffLimitExceeded, exit code 2: stand-in failure in export")
    ]
