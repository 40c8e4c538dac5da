"""Preset recipes, rendered for the model they will train (pure text out).

Two families:
- the seed's: `baseline` (from scratch, 300 epochs), `pruned`, `pruned-quantized`: the
  published yolov5s/yolov5l recipes for the v5.0 layout, with their hyperparameters, warm-up
  and layer-to-group assignment (published.py);
- sparse transfer from dense weights (`model.weights`), any arch and layout:
  `transfer-baseline` (dense fine-tune: the control), `transfer-pruned`,
  `transfer-pruned-quantized`: the published transfer recipe's LR schedule, gradual magnitude
  pruning from the first epoch to 60% of the run, masks fixed after that, QAT in the last 10%.
  Per-layer targets keep the published sensitivity groups (layers mapped by role onto the
  v7.0 layout and onto n/m/x), scaled so the whole model reaches `targetSparsity`.

Schedules are recipe variables, so an epochs override rescales them keeping their shape.
`sparsify-worker recipe --arch yolov5n --layout v7.0 --preset transfer-pruned-quantized`
prints what a run would use."""

from __future__ import annotations

import re

import yaml

from .model import ARCHS, SCALES, default_layout
from .published import (
    BASELINE_EPOCHS,
    BIASES_WARMUP_LR,
    FINAL_LR,
    GROUPS,
    INIT_LR,
    INIT_SPARSITY,
    PRUNE_END,
    PRUNE_START,
    SEED_RECIPES,
    TRANSFER_BIASES_WARMUP_LR,
    TRANSFER_EPOCHS,
    TRANSFER_FINAL_LR,
    TRANSFER_INIT_LR,
    TRANSFER_WARMUP,
    WARMUP_EPOCHS,
    WEIGHTS_WARMUP_LR,
    layer_groups,
)

KINDS = ("baseline", "pruned", "pruned-quantized", "transfer-baseline", "transfer-pruned", "transfer-pruned-quantized")
SEED_KINDS = ("pruned", "pruned-quantized")  # published for the v5.0 layout of yolov5s/yolov5l only
TRANSFER_KINDS = ("transfer-baseline", "transfer-pruned", "transfer-pruned-quantized")
# Whole-model sparsity of the transfer presets when the spec leaves recipe.targetSparsity unset:
# chosen from the accuracy curve in benchmarks/README.md (retention vs sparsity on coco128).
DEFAULT_TARGET_SPARSITY = {"transfer-pruned": 0.6, "transfer-pruned-quantized": 0.5}
MAX_LAYER_SPARSITY = 0.95
# Weight of the output distillation from the dense starting weights (a variable train.py reads;
# SparseML ignores it). Off by default: on coco128 it did not move mAP beyond run-to-run noise
# (benchmarks/README.md) and costs a teacher forward pass per step; recipe.variables turns it on.
DISTILLATION_WEIGHT = 0.0
TRANSFER_PRUNE_END, TRANSFER_QAT_EPOCHS = 0.6, 0.1  # fractions of the run


class RecipeError(ValueError):
    pass


def split_preset(preset: str) -> tuple[str | None, str]:
    """'yolov5s-pruned' -> ('yolov5s', 'pruned'); 'pruned' -> (None, 'pruned')."""
    m = re.fullmatch(r"(yolov5[nsmlx])-(.+)", preset)
    arch, kind = (m.group(1), m.group(2)) if m else (None, preset)
    if kind not in KINDS:
        raise RecipeError(f"unknown recipe preset {preset!r}; known: {', '.join(KINDS)} (optionally prefixed with the arch)")
    return arch, kind


def preset_name(arch: str, preset: str) -> str:
    return f"{arch}-{split_preset(preset)[1]}"


# ---- reading recipes ---------------------------------------------------------------------


class _TagTolerantLoader(yaml.SafeLoader):
    """Reads SparseML recipes as plain YAML: modifier tags (!GMPruningModifier) become dicts."""


_TagTolerantLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: (
        {"__modifier__": suffix, **loader.construct_mapping(node, deep=True)}
        if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)
    ),
)


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


# ---- which layer is pruned how much ------------------------------------------------------


def _layer_order(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def _as_v5(name: str, layout: str) -> str:
    """The v5.0 layer in the same role: v7.0 swapped SPP(F) and the last backbone C3 (8 <-> 9)."""
    if layout == "v7.0":
        return re.sub(r"^model\.(8|9)\.", lambda m: f"model.{17 - int(m.group(1))}.", name)
    return name


def assign_groups(arch: str, layout: str, params: list[str]) -> dict[str, list[str]]:
    """Each prunable layer's sensitivity group, from the published assignment of the model of
    the same depth (yolov5s for n/s, yolov5l for m/l/x). A bottleneck beyond the published
    model's count takes the group of its last published sibling."""
    table = layer_groups("yolov5s" if SCALES[arch][0] < 0.5 else "yolov5l")
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name in params:
        ref = _as_v5(name, layout)
        while ref not in table:
            m = re.search(r"\.m\.(\d+)\.", ref)
            if not m or m.group(1) == "0":
                raise RecipeError(f"no published sensitivity group for {name} ({arch}, {layout} layout)")
            ref = ref[: m.start()] + f".m.{int(m.group(1)) - 1}." + ref[m.end() :]
        groups[table[ref]].append(name)
    return {g: sorted(v, key=_layer_order) for g, v in groups.items()}


def prunable_params(arch: str, layout: str) -> list[tuple[str, int]]:
    from .model import build_model, prunable

    model = build_model(arch, 80, "SiLU", layout)
    return [(n, p.numel()) for n, p in model.named_parameters() if prunable(n, p)]


def scaled_levels(groups: dict[str, list[str]], sizes: dict[str, int], shape: tuple[float, ...], target: float) -> tuple[float, ...]:
    """Group sparsities proportional to `shape` (the published levels), scaled so the
    size-weighted sparsity of the whole model is `target` (no layer above 95%)."""
    total = sum(sizes[n] for names in groups.values() for n in names)

    def overall(a: float) -> float:
        return sum(min(MAX_LAYER_SPARSITY, a * s) * sum(sizes[n] for n in groups[g]) for g, s in zip(GROUPS, shape)) / total

    lo, hi = 0.0, MAX_LAYER_SPARSITY / min(shape)
    if overall(hi) < target - 1e-6:
        raise RecipeError(f"targetSparsity {target} cannot be reached with at most {MAX_LAYER_SPARSITY} per layer")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if overall(mid) < target else (lo, mid)
    return tuple(round(min(MAX_LAYER_SPARSITY, hi * s), 4) for s in shape)


# ---- rendering ---------------------------------------------------------------------------


def render(arch: str, preset: str, layout: str | None = None, target_sparsity: float | None = None) -> str:
    """The preset's recipe for this model."""
    named_arch, kind = split_preset(preset)
    layout = layout or default_layout(arch)
    if named_arch and named_arch != arch:
        raise RecipeError(
            f"the preset {preset} is written for {named_arch} but the model is {arch}; recipes are not "
            f"interchangeable between model versions (use {arch}-{kind} or just {kind})"
        )
    if arch not in ARCHS.get(layout, ()):
        raise RecipeError(f"{arch} does not exist in the {layout} layout")
    if kind in SEED_KINDS and (layout != "v5.0" or (arch, kind) not in SEED_RECIPES):
        raise RecipeError(
            f"the seed's {kind} preset is published for the v5.0 layout of yolov5s and yolov5l only; for "
            f"{arch} in the {layout} layout start from your weights with transfer-{kind}"
        )
    if target_sparsity is not None and kind not in ("transfer-pruned", "transfer-pruned-quantized"):
        raise RecipeError(f"targetSparsity applies to the transfer-pruned presets only, not to {kind}")
    name = f"{arch}-{kind}"
    head = [
        f"# {name}: rendered by sparsify-worker for {arch} in the {layout} layout (see recipes.py for the sources).",
        "version: 1.1.0",
        f"target_arch: {arch}",
        f"target_layout: '{layout}'",
    ]
    quantized = kind.endswith("pruned-quantized")
    pruned = kind.endswith("pruned") or quantized
    if kind in TRANSFER_KINDS:
        epochs = float(TRANSFER_EPOCHS)
        lr = (TRANSFER_INIT_LR, TRANSFER_FINAL_LR, TRANSFER_BIASES_WARMUP_LR, TRANSFER_WARMUP)
        qat_start = epochs - round(epochs * TRANSFER_QAT_EPOCHS) if quantized else None
        prune_window = (0.0, round(epochs * TRANSFER_PRUNE_END, 4), 0.5)
        # Unstructured even for INT8: blocks of 4 (the seed's pruned-quantized masks, what the
        # INT8 sparse kernels like best) cost yolov5n on coco128 0.20 mAP@0.5 vs 0.43 at 50%.
        mask = "unstructured"
        cosine_end = "num_epochs"
    else:
        pub = SEED_RECIPES.get((arch, kind))
        epochs = float(pub.epochs if pub else BASELINE_EPOCHS)
        lr = (INIT_LR, FINAL_LR, BIASES_WARMUP_LR, WARMUP_EPOCHS)
        qat_start = float(pub.qat_start) if pub and pub.qat_start is not None else None
        prune_window = (PRUNE_START, PRUNE_END, pub.update_frequency) if pub else None
        mask = "[1, 4]" if pub and pub.mask == "block4" else "unstructured"
        cosine_end = "qat_start_epoch" if quantized else "num_epochs"  # then the fixed QAT LR (see README)
    init_lr, final_lr, biases_warmup_lr, warmup = lr
    head += [
        f"num_epochs: {epochs}",
        f"warmup_epochs: {warmup}",
        f"init_lr: {init_lr}",
        f"final_lr: {final_lr}",
        f"weights_warmup_lr: {WEIGHTS_WARMUP_LR}",
        f"biases_warmup_lr: {biases_warmup_lr}",
    ]
    groups: dict[str, list[str]] = {}
    if pruned:
        params = prunable_params(arch, layout)
        groups = assign_groups(arch, layout, [n for n, _ in params])
        if kind in TRANSFER_KINDS:
            target = target_sparsity if target_sparsity is not None else DEFAULT_TARGET_SPARSITY[kind]
            shape = SEED_RECIPES[("yolov5s" if SCALES[arch][0] < 0.5 else "yolov5l", "pruned-quantized")].sparsity
            levels = scaled_levels(groups, dict(params), shape, target)
            head += [f"target_sparsity: {target}", f"distillation_weight: {DISTILLATION_WEIGHT}"]
        else:
            levels = SEED_RECIPES[(arch, kind)].sparsity
        start, end, freq = prune_window
        head += [f"pruning_start_epoch: {start}", f"pruning_end_epoch: {end}", f"pruning_update_frequency: {freq}"]
        head += [f"sparsity_{g}: {s}" for g, s in zip(GROUPS, levels)]
    if quantized:
        head.append(f"qat_start_epoch: {qat_start}")
        if kind in SEED_KINDS:
            head.append(f"qat_lr: {SEED_RECIPES[(arch, kind)].qat_lr}")
    body = [
        "",
        "training_modifiers:",
        "  - !EpochRangeModifier",
        "    start_epoch: 0.0",
        "    end_epoch: eval(num_epochs)",
        # optimizer param groups: 0 batch-norm weights, 1 conv weights, 2 biases (train.py)
        "  - !LearningRateFunctionModifier",
        "    start_epoch: 0.0",
        "    end_epoch: eval(warmup_epochs)",
        "    lr_func: linear",
        "    init_lr: eval(weights_warmup_lr)",
        "    final_lr: eval(init_lr)",
        "    param_groups: [0, 1]",
        "  - !LearningRateFunctionModifier",
        "    start_epoch: 0.0",
        "    end_epoch: eval(warmup_epochs)",
        "    lr_func: linear",
        "    init_lr: eval(biases_warmup_lr)",
        "    final_lr: eval(init_lr)",
        "    param_groups: [2]",
        "  - !LearningRateFunctionModifier",
        "    start_epoch: eval(warmup_epochs)",
        f"    end_epoch: eval({cosine_end})",
        "    lr_func: cosine",
        "    init_lr: eval(init_lr)",
        "    final_lr: eval(final_lr)",
    ]
    if pruned:
        body += ["", "pruning_modifiers:"]
        for group, params in groups.items():
            if not params:
                continue
            body += ["  - !GMPruningModifier", "    params:"] + [f"      - {p}" for p in params]
            body += [
                f"    init_sparsity: {INIT_SPARSITY}",
                f"    final_sparsity: eval(sparsity_{group})",
                "    start_epoch: eval(pruning_start_epoch)",
                "    end_epoch: eval(pruning_end_epoch)",
                "    update_frequency: eval(pruning_update_frequency)",
                f"    mask_type: {mask}",
                "    inter_func: cubic",
            ]
    if quantized:
        body += [
            "",
            "quantization_modifiers:",
            "  - !QuantizationModifier",
            "    start_epoch: eval(qat_start_epoch)",
            "    submodules:",
        ] + [f"      - model.{i}" for i in range(24)]
        if kind in SEED_KINDS:
            body += ["  - !SetLearningRateModifier", "    start_epoch: eval(qat_start_epoch)", "    learning_rate: eval(qat_lr)"]
    return "\n".join(head + body) + "\n"
