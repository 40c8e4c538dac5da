"""Facts about an exported ONNX file: sizes (raw, gzip), sparsity of the conv weights, ops."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path


def sizes(path: Path) -> tuple[int, int]:
    raw = path.stat().st_size
    gz = path.with_suffix(path.suffix + ".gz")
    with open(path, "rb") as src, gzip.open(gz, "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    size = gz.stat().st_size
    gz.unlink()
    return raw, size


def op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def weight_sparsity(path: Path) -> tuple[float, int]:
    """Zero fraction over conv weights (the first conv excluded, as in training); for INT8
    weights a "zero" is the zero point. Returns (sparsity, number of quantized convs)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights: list[tuple[np.ndarray, float]] = []
    quantized = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            weights.append((inits[node.input[1]], 0.0))
        elif node.op_type == "ConvInteger" and node.input[1] in inits:
            zp = inits.get(node.input[3]) if len(node.input) > 3 else None
            weights.append((inits[node.input[1]], float(zp.ravel()[0]) if zp is not None else 0.0))
            quantized += 1
        elif node.op_type == "QLinearConv" and node.input[3] in inits:
            zp = inits.get(node.input[5])
            weights.append((inits[node.input[3]], float(zp.ravel()[0]) if zp is not None else 0.0))
            quantized += 1
    weights = [(w, z) for w, z in weights if w.ndim == 4]
    if len(weights) > 1:
        weights = weights[1:]  # the stem conv is never pruned
    total = sum(w.size for w, _ in weights)
    zeros = sum(int((w.astype(np.float64) == z).sum()) for w, z in weights)
    return (zeros / total if total else 0.0), quantized
