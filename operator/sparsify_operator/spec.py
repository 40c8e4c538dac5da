"""The SparsifyJob spec as a frozen, typed value with every default filled in (pure).

The field defaults below are the only defaults in the code; the CRD schema applies the same
ones at admission (tests/operator/test_spec.py holds the two equal). Parsing again here keeps
the operator correct for objects stored before a default existed, or written past admission.
Python names are snake_case; `to_dict` gives the API's (camelCase) form, which is what a pod
receives, so the worker trusts what it is given and keeps no defaults of its own."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .api import RESERVED_ENV_PREFIXES


class SpecError(ValueError):
    """The object cannot be reconciled as written (only possible if admission was bypassed)."""


def _api(name: str, **kw) -> Any:
    """A field whose API name is not the plain camelCase of its Python name."""
    return field(metadata={"api": name}, **kw)


def _frozen_map(value: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class Model:
    arch: str
    layout: str | None = None  # resolved by the worker from the weights (or the arch) when absent
    activation: str | None = None
    weights: str = ""


@dataclass(frozen=True)
class Recipe:
    preset: str | None = None
    target_sparsity: float | None = None
    variables: Mapping[str, float] | None = None
    uri: str | None = None
    inline: str | None = None
    target_arch: str | None = None


@dataclass(frozen=True)
class Dataset:
    uri: str


@dataclass(frozen=True)
class Training:
    nodes: int = 1
    gpus_per_node: int = 1
    batch_size: int = 64  # in total, over every process
    epochs: int | None = None
    img_size: int = 640
    image: str | None = None
    resources: Mapping | None = None
    node_selector: Mapping[str, str] | None = None
    tolerations: tuple | None = None
    queue_name: str | None = None
    max_oom_retries: int = _api("maxOOMRetries", default=2)
    backoff_limit: int = 2
    active_deadline_seconds: int | None = None

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Export:
    img_size: int = 640
    dynamic_batch: bool = True
    opset: int = 13


@dataclass(frozen=True)
class Benchmark:
    node_selector: Mapping[str, str] = field(default_factory=lambda: _frozen_map({"node.kubernetes.io/instance-type": "c5.12xlarge"}))
    batch_size: int = 64
    img_size: int = 640
    scenario: str = "sync"
    duration_seconds: int = 30
    rounds: int = 3
    cores: int | None = None
    compare_dense: bool = True
    engines: tuple[str, ...] = ("deepsparse", "onnxruntime")


@dataclass(frozen=True)
class Output:
    bucket: str
    prefix: str = "sparsify"
    endpoint: str | None = None
    region: str = "us-east-1"
    credentials_secret: str | None = None
    service_account_name: str | None = None


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str = ""


@dataclass(frozen=True)
class SparsifySpec:
    model: Model
    recipe: Recipe
    dataset: Dataset
    output: Output
    training: Training = field(default_factory=Training)
    export: Export = field(default_factory=Export)
    benchmark: Benchmark = field(default_factory=Benchmark)
    env: tuple[EnvVar, ...] = ()

    def to_dict(self) -> dict:
        """The API form (camelCase, unset fields left out): what the pod receives."""
        return _to_api(self)

    def with_batch_size(self, batch_size: int) -> SparsifySpec:
        """This spec as one training attempt runs it (an OOM retry halves the batch)."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, batch_size=batch_size))

    @property
    def recipe_name(self) -> str:
        """The preset's full name (yolov5s-pruned-quantized) or 'custom'."""
        preset = self.recipe.preset
        if not preset:
            return "custom"
        return preset if preset.startswith("yolov5") else f"{self.model.arch}-{preset}"

    @property
    def multi_node(self) -> bool:
        return self.training.nodes > 1


def api_name(f: dataclasses.Field) -> str:
    return f.metadata.get("api") or re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f.name)


def thawed(value) -> Any:
    """Plain dicts and lists again (for a manifest) from the frozen mappings and tuples."""
    if isinstance(value, Mapping):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [thawed(v) for v in value]
    return value


def _to_api(value) -> Any:
    if dataclasses.is_dataclass(value):
        out = {api_name(f): _to_api(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(value, Mapping):
        return {k: _to_api(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_to_api(v) for v in value]
    return value


def defaults(cls: type = None) -> dict:
    """Every default of the spec, in API form ({"training": {"batchSize": 64, ...}, ...})."""
    out: dict = {}
    for f in dataclasses.fields(cls or SparsifySpec):
        section = globals().get(f.type)
        if dataclasses.is_dataclass(section):
            nested = defaults(section)
            if nested:
                out[api_name(f)] = nested
        elif f.default is not dataclasses.MISSING and f.default not in (None, ()):
            out[api_name(f)] = _to_api(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[api_name(f)] = _to_api(f.default_factory())
    return out


_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def _parse(cls, raw, path: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"spec.{path} must be an object")
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = api_name(f)
        if name not in raw or raw[name] is None:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SpecError(f"spec.{path}.{name} is required")
            continue
        kwargs[f.name] = _value(f.type, raw[name], f"{path}.{name}")
    return cls(**kwargs)


def _value(kind: str, value, path: str):
    base = kind.split(" | ")[0]
    if base in _SCALARS:
        if base in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SpecError(f"spec.{path} must be a number, got {value!r}")
        if base == "bool" and not isinstance(value, bool):
            raise SpecError(f"spec.{path} must be true or false, got {value!r}")
        if base == "str" and not isinstance(value, str):
            raise SpecError(f"spec.{path} must be a string, got {value!r}")
        return _SCALARS[base](value)
    if base.startswith("Mapping"):
        if not isinstance(value, Mapping):
            raise SpecError(f"spec.{path} must be an object")
        return _deep_frozen(value)
    if base.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"spec.{path} must be a list")
        return tuple(_deep_frozen(v) for v in value)
    raise AssertionError(f"no parser for {kind}")  # a field type this module forgot


def _deep_frozen(value):
    if isinstance(value, Mapping):
        return MappingProxyType({k: _deep_frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_deep_frozen(v) for v in value)
    return value


def normalized(spec) -> SparsifySpec:
    """The spec as written, parsed and completed with the defaults; SpecError says what is wrong."""
    if not isinstance(spec, Mapping):
        raise SpecError("spec is missing or not an object")
    sections = {}
    for f in dataclasses.fields(SparsifySpec):
        if f.name == "env":
            continue
        if f.default_factory is dataclasses.MISSING and not spec.get(api_name(f)):
            raise SpecError(f"spec.{api_name(f)} is required")
        sections[f.name] = _parse(globals()[f.type], spec.get(api_name(f)), api_name(f))
    env = spec.get("env") or []
    if not isinstance(env, list):
        raise SpecError("spec.env must be a list")
    sections["env"] = tuple(_parse(EnvVar, e, "env[]") for e in env)
    out = SparsifySpec(**sections)
    if not (out.model.arch and out.dataset.uri and out.output.bucket):
        raise SpecError("spec.model.arch, spec.dataset.uri and spec.output.bucket must not be empty")
    if not (out.recipe.preset or out.recipe.uri or out.recipe.inline):
        raise SpecError("spec.recipe needs one of preset, uri or inline")
    for name in ("training", "export", "benchmark"):
        section = getattr(out, name)
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise SpecError(f"spec.{name}.{api_name(f)} must not be negative, got {v}")
    if out.training.nodes < 1 or out.training.gpus_per_node < 1 or out.training.batch_size < 1:
        raise SpecError("spec.training.nodes, gpusPerNode and batchSize must be at least 1")
    return out


def output_uri(spec: SparsifySpec, namespace: str, name: str, uid: str) -> str:
    """<prefix>/<namespace>/<name>/<uid>: readable, and every run its own. A SparsifyJob deleted
    and created again under the same name (a GitOps Replace sync) is a new run that never sees
    the old one's checkpoints or results."""
    prefix = spec.output.prefix.strip("/")
    parts = [p for p in (prefix, namespace, name, uid) if p]
    return f"s3://{spec.output.bucket}/{'/'.join(parts)}"


def reserved_env(name: str) -> bool:
    return name.startswith(RESERVED_ENV_PREFIXES)
