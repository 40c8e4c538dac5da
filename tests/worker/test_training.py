"""Training with recipes on CPU with generated data: pruning reaches its target, a killed run
resumes with masks intact, prune+QAT exports to INT8 ONNX that DeepSparse and ONNX Runtime
run in agreement with PyTorch, and torchrun with 2 gloo ranks gives the same sparsity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsify_worker.recipes import rescaled_variables
from sparsify_worker.train import TrainConfig, load_checkpoint, train
from tests.support.recipes import recipe, weighted_target

from .conftest import IMG

pytestmark = pytest.mark.worker


def config(dataset, out, name, epochs, **kw) -> TrainConfig:
    text = recipe(name)
    return TrainConfig(
        arch="yolov5s",
        data_dir=dataset,
        recipe=text,
        recipe_variables=rescaled_variables(text, epochs),
        out_dir=out,
        batch_size=16,
        img_size=IMG,
        workers=0,
        **kw,
    )


def test_pruning_recipe_reaches_its_target_sparsity(dataset, tmp_path):
    result = train(config(dataset, tmp_path, "yolov5s-pruned", 3))
    target = weighted_target(recipe("yolov5s-pruned"))
    assert abs(result["sparsity"] - target) <= 0.01, (result["sparsity"], target)
    assert result["epochs"] == 3 and not result["quantized"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def resumed_run(dataset, tmp_path_factory):
    """prune + QAT over 4 epochs (QAT from epoch 3), killed after epoch 2, the last one before
    QAT (the seed's OOM case), then resumed: the structure changes right at the resume."""
    out = tmp_path_factory.mktemp("pq")

    def kill_after_second_epoch(epoch, last, best):
        if epoch == 2:
            raise Killed()

    with pytest.raises(Killed):
        train(config(dataset, out, "yolov5s-pruned-quantized", 4, on_checkpoint=kill_after_second_epoch))
    at_kill = load_checkpoint(out / "last.pt")
    result = train(config(dataset, out, "yolov5s-pruned-quantized", 4, resume_from=out / "last.pt"))
    return out, at_kill, result


def test_killed_run_resumes_at_the_next_epoch_with_masks_intact(resumed_run):
    out, at_kill, result = resumed_run
    assert at_kill["epoch"] == 2 and not at_kill["quantized"] and result["startEpoch"] == 3
    assert [h["epoch"] for h in result["history"]] == [3]
    assert result["quantized"] is True and result["history"][-1]["qat"] is True
    final = load_checkpoint(out / "last.pt")
    pruned_at_kill = {k: v.eq(0) for k, v in at_kill["model"].items() if v.dim() == 4 and not k.startswith("model.0.")}
    assert pruned_at_kill
    weights_now = {k.replace(".module.", "."): v for k, v in final["model"].items()}
    kept = 0
    for name, mask in pruned_at_kill.items():
        now = weights_now.get(name)
        if now is None:
            continue
        assert bool(now[mask].eq(0).all()), f"{name}: a pruned weight came back after resume"
        kept += 1
    assert kept >= len(pruned_at_kill) * 0.9
    assert abs(result["sparsity"] - weighted_target(recipe("yolov5s-pruned-quantized"))) <= 0.01


def test_prune_qat_exports_int8_onnx_that_both_engines_run_like_pytorch(resumed_run, tmp_path):
    import numpy as np
    import onnxruntime as ort
    import torch
    from deepsparse import compile_model

    from sparsify_worker.export import export
    from sparsify_worker.train import restore_model

    out, _, result = resumed_run
    info = export(out / "best.pt", tmp_path, img_size=IMG, opset=13)
    assert info["quantized"] and info["quantizedConvs"] > 50
    assert abs(info["sparsity"] - result["sparsity"]) < 0.02
    assert info["sizeGzipBytes"] < info["sizeBytes"] < 10_000_000
    x = np.random.default_rng(0).random((1, 3, IMG, IMG), dtype=np.float32)
    model, _ = restore_model(load_checkpoint(out / "best.pt"))
    model.eval()
    model.model[-1].export = True
    with torch.no_grad():
        want = model(torch.from_numpy(x))[0].numpy()
    ort_out = ort.InferenceSession(info["onnxPath"], providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    engine = compile_model(info["onnxPath"], batch_size=1)
    ds_out = engine.run([x])[0]
    assert engine.fraction_of_supported_ops > 0
    for got in (ort_out, ds_out):
        # probabilities (objectness, classes) within 0.08; boxes within 8% of the image size
        assert float(np.abs(got[..., 4:] - want[..., 4:]).mean()) < 0.08
        assert float(np.abs(got[..., :4] - want[..., :4]).mean()) / IMG < 0.08


DDP_SCRIPT = r"""
import json, os, sys, hashlib
from pathlib import Path
from sparsify_worker.recipes import render, rescaled_variables
from sparsify_worker.train import TrainConfig, train
import torch
text = render("yolov5s", "pruned-quantized")
out = Path(sys.argv[2])
res = train(TrainConfig(arch="yolov5s", data_dir=Path(sys.argv[1]), recipe=text, recipe_variables=rescaled_variables(text, 4),
                        out_dir=out, batch_size=16, img_size=128, workers=0))
(out / f"result-{res['rank']}.json").write_text(json.dumps({"rank": res["rank"], "digest": res["weightsDigest"], "sparsity": res["sparsity"],
                                                             "perEpoch": res["rankDigests"], "quantized": res["quantized"]}))
"""


def test_torchrun_two_gloo_ranks_train_with_the_recipe(dataset, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nnodes=1", "--nproc_per_node=2", str(script), str(dataset), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "out" / "last.pt")
    assert abs(ckpt["sparsity"] - weighted_target(recipe("yolov5s-pruned-quantized"))) <= 0.01
    assert ckpt["epoch"] == 3 and ckpt["batch_size"] == 16 and ckpt["quantized"]
    ranks = [json.loads((tmp_path / "out" / f"result-{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # parameters identical across ranks
    assert ranks[0]["sparsity"] == ranks[1]["sparsity"] == pytest.approx(ckpt["sparsity"], abs=1e-4)
    # after every epoch (while pruning, once pruned, after QAT started) both ranks hold the same
    # weights, observers and masks; the run checks this itself and would have stopped otherwise
    a, b = (sorted(ranks, key=lambda r: r["rank"])[i]["perEpoch"] for i in (0, 1))
    same = ("epoch", "weights", "masks", "qat")
    assert [{k: e[k] for k in same} for e in a] == [{k: e[k] for k in same} for e in b] and [e["epoch"] for e in a] == [0, 1, 2, 3]
    assert [e["qat"] for e in a] == [False, False, False, True]
    assert len({e["order"] for e in a}) == 4  # the sampler shuffles anew every epoch (set_epoch)
    assert [e["ddpWrappers"] for e in a] == [1, 1, 1, 1]  # QAT's re-wrap left no second wrapper (and its hooks) behind


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PRETRAINED = SHARED / "weights" / "yolov5n-v7.0.pt"
needs_shared_data = pytest.mark.skipif(
    not (PRETRAINED.exists() and (SHARED / "coco128").is_dir()),
    reason=f"the shared coco128 and COCO-pretrained YOLOv5n are absent ({SHARED})",
)


@needs_shared_data
def test_sparse_transfer_from_the_real_pretrained_yolov5n_on_real_images_reaches_its_sparsity(tmp_path):
    """Ultralytics v7.0 checkpoint -> transfer-pruned-quantized on coco128 images: the starting
    weights' accuracy is measured first, pruning reaches the recipe's target, QAT runs, and the
    distillation teacher (the dense start) is used when the recipe turns it on."""
    from sparsify_worker.data import split
    from sparsify_worker.recipes import render

    data = split(SHARED / "coco128", tmp_path / "coco", 32, 16)
    text = render("yolov5n", "transfer-pruned-quantized", "v7.0", 0.5)
    result = train(
        TrainConfig(
            arch="yolov5n",
            data_dir=data,
            recipe=text,
            recipe_variables={**rescaled_variables(text, 4), "init_lr": 0.001, "distillation_weight": 1.0},
            out_dir=tmp_path / "out",
            batch_size=16,
            img_size=256,
            workers=0,
            weights=PRETRAINED,
        )
    )
    assert result["model"] == {"arch": "yolov5n", "layout": "v7.0", "activation": "SiLU", "nc": 80}
    assert result["startMap50"] > 0.2  # the real COCO-pretrained model, before any training
    assert result["quantized"] and abs(result["sparsity"] - weighted_target(text, "yolov5n", "v7.0")) <= 0.02
    assert result["bestMap50"] > 0.05
    ckpt = load_checkpoint(tmp_path / "out" / "best.pt")
    assert (ckpt["layout"], ckpt["activation"]) == ("v7.0", "SiLU") and ckpt["start_map50"] == pytest.approx(result["startMap50"], abs=1e-4)


@needs_shared_data
def test_transfer_to_new_classes_resets_only_the_detect_head_and_distills_the_boxes(dataset, tmp_path):
    from sparsify_worker.recipes import render

    text = render("yolov5n", "transfer-pruned", "v7.0", 0.3)
    result = train(
        TrainConfig(
            arch="yolov5n",
            data_dir=dataset,
            recipe=text,
            recipe_variables={**rescaled_variables(text, 2), "distillation_weight": 1.0},
            out_dir=tmp_path,
            batch_size=16,
            img_size=IMG,
            workers=0,
            weights=PRETRAINED,
        )
    )
    assert result["model"]["nc"] == 3 and result["startMap50"] is None  # a new head has no accuracy to compare
    assert result["epochs"] == 2 and result["sparsity"] > 0.25
