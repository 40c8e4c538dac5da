"""Small builders of SparsifyJob / Job / Pod dicts for the pure operator tests."""

from __future__ import annotations

import copy

from sparsify_operator.api import ANNOTATION_BATCH_SIZE, LABEL_ATTEMPT, LABEL_STAGE

BASE_SPEC = {
    "model": {"arch": "yolov5s"},
    "recipe": {"preset": "pruned-quantized"},
    "dataset": {"uri": "s3://data/coco128/"},
    "training": {"nodes": 1, "gpusPerNode": 4, "batchSize": 64},
    "output": {"bucket": "models", "credentialsSecret": "s3-creds"},
}


def sparsifyjob(name="demo", namespace="ml", spec=None, status=None, **spec_updates) -> dict:
    s = copy.deepcopy(spec or BASE_SPEC)
    for key, value in spec_updates.items():
        s[key] = {**s.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": "yolo-sparsify.io/v1alpha1",
        "kind": "SparsifyJob",
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-1234", "generation": 1},
        "spec": s,
        "status": status or {},
    }


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
