"""The torch compatibility shims apply only when the installed torch needs them."""

import inspect

from sparsify_worker import shims


class SlottedQConfig:  # what torch >= 2.9's QConfig looks like to sparseml
    __slots__ = ("activation", "weight")

    def __init__(self, activation, weight):
        self.activation, self.weight = activation, weight


class PlainQConfig:
    def __init__(self, activation, weight):
        self.activation, self.weight = activation, weight


def export_with_dynamo_default(model, args, f, dynamo=True):  # torch >= 2.9's signature shape
    pass


def export_without_dynamo(model, args, f):
    pass


def test_shims_are_detected_from_the_api_not_from_version_numbers():
    assert shims.qconfig_needs_shim(SlottedQConfig) and not shims.qconfig_needs_shim(PlainQConfig)
    assert shims.onnx_export_needs_shim(export_with_dynamo_default)
    assert not shims.onnx_export_needs_shim(export_without_dynamo)


def test_the_pinned_torch_needs_no_shim():
    import torch
    from sparseml.pytorch.sparsification.quantization import quantization_scheme as qs

    assert torch.__version__.startswith("2.3.")  # the pin in pyproject.toml
    assert shims.apply() == []
    assert not shims.qconfig_needs_shim(qs.torch_quantization.QConfig)
    assert "dynamo" not in inspect.signature(torch.onnx.export).parameters
