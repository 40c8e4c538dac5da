"""`validate` refuses what would waste GPU hours, each with a message a user can act on:
the dataset, the starting weights (what they are vs what the spec says) and the recipe."""

import pickle
import shutil
from pathlib import Path

import pytest

from sparsify_worker.validate import ValidationError, validate
from tests.support.recipes import recipe

SHARED_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "weights" / "yolov5n-v7.0.pt"
needs_shared_weights = pytest.mark.skipif(
    not SHARED_WEIGHTS.exists(), reason=f"the shared COCO-pretrained YOLOv5n checkpoint is absent ({SHARED_WEIGHTS})"
)


def spec(arch="yolov5s", preset="pruned-quantized", **model) -> dict:
    return {"model": {"arch": arch, **model}, "recipe": {"preset": preset}}


def preset_text(s: dict):
    """What the worker does with a preset: render it for the resolved model."""
    from sparsify_worker.recipes import render

    return lambda model: render(model.arch, s["recipe"]["preset"], model.layout, s["recipe"].get("targetSparsity"))


def run(s: dict, dataset, weights=None, text=None):
    return validate(s, dataset, text or preset_text(s), weights)


def state_dict_file(tmp_path, arch, layout, nc=80) -> Path:
    import torch

    from sparsify_worker.model import build_model

    path = tmp_path / f"{arch}-{layout}.pt"
    torch.save(build_model(arch, nc, "SiLU", layout).state_dict(), path)
    return path


def test_a_good_dataset_and_recipe_pass(dataset):
    out = run(spec(), dataset)
    assert out["ok"] and out["dataset"]["trainImages"] == 32 and out["dataset"]["nc"] == 3
    assert out["model"] == {"arch": "yolov5s", "layout": "v5.0", "activation": "Hardswish", "nc": 3}  # the seed's model


@needs_shared_weights
def test_a_real_ultralytics_v7_checkpoint_sets_layout_and_activation(dataset):
    out = run(spec("yolov5n", "transfer-pruned-quantized", weights="s3://w/yolov5n.pt"), dataset, SHARED_WEIGHTS)
    assert out["model"] == {"arch": "yolov5n", "layout": "v7.0", "activation": "SiLU", "nc": 3}
    assert out["weights"]["source"] == "ultralytics" and out["weights"]["weightsClasses"] == 80
    assert out["weights"]["headReset"] is True  # 80 COCO classes -> the dataset's 3: only Detect's output convs restart


@needs_shared_weights
def test_a_checkpoint_of_another_model_is_refused_saying_what_it_is(dataset):
    with pytest.raises(ValidationError) as e:
        run(spec("yolov5s", "transfer-pruned", weights="s3://w/yolov5n.pt"), dataset, SHARED_WEIGHTS)
    msg = str(e.value)
    assert "is an Ultralytics checkpoint of yolov5n, v7.0 layout" in msg and "SiLU" in msg
    assert "but model.arch is yolov5s: set model.arch to yolov5n" in msg
    with pytest.raises(ValidationError, match="the activation must match the weights"):
        run(spec("yolov5n", "transfer-pruned", weights="s3://w/yolov5n.pt", activation="Hardswish"), dataset, SHARED_WEIGHTS)


def test_a_state_dict_is_recognised_by_its_shapes_and_the_seeds_preset_refused_on_it(dataset, tmp_path):
    v7s = state_dict_file(tmp_path, "yolov5s", "v7.0")
    out = run(spec("yolov5s", "transfer-pruned", weights="s3://w/s.pt"), dataset, v7s)
    assert out["model"]["layout"] == "v7.0" and out["weights"]["source"] == "state-dict"
    with pytest.raises(ValidationError, match="published for the v5.0 layout of yolov5s and yolov5l only"):
        run(spec("yolov5s", "pruned-quantized", weights="s3://w/s.pt"), dataset, v7s)
    with pytest.raises(ValidationError, match="model.layout is v5.0"):
        run(spec("yolov5s", "transfer-pruned", weights="s3://w/s.pt", layout="v5.0"), dataset, v7s)


def test_a_checkpoint_that_would_run_code_when_unpickled_is_refused(dataset, tmp_path):
    import os

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch /tmp/sparsify-pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, evil, pickle_module=pickle)
    with pytest.raises(ValidationError, match="refusing to load it"):
        run(spec("yolov5s", "transfer-pruned", weights="s3://w/evil.pt"), dataset, evil)
    assert not Path("/tmp/sparsify-pwned").exists()


def test_yolov5l_recipe_on_yolov5s_is_refused(dataset):
    with pytest.raises(ValidationError) as e:
        run(spec(), dataset, text=lambda m: recipe("yolov5l-pruned"))
    msg = str(e.value)
    assert "written for yolov5l but the model is yolov5s" in msg
    assert "do not exist in yolov5s" in msg  # and it names the layers that are missing


def test_unknown_recipe_variables_and_an_unscalable_recipe_are_refused(dataset):
    s = spec()
    s["recipe"]["variables"] = {"init_lr": 0.001, "init_lrr": 0.001}
    with pytest.raises(ValidationError, match="recipe.variables names init_lrr, which the recipe does not have"):
        run(s, dataset)
    no_epochs = recipe("yolov5s-pruned").replace("num_epochs: 240.0", "").replace("eval(num_epochs)", "240.0")
    with pytest.raises(ValidationError, match="training.epochs is set but the recipe has no num_epochs"):
        validate({**spec(), "training": {"epochs": 10}}, dataset, lambda m: no_epochs)


def test_missing_label_dir_is_refused(dataset, tmp_path):
    broken = tmp_path / "ds"
    shutil.copytree(dataset, broken)
    shutil.rmtree(broken / "labels" / "val")
    with pytest.raises(ValidationError, match="the val labels folder is missing"):
        run(spec(preset="pruned"), broken)


def test_labels_beyond_nc_are_refused(dataset, tmp_path):
    broken = tmp_path / "ds"
    shutil.copytree(dataset, broken)
    first = sorted((broken / "labels" / "train").glob("*.txt"))[0]
    first.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValidationError, match=r"class ids \[7\] but data.yaml declares nc=3"):
        run(spec(preset="pruned"), broken)


def test_unparsable_recipe_is_refused(dataset):
    with pytest.raises(ValidationError, match="not valid YAML"):
        run(spec(), dataset, text=lambda m: "modifiers: [unclosed\n  - !GMPruningModifier {")


def test_recipe_naming_unknown_layers_is_refused(dataset):
    text = recipe("yolov5s-pruned").replace("model.9.cv1.conv.weight", "model.99.cv1.conv.weight")
    with pytest.raises(ValidationError, match="model.99.cv1.conv.weight"):
        run(spec(), dataset, text=lambda m: text)
