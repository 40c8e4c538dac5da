"""YOLOv5 models in the v5.0 layout, built with the maintained YOLOv5 package's modules."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from . import yolo_env

MODEL_DIR = Path(__file__).parent / "models"
ACTIVATIONS = {"Hardswish": "nn.Hardswish()", "SiLU": "nn.SiLU()"}


def model_config(arch: str, activation: str = "Hardswish", num_classes: int = 80) -> dict:
    path = MODEL_DIR / f"{arch}.yaml"
    if not path.exists():
        raise ValueError(f"unknown model arch {arch!r}; known: {', '.join(p.stem for p in MODEL_DIR.glob('*.yaml'))}")
    cfg = yaml.safe_load(path.read_text())
    cfg["nc"] = num_classes
    cfg["activation"] = ACTIVATIONS[activation]  # YOLOv5 7.0 reads `activation:`, not the v5.0 `act:`
    return cfg


def build_model(arch: str, num_classes: int, activation: str = "Hardswish"):
    yolo_env.prepare()
    import contextlib
    import io

    from yolov5.models.common import Conv
    from yolov5.models.yolo import Model

    cfg = model_config(arch, activation, num_classes)
    with contextlib.redirect_stdout(io.StringIO()):
        model = Model(copy.deepcopy(cfg), ch=3, nc=num_classes)
    # Conv.default_act is one module shared by every Conv: give each its own, so hooks and
    # QAT wrappers attach per layer.
    for m in model.modules():
        if isinstance(m, Conv):
            m.act = copy.deepcopy(m.act)
    return model


def hyperparameters() -> dict:
    """YOLOv5's scratch hyperparameters (loss gains, augmentation), packaged with yolov5."""
    yolo_env.prepare()
    import yolov5

    path = Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml"
    return yaml.safe_load(path.read_text())


def sparsity(model) -> float:
    """Fraction of zeros over the prunable conv weights (4-D, outside the stem)."""
    total = zeros = 0
    for name, p in model.named_parameters():
        if p.dim() == 4 and not name.startswith("model.0."):
            total += p.numel()
            zeros += int((p.detach() == 0).sum())
    return zeros / total if total else 0.0
