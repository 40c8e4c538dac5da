"""What only a GPU shows: AMP training through pruning into QAT on CUDA, the export of that
model, and a real CUDA out-of-memory error ending in the half-batch resume. Skipped where
torch sees no CUDA device; `make test-gpu` runs it where one is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU: torch.cuda.is_available() is false here (run `make test-gpu` on a GPU node)",
    ),
]

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
IMG = 320


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from sparsify_worker.data import generate, split

    root = tmp_path_factory.mktemp("data")
    if (SHARED / "coco128").is_dir():
        return split(SHARED / "coco128", root, 96, 32)
    return generate(root, train=96, val=32, size=IMG)


def weights() -> Path | None:
    path = SHARED / "weights" / "yolov5n-v7.0.pt"
    return path if path.exists() else None


def test_amp_training_through_pruning_into_qat_on_one_gpu_then_its_export(dataset, tmp_path):
    from sparsify_worker.export import export
    from sparsify_worker.recipes import render, rescaled_variables
    from sparsify_worker.train import TrainConfig, train

    start = weights()
    text = render("yolov5n", "transfer-pruned-quantized" if start else "pruned-quantized", "v7.0" if start else None)
    if not start:  # without the shared weights: the seed's yolov5s recipe from scratch
        text = render("yolov5s", "pruned-quantized")
    result = train(
        TrainConfig(
            arch="yolov5n" if start else "yolov5s",
            data_dir=dataset,
            recipe=text,
            recipe_variables=rescaled_variables(text, 5),
            out_dir=tmp_path,
            batch_size=32,
            img_size=IMG,
            workers=4,
            weights=start,
            amp=True,
        )
    )
    assert result["quantized"] and result["sparsity"] > 0.3
    history = result["history"]
    assert [h["amp"] for h in history][:2] == [True, True] and history[-1]["amp"] is False  # AMP until QAT, fp32 after
    assert history[-1]["qat"] is True
    info = export(tmp_path / "best.pt", tmp_path / "onnx", img_size=IMG, opset=13)
    assert info["quantized"] and info["quantizedConvs"] > 50 and abs(info["sparsity"] - result["sparsity"]) < 0.03


def test_a_real_cuda_oom_exits_75_and_a_half_batch_attempt_resumes(dataset, s3_endpoint, tmp_path):
    """The operator's loop, by hand: each attempt runs `sparsify-worker supervise -- ... train`
    with the memory capped; exit 75 halves the batch, the next attempt resumes from S3."""
    from sparsify_worker.s3 import Store, client

    store = Store(client(s3_endpoint))
    for f in sorted(p for p in dataset.rglob("*") if p.is_file()):
        store.upload(f, f"s3://artifacts/gpu/data/{f.relative_to(dataset)}")
    from sparsify_operator.spec import normalized

    spec = normalized(
        {
            "model": {"arch": "yolov5s"},
            "recipe": {"preset": "pruned-quantized"},
            "dataset": {"uri": "s3://artifacts/gpu/data/"},
            "training": {"nodes": 1, "gpusPerNode": 1, "batchSize": 96, "epochs": 3, "imgSize": 640},
            "output": {"bucket": "artifacts", "prefix": "gpu"},
        }
    ).to_dict()  # what the operator gives a pod
    batch, attempts = 96, []
    while batch >= 1 and len(attempts) < 7:
        term = tmp_path / f"term-{batch}"
        spec["training"]["batchSize"] = batch  # each attempt's pod is given its own batch size in the spec
        env = {
            **os.environ,
            "SPARSIFY_SPEC": json.dumps(spec),
            "SPARSIFY_INPUTS": "{}",
            "SPARSIFY_NAMESPACE": "gpu",
            "SPARSIFY_NAME": "oom",
            "SPARSIFY_OUTPUT_URI": "s3://artifacts/gpu/oom",
            "AWS_ENDPOINT_URL_S3": s3_endpoint,
            "TERMINATION_MESSAGE_PATH": str(term),
            "SPARSIFY_WORKDIR": str(tmp_path / f"work-{batch}"),
            "GPU_MEMORY_CAP_GB": "3",
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sparsify_worker.cli",
                "supervise",
                "--",
                sys.executable,
                str(Path(__file__).with_name("capped_worker.py")),
                "train",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        summary = json.loads(term.read_text()) if term.exists() else {}
        attempts.append((batch, proc.returncode, summary))
        if proc.returncode != 75:
            break
        assert summary.get("reason") == "GPUOutOfMemory" and "CUDA out of memory" in summary["error"]
        batch //= 2
    codes = [code for _, code, _ in attempts]
    assert codes[0] == 75, attempts  # a real CUDA OOM at the spec's batch
    assert codes[-1] == 0, attempts[-1][2] or attempts
    final = attempts[-1][2]
    assert final["batchSize"] == batch and final["quantized"] is True
    print(f"GPU OOM ladder: {[(b, c) for b, c, _ in attempts]}; resumed={final['resumed']} startEpoch={final['startEpoch']}")
