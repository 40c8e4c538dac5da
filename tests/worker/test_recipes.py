"""The six preset recipes: they load in SparseML, fit only their own model, and rescale."""

import pytest

from sparsify_worker.recipes import RECIPE_DIR, recipe_params, recipe_target_arch, rescaled_variables, variables

from .conftest import recipe

PRESETS = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def test_the_six_presets_of_the_seed_exist():
    assert PRESETS == sorted(f"{a}-{k}" for a in ("yolov5s", "yolov5l") for k in ("baseline", "pruned", "pruned-quantized"))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_names_only_parameters_of_its_model(name):
    from sparseml.pytorch.optim import ScheduledModifierManager

    from sparsify_worker.model import build_model

    text = recipe(name)
    arch = name.split("-")[0]
    assert recipe_target_arch(text) == arch
    manager = ScheduledModifierManager.from_yaml(text)
    assert manager.max_epochs == variables(text)["num_epochs"]
    names = {n for n, _ in build_model(arch, 3).named_parameters()}
    assert set(recipe_params(text)) <= names
    if "pruned" in name:
        assert "model.24.m.0.weight" in recipe_params(text)  # Detect convs: in the least-pruned group


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
