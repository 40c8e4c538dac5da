"""Compatibility shims between sparseml 1.8 and newer torch, applied only when needed.

sparseml 1.8 was written for torch <= 2.3. With torch >= ~2.9 two things changed
(verified in the stack notes; torch 2.3.1, which this project pins, needs neither):

1. torch.ao.quantization.QConfig gained __slots__, so sparseml's QAT code cannot attach
   `quantization_scheme` to it ("'QConfig' object has no attribute 'quantization_scheme'").
   Fix: hand sparseml a QConfig subclass without __slots__.
2. torch.onnx.export defaults to the dynamo exporter, which needs onnxscript and does not
   handle sparseml's QAT graphs. Fix: export with dynamo=False.
"""

from __future__ import annotations

import functools

_applied: list[str] = []


def qconfig_needs_shim(qconfig_cls) -> bool:
    try:
        probe = qconfig_cls(activation=None, weight=None)
        probe.quantization_scheme = None
        return False
    except AttributeError:
        return True


def onnx_export_needs_shim(export_fn) -> bool:
    import inspect

    try:
        params = inspect.signature(export_fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("dynamo")
    return p is not None and p.default is not False


def apply() -> list[str]:
    """Apply what the installed torch needs; returns the names of the shims applied."""
    if _applied:
        return list(_applied)
    import torch
    from sparseml.pytorch.sparsification.quantization import quantization_scheme as qs

    base = qs.torch_quantization.QConfig
    if qconfig_needs_shim(base):

        class QConfig(base):  # no __slots__: instances get a __dict__ again
            pass

        qs.torch_quantization.QConfig = QConfig
        _applied.append("qconfig-without-slots")
    if onnx_export_needs_shim(torch.onnx.export):
        original = torch.onnx.export

        @functools.wraps(original)
        def export(*args, **kwargs):
            kwargs.setdefault("dynamo", False)
            return original(*args, **kwargs)

        torch.onnx.export = export
        _applied.append("onnx-export-dynamo-false")
    return list(_applied)
