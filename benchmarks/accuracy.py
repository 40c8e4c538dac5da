"""Accuracy of sparse transfer on real data, side by side with speed and size, in one run.

    .venv/bin/python benchmarks/accuracy.py [--seeds 0 1] [--epochs 20] [--curve 0.3 0.4 0.5 0.6]

The COCO-pretrained YOLOv5n (Ultralytics v7.0 checkpoint) and coco128 from ../shared/data,
split once: the first 96 images (by file name) train, the other 32 are the evaluation images of
every row. Rows, each with the project's own presets and training loop (what a SparsifyJob
runs), per seed:
  - pretrained dense, as is;
  - dense fine-tuned with the same schedule (transfer-baseline): the control;
  - pruned (transfer-pruned, FP32) and pruned-quantized (transfer-pruned-quantized, INT8).
Every row is exported to ONNX and the ONNX model is evaluated (the INT8 graph, not the
fake-quantized PyTorch model), with YOLOv5's val code on the same letterboxed images; the
PyTorch mAP the training loop measured is printed next to it. Then the retention curve of
pruned-quantized against sparsity, and DeepSparse / ONNX Runtime throughput of the dense and
sparse models in interleaved rounds. The weights saw these images in COCO training: absolute
mAP is optimistic, only the differences between rows mean something."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "weights" / "yolov5n-v7.0.pt"


def train_row(preset: str, data: Path, out: Path, args, seed: int, target: float | None) -> dict:
    from sparsify_worker.recipes import render, rescaled_variables
    from sparsify_worker.train import TrainConfig, train

    text = render("yolov5n", preset, "v7.0", target)
    variables = {**rescaled_variables(text, args.epochs), "init_lr": args.init_lr}
    if args.distillation is not None and "distillation_weight" in text:
        variables["distillation_weight"] = args.distillation
    t0 = time.monotonic()
    result = train(
        TrainConfig(
            arch="yolov5n",
            data_dir=data,
            recipe=text,
            recipe_variables=variables,
            out_dir=out,
            batch_size=args.batch,
            img_size=args.img,
            workers=2,
            weights=WEIGHTS,
            seed=seed,
        )
    )
    result["trainSeconds"] = round(time.monotonic() - t0)
    return result


def onnx_row(checkpoint: Path, out: Path, data: dict, args) -> dict:
    from sparsify_worker.export import export
    from sparsify_worker.onnx_eval import evaluate_onnx

    info = export(checkpoint, out, img_size=args.img, opset=13, check_batch=1)
    map50, map50_95 = evaluate_onnx(Path(info["onnxPath"]), data, args.img)
    return {
        "checkpoint": str(checkpoint),
        "onnx": info["onnxPath"],
        "map50": round(map50, 4),
        "map50_95": round(map50_95, 4),
        "sparsity": info["sparsity"],
        "int8": info["quantized"],
        "gzipMB": round(info["sizeGzipBytes"] / 1e6, 2),
        "rawMB": round(info["sizeBytes"] / 1e6, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--init-lr", type=float, default=0.001, help="the presets' 0.0032 is for full datasets; 96 images want less")
    p.add_argument("--target", type=float, default=None, help="targetSparsity of the pruned rows (default: each preset's)")
    p.add_argument("--distillation", type=float, default=None, help="override the presets' distillation_weight")
    p.add_argument("--curve", nargs="*", type=float, default=[0.3, 0.4, 0.5, 0.6], help="pruned-quantized sparsities for the curve")
    p.add_argument("--bench-batch", type=int, default=16)
    p.add_argument("--bench-imgs", nargs="+", type=int, default=[320, 640], help="throughput at these input sizes (same weights)")
    p.add_argument("--bench-seconds", type=int, default=5)
    p.add_argument("--bench-rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not (WEIGHTS.exists() and (SHARED / "coco128").is_dir()):
        print(f"skipped: needs the shared coco128 and yolov5n-v7.0.pt in {SHARED}")
        return 0
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    from sparsify_worker.benchmark import benchmark, cpu_info
    from sparsify_worker.data import load_data_yaml, split
    from sparsify_worker.export import dense_checkpoint
    from sparsify_worker.recipes import DEFAULT_TARGET_SPARSITY
    from sparsify_worker.weights import read_weights, resolve

    work = Path(tempfile.mkdtemp(prefix="accuracy-"))
    os.chdir(work)
    data_dir = split(SHARED / "coco128", work / "coco128", 96, 32)
    data = load_data_yaml(data_dir)
    weights = read_weights(WEIGHTS)
    spec = resolve({"arch": "yolov5n"}, data["nc"], weights)
    rows: list[dict] = [
        {
            "row": "pretrained dense, as is",
            "seed": None,
            **onnx_row(dense_checkpoint(spec, work / "pretrained.pt", weights), work / "onnx-pretrained", data, args),
        }
    ]
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    presets = [
        ("dense fine-tuned (control)", "transfer-baseline", None),
        ("pruned", "transfer-pruned", args.target),
        ("pruned-quantized", "transfer-pruned-quantized", args.target),
    ]
    for seed in args.seeds:
        for label, preset, target in presets:
            out = work / f"{preset}-{seed}"
            res = train_row(preset, data_dir, out, args, seed, target)
            rows.append(
                {
                    "row": label,
                    "seed": seed,
                    "torchMap50": res["bestMap50"],
                    "trainSeconds": res["trainSeconds"],
                    **onnx_row(out / "best.pt", work / f"onnx-{preset}-{seed}", data, args),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    curve: list[dict] = []
    for target in args.curve:
        if target == (args.target or DEFAULT_TARGET_SPARSITY["transfer-pruned-quantized"]):
            same = [r for r in rows if r["row"] == "pruned-quantized"]
            curve += [{"target": target, **r} for r in same[:1]]
            continue
        out = work / f"curve-{target}"
        res = train_row("transfer-pruned-quantized", data_dir, out, args, args.seeds[0], target)
        curve.append(
            {
                "target": target,
                "seed": args.seeds[0],
                "torchMap50": res["bestMap50"],
                **onnx_row(out / "best.pt", work / f"onnx-curve-{target}", data, args),
            }
        )
        print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
    # speed: the pretrained dense model vs the first seed's pruned and pruned-quantized, interleaved rounds
    from sparsify_worker.export import export

    speed = {}
    for img in args.bench_imgs:
        dense_onnx = export(Path(rows[0]["checkpoint"]), work / f"speed-{img}-dense", img_size=img, opset=13, check_batch=1)["onnxPath"]
        for label in ("pruned", "pruned-quantized"):
            model = next(r for r in rows if r["row"] == label)
            sparse_onnx = export(Path(model["checkpoint"]), work / f"speed-{img}-{label}", img_size=img, opset=13, check_batch=1)[
                "onnxPath"
            ]
            speed[f"{label} @ {img} px"] = benchmark(
                Path(sparse_onnx),
                ["deepsparse", "onnxruntime"],
                args.bench_batch,
                None,
                "sync",
                args.bench_seconds,
                args.bench_rounds,
                Path(dense_onnx),
            )
            print(
                json.dumps({"speed": label, "img": img, "speedup": speed[f"{label} @ {img} px"].get("speedup")}),
                file=sys.stderr,
                flush=True,
            )
    report(rows, curve, speed, args)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_info(), "rows": rows, "curve": curve, "speed": speed}, indent=1))
    return 0


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def report(rows: list[dict], curve: list[dict], speed: dict, args) -> None:
    from sparsify_worker.benchmark import cpu_info

    cpu = cpu_info()
    print(
        f"yolov5n (COCO-pretrained, v7.0 layout, SiLU), coco128 96 train / 32 eval, {args.img} px, {args.epochs} epochs, "
        f"batch {args.batch}, init_lr {args.init_lr}, seeds {args.seeds}; CPU {cpu['vendor']} {cpu['isa']} VNNI {cpu['vnni']}, "
        f"{cpu['cores']} cores"
    )
    print()
    print(
        "| row | ONNX mAP@0.5 | ONNX mAP@0.5:0.95 | PyTorch mAP@0.5 (train loop) | sparsity | INT8 | size MB gzip (raw) | "
        "retained vs control (mAP@0.5) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    control = statistics.mean([r["map50"] for r in rows if r["row"].startswith("dense fine-tuned")] or [float("nan")])
    for label in dict.fromkeys(r["row"] for r in rows):
        rs = [r for r in rows if r["row"] == label]
        torch_maps = [r["torchMap50"] for r in rs if "torchMap50" in r]
        m50 = statistics.mean([r["map50"] for r in rs])
        print(
            f"| {label} | {_mean([r['map50'] for r in rs])} | {_mean([r['map50_95'] for r in rs])} | "
            f"{_mean(torch_maps) if torch_maps else '-'} | {rs[0]['sparsity']:.1%} | {'yes' if rs[0]['int8'] else 'no'} | "
            f"{rs[0]['gzipMB']} ({rs[0]['rawMB']}) | {m50 / control:.1%} |"
        )
    print()
    print(f"Retention of pruned-quantized against sparsity (seed {args.seeds[0]}; ONNX INT8 evaluated):")
    print()
    print("| target sparsity | measured | ONNX mAP@0.5 | retained vs control |")
    print("|---|---|---|---|")
    for c in sorted(curve, key=lambda c: c["target"]):
        print(f"| {c['target']:.0%} | {c['sparsity']:.1%} | {c['map50']:.3f} | {c['map50'] / control:.1%} |")
    print()
    print(
        f"Throughput, batch {args.bench_batch}, {args.bench_seconds} s x {args.bench_rounds} interleaved rounds (median, range); "
        "the dense row is measured in the same rounds as each sparse one:"
    )
    print()
    print("| model | DeepSparse img/s | ONNX Runtime img/s | DS native |")
    print("|---|---|---|---|")
    for name, s in speed.items():
        for label, engines in ((f"dense (pretrained) @ {name.split(' @ ')[1]}", s["denseEngines"]), (name, s["engines"])):
            ds, ort = engines.get("deepsparse", {}), engines.get("onnxruntime", {})
            print(
                f"| {label} | {ds.get('imagesPerSecond')} ({ds.get('imagesPerSecondMin')}-{ds.get('imagesPerSecondMax')}) | "
                f"{ort.get('imagesPerSecond')} ({ort.get('imagesPerSecondMin')}-{ort.get('imagesPerSecondMax')}) | "
                f"{ds.get('nativeFraction')} |"
            )
    print()
    for name, s in speed.items():
        dense_ort = s["denseEngines"].get("onnxruntime", {}).get("imagesPerSecond")
        ds = s["engines"].get("deepsparse", {}).get("imagesPerSecond")
        ratio = f"{ds / dense_ort:.2f}x" if ds and dense_ort else "-"
        print(
            f"{name}: DeepSparse sparse vs the dense model's faster engine {s.get('speedup')}x per round "
            f"(range {s.get('speedupRange')}); vs ONNX Runtime dense {ratio}"
        )


if __name__ == "__main__":
    sys.exit(main())
