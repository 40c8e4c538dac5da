"""Stand-in for `sparsify-worker` in operator tests: speaks the worker's contract (env in,
one JSON summary in the termination message out) without the ML stack.

Behaviour comes from the SparsifyJob's spec.env:
  STANDIN_FAIL_STAGE=export        exit 2 in that stage with an error summary
  STANDIN_OOM_ABOVE_BATCH=16       in train, exit 137 while the spec's training.batchSize > 16
  STANDIN_GPU_OOM_ABOVE_BATCH=16   in train, exit 75 (the worker's CUDA OOM) while the spec's training.batchSize > 16
  STANDIN_TRAIN_SECONDS=20         make train take that long (to kill/restart things meanwhile)
  STANDIN_FAIL_RANK=1:0            in train, the pod of completion index 1 exits 3 in attempt 0 (one rank of a group fails)
"""

import json
import os
import socket
import sys
import time


def finish(summary: dict, code: int = 0) -> None:
    with open(os.environ.get("TERMINATION_MESSAGE_PATH", "/dev/termination-log"), "w") as f:
        json.dump(summary, f)
    sys.exit(code)


def main() -> None:
    stage = sys.argv[1]
    if stage == "supervise":  # the real supervisor maps outcomes to exit codes; the stand-ins exit with them
        command = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
        os.execvp(command[0], command)
    out = os.environ["SPARSIFY_OUTPUT_URI"]
    with open(os.environ["SPARSIFY_INPUTS_FILE"]) as f:  # the operator mounts both (downward API)
        inputs = json.load(f)
    with open(os.environ["SPARSIFY_SPEC_FILE"]) as f:
        spec = json.load(f)
    print(f"stand-in {stage} for {os.environ['SPARSIFY_NAMESPACE']}/{os.environ['SPARSIFY_NAME']}", flush=True)
    if os.environ.get("STANDIN_FAIL_STAGE") == stage:
        finish({"stage": stage, "error": f"stand-in failure in {stage}"}, 2)
    if stage == "validate":
        finish({"stage": stage, "ok": True, "recipe": os.environ["SPARSIFY_RECIPE"]})
    if stage == "train":
        batch = int(spec["training"]["batchSize"])  # this attempt's (an OOM retry's is halved)
        rank_fault = os.environ.get("STANDIN_FAIL_RANK", "")
        if rank_fault and rank_fault == f"{os.environ.get('JOB_COMPLETION_INDEX')}:{os.environ['SPARSIFY_ATTEMPT']}":
            finish({"stage": stage, "error": f"stand-in failure of rank {rank_fault}"}, 3)
        limit = os.environ.get("STANDIN_OOM_ABOVE_BATCH")
        if limit and batch > int(limit):
            print(f"killed at batch size {batch}", flush=True)
            os._exit(137)
        gpu_limit = os.environ.get("STANDIN_GPU_OOM_ABOVE_BATCH")
        if gpu_limit and batch > int(gpu_limit):
            finish({"stage": stage, "error": f"OutOfMemoryError: CUDA out of memory at batch size {batch}", "reason": "GPUOutOfMemory"}, 75)
        time.sleep(float(os.environ.get("STANDIN_TRAIN_SECONDS", "0")))
        launcher = json.loads(os.environ.get("STANDIN_LAUNCHER", "{}"))
        finish(
            {
                "stage": stage,
                "epochs": spec["training"].get("epochs", 3),
                "bestMap50": 0.5123,
                "sparsity": 0.75,
                "batchSize": batch,
                "checkpoint": f"{out}/checkpoints/best.pt",
                "lastCheckpoint": f"{out}/checkpoints/last.pt",
                "launcher": launcher,
                "hostname": socket.gethostname(),
            }
        )
    if stage == "export":
        assert inputs["train"]["checkpoint"].endswith("best.pt"), inputs
        finish({"stage": stage, "onnx": f"{out}/model.onnx", "sizeBytes": 7_500_000, "sizeGzipBytes": 2_300_000, "sparsity": 0.7412})
    if stage == "benchmark":
        assert inputs["export"]["onnx"].endswith("model.onnx"), inputs
        finish(
            {
                "stage": stage,
                "engines": {
                    "deepsparse": {"imagesPerSecond": 396.7, "latencyMs": 161.3},
                    "onnxruntime": {"imagesPerSecond": 135.8, "latencyMs": 471.2},
                },
                "nativeFraction": 0.92,
                "report": f"{out}/report.md",
                "node": os.environ.get("STANDIN_NODE", ""),
            }
        )
    if stage == "publish":
        finish({"stage": stage, "results": f"{out}/results.json", "report": f"{out}/report.md"})
    finish({"stage": stage, "error": f"unknown stage {stage}"}, 64)


if __name__ == "__main__":
    main()
