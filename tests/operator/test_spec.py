"""The typed spec (pure): one place for defaults, equal to the CRD's; odd objects refused with
a reason instead of crashing the operator."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from sparsify_operator.spec import SparsifySpec, SpecError, defaults, normalized
from tests.support.objects import PURE_SPEC

CRD = Path(__file__).resolve().parents[2] / "manifests" / "base" / "crd.yaml"


def crd_defaults(node: dict) -> dict:
    """Every `default:` under the CRD's spec schema, as nested dicts (an object's own `{}`
    default only makes its children's defaults apply: it is not a value)."""
    out = {}
    for name, prop in (node.get("properties") or {}).items():
        nested = crd_defaults(prop) if prop.get("type") == "object" and prop.get("properties") else {}
        if nested:
            out[name] = nested
        elif "default" in prop and prop["default"] != {}:
            out[name] = prop["default"]
    return out


def test_every_crd_default_is_the_codes_default_and_back():
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert crd_defaults(schema) == defaults()


def test_a_spec_is_frozen_typed_and_complete():
    spec = normalized(PURE_SPEC)
    assert isinstance(spec, SparsifySpec)
    assert (spec.training.gpus_per_node, spec.training.max_oom_retries, spec.benchmark.engines) == (4, 2, ("deepsparse", "onnxruntime"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.training.batch_size = 8
    with pytest.raises(TypeError):
        spec.benchmark.node_selector["x"] = "y"  # mappings are read-only views
    assert spec.with_batch_size(16).training.batch_size == 16 and spec.training.batch_size == 64
    # the API form round-trips: the pod receives exactly what the operator decided from
    assert normalized(spec.to_dict()) == spec
    assert spec.to_dict()["training"]["maxOOMRetries"] == 2 and "epochs" not in spec.to_dict()["training"]
    assert spec.recipe_name == "yolov5s-pruned-quantized" and spec.training.world_size == 4


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model": None}, "spec.model is required"),
        ({"model": {"layout": "v7.0"}}, "spec.model.arch is required"),
        ({"training": {"batchSize": "64"}}, "spec.training.batchSize must be a number"),
        ({"training": {"nodes": 0}}, "at least 1"),
        ({"export": {"opset": -1}}, "spec.export.opset must not be negative"),
        ({"export": {"dynamicBatch": "yes"}}, "spec.export.dynamicBatch must be true or false"),
        ({"benchmark": {"engines": "deepsparse"}}, "spec.benchmark.engines must be a list"),
        ({"recipe": {"targetSparsity": 0.5}}, "spec.recipe needs one of preset, uri or inline"),
        ({"env": [{"value": "x"}]}, "spec.env[].name is required"),
        ({"env": {"A": "b"}}, "spec.env must be a list"),
    ],
)
def test_a_spec_written_past_admission_is_refused_with_the_field(change, words):
    with pytest.raises(SpecError, match=words.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        normalized({**PURE_SPEC, **change})
