"""Results documents and Markdown reports (pure: dicts in, text out)."""

from __future__ import annotations

import datetime as dt

SEED = {  # the seed's table: COCO mAP@0.5, size on disk (MB), DeepSparse img/s (c5.12xlarge, batch 64)
    "yolov5s-baseline": (0.556, 24.8, 135.8), "yolov5s-pruned": (0.534, 8.4, 199.1), "yolov5s-pruned-quantized": (0.525, 3.3, 396.7),
    "yolov5l-baseline": (0.654, 154, 27.9), "yolov5l-pruned": (0.643, 32.8, 63.7), "yolov5l-pruned-quantized": (0.623, 12.7, 139.8),
}


def _mb(n) -> str:
    return f"{n / 1e6:.1f} MB" if isinstance(n, (int, float)) else "-"


def _recipe(spec: dict) -> str:
    p = spec["recipe"].get("preset")
    if not p:
        return "custom"
    return p if p.startswith("yolov5") else f"{spec['model']['arch']}-{p}"


def benchmark_markdown(spec: dict, inputs: dict, result: dict) -> str:
    export = inputs.get("export", {})
    lines = [f"# Benchmark: {_recipe(spec)}", "",
             f"CPU: {result['cpu'].get('vendor')} {result['cpu'].get('isa')}, VNNI {result['cpu'].get('vnni')}, "
             f"{result['cpu'].get('cores')} cores; batch {result['batchSize']}, {result['scenario']}, {result['seconds']} s per engine.", "",
             "| engine | img/s | mean latency (ms) | natively run |", "|---|---|---|---|"]
    for engine, r in result["engines"].items():
        if "error" in r:
            lines.append(f"| {engine} | failed: {r['error'][:120]} | | |")
        else:
            native = f"{r['nativeFraction']:.0%}" if "nativeFraction" in r else "-"
            lines.append(f"| {engine} | {r['imagesPerSecond']:.1f} | {r['latencyMs']:.1f} | {native} |")
    if "speedupVsOnnxRuntime" in result:
        lines += ["", f"DeepSparse / ONNX Runtime on this model: **{result['speedupVsOnnxRuntime']:.2f}x**."]
    dense = result.get("dense")
    if dense:
        lines += ["", f"Dense reference ({dense['source']}), same node and settings:", "",
                  "| engine | dense img/s | sparse img/s | sparse / dense |", "|---|---|---|---|"]
        for engine, r in dense["engines"].items():
            s = result["engines"].get(engine, {})
            if "imagesPerSecond" in r and "imagesPerSecond" in s and r["imagesPerSecond"]:
                lines.append(f"| {engine} | {r['imagesPerSecond']:.1f} | {s['imagesPerSecond']:.1f} | "
                             f"{s['imagesPerSecond'] / r['imagesPerSecond']:.2f}x |")
        ort_dense = dense["engines"].get("onnxruntime", {}).get("imagesPerSecond")
        ds_sparse = result["engines"].get("deepsparse", {}).get("imagesPerSecond")
        if ort_dense and ds_sparse:
            lines += ["", f"DeepSparse on the sparse model vs ONNX Runtime on the dense one: **{ds_sparse / ort_dense:.2f}x**; "
                      f"size {_mb(dense['sizeGzipBytes'])} -> {_mb(export.get('sizeGzipBytes'))} (gzip)."]
    if result.get("plot"):
        lines += ["", "![accuracy vs throughput](accuracy-vs-throughput.png)"]
    lines += ["", f"Model: {_mb(export.get('sizeBytes'))} raw, {_mb(export.get('sizeGzipBytes'))} gzip, "
              f"sparsity {export.get('sparsity', 0):.1%}, {'INT8' if export.get('quantized') else 'FP32'}."]
    return "\n".join(lines) + "\n"


def accuracy_vs_throughput_plot(spec: dict, inputs: dict, result: dict, path):
    """mAP@0.5 against img/s: the sparse model (each engine) and its dense reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparse_map = inputs.get("train", {}).get("bestMap50")
    dense = result.get("dense") or {}
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    markers = {"deepsparse": "o", "onnxruntime": "s"}
    for label, engines, acc, color in (("sparse", result["engines"], sparse_map, "tab:green"),
                                       ("dense", dense.get("engines", {}), dense.get("map50"), "tab:gray")):
        for engine, r in engines.items():
            if "imagesPerSecond" not in r:
                continue
            if acc is None:  # accuracy unknown (untrained dense reference): a line at its speed
                ax.axvline(r["imagesPerSecond"], color=color, linestyle="--" if engine == "deepsparse" else ":",
                           label=f"{label} {engine} (accuracy n/a)")
            else:
                ax.scatter([r["imagesPerSecond"]], [acc], color=color, marker=markers.get(engine, "x"), s=60,
                           label=f"{label} {engine}")
    ax.set_xlabel(f"images/s (batch {result['batchSize']}, {result['scenario']})")
    ax.set_ylabel("mAP@0.5 (validation)")
    ax.set_title(f"{_recipe(spec)}: accuracy vs throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def results_document(spec: dict, inputs: dict, output_uri: str, name: str) -> dict:
    train, export, bench = inputs.get("train", {}), inputs.get("export", {}), inputs.get("benchmark", {})
    engines = bench.get("engines", {})
    return {
        "name": name, "model": spec["model"]["arch"], "activation": spec["model"].get("activation", "Hardswish"),
        "recipe": _recipe(spec), "publishedAt": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "map50": train.get("bestMap50"), "epochs": train.get("epochs"), "sparsity": export.get("sparsity"),
        "quantized": export.get("quantized"), "sizeBytes": export.get("sizeBytes"), "sizeGzipBytes": export.get("sizeGzipBytes"),
        "throughput": {e: r.get("imagesPerSecond") for e, r in engines.items() if isinstance(r, dict)},
        "deepsparseNativeFraction": bench.get("nativeFraction"), "cpu": bench.get("cpu"),
        "artifacts": {"onnx": export.get("onnx"), "checkpoint": train.get("checkpoint"), "lastCheckpoint": train.get("lastCheckpoint"),
                      "benchmark": f"{output_uri}/benchmark.json"},
        "seed": dict(zip(("map50", "sizeMB", "deepsparseImagesPerSecond"), SEED.get(_recipe(spec), (None, None, None)))),
    }


def full_markdown(doc: dict) -> str:
    tp = doc.get("throughput") or {}
    seed = doc.get("seed") or {}
    row = (f"| {doc['model']} | {doc['recipe']} | {doc.get('map50') if doc.get('map50') is not None else '-'} | "
           f"{(doc.get('sparsity') or 0):.1%} | {_mb(doc.get('sizeGzipBytes'))} | "
           f"{tp.get('deepsparse', '-')} | {tp.get('onnxruntime', '-')} |")
    lines = [f"# SparsifyJob {doc['name']}: {doc['recipe']}", "",
             "| model | recipe | mAP@0.5 | sparsity | size (gzip) | DeepSparse img/s | ONNX Runtime img/s |",
             "|---|---|---|---|---|---|---|", row, ""]
    if seed.get("map50") is not None:
        lines += [f"The seed's numbers for this recipe (COCO, 24-core c5.12xlarge, batch 64): mAP@0.5 {seed['map50']}, "
                  f"{seed['sizeMB']} MB, {seed['deepsparseImagesPerSecond']} img/s.", ""]
    lines += ["Artifacts:", ""] + [f"- {k}: {v}" for k, v in (doc.get("artifacts") or {}).items() if v]
    return "\n".join(lines) + "\n"
