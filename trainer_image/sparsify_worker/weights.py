"""Starting weights a user brings (`model.weights`): what they are and how to load them.

Three forms are accepted:
- an Ultralytics training checkpoint (a pickled dict with `model` / `ema` modules, as
  `train.py` writes it and the official releases ship it), v5.0 or v6.x/v7.0 layout;
- a plain state dict (or a dict holding one under `state_dict` / `model`);
- a checkpoint written by this worker (a previous run's best.pt).

Unpickling runs with weights_only=True when the file allows it; Ultralytics checkpoints
pickle their module classes, so those go through an allow-list unpickler that resolves
only YOLOv5 and torch.nn module classes and tensor rebuilders: a checkpoint cannot make the
loader import or call anything else.
"""

from __future__ import annotations

import pickle
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

from . import yolo_env
from .model import ARCHS, DEFAULT_ACTIVATION, LAYOUT_TEXT, SCALES, ModelSpec, default_layout

DETECT_HEAD = re.compile(r"^model\.24\.m\.\d+\.(weight|bias)$")  # the only tensors whose shape depends on nc


class WeightsError(ValueError):
    """The weights cannot be used as asked; the message says what they are and what to change."""


@dataclass
class Weights:
    source: str  # ultralytics | state-dict | sparsify-worker
    arch: str | None
    layout: str | None
    activation: str | None  # None when the file does not say (a state dict has no activation)
    nc: int
    names: list[str] | None
    state: dict = field(repr=False)
    map50: float | None = None

    def describe(self) -> str:
        what = {
            "ultralytics": "an Ultralytics checkpoint",
            "state-dict": "a state dict",
            "sparsify-worker": "a sparsify-worker checkpoint",
        }[self.source]
        parts = [LAYOUT_TEXT[self.layout] if self.layout else "unknown layout", f"{self.nc} classes"]
        if self.activation:
            parts.append(self.activation)
        return f"{what} of {self.arch or 'an unrecognised YOLOv5 model'}, {', '.join(parts)}"


# ---- unpickling --------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("__builtin__", "set"),
    ("builtins", "slice"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_STORAGE = re.compile(r"^(Double|Float|Half|BFloat16|Long|Int|Short|Char|Byte|Bool)Storage$")


def _module_class(module: str, name: str):
    """A torch.nn.Module subclass from YOLOv5's or torch's model modules, or None."""
    import importlib

    import torch

    if module.startswith(("models.", "utils.")):  # pickled from the yolov5 repository's layout
        module = "yolov5." + module
    if not (module.startswith(("yolov5.models.", "torch.nn.modules."))):
        return None
    obj = getattr(importlib.import_module(module), name, None)
    return obj if isinstance(obj, type) and issubclass(obj, torch.nn.Module) else None


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS or (module == "torch" and (_STORAGE.match(name) or name in ("float16", "float32"))):
            return super().find_class(module, name)
        cls = _module_class(module, name)
        if cls is not None:
            return cls
        raise pickle.UnpicklingError(
            f"the checkpoint references {module}.{name}, which a YOLOv5 checkpoint does not need; "
            "refusing to load it (only YOLOv5 and torch.nn module classes and tensors are allowed)"
        )


_allow_list_pickle = types.SimpleNamespace(Unpickler=_AllowListUnpickler, load=pickle.load, __name__="allow_list_pickle")


def load_file(path: Path):
    """torch.load with weights_only=True, or the allow-list unpickler for Ultralytics files."""
    yolo_env.prepare()
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as e:  # noqa: BLE001  (not a torch file at all)
        raise WeightsError(f"model.weights is not a PyTorch checkpoint torch.load can read: {type(e).__name__}: {str(e)[:200]}") from e
    import yolov5.models.yolo  # noqa: F401  (the module classes the unpickler resolves)

    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_allow_list_pickle)
    except pickle.UnpicklingError as e:
        raise WeightsError(f"model.weights: {e}") from e


# ---- what the weights are ----------------------------------------------------------------


def _arch_of(depth: float, width: float) -> str | None:
    for arch, (d, w) in SCALES.items():
        if abs(d - depth) < 0.01 and abs(w - width) < 0.01:
            return arch
    return None


def _activation_of(model) -> str | None:
    from yolov5.models.common import Conv

    kinds = {type(m.act).__name__ for m in model.modules() if isinstance(m, Conv)}
    return kinds.pop() if len(kinds) == 1 else None  # an unsupported one (LeakyReLU) is refused by resolve()


def _from_module(model) -> Weights:
    from yolov5.models.common import SPP, SPPF, Focus

    cfg = getattr(model, "yaml", None) or {}
    layers = list(getattr(model, "model", []))
    layout = None
    if layers and isinstance(layers[0], Focus) and any(isinstance(m, SPP) for m in layers):
        layout = "v5.0"
    elif layers and not isinstance(layers[0], Focus) and any(isinstance(m, SPPF) for m in layers):
        layout = "v7.0"
    arch = _arch_of(float(cfg.get("depth_multiple", 0)), float(cfg.get("width_multiple", 0)))
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    model = model.float()
    return Weights(
        "ultralytics",
        arch,
        layout,
        _activation_of(model),
        int(getattr(model, "nc", cfg.get("nc", 0)) or 0),
        list(names) if names else None,
        model.state_dict(),
    )


def _from_state_dict(state: dict) -> Weights:
    """Layout and size from tensor names and shapes (a state dict says nothing else)."""
    layout = "v7.0" if "model.0.conv.weight" in state else "v5.0" if "model.0.conv.conv.weight" in state else None
    stem = state.get("model.0.conv.weight", state.get("model.0.conv.conv.weight"))
    arch = None
    if stem is not None and layout:
        width = stem.shape[0] / 64
        bottlenecks = len({k.split(".")[3] for k in state if k.startswith("model.2.m.")})
        v5_depths = {"yolov5s": 1, "yolov5l": 3}
        for name, (d, w) in SCALES.items():
            depth_ok = (round(3 * d) or 1) == bottlenecks if layout == "v7.0" else v5_depths.get(name) == bottlenecks
            if abs(w - width) < 0.01 and depth_ok:
                arch = name
    head = state.get("model.24.m.0.weight")
    nc = int(head.shape[0]) // 3 - 5 if head is not None else 0
    return Weights("state-dict", arch, layout, None, nc, None, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def read_weights(path: Path) -> Weights:
    import torch

    obj = load_file(path)
    if isinstance(obj, dict) and obj.get("format") == "sparsify-worker":
        return Weights(
            "sparsify-worker",
            obj["arch"],
            obj.get("layout", "v5.0"),
            obj.get("activation", "Hardswish"),
            int(obj["nc"]),
            obj.get("names"),
            obj.get("ema") or obj["model"],
            obj.get("best_map50"),
        )
    if isinstance(obj, torch.nn.Module):
        return _from_module(obj)
    if isinstance(obj, dict):
        for key in ("ema", "model"):
            if isinstance(obj.get(key), torch.nn.Module):
                return _from_module(obj[key])
        for key in ("state_dict", "model", "ema"):
            if isinstance(obj.get(key), dict) and obj[key] and all(torch.is_tensor(v) for v in obj[key].values()):
                return _from_state_dict(obj[key])
        if obj and all(torch.is_tensor(v) for v in obj.values()):
            return _from_state_dict(obj)
    raise WeightsError("model.weights holds neither a YOLOv5 checkpoint (a dict with `model` or `ema`) nor a state dict")


# ---- resolving the model a run trains ----------------------------------------------------


def resolve(model_spec: dict, nc: int, weights: Weights | None) -> ModelSpec:
    """The spec's model with what it leaves unset filled in: from the weights when given
    (their layout and activation), else each layout's default. Contradictions are refused
    with a message that says what the weights are."""
    arch = model_spec["arch"]
    layout, activation = model_spec.get("layout") or None, model_spec.get("activation") or None
    problems = []
    if weights is not None:
        what = weights.describe()
        if weights.layout is None or weights.arch is None:
            problems.append(
                f"model.weights is {what}: its layout is not one of the supported YOLOv5 layouts "
                f"(v5.0: {', '.join(ARCHS['v5.0'])}; v7.0: {', '.join(ARCHS['v7.0'])})"
            )
        else:
            if weights.arch != arch:
                problems.append(
                    f"model.weights is {what}, but model.arch is {arch}: set model.arch to {weights.arch}, "
                    f"or use weights trained for {arch}"
                )
            if layout and layout != weights.layout:
                problems.append(
                    f"model.weights is {what}, but model.layout is {layout}: set model.layout to {weights.layout} "
                    "or leave it unset to take it from the weights"
                )
            layout = layout or weights.layout
        if weights.activation and weights.activation not in DEFAULT_ACTIVATION.values():
            problems.append(f"model.weights is {what}: its {weights.activation} activation is not supported (Hardswish or SiLU)")
        elif weights.activation and activation and activation != weights.activation:
            problems.append(
                f"model.weights is {what}, but model.activation is {activation}: the activation must match the "
                f"weights (set {weights.activation}, or leave it unset)"
            )
        activation = activation or weights.activation
    layout = layout or default_layout(arch)
    if layout in ARCHS and arch not in ARCHS[layout]:
        problems.append(f"{arch} does not exist in the {layout} layout ({', '.join(ARCHS[layout])} do)")
    if problems:
        raise WeightsError("; ".join(problems))
    return ModelSpec(arch, layout, activation or DEFAULT_ACTIVATION[layout], nc)


def load_into(model, weights: Weights) -> dict:
    """Copy the weights into a freshly built model of the resolved spec. A different class
    count re-initialises only the Detect output convs (transfer to the user's classes)."""
    own = model.state_dict()
    state = dict(weights.state)
    head_reset = False
    if weights.nc != model.yaml["nc"]:
        state = {k: v for k, v in state.items() if not DETECT_HEAD.match(k)}
        head_reset = True
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and not (head_reset and DETECT_HEAD.match(k))]
    if wrong or missing:
        raise WeightsError(
            f"model.weights is {weights.describe()} and does not fit the model: "
            + "; ".join(
                ([f"{len(wrong)} tensor(s) of another shape, e.g. {wrong[0]}"] if wrong else [])
                + ([f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"] if missing else [])
            )
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return {"source": weights.source, "headReset": head_reset, "weightsClasses": weights.nc}
