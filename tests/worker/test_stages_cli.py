"""Every stage through `sparsify-worker <stage>` with the operator's environment contract,
against the local S3 server: what the pods run, without Kubernetes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.worker
WORKER = [sys.executable, "-m", "sparsify_worker.cli"]
SPEC = {
    "model": {"arch": "yolov5s", "activation": "Hardswish", "weights": ""},
    "recipe": {"preset": "pruned-quantized"},
    "dataset": {"uri": "s3://artifacts/datasets/shapes/"},
    "training": {"nodes": 1, "gpusPerNode": 1, "batchSize": 16, "epochs": 4, "imgSize": 128},
    "export": {"imgSize": 128, "opset": 13, "dynamicBatch": True},
    "benchmark": {
        "batchSize": 4,
        "imgSize": 128,
        "scenario": "sync",
        "durationSeconds": 2,
        "rounds": 2,
        "engines": ["deepsparse", "onnxruntime"],
    },
    "output": {"bucket": "artifacts", "prefix": "runs", "region": "us-east-1"},
}


def stage_env(stage: str, spec: dict, inputs: dict, endpoint: str, tmp: Path, name: str = "cli", uid: str | None = None) -> dict:
    """The environment the operator gives the stage's pod, built by the operator's own builder
    (so a drift between operator and worker fails here); the spec and the earlier stages'
    summaries are files, as the pod's mounted annotations are."""
    from sparsify_operator.api import ANNOTATION_INPUTS, ANNOTATION_SPEC
    from sparsify_operator.builders import construct_job
    from sparsify_operator.config import OperatorConfig
    from sparsify_operator.spec import normalized

    sj = {"metadata": {"name": name, "namespace": "ml", "uid": uid or f"uid-{name}"}, "spec": spec}
    job = construct_job(sj, normalized(spec), stage, 0, OperatorConfig(s3_endpoint=endpoint), None, inputs)
    pod = job["spec"]["template"]
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / f"{stage}-spec.json").write_text(pod["metadata"]["annotations"][ANNOTATION_SPEC])
    (tmp / f"{stage}-inputs.json").write_text(pod["metadata"]["annotations"][ANNOTATION_INPUTS])
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    return {
        **os.environ,
        **env,
        "SPARSIFY_SPEC_FILE": str(tmp / f"{stage}-spec.json"),
        "SPARSIFY_INPUTS_FILE": str(tmp / f"{stage}-inputs.json"),
        "TERMINATION_MESSAGE_PATH": str(tmp / f"{stage}.termination"),
        "SPARSIFY_WORKDIR": str(tmp / "work"),
    }


def run_stage(
    stage: str, spec: dict, inputs: dict, endpoint: str, tmp: Path, name: str = "cli", uid: str | None = None, **env_updates
) -> tuple[int, dict, str]:
    term = tmp / f"{stage}.termination"
    env = {**stage_env(stage, spec, inputs, endpoint, tmp, name, uid), **env_updates}
    proc = subprocess.run([*WORKER, stage], env=env, capture_output=True, text=True, timeout=900)
    summary = json.loads(term.read_text()) if term.exists() else {}
    return proc.returncode, summary, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def uploaded_dataset(s3_endpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "shapes"
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3_endpoint}
    subprocess.run(
        [*WORKER, "make-dataset", str(out), "--train", "32", "--val", "8", "--size", "128", "--upload", "s3://artifacts/datasets/shapes"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return "s3://artifacts/datasets/shapes/"


@pytest.fixture(scope="module")
def pipeline(s3_endpoint, uploaded_dataset, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("stages")
    inputs: dict = {}
    for stage in ("validate", "train", "export", "benchmark", "publish"):
        code, summary, log = run_stage(stage, SPEC, inputs, s3_endpoint, tmp)
        assert code == 0, f"{stage} failed: {summary}\n{log}"
        assert summary["stage"] == stage and "error" not in summary
        inputs[stage] = summary
    return inputs


def test_all_stages_publish_a_result_that_matches_its_artifacts(s3_endpoint, pipeline, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from sparsify_worker.onnx_stats import weight_sparsity
    from sparsify_worker.s3 import Store, client

    inputs = pipeline
    assert inputs["train"]["epochs"] == 4 and inputs["train"]["quantized"] is True
    assert inputs["export"]["quantized"] and inputs["export"]["onnx"] == "s3://artifacts/runs/ml/cli/uid-cli/model.onnx"
    ds = inputs["benchmark"]["engines"]["deepsparse"]
    assert ds["imagesPerSecond"] > 0 and ds["rounds"] == 2 and ds["imagesPerSecondMin"] <= ds["imagesPerSecond"] <= ds["imagesPerSecondMax"]
    # the default path (v5.0 Hardswish, opset 13, INT8): DeepSparse runs the whole graph itself
    assert ds["nativeFraction"] >= 0.95
    bench = inputs["benchmark"]
    assert len(bench["speedupRounds"]) == 2 and bench["dense"]["imagesPerSecond"]["deepsparse"] > 0
    verdicts = {v["type"]: v for v in bench["verdicts"]}
    assert verdicts["NativelyRun"]["ok"] is True
    assert verdicts["AccuracyRetained"]["reason"] == "NotCompared"  # no starting weights: nothing to compare with
    assert "FasterThanDense" in verdicts
    assert inputs["benchmark"]["engines"]["onnxruntime"]["imagesPerSecond"] > 0
    assert len(json.dumps(inputs["train"])) < 4096  # fits a termination message

    store = Store(client(s3_endpoint))
    results = json.loads(store.s3.get_object(Bucket="artifacts", Key="runs/ml/cli/uid-cli/results.json")["Body"].read())
    onnx = store.download(results["artifacts"]["onnx"], tmp_path / "published.onnx")
    sparsity, quantized = weight_sparsity(onnx)
    assert sparsity == pytest.approx(results["sparsity"], abs=1e-4) and quantized > 50
    out = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"input": np.zeros((2, 3, 128, 128), np.float32)})
    assert out[0].shape[0] == 2  # dynamic batch
    report = store.s3.get_object(Bucket="artifacts", Key="runs/ml/cli/uid-cli/report.md")["Body"].read().decode()
    assert "yolov5s-pruned-quantized" in report and "DeepSparse img/s" in report
    assert store.exists("s3://artifacts/runs/ml/cli/uid-cli/checkpoints/last.pt")


def test_validate_refuses_the_wrong_models_recipe_before_any_gpu_is_held(s3_endpoint, uploaded_dataset, tmp_path):
    spec = json.loads(json.dumps(SPEC))
    spec["recipe"] = {"preset": "yolov5l-pruned"}
    code, summary, _ = run_stage("validate", spec, {}, s3_endpoint, tmp_path)
    assert code == 1
    assert "written for yolov5l but the model is yolov5s" in summary["error"]


def test_validate_finds_an_output_bucket_it_cannot_write_before_any_gpu_is_held(s3_endpoint, uploaded_dataset, tmp_path):
    spec = json.loads(json.dumps(SPEC))
    spec["output"]["bucket"] = "no-such-bucket"
    code, summary, _ = run_stage("validate", spec, {}, s3_endpoint, tmp_path, SPARSIFY_OUTPUT_URI="s3://no-such-bucket/runs/ml/x/uid-x")
    assert code == 1
    assert "the output location s3://no-such-bucket/runs/ml/x/uid-x cannot be written" in summary["error"]
    assert "NoSuchBucket" in summary["error"]


def test_validate_probes_the_output_and_samples_labels_saying_how_many(s3_endpoint, pipeline):
    from sparsify_worker.s3 import Store, client

    ds = pipeline["validate"]["dataset"]
    assert ds["labelsChecked"] == ds["labelsTotal"] == 40  # a small dataset: every label file (2000 at most are sampled)
    leftovers = [o for o in Store(client(s3_endpoint)).list("s3://artifacts/runs/ml/cli/uid-cli") if ".probe-" in o.key]
    assert leftovers == []  # the write probe was deleted


def test_a_checkpoint_of_another_run_is_never_resumed(s3_endpoint, pipeline, tmp_path):
    """What a SparsifyJob deleted and created again under the same name would have found, had its
    output prefix not had the uid in it: the worker refuses it too."""
    code, summary, _ = run_stage(
        "train", SPEC, {}, s3_endpoint, tmp_path, "cli", uid="uid-another-run", SPARSIFY_OUTPUT_URI="s3://artifacts/runs/ml/cli/uid-cli"
    )
    assert code == 1
    assert "belongs to another run (uid uid-cli, this run is uid-another-run): refusing to resume" in summary["error"]


def test_a_killed_training_process_resumes_from_its_checkpoint_in_s3(s3_endpoint, uploaded_dataset, tmp_path):
    """A retried training pod (new process, empty disk) continues from last.pt in S3."""
    from sparsify_worker.s3 import Store, client

    store = Store(client(s3_endpoint))
    last = "s3://artifacts/runs/ml/killed/uid-killed/checkpoints/last.pt"
    first = subprocess.Popen(
        [*WORKER, "train"],
        env=stage_env("train", SPEC, {}, s3_endpoint, tmp_path / "a", "killed"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while not store.exists(last) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        first.kill()  # SIGKILL, mid-epoch: what a node loss or OOM does
        first.wait()
    code, summary, log = run_stage("train", SPEC, {}, s3_endpoint, tmp_path / "b", "killed")
    assert code == 0, log
    assert summary["resumed"] is True and 1 <= summary["startEpoch"] <= 3 and summary["epochs"] == 4
    assert summary["quantized"] is True and summary["history"][-1]["epoch"] == 3


def test_a_cuda_oom_under_torchrun_reaches_the_pod_as_exit_75(s3_endpoint, uploaded_dataset, tmp_path):
    """torchrun exits 1 whatever its workers did; the supervisor reads how each process ended and
    gives the pod the exit code the Job's podFailurePolicy acts on (75: CUDA OOM)."""
    env = {**stage_env("train", SPEC, {}, s3_endpoint, tmp_path, "cudaoom"), "YOLO_SPARSIFY_FAULT_CUDA_OOM": "1:8", "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    worker = str(Path(sys.executable).parent / "sparsify-worker")
    proc = subprocess.run(
        [*WORKER, "supervise", "--", torchrun, "--standalone", "--nnodes=1", "--nproc_per_node=1", "--no-python", worker, "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 75, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "train.termination").read_text())
    assert summary["reason"] == "GPUOutOfMemory" and "CUDA out of memory" in summary["error"]


SUPERVISED = r"""
import json, os, pathlib, signal, sys
d = pathlib.Path(os.environ["SPARSIFY_OUTCOME_DIR"])
(d / "started-0").touch()
how = sys.argv[1]
if how == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
(d / "outcome-0.json").write_text(json.dumps({"ok": how == "ok", "gpuOom": how == "oom"}))
sys.exit(0 if how == "ok" else 1)
"""


@pytest.mark.parametrize("how,code", [("ok", 0), ("oom", 75), ("killed", 137), ("error", 1)])
def test_the_supervisor_maps_how_its_processes_ended_to_the_pods_exit_code(tmp_path, how, code):
    script = tmp_path / "rank.py"
    script.write_text(SUPERVISED)
    proc = subprocess.run(
        [*WORKER, "supervise", "--", sys.executable, str(script), how],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == code, proc.stderr[-2000:]
