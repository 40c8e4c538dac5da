"""Preset recipes: the seed's six follow the published recipes (hyperparameters, warm-up and
the layer-to-group assignment), the transfer presets fit every arch and layout and reach
their target sparsity, and every preset loads in SparseML and rescales."""

import pytest

from sparsify_worker.model import ARCHS
from sparsify_worker.published import LAYER_GROUPS, layer_groups
from sparsify_worker.recipes import (
    RecipeError,
    assign_groups,
    parse_recipe_yaml,
    prunable_params,
    recipe_params,
    recipe_target_arch,
    render,
    rescaled_variables,
    variables,
)
from tests.support.recipes import recipe, weighted_target

SEED = [f"{a}-{k}" for a in ("yolov5s", "yolov5l") for k in ("baseline", "pruned", "pruned-quantized")]
TRANSFER = [
    (a, layout, k)
    for layout, archs in ARCHS.items()
    for a in archs
    for k in ("transfer-baseline", "transfer-pruned", "transfer-pruned-quantized")
]


def groups_of(text: str) -> dict[str, str]:
    """parameter -> the recipe variable naming its final sparsity (sparsity_none, ...)."""
    return {
        p: m["final_sparsity"].removeprefix("eval(sparsity_").removesuffix(")")
        for m in parse_recipe_yaml(text)["pruning_modifiers"]
        for p in m["params"]
    }


@pytest.mark.worker  # builds every model it checks
@pytest.mark.parametrize("name", SEED)
def test_seed_preset_loads_and_names_only_parameters_of_its_model(name):
    from sparseml.pytorch.optim import ScheduledModifierManager

    from sparsify_worker.model import build_model

    text = recipe(name)
    arch = name.split("-")[0]
    assert recipe_target_arch(text) == arch
    manager = ScheduledModifierManager.from_yaml(text)
    assert manager.max_epochs == variables(text)["num_epochs"]
    names = {n for n, _ in build_model(arch, 3).named_parameters()}
    assert set(recipe_params(text)) <= names


@pytest.mark.worker  # builds every model it checks
@pytest.mark.parametrize("name", ["yolov5s-pruned", "yolov5s-pruned-quantized", "yolov5l-pruned", "yolov5l-pruned-quantized"])
def test_seed_presets_put_every_layer_in_its_published_group(name):
    arch = name.split("-")[0]
    published = layer_groups(arch)
    prunable = {n for n, _ in prunable_params(arch, "v5.0")}
    assert set(published) == prunable  # every layer but the stem, each in exactly one group
    assert sum(len(t.split()) for t in LAYER_GROUPS[arch].values()) == len(prunable) == {"yolov5s": 61, "yolov5l": 109}[arch]
    assert groups_of(recipe(name)) == published
    v = variables(recipe(name))
    expected = {
        ("yolov5s", False): (0.5, 0.6, 0.725, 0.8),
        ("yolov5s", True): (0.4, 0.5, 0.65, 0.75),
        ("yolov5l", False): (0.6, 0.75, 0.85, 0.9),
        ("yolov5l", True): (0.5, 0.65, 0.77, 0.85),
    }[(arch, "quantized" in name)]
    assert tuple(v[f"sparsity_{g}"] for g in ("none", "low", "mid", "high")) == expected


def test_seed_presets_follow_the_published_warm_up_weights_from_0_biases_from_0_1():
    doc = parse_recipe_yaml(recipe("yolov5s-pruned"))
    warmups = [m for m in doc["training_modifiers"] if m["__modifier__"] == "LearningRateFunctionModifier" and m["lr_func"] == "linear"]
    v = variables(recipe("yolov5s-pruned"))
    assert sorted((m["param_groups"], m["init_lr"]) for m in warmups) == [
        ([0, 1], "eval(weights_warmup_lr)"),
        ([2], "eval(biases_warmup_lr)"),
    ]
    assert (v["weights_warmup_lr"], v["biases_warmup_lr"], v["warmup_epochs"], v["init_lr"]) == (0.0, 0.1, 3.0, 0.01)
    assert (v["num_epochs"], v["pruning_start_epoch"], v["pruning_end_epoch"]) == (240.0, 4.0, 100.0)


@pytest.mark.worker  # builds every model it checks
@pytest.mark.parametrize("arch,layout,kind", TRANSFER)
def test_transfer_presets_fit_every_arch_and_layout(arch, layout, kind):
    from sparseml.pytorch.optim import ScheduledModifierManager

    from sparsify_worker.model import build_model

    text = render(arch, kind, layout)
    ScheduledModifierManager.from_yaml(text)
    names = {n for n, _ in build_model(arch, 3, "SiLU", layout).named_parameters()}
    assert set(recipe_params(text)) <= names
    v = variables(text)
    if kind == "transfer-baseline":
        assert not recipe_params(text)
        return
    assert v["pruning_start_epoch"] == 0.0  # pruning from the first epoch
    assert set(groups_of(text)) == {n for n, _ in prunable_params(arch, layout)}
    assert abs(weighted_target(text, arch, layout) - v["target_sparsity"]) < 0.02
    if kind.endswith("quantized"):
        assert v["pruning_end_epoch"] < v["qat_start_epoch"] < v["num_epochs"]


def test_v7_layers_take_the_published_group_of_the_layer_in_the_same_role():
    names = [n for n, _ in prunable_params("yolov5n", "v7.0")]
    groups = {p: g for g, ps in assign_groups("yolov5n", "v7.0", names).items() for p in ps}
    assert groups["model.9.cv2.conv.weight"] == "high"  # SPPF (v7.0 model.9) = SPP (v5.0 model.8)
    assert groups["model.8.m.0.cv2.conv.weight"] == "high"  # last backbone C3 (v7.0 model.8 = v5.0 model.9)
    assert groups["model.24.m.0.weight"] == "none"  # the Detect convs are pruned least
    # yolov5x has more bottlenecks than any published model: the extra ones take their last sibling's group
    x = {p: g for g, ps in assign_groups("yolov5x", "v7.0", [n for n, _ in prunable_params("yolov5x", "v7.0")]).items() for p in ps}
    assert x["model.6.m.11.cv2.conv.weight"] == x["model.6.m.8.cv2.conv.weight"] == "mid"


def test_target_sparsity_moves_every_group_and_is_refused_where_it_does_not_apply():
    low, high = (variables(render("yolov5n", "transfer-pruned", "v7.0", t)) for t in (0.3, 0.7))
    assert all(low[f"sparsity_{g}"] < high[f"sparsity_{g}"] for g in ("none", "low", "mid", "high"))
    assert low["sparsity_none"] < low["sparsity_high"]
    with pytest.raises(RecipeError, match="applies to the transfer-pruned presets"):
        render("yolov5s", "pruned", None, 0.5)


def test_the_seeds_presets_exist_only_for_the_v5_layout_of_s_and_l():
    with pytest.raises(RecipeError, match="start from your weights with transfer-pruned-quantized"):
        render("yolov5s", "pruned-quantized", "v7.0")
    with pytest.raises(RecipeError, match="yolov5n does not exist in the v5.0 layout"):
        render("yolov5n", "pruned", "v5.0")
    with pytest.raises(RecipeError, match="written for yolov5l but the model is yolov5s"):
        render("yolov5s", "yolov5l-pruned")


@pytest.mark.worker  # builds every model it checks
def test_recipes_are_not_interchangeable_between_model_versions():
    from sparsify_worker.model import build_model

    small = {n for n, _ in build_model("yolov5s", 3).named_parameters()}
    missing = [p for p in recipe_params(recipe("yolov5l-pruned")) if p not in small]
    assert missing  # yolov5l has more bottlenecks per C3: e.g. model.2.m.1...


def test_epochs_override_keeps_the_schedules_shape():
    v = rescaled_variables(recipe("yolov5s-pruned-quantized"), 6)
    assert v["num_epochs"] == 6.0
    assert 0 < v["warmup_epochs"] < v["pruning_end_epoch"]
    assert v["pruning_start_epoch"] < v["pruning_end_epoch"] < v["qat_start_epoch"] <= 5.0
    long = rescaled_variables(recipe("yolov5s-pruned"), 480)
    assert long["pruning_end_epoch"] == pytest.approx(200.0) and long["warmup_epochs"] == pytest.approx(6.0)
    short = rescaled_variables(render("yolov5n", "transfer-pruned-quantized", "v7.0"), 12)
    assert short["pruning_start_epoch"] == 0.0 and short["pruning_end_epoch"] < short["qat_start_epoch"] == 11.0
