"""YOLOv5 models in two layouts, built with the maintained YOLOv5 package's modules.

- v5.0: Focus stem, C3, SPP (yolov5s, yolov5l): the layout the seed's published recipes name.
- v7.0: Ultralytics v6.x/v7.0 (6x6 stride-2 stem conv, C3, SPPF; yolov5n/s/m/l/x): what
  users' own checkpoints almost always are. Its YAMLs are read from the yolov5 package.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import yolo_env

MODEL_DIR = Path(__file__).parent / "models"
ACTIVATIONS = {"Hardswish": "nn.Hardswish()", "SiLU": "nn.SiLU()"}
LAYOUTS = ("v5.0", "v7.0")
ARCHS = {"v5.0": ("yolov5s", "yolov5l"), "v7.0": ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")}
SCALES = {  # (depth_multiple, width_multiple): what identifies a model in a checkpoint
    "yolov5n": (0.33, 0.25),
    "yolov5s": (0.33, 0.50),
    "yolov5m": (0.67, 0.75),
    "yolov5l": (1.0, 1.0),
    "yolov5x": (1.33, 1.25),
}
# Without weights, each layout's own activation: the seed trained Hardswish v5.0 models (and
# export writes Hardswish in the form DeepSparse runs natively); v6/v7 models are SiLU.
DEFAULT_ACTIVATION = {"v5.0": "Hardswish", "v7.0": "SiLU"}
LAYOUT_TEXT = {"v5.0": "v5.0 layout (Focus stem, C3, SPP)", "v7.0": "v7.0 layout (Ultralytics v6.x/v7.0: 6x6 stride-2 stem conv, C3, SPPF)"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes a model's structure (and so which recipes fit it)."""

    arch: str
    layout: str
    activation: str
    nc: int

    def describe(self) -> str:
        return f"{self.arch}, {LAYOUT_TEXT[self.layout]}, {self.nc} classes, {self.activation}"


def default_layout(arch: str) -> str:
    """Without weights that say otherwise: the seed's v5.0 layout where it exists (s, l)."""
    return "v5.0" if arch in ARCHS["v5.0"] else "v7.0"


def _yaml_path(arch: str, layout: str) -> Path:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown model layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if arch not in ARCHS[layout]:
        raise ValueError(f"{arch} does not exist in the {layout} layout; it has {', '.join(ARCHS[layout])}")
    if layout == "v5.0":
        return MODEL_DIR / "v5.0" / f"{arch}.yaml"
    spec = importlib.util.find_spec("yolov5")  # the package's own v6/v7 model YAMLs, without importing it
    return Path(spec.submodule_search_locations[0]) / "models" / f"{arch}.yaml"


def model_config(arch: str, activation: str = "Hardswish", num_classes: int = 80, layout: str = "v5.0") -> dict:
    cfg = yaml.safe_load(_yaml_path(arch, layout).read_text())
    cfg["nc"] = num_classes
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    cfg["activation"] = ACTIVATIONS[activation]  # YOLOv5 7.0 reads `activation:`, not the v5.0 `act:`
    return cfg


def build_model(arch: str, num_classes: int, activation: str = "Hardswish", layout: str = "v5.0"):
    yolo_env.prepare()
    import contextlib
    import io

    from yolov5.models.common import Conv
    from yolov5.models.yolo import Model

    cfg = model_config(arch, activation, num_classes, layout)
    with contextlib.redirect_stdout(io.StringIO()):
        model = Model(copy.deepcopy(cfg), ch=3, nc=num_classes)
    # Conv.default_act is one module shared by every Conv: give each its own, so hooks and
    # QAT wrappers attach per layer.
    for m in model.modules():
        if isinstance(m, Conv):
            m.act = copy.deepcopy(m.act)
    return model


def build(spec: ModelSpec):
    return build_model(spec.arch, spec.nc, spec.activation, spec.layout)


def hyperparameters() -> dict:
    """YOLOv5's scratch hyperparameters (loss gains, augmentation), packaged with yolov5."""
    yolo_env.prepare()
    import yolov5

    path = Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml"
    return yaml.safe_load(path.read_text())


def prunable(name: str, param) -> bool:
    """Conv weights outside the stem: what recipes prune and what `sparsity` measures."""
    return param.dim() == 4 and not name.startswith("model.0.")


def sparsity(model) -> float:
    """Fraction of zeros over the prunable conv weights (4-D, outside the stem)."""
    total = zeros = 0
    for name, p in model.named_parameters():
        if prunable(name, p):
            total += p.numel()
            zeros += int((p.detach() == 0).sum())
    return zeros / total if total else 0.0
