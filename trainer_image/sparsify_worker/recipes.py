"""The six preset recipes (yolov5s/yolov5l x baseline, pruned, pruned-quantized), written in
this project from the published hyperparameters (see docs/stack-notes summary in the README):
LR warm-up then cosine, gradual magnitude pruning in four sensitivity groups, QAT at the end.

Schedules are recipe variables, so an epochs override rescales them keeping their shape.
`python -m sparsify_worker.recipes` regenerates the YAML files from the model layouts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

RECIPE_DIR = Path(__file__).parent / "recipes"
MODEL_DIR = Path(__file__).parent / "models"
ARCHS = ("yolov5s", "yolov5l")
KINDS = ("baseline", "pruned", "pruned-quantized")
GROUPS = ("none", "low", "mid", "high")  # sensitivity: "none" is pruned least


@dataclass(frozen=True)
class Published:
    epochs: int
    update_frequency: float
    sparsity: tuple[float, float, float, float]  # none / low / mid / high
    mask: str
    qat_start: float | None = None
    qat_lr: float | None = None


PUBLISHED = {
    ("yolov5s", "pruned"): Published(240, 1.0, (0.50, 0.60, 0.725, 0.80), "unstructured"),
    ("yolov5s", "pruned-quantized"): Published(302, 0.2, (0.40, 0.50, 0.65, 0.75), "block4", 300, 2e-6),
    ("yolov5l", "pruned"): Published(180, 1.0, (0.60, 0.75, 0.85, 0.90), "unstructured"),
    ("yolov5l", "pruned-quantized"): Published(122, 0.5, (0.50, 0.65, 0.77, 0.85), "block4", 120, 2e-5),
}
BASELINE_EPOCHS = 300
WARMUP_EPOCHS = 3.0
PRUNE_START, PRUNE_END = 4.0, 100.0
INIT_LR, FINAL_LR = 0.01, 0.002


class RecipeError(ValueError):
    pass


def preset_name(arch: str, preset: str) -> str:
    return preset if preset.startswith("yolov5") else f"{arch}-{preset}"


def preset_path(name: str) -> Path:
    path = RECIPE_DIR / f"{name}.yaml"
    if not path.exists():
        raise RecipeError(f"unknown recipe preset {name!r}; known: {', '.join(sorted(p.stem for p in RECIPE_DIR.glob('*.yaml')))}")
    return path


class _TagTolerantLoader(yaml.SafeLoader):
    """Reads SparseML recipes as plain YAML: modifier tags (!GMPruningModifier) become dicts."""


_TagTolerantLoader.add_multi_constructor(
    "!", lambda loader, suffix, node: {"__modifier__": suffix, **loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.MappingNode) else loader.construct_scalar(node))


def parse_recipe_yaml(text: str) -> dict:
    try:
        doc = yaml.load(text, Loader=_TagTolerantLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise RecipeError(f"the recipe is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise RecipeError("the recipe must be a YAML mapping of variables and modifier lists")
    return doc


def recipe_target_arch(text: str) -> str | None:
    """Presets say which model they are written for in a `target_arch` variable."""
    try:
        return parse_recipe_yaml(text).get("target_arch")
    except RecipeError:
        return None


def recipe_params(text: str) -> list[str]:
    """Every parameter name the recipe's modifiers target."""
    names: list[str] = []
    for value in parse_recipe_yaml(text).values():
        if isinstance(value, list):
            for mod in value:
                if isinstance(mod, dict) and isinstance(mod.get("params"), list):
                    names += [p for p in mod["params"] if isinstance(p, str)]
    return names


def variables(text: str) -> dict:
    return {k: v for k, v in parse_recipe_yaml(text).items() if not isinstance(v, (list, dict))}


def rescaled_variables(text: str, epochs: int) -> dict:
    """Recipe variables for `epochs` that keep the schedule's shape: warm-up, the pruning
    window and the fine-tune tail scale with the run; QAT keeps at least one epoch at the end."""
    v = variables(text)
    if "num_epochs" not in v:
        raise RecipeError("the recipe has no num_epochs variable, so its schedule cannot be rescaled")
    original = float(v["num_epochs"])
    scale = epochs / original
    out = {"num_epochs": float(epochs)}
    for key in ("warmup_epochs", "pruning_start_epoch", "pruning_end_epoch", "pruning_update_frequency"):
        if key in v:
            out[key] = round(float(v[key]) * scale, 6)
    if "qat_start_epoch" in v:
        qat_epochs = max(1.0, round((original - float(v["qat_start_epoch"])) * scale))
        out["qat_start_epoch"] = float(epochs) - qat_epochs
        if "pruning_end_epoch" in out:  # pruning must be finished (masks fixed) before QAT
            out["pruning_end_epoch"] = min(out["pruning_end_epoch"], out["qat_start_epoch"] - qat_epochs * 0.5)
            out["pruning_start_epoch"] = min(out.get("pruning_start_epoch", 0.0), out["pruning_end_epoch"] / 2)
    if "pruning_update_frequency" in out:
        out["pruning_update_frequency"] = max(out["pruning_update_frequency"], 1e-3)
    return out


# ---- generation (run by hand when the layouts or published numbers change) ----------------


def _prunable(arch: str) -> list[tuple[str, int]]:
    from .model import build_model

    model = build_model(arch, num_classes=80)
    return [(n, p.numel()) for n, p in model.named_parameters() if p.dim() == 4 and not n.startswith("model.0.")]


def sensitivity_groups(params: list[tuple[str, int]]) -> dict[str, list[str]]:
    """Four groups by size: the larger a layer, the more redundant and the more it is pruned.
    The Detect output convs (model.24.m.*) always sit in the least-pruned group."""
    detect = [n for n, _ in params if n.startswith("model.24.")]
    rest = sorted(((n, c) for n, c in params if not n.startswith("model.24.")), key=lambda x: (x[1], x[0]))
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    groups["none"] += detect
    for i, (name, _) in enumerate(rest):
        groups[GROUPS[min(3, i * 4 // len(rest))]].append(name)
    return {g: sorted(v, key=_layer_order) for g, v in groups.items()}


def _layer_order(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def render(arch: str, kind: str) -> str:
    name = f"{arch}-{kind}"
    lines = [f"# {name}: written for {arch} (v5.0 layout); generated by `python -m sparsify_worker.recipes`.", "version: 1.1.0",
             f"target_arch: {arch}"]
    if kind == "baseline":
        lines += [f"num_epochs: {float(BASELINE_EPOCHS)}", f"warmup_epochs: {WARMUP_EPOCHS}", f"init_lr: {INIT_LR}", f"final_lr: {FINAL_LR}"]
    else:
        pub = PUBLISHED[(arch, kind)]
        lines += [f"num_epochs: {float(pub.epochs)}", f"warmup_epochs: {WARMUP_EPOCHS}", f"init_lr: {INIT_LR}", f"final_lr: {FINAL_LR}",
                  f"pruning_start_epoch: {PRUNE_START}", f"pruning_end_epoch: {PRUNE_END}",
                  f"pruning_update_frequency: {pub.update_frequency}"]
        lines += [f"sparsity_{g}: {s}" for g, s in zip(GROUPS, pub.sparsity)]
        if pub.qat_start is not None:
            lines += [f"qat_start_epoch: {float(pub.qat_start)}", f"qat_lr: {pub.qat_lr}"]
    lines += ["", "training_modifiers:",
              "  - !EpochRangeModifier", "    start_epoch: 0.0", "    end_epoch: eval(num_epochs)",
              "  - !LearningRateFunctionModifier", "    start_epoch: 0.0", "    end_epoch: eval(warmup_epochs)",
              "    lr_func: linear", "    init_lr: 0.0001", "    final_lr: eval(init_lr)",
              "  - !LearningRateFunctionModifier", "    start_epoch: eval(warmup_epochs)",
              "    end_epoch: eval(qat_start_epoch)" if kind == "pruned-quantized" else "    end_epoch: eval(num_epochs)",
              "    lr_func: cosine", "    init_lr: eval(init_lr)", "    final_lr: eval(final_lr)"]
    if kind != "baseline":
        pub = PUBLISHED[(arch, kind)]
        mask = "[1, 4]" if pub.mask == "block4" else "unstructured"
        lines += ["", "pruning_modifiers:"]
        for group, params in sensitivity_groups(_prunable(arch)).items():
            lines += ["  - !GMPruningModifier", "    params:"] + [f"      - {p}" for p in params]
            lines += ["    init_sparsity: 0.05", f"    final_sparsity: eval(sparsity_{group})",
                      "    start_epoch: eval(pruning_start_epoch)", "    end_epoch: eval(pruning_end_epoch)",
                      "    update_frequency: eval(pruning_update_frequency)", f"    mask_type: {mask}", "    inter_func: cubic"]
        if pub.qat_start is not None:
            lines += ["", "quantization_modifiers:", "  - !QuantizationModifier", "    start_epoch: eval(qat_start_epoch)",
                      "    submodules:"] + [f"      - model.{i}" for i in range(24)]
            lines += ["  - !SetLearningRateModifier", "    start_epoch: eval(qat_start_epoch)", "    learning_rate: eval(qat_lr)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    RECIPE_DIR.mkdir(exist_ok=True)
    for arch in ARCHS:
        for kind in KINDS:
            (RECIPE_DIR / f"{arch}-{kind}.yaml").write_text(render(arch, kind))
            print(f"wrote {arch}-{kind}.yaml")


if __name__ == "__main__":
    main()
