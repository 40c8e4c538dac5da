"""Inference speed and size of dense, pruned and pruned-quantized YOLOv5, measured side by side:
DeepSparse and ONNX Runtime on the same ONNX files, the same machine, one run.

    .venv/bin/python benchmarks/inference.py [--archs yolov5s yolov5l] [--batches 1 16 64] [--seconds 10]

The sparse models come from the project's own recipes, trained briefly on generated data
until they reach the recipe's final sparsity (and QAT for pruned-quantized). Their accuracy
means nothing; their speed and size depend only on the sparsity structure and precision, so
the speed-ups measured here are honest. Dense models are the same architecture untrained.
Prints one table and the ratios the seed reports (DeepSparse pruned-quantized vs dense)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))

SEED = {  # DeepSparse img/s on a 24-core c5.12xlarge, batch 64, 640 px; size MB
    ("yolov5s", "baseline"): (135.8, 24.8),
    ("yolov5s", "pruned"): (199.1, 8.4),
    ("yolov5s", "pruned-quantized"): (396.7, 3.3),
    ("yolov5l", "baseline"): (27.9, 154),
    ("yolov5l", "pruned"): (63.7, 32.8),
    ("yolov5l", "pruned-quantized"): (139.8, 12.7),
}


def make_checkpoint(arch: str, kind: str, data: Path, work: Path, activation: str) -> Path:
    """A checkpoint with the recipe's final structure: short training on generated data."""
    from sparsify_worker.export import dense_checkpoint
    from sparsify_worker.model import ModelSpec
    from sparsify_worker.recipes import render, rescaled_variables
    from sparsify_worker.train import TrainConfig, train

    out = work / f"{arch}-{kind}"
    text = render(arch, kind)
    if kind == "baseline":
        return dense_checkpoint(ModelSpec(arch, "v5.0", activation, 3), out / "best.pt")  # the same 3 classes as the sparse ones
    epochs = 3 if kind == "pruned" else 4
    train(
        TrainConfig(
            arch=arch,
            data_dir=data,
            recipe=text,
            recipe_variables=rescaled_variables(text, epochs),
            out_dir=out,
            batch_size=8,
            img_size=64,
            workers=0,
            activation=activation,
        )
    )
    return out / "best.pt"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--archs", nargs="+", default=["yolov5s", "yolov5l"])
    p.add_argument("--kinds", nargs="+", default=["baseline", "pruned", "pruned-quantized"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--activation", default="Hardswish", choices=["Hardswish", "SiLU"])
    p.add_argument("--opset", type=int, default=13, help="13, the default a SparsifyJob exports at")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args()
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

    from sparsify_worker.benchmark import cpu_info, run_engine
    from sparsify_worker.data import generate
    from sparsify_worker.export import export

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)
        data = generate(work / "data", train=16, val=4, size=64)
        opset = args.opset
        for arch in args.archs:
            for kind in args.kinds:
                t0 = time.monotonic()
                ckpt = make_checkpoint(arch, kind, data, work, args.activation)
                info = export(ckpt, work / f"onnx-{arch}-{kind}", img_size=args.img, opset=opset, check_batch=1)
                for batch in args.batches:
                    for engine in ("deepsparse", "onnxruntime"):
                        r = run_engine(Path(info["onnxPath"]), engine, batch, None, "sync", args.seconds)
                        rows.append(
                            {
                                "arch": arch,
                                "kind": kind,
                                "batch": batch,
                                "engine": engine,
                                **r,
                                "sizeMB": info["sizeBytes"] / 1e6,
                                "gzipMB": info["sizeGzipBytes"] / 1e6,
                                "sparsity": info["sparsity"],
                                "int8": info["quantized"],
                            }
                        )
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                print(f"# {arch} {kind}: model ready and measured in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    report(rows, args)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_info(), "rows": rows}, indent=1))


def report(rows: list[dict], args) -> None:
    from sparsify_worker.benchmark import cpu_info

    cpu = cpu_info()
    print(
        f"CPU: {cpu['vendor']} {cpu['isa']}, AVX-512 {cpu['avx512']}, VNNI {cpu['vnni']}, {cpu['cores']} cores; "
        f"{args.img}px, sync, {args.seconds}s per measurement, activation {args.activation}"
    )
    print()
    print("| model | recipe | sparsity | INT8 | size MB (gzip) | batch | DeepSparse img/s | ONNX Runtime img/s | DS native |")
    print("|---|---|---|---|---|---|---|---|---|")
    by = {(r["arch"], r["kind"], r["batch"], r["engine"]): r for r in rows}
    for (arch, kind, batch, engine), r in by.items():
        if engine != "deepsparse":
            continue
        o = by.get((arch, kind, batch, "onnxruntime"), {})
        ds_ips = r.get("imagesPerSecond", "err")
        ort_ips = o.get("imagesPerSecond", "err")
        print(
            f"| {arch} | {kind} | {r['sparsity']:.1%} | {'yes' if r['int8'] else 'no'} | {r['sizeMB']:.1f} ({r['gzipMB']:.1f}) | "
            f"{batch} | {ds_ips} | {ort_ips} | {r.get('nativeFraction', '-')} |"
        )
    print()
    for arch in args.archs:
        for batch in args.batches:
            pq = by.get((arch, "pruned-quantized", batch, "deepsparse"), {}).get("imagesPerSecond")
            dense_ds = by.get((arch, "baseline", batch, "deepsparse"), {}).get("imagesPerSecond")
            dense_ort = by.get((arch, "baseline", batch, "onnxruntime"), {}).get("imagesPerSecond")
            pruned = by.get((arch, "pruned", batch, "deepsparse"), {}).get("imagesPerSecond")
            parts = []
            if pq and dense_ort:
                parts.append(f"DeepSparse pruned-quantized / ONNX Runtime dense = {pq / dense_ort:.2f}x")
            if pq and dense_ds:
                parts.append(f"DeepSparse pruned-quantized / DeepSparse dense = {pq / dense_ds:.2f}x")
            if pruned and dense_ds:
                parts.append(f"DeepSparse pruned / dense = {pruned / dense_ds:.2f}x")
            if parts:
                seed = SEED[(arch, "pruned-quantized")][0] / SEED[(arch, "baseline")][0]
                print(f"{arch} batch {batch}: " + "; ".join(parts) + f" (seed: {seed:.1f}x)")


if __name__ == "__main__":
    main()
