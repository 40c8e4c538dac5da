"""Operator settings from its environment (the Helm chart / kustomize base set these)."""

from __future__ import annotations

import json
import os

from .builders import OperatorConfig


def _argv(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if not raw:
        return default
    value = json.loads(raw)
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise ValueError(f"{name} must be a JSON list of strings, got {raw!r}")
    return tuple(value)


def from_env() -> OperatorConfig:
    d = OperatorConfig()
    extra = json.loads(os.environ.get("SPARSIFY_STAGE_ENV", "{}"))
    return OperatorConfig(
        trainer_image=os.environ.get("SPARSIFY_TRAINER_IMAGE", d.trainer_image),
        cpu_image=os.environ.get("SPARSIFY_CPU_IMAGE", d.cpu_image),
        worker_command=_argv("SPARSIFY_WORKER_COMMAND", d.worker_command),
        train_launcher=_argv("SPARSIFY_TRAIN_LAUNCHER", d.train_launcher),
        image_pull_policy=os.environ.get("SPARSIFY_IMAGE_PULL_POLICY", d.image_pull_policy),
        shm_size=os.environ.get("SPARSIFY_SHM_SIZE", d.shm_size),
        extra_env=tuple(sorted((str(k), str(v)) for k, v in extra.items())),
        gpu_node_selector=tuple(sorted(json.loads(os.environ.get("SPARSIFY_DEFAULT_GPU_NODE_SELECTOR") or "{}").items())),
        gpu_tolerations=tuple(json.loads(os.environ["SPARSIFY_DEFAULT_GPU_TOLERATIONS"])) if os.environ.get("SPARSIFY_DEFAULT_GPU_TOLERATIONS") else d.gpu_tolerations,
        s3_endpoint=os.environ.get("SPARSIFY_DEFAULT_S3_ENDPOINT", ""),
        queue_name=os.environ.get("SPARSIFY_DEFAULT_QUEUE_NAME", ""),
    )


def watched_namespaces() -> list[str]:
    return [n.strip() for n in os.environ.get("SPARSIFY_WATCH_NAMESPACES", "").split(",") if n.strip()]


def resync_seconds() -> float:
    return float(os.environ.get("SPARSIFY_RESYNC_SECONDS", "60"))


def metrics_port() -> int:
    return int(os.environ.get("SPARSIFY_METRICS_PORT", "9090"))
