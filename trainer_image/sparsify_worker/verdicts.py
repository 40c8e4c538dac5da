"""Is the result what users came for? (pure: benchmark figures in, verdicts out)

A sparse model that DeepSparse runs only partly natively, that is slower than its dense
parent, or that lost accuracy nobody compared, is a failed result even when every stage is
green. Each verdict becomes a status condition (and a Warning Event when it fails)."""

from __future__ import annotations

NATIVE_MIN = 0.95  # below this, the fallback path dominates as the batch grows
MIN_RETENTION = 0.85  # sparse mAP@0.5 / dense mAP@0.5 on the same images (the seed keeps 94-96% on COCO)
# Ops torch writes for nn.Hardswish: DeepSparse 1.8 runs them outside its own kernels.
HARDSWISH_OPS = {"HardSigmoid", "HardSwish"}
# Ops of the graphs this project exports, all run natively by DeepSparse 1.8 (measured).
KNOWN_NATIVE_OPS = {
    "Conv",
    "ConvInteger",
    "QLinearConv",
    "QuantizeLinear",
    "DequantizeLinear",
    "Add",
    "Mul",
    "Div",
    "Sub",
    "Pow",
    "Sigmoid",
    "Clip",
    "Concat",
    "MaxPool",
    "Resize",
    "Reshape",
    "Transpose",
    "Slice",
    "Split",
    "Cast",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Constant",
    "Identity",
    "MatMulInteger",
    "Relu",
}


def _verdict(kind: str, ok: bool, reason: str, message: str) -> dict:
    return {"type": kind, "ok": ok, "reason": reason, "message": message}


def native(fraction: float | None, op_types: set[str], cpu: dict | None = None) -> dict:
    if fraction is None:
        return _verdict("NativelyRun", False, "EngineFailed", "DeepSparse did not run the model (see the benchmark's engine error)")
    if fraction >= NATIVE_MIN:
        return _verdict("NativelyRun", True, "Native", f"DeepSparse runs {fraction:.0%} of the graph in its own kernels")
    hardswish = sorted(op_types & HARDSWISH_OPS)
    if hardswish:
        cause = f"the graph has {'/'.join(hardswish)} ops (Hardswish as torch exports it), which DeepSparse 1.8 runs outside its kernels"
        fix = (
            "export with this operator's worker (it writes Hardswish as Clip arithmetic, run natively) or train with model.activation: SiLU"
        )
    else:
        unusual = sorted(op_types - KNOWN_NATIVE_OPS)
        cause = (
            f"ops DeepSparse may not run itself: {', '.join(unusual[:8])}" if unusual else "part of the graph falls back to ONNX Runtime"
        )
        fix = "use a preset model (SiLU or Hardswish, export.opset 13) or remove those ops from a custom model"
    if cpu and not cpu.get("avx512"):
        cause += f"; this CPU has no AVX-512 ({cpu.get('isa')})"
    return _verdict(
        "NativelyRun",
        False,
        "PartlyNative",
        f"DeepSparse runs only {fraction:.0%} of the graph natively (below {NATIVE_MIN:.0%}): {cause}. Fix: {fix}",
    )


def speed(sparse_ds: float | None, dense: dict[str, float], cpu: dict | None = None, rounds: list[float] | None = None) -> dict | None:
    """DeepSparse on the sparse model vs the faster engine on the dense model, same node; with
    interleaved rounds, the median of the per-round ratios and their spread."""
    dense = {e: v for e, v in dense.items() if v}
    if not sparse_ds or not dense:
        return None
    engine, best = max(dense.items(), key=lambda kv: kv[1])
    ratio = sorted(rounds)[len(rounds) // 2] if rounds else sparse_ds / best
    spread = f" (rounds {min(rounds):.2f}-{max(rounds):.2f}x)" if rounds and len(rounds) > 1 else ""
    text = f"DeepSparse on the sparse model: {sparse_ds:.1f} img/s, {ratio:.2f}x{spread} the dense model on {engine} ({best:.1f} img/s)"
    if ratio > 1.0:
        return _verdict("FasterThanDense", True, "Faster", text)
    hint = "" if not cpu or cpu.get("vnni") else "; this CPU has no VNNI, so INT8 gains little"
    return _verdict(
        "FasterThanDense",
        False,
        "SlowerThanDense",
        f"{text}: the sparse model is not faster than its dense parent{hint}. Fix: check NativelyRun, use a "
        "pruned-quantized preset, a larger benchmark batch, or a higher sparsity",
    )


def accuracy(sparse_map: float | None, dense_map: float | None, dense_source: str = "") -> dict:
    if sparse_map is None:
        return _verdict("AccuracyRetained", False, "NotMeasured", "the sparse model's mAP@0.5 was not measured")
    if dense_map is None or dense_map <= 0:
        return _verdict(
            "AccuracyRetained",
            False,
            "NotCompared",
            f"mAP@0.5 {sparse_map:.3f}, not compared with a dense model: {dense_source or 'no dense accuracy'}. "
            "Fix: start from your trained weights (model.weights) with a transfer preset",
        )
    retention = sparse_map / dense_map
    text = f"mAP@0.5 {sparse_map:.3f} vs {dense_map:.3f} dense on the same validation images ({retention:.0%} retained)"
    if retention >= MIN_RETENTION:
        return _verdict("AccuracyRetained", True, "Retained", text)
    return _verdict(
        "AccuracyRetained",
        False,
        "AccuracyDrop",
        f"{text}, below {MIN_RETENTION:.0%}. Fix: more epochs (training.epochs), a lower recipe.targetSparsity, "
        "or the pruned (FP32) preset",
    )
