"""Builders of SparsifyJob, Job and Pod dicts (the API's own shapes), for pure and cluster tests."""

from __future__ import annotations

import copy

from sparsify_operator.api import ANNOTATION_BATCH_SIZE, API_VERSION, KIND, LABEL_ATTEMPT, LABEL_STAGE

# A SparsifyJob the stand-in worker runs in seconds (tests/standin): the cluster tests' default.
STANDIN_SPEC = {
    "model": {"arch": "yolov5s"},
    "recipe": {"preset": "pruned-quantized"},
    "dataset": {"uri": "s3://data/coco128/"},
    "training": {"nodes": 1, "gpusPerNode": 2, "batchSize": 64, "epochs": 4},
    "benchmark": {"durationSeconds": 1},
    "output": {"bucket": "models"},
}
# The pure tests' (nothing runs it): four GPUs, a credentials Secret.
PURE_SPEC = {
    "model": {"arch": "yolov5s"},
    "recipe": {"preset": "pruned-quantized"},
    "dataset": {"uri": "s3://data/coco128/"},
    "training": {"nodes": 1, "gpusPerNode": 4, "batchSize": 64},
    "output": {"bucket": "models", "credentialsSecret": "s3-creds"},
}


def with_updates(spec: dict, env: dict | None = None, **updates) -> dict:
    """A copy of `spec`: each section in `updates` merged into its own, `env` given as name -> value."""
    out = copy.deepcopy(spec)
    for key, value in updates.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    if isinstance(env, dict):
        out["env"] = [{"name": k, "value": str(v)} for k, v in env.items()]
    elif env is not None:
        out["env"] = env  # as written (a list, or something odd on purpose)
    return out


def sparsifyjob(name: str, spec: dict | None = None, env: dict | None = None, **updates) -> dict:
    """A SparsifyJob to create (the API server fills in namespace, uid, generation)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": with_updates(STANDIN_SPEC if spec is None else spec, env, **updates),
    }


def stored_sparsifyjob(name="demo", namespace="ml", spec=None, status=None, **updates) -> dict:
    """A SparsifyJob as the API server returns it, for the pure tests."""
    sj = sparsifyjob(name, PURE_SPEC if spec is None else spec, **updates)
    sj["metadata"].update(namespace=namespace, uid="uid-1234", generation=1)
    sj["status"] = status or {}
    return sj


def job(
    stage: str, attempt: int = 0, state: str = "Running", batch: int | None = None, reason: str | None = None, name: str | None = None
) -> dict:
    conditions = []
    if state == "Succeeded":
        conditions = [{"type": "Complete", "status": "True"}]
    elif state == "Failed":
        conditions = [{"type": "Failed", "status": "True", "reason": reason or "BackoffLimitExceeded", "lastTransitionTime": "t"}]
    ann = {ANNOTATION_BATCH_SIZE: str(batch)} if batch else {}
    return {
        "metadata": {
            "name": name or (f"demo-{stage}" if attempt == 0 else f"demo-{stage}-r{attempt}"),
            "labels": {LABEL_STAGE: stage, LABEL_ATTEMPT: str(attempt)},
            "annotations": ann,
        },
        "spec": {},
        "status": {"conditions": conditions, "active": 1 if state == "Running" else 0, "startTime": "t0"},
    }


def pod(phase: str, exit_code: int | None = None, reason: str | None = None, message: str = "", index: int = 0) -> dict:
    state = (
        {"running": {}}
        if exit_code is None
        else {"terminated": {"exitCode": exit_code, "reason": reason or "Completed", "message": message, "finishedAt": "t1"}}
    )
    return {
        "metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {"phase": phase, "containerStatuses": [{"state": state}]},
    }
