"""`validate` refuses what would waste GPU hours, each with a message a user can act on."""

import shutil

import pytest

from sparsify_worker.validate import ValidationError, validate

from .conftest import recipe


def test_a_good_dataset_and_recipe_pass(dataset):
    out = validate(recipe("yolov5s-pruned-quantized"), "yolov5s", None, dataset)
    assert out["ok"] and out["dataset"]["trainImages"] == 32 and out["dataset"]["nc"] == 3


def test_yolov5l_recipe_on_yolov5s_is_refused(dataset):
    with pytest.raises(ValidationError) as e:
        validate(recipe("yolov5l-pruned"), "yolov5s", None, dataset)
    msg = str(e.value)
    assert "written for yolov5l but the model is yolov5s" in msg
    assert "do not exist in yolov5s" in msg  # and it names the layers that are missing


def test_missing_label_dir_is_refused(dataset, tmp_path):
    broken = tmp_path / "ds"
    shutil.copytree(dataset, broken)
    shutil.rmtree(broken / "labels" / "val")
    with pytest.raises(ValidationError, match="the val labels folder is missing"):
        validate(recipe("yolov5s-pruned"), "yolov5s", None, broken)


def test_labels_beyond_nc_are_refused(dataset, tmp_path):
    broken = tmp_path / "ds"
    shutil.copytree(dataset, broken)
    first = sorted((broken / "labels" / "train").glob("*.txt"))[0]
    first.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValidationError, match=r"class ids \[7\] but data.yaml declares nc=3"):
        validate(recipe("yolov5s-pruned"), "yolov5s", None, broken)


def test_unparsable_recipe_is_refused(dataset):
    with pytest.raises(ValidationError, match="not valid YAML"):
        validate("modifiers: [unclosed\n  - !GMPruningModifier {", "yolov5s", None, dataset)


def test_recipe_naming_unknown_layers_is_refused(dataset):
    text = recipe("yolov5s-pruned").replace("model.9.cv1.conv.weight", "model.99.cv1.conv.weight")
    with pytest.raises(ValidationError, match="model.99.cv1.conv.weight"):
        validate(text, "yolov5s", None, dataset)
