"""best.pt -> ONNX that DeepSparse runs: QAT converted to INT8, checked against PyTorch."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from . import shims, yolo_env
from .model import ModelSpec
from .onnx_stats import sizes, weight_sparsity
from .train import is_quantized, load_checkpoint, restore_model
from .weights import Weights, load_into

log = logging.getLogger("sparsify_worker.export")
MIN_QAT_OPSET = 13  # sparseml refuses convert_qat below 13
# How close ONNX Runtime must be to PyTorch on the same input (raw Detect outputs: boxes in
# pixels, objectness/class probabilities). INT8 conversion replaces fake-quant arithmetic by
# integer kernels, so it gets a looser bound on the probabilities.
TOLERANCE = {"fp32": 1e-3, "int8": 0.08}


def dense_checkpoint(model_spec: ModelSpec, path: Path, weights: Weights | None = None, map50: float | None = None) -> Path:
    """A checkpoint of the dense model (the starting weights, or untrained when none): the
    reference that sparse results are compared with."""
    import torch

    from .model import build
    from .recipes import render
    from .train import CHECKPOINT_VERSION

    model = build(model_spec)
    if weights is not None:
        load_into(model, weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": "sparsify-worker",
            "version": CHECKPOINT_VERSION,
            "epoch": 0,
            "arch": model_spec.arch,
            "layout": model_spec.layout,
            "activation": model_spec.activation,
            "nc": model_spec.nc,
            "names": [str(i) for i in range(model_spec.nc)],
            "recipe": render(model_spec.arch, "baseline", model_spec.layout),
            "recipe_variables": {},
            "model": model.state_dict(),
            "ema": None,
            "sparsity": 0.0,
            "best_map50": map50,
        },
        path,
    )
    return path


def _hardswish_as_clip(self, x):
    return x * (x + 3.0).clamp(0.0, 6.0) / 6.0


def export_friendly_activations(model) -> int:
    """Hardswish written as x * clip(x + 3, 0, 6) / 6 (as Ultralytics' v5.0 export did):
    torch exports nn.Hardswish as HardSigmoid (opset 13) or HardSwish (14), which DeepSparse
    1.8 runs outside its own kernels (73% of yolov5s, 0% at opset 14); the Clip form runs
    100% natively. Same numbers; only the forward is replaced, so QAT observers stay."""
    import types

    import torch

    count = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Hardswish):
            m.forward = types.MethodType(_hardswish_as_clip, m)
            count += 1
    return count


def export(checkpoint: Path, out_dir: Path, img_size: int = 640, opset: int = 13, dynamic_batch: bool = True, check_batch: int = 2) -> dict:
    yolo_env.prepare()
    import numpy as np
    import onnxruntime as ort
    import torch
    from sparseml.pytorch.utils import ModuleExporter

    shims.apply()
    ckpt = load_checkpoint(checkpoint)
    model, _ = restore_model(ckpt)
    export_friendly_activations(model)
    quantized = is_quantized(model)
    if quantized and opset < MIN_QAT_OPSET:
        raise ValueError(f"opset {opset} cannot express the quantized model; use opset >= {MIN_QAT_OPSET}")
    model.eval()
    detect = model.model[-1]
    detect.export = True  # Detect returns the single concatenated prediction tensor
    torch.manual_seed(0)
    sample = torch.rand(check_batch, 3, img_size, img_size)
    with torch.no_grad():
        expected = model(sample)
        expected = (expected[0] if isinstance(expected, (list, tuple)) else expected).numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {} if dynamic_batch else {"dynamic_axes": {}}
    with contextlib.redirect_stdout(io.StringIO()):
        ModuleExporter(model, str(out_dir)).export_onnx(sample[:1], name="model.onnx", opset=opset, convert_qat=quantized, **kwargs)
    path = out_dir / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    feed = sample.numpy() if dynamic_batch else sample[:1].numpy()
    got = session.run(None, {inp.name: feed.astype(np.uint8 if "uint8" in inp.type else np.float32)})[0]
    want = expected if dynamic_batch else expected[:1]
    prob_diff = float(np.abs(got[..., 4:] - want[..., 4:]).mean())
    box_diff = float(np.abs(got[..., :4] - want[..., :4]).mean() / img_size)
    kind = "int8" if quantized else "fp32"
    if max(prob_diff, box_diff) > TOLERANCE[kind]:
        raise ValueError(
            f"ONNX output differs from PyTorch beyond tolerance ({kind}): probabilities {prob_diff:.4f}, "
            f"boxes {box_diff:.4f} (limit {TOLERANCE[kind]})"
        )
    raw, gz = sizes(path)
    onnx_sparsity, quantized_convs = weight_sparsity(path)
    return {
        "onnxPath": str(path),
        "opset": opset,
        "quantized": quantized,
        "quantizedConvs": quantized_convs,
        "sizeBytes": raw,
        "sizeGzipBytes": gz,
        "sparsity": round(onnx_sparsity, 4),
        "checkpointSparsity": round(float(ckpt.get("sparsity", 0.0)), 4),
        "dynamicBatch": dynamic_batch,
        "maxDiff": {"probabilities": round(prob_diff, 5), "boxes": round(box_diff, 5), "tolerance": TOLERANCE[kind]},
        "map50": ckpt.get("best_map50"),
        "imgSize": img_size,
        "numClasses": ckpt["nc"],
        "model": {"arch": ckpt["arch"], "layout": ckpt.get("layout", "v5.0"), "activation": ckpt.get("activation", "Hardswish")},
    }
