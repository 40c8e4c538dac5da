"""Facts from Neural Magic's published YOLOv5 recipes (sparseml, Apache-2.0):
`src/sparseml/yolov5/recipes/yolov5{s,l}.{pruned,pruned_quantized}.md` at commit
4d41357ba6e115f31f4d009294469369a2dc22c8, and `yolov5.transfer_learn_pruned.md`.

Only numbers and layer names live here (the recipes themselves are rendered by recipes.py).
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = ("none", "low", "mid", "high")  # sensitivity: "none" is pruned least


@dataclass(frozen=True)
class Published:
    epochs: int
    update_frequency: float
    sparsity: tuple[float, float, float, float]  # none / low / mid / high
    mask: str
    qat_start: float | None = None
    qat_lr: float | None = None


SEED_RECIPES = {
    ("yolov5s", "pruned"): Published(240, 1.0, (0.50, 0.60, 0.725, 0.80), "unstructured"),
    ("yolov5s", "pruned-quantized"): Published(302, 0.2, (0.40, 0.50, 0.65, 0.75), "block4", 300, 2e-6),
    ("yolov5l", "pruned"): Published(180, 1.0, (0.60, 0.75, 0.85, 0.90), "unstructured"),
    ("yolov5l", "pruned-quantized"): Published(122, 0.5, (0.50, 0.65, 0.77, 0.85), "block4", 120, 2e-5),
}
# Schedule shared by the four: warm-up epochs 0-3 (weights' LR from 0, biases' from 0.1),
# cosine 0.01 -> 0.002, gradual magnitude pruning from 5% at epoch 4 to the end at epoch 100.
WARMUP_EPOCHS = 3.0
WEIGHTS_WARMUP_LR, BIASES_WARMUP_LR = 0.0, 0.1
INIT_LR, FINAL_LR = 0.01, 0.002
PRUNE_START, PRUNE_END, INIT_SPARSITY = 4.0, 100.0, 0.05
BASELINE_EPOCHS = 300

# The published transfer-learning recipe's schedule (50 epochs, warm-up 2, LR 0.0032 -> 0.000384,
# biases' warm-up from 0.05): the LR shape of this project's transfer presets.
TRANSFER_EPOCHS, TRANSFER_WARMUP = 50, 2.0
TRANSFER_INIT_LR, TRANSFER_FINAL_LR, TRANSFER_BIASES_WARMUP_LR = 0.0032, 0.000384, 0.05

# Which layer sits in which sensitivity group, as the recipes list them (the same for pruned
# and pruned-quantized). Layers in the v5.0 layout; "2.cv1" is model.2.cv1.conv.weight,
# "24.m.0" (Detect) is model.24.m.0.weight. The stem (model.0) is never pruned.
LAYER_GROUPS = {
    "yolov5s": {
        "none": "2.cv1 2.cv2 2.cv3 2.m.0.cv1 24.m.0 24.m.1 24.m.2",
        "low": "1 2.m.0.cv2 4.cv1 4.cv2 4.cv3 4.m.0.cv1 4.m.1.cv1 4.m.2.cv1 6.cv1 6.cv2 6.cv3 6.m.0.cv1 6.m.1.cv1 6.m.2.cv1 "
        "8.cv1 13.m.0.cv1 17.m.0.cv1",
        "mid": "3 4.m.0.cv2 4.m.1.cv2 4.m.2.cv2 5 6.m.0.cv2 6.m.1.cv2 6.m.2.cv2 9.cv1 9.cv2 9.cv3 9.m.0.cv1 10 13.cv1 13.cv2 "
        "13.cv3 14 17.cv1 17.cv3 17.m.0.cv2 20.cv1 20.m.0.cv1 23.cv1 23.m.0.cv1",
        "high": "7 8.cv2 9.m.0.cv2 13.m.0.cv2 17.cv2 18 20.cv2 20.cv3 20.m.0.cv2 21 23.cv2 23.cv3 23.m.0.cv2",
    },
    "yolov5l": {
        "none": "2.cv1 2.cv3 2.m.0.cv1 2.m.1.cv1 2.m.2.cv1 24.m.0 24.m.1 24.m.2",
        "low": "1 2.cv2 2.m.0.cv2 2.m.1.cv2 2.m.2.cv2 4.cv1 4.cv2 4.cv3 4.m.0.cv1 4.m.1.cv1 4.m.2.cv1 4.m.3.cv1 4.m.4.cv1 "
        "4.m.5.cv1 4.m.6.cv1 4.m.7.cv1 4.m.8.cv1 6.cv1 6.cv3 6.m.0.cv1 6.m.1.cv1 6.m.2.cv1 6.m.3.cv1 6.m.4.cv1 6.m.5.cv1 "
        "6.m.6.cv1 6.m.7.cv1 6.m.8.cv1 8.cv1 9.cv1 9.m.0.cv1 9.m.1.cv1 9.m.2.cv1 13.cv1 13.m.0.cv1 13.m.1.cv1 13.m.2.cv1 "
        "17.cv1 17.m.0.cv1 17.m.1.cv1 17.m.2.cv1 20.cv1 20.m.0.cv1 20.m.1.cv1 23.cv1 23.m.0.cv1 23.m.1.cv1 23.m.2.cv1",
        "mid": "3 4.m.0.cv2 4.m.1.cv2 4.m.2.cv2 4.m.3.cv2 4.m.4.cv2 4.m.5.cv2 4.m.6.cv2 4.m.7.cv2 4.m.8.cv2 5 6.cv2 6.m.0.cv2 "
        "6.m.1.cv2 6.m.2.cv2 6.m.3.cv2 6.m.4.cv2 6.m.5.cv2 6.m.6.cv2 6.m.7.cv2 6.m.8.cv2 8.cv2 9.cv2 9.cv3 10 13.cv2 13.cv3 "
        "13.m.0.cv2 13.m.1.cv2 13.m.2.cv2 14 17.cv2 17.cv3 17.m.1.cv2 17.m.2.cv2 20.cv2 20.cv3 20.m.2.cv1",
        "high": "7 9.m.0.cv2 9.m.1.cv2 9.m.2.cv2 17.m.0.cv2 18 20.m.0.cv2 20.m.1.cv2 20.m.2.cv2 21 23.cv2 23.cv3 23.m.0.cv2 "
        "23.m.1.cv2 23.m.2.cv2",
    },
}


def param_name(short: str) -> str:
    return f"model.{short}.weight" if short.startswith("24.") else f"model.{short}.conv.weight"


def layer_groups(reference: str) -> dict[str, str]:
    """v5.0 parameter name -> group, for yolov5s or yolov5l."""
    return {param_name(s): group for group, text in LAYER_GROUPS[reference].items() for s in text.split()}
