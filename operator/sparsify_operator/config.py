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
    )


def watched_namespaces() -> list[str]:
    return [n.strip() for n in os.environ.get("SPARSIFY_WATCH_NAMESPACES", "").split(",") if n.strip()]


def resync_seconds() -> float:
    return float(os.environ.get("SPARSIFY_RESYNC_SECONDS", "60"))
