"""The SparsifyJob spec with every default filled in (pure).

The CRD schema applies the same defaults at admission; doing it again here keeps the
operator correct for objects stored before a default existed."""

from __future__ import annotations

import copy

from .api import RESERVED_ENV_PREFIXES

DEFAULTS: dict = {
    "model": {"weights": ""},  # layout and activation: resolved by the worker from the weights (or the arch)
    "training": {"nodes": 1, "gpusPerNode": 1, "batchSize": 64, "imgSize": 640, "maxOOMRetries": 2, "backoffLimit": 2},
    "export": {"imgSize": 640, "dynamicBatch": True, "opset": 13},
    "benchmark": {
        "nodeSelector": {"node.kubernetes.io/instance-type": "c5.12xlarge"},
        "batchSize": 64,
        "imgSize": 640,
        "scenario": "sync",
        "durationSeconds": 30,
        "rounds": 3,
        "compareDense": True,
        "engines": ["deepsparse", "onnxruntime"],
    },
    "output": {"prefix": "sparsify", "region": "us-east-1"},
    "env": [],
}


class SpecError(ValueError):
    """The object cannot be reconciled as written (only possible if admission was bypassed)."""


def _merge(defaults: dict, given: dict) -> dict:
    out = copy.deepcopy(defaults)
    for k, v in given.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def normalized(spec: dict | None) -> dict:
    if not isinstance(spec, dict):
        raise SpecError("spec is missing or not an object")
    out = _merge(DEFAULTS, spec)
    for path in (("model", "arch"), ("dataset", "uri"), ("output", "bucket")):
        node = out
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if not node:
            raise SpecError(f"spec.{'.'.join(path)} is required")
    if not isinstance(out.get("recipe"), dict) or not any(k in out["recipe"] for k in ("preset", "uri", "inline")):
        raise SpecError("spec.recipe needs one of preset, uri or inline")
    return out


def recipe_name(spec: dict) -> str:
    """The preset's full name (yolov5s-pruned-quantized) or 'custom'."""
    preset = spec["recipe"].get("preset")
    if not preset:
        return "custom"
    return preset if preset.startswith("yolov5") else f"{spec['model']['arch']}-{preset}"


def world_size(spec: dict) -> int:
    return int(spec["training"]["nodes"]) * int(spec["training"]["gpusPerNode"])


def output_uri(spec: dict, namespace: str, name: str, uid: str) -> str:
    """<prefix>/<namespace>/<name>/<uid>: readable, and every run its own. A SparsifyJob deleted
    and created again under the same name (a GitOps Replace sync) is a new run that never sees
    the old one's checkpoints or results."""
    prefix = spec["output"].get("prefix", "").strip("/")
    parts = [p for p in (prefix, namespace, name, uid) if p]
    return f"s3://{spec['output']['bucket']}/{'/'.join(parts)}"


def reserved_env(name: str) -> bool:
    return name.startswith(RESERVED_ENV_PREFIXES)
