"""Step time of the YOLOv5 training loop with the SparseML recipe manager (pruning masks, then
QAT) against the same loop without it: same process, same data, same model, side by side.

    .venv/bin/python benchmarks/training_overhead.py [--arch yolov5s] [--img 160] [--batch 8] [--steps 20]

Prints mean/median step times and the ratios. CPU here; the ratio is what carries over."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="yolov5s")
    p.add_argument("--img", type=int, default=160)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()

    from sparsify_worker import shims, yolo_env

    yolo_env.prepare()
    import torch
    from sparseml.pytorch.optim import ScheduledModifierManager
    from yolov5.utils.loss import ComputeLoss

    from sparsify_worker.model import build_model, hyperparameters
    from sparsify_worker.recipes import render, rescaled_variables

    shims.apply()
    torch.manual_seed(0)
    imgs = torch.rand(args.batch, 3, args.img, args.img)
    targets = torch.tensor([[i, i % 3, 0.5, 0.5, 0.3, 0.3] for i in range(args.batch)], dtype=torch.float32)

    def loop(mode: str) -> list[float]:
        model = build_model(args.arch, 3)
        model.hyp = hyperparameters()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if mode != "plain":
            text = render(args.arch, "pruned-quantized")
            # epochs chosen so that the measured steps sit in the wanted phase of the schedule
            v = rescaled_variables(text, 4)
            manager = ScheduledModifierManager.from_yaml(text, recipe_variables=v)
            start = 0.0 if mode == "pruning" else float(v["qat_start_epoch"])
            opt = manager.modify(model, opt, steps_per_epoch=args.steps * 2, epoch=start)
        loss_fn = ComputeLoss(model)
        model.train()
        times = []
        for i in range(args.steps + 3):
            t = time.perf_counter()
            loss, _ = loss_fn(model(imgs), targets)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if i >= 3:  # warm-up steps excluded
                times.append(time.perf_counter() - t)
        return times

    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.chdir(tmp)
        results = {mode: loop(mode) for mode in ("plain", "pruning", "qat")}
    base = statistics.median(results["plain"])
    print(
        f"{args.arch}, batch {args.batch}, {args.img}px, {args.steps} steps each, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'loop':10s} {'mean ms':>9s} {'median ms':>10s} {'vs plain':>9s}")
    for mode, ts in results.items():
        med = statistics.median(ts)
        print(f"{mode:10s} {1000 * statistics.mean(ts):9.1f} {1000 * med:10.1f} {med / base:8.2f}x")


if __name__ == "__main__":
    main()
