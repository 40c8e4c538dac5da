"""Results documents and Markdown reports (pure: dicts in, text out)."""

from __future__ import annotations

import datetime as dt

SEED = {  # the seed's table: COCO mAP@0.5, size on disk (MB), DeepSparse img/s (c5.12xlarge, batch 64)
    "yolov5s-baseline": (0.556, 24.8, 135.8),
    "yolov5s-pruned": (0.534, 8.4, 199.1),
    "yolov5s-pruned-quantized": (0.525, 3.3, 396.7),
    "yolov5l-baseline": (0.654, 154, 27.9),
    "yolov5l-pruned": (0.643, 32.8, 63.7),
    "yolov5l-pruned-quantized": (0.623, 12.7, 139.8),
}


def _mb(n) -> str:
    return f"{n / 1e6:.1f} MB" if isinstance(n, (int, float)) else "-"


def _range(r: dict) -> str:
    lo, hi = r.get("imagesPerSecondMin"), r.get("imagesPerSecondMax")
    return f" ({lo:.1f}-{hi:.1f})" if lo is not None and hi is not None and r.get("rounds", 1) > 1 else ""


def benchmark_markdown(recipe: str, inputs: dict, result: dict) -> str:
    export = inputs.get("export", {})
    lines = [
        f"# Benchmark: {recipe}",
        "",
        f"CPU: {result['cpu'].get('vendor')} {result['cpu'].get('isa')}, VNNI {result['cpu'].get('vnni')}, "
        f"{result['cpu'].get('cores')} cores; batch {result['batchSize']}, {result['scenario']}, {result['seconds']} s per engine "
        f"and round, {result.get('rounds', 1)} interleaved round(s): medians, with the range over rounds.",
        "",
        "| engine | img/s (range) | mean latency (ms) | natively run |",
        "|---|---|---|---|",
    ]
    for engine, r in result["engines"].items():
        if "error" in r:
            lines.append(f"| {engine} | failed: {r['error'][:120]} | | |")
        else:
            native = f"{r['nativeFraction']:.0%}" if "nativeFraction" in r else "-"
            lines.append(f"| {engine} | {r['imagesPerSecond']:.1f}{_range(r)} | {r['latencyMs']:.1f} | {native} |")
    if "speedupVsOnnxRuntime" in result:
        lines += ["", f"DeepSparse / ONNX Runtime on this model: **{result['speedupVsOnnxRuntime']:.2f}x**."]
    dense = result.get("dense")
    if dense:
        lines += [
            "",
            f"Dense reference ({dense['source']}), same node and settings:",
            "",
            "| engine | dense img/s | sparse img/s | sparse / dense |",
            "|---|---|---|---|",
        ]
        for engine, r in dense["engines"].items():
            s = result["engines"].get(engine, {})
            if "imagesPerSecond" in r and "imagesPerSecond" in s and r["imagesPerSecond"]:
                lines.append(
                    f"| {engine} | {r['imagesPerSecond']:.1f}{_range(r)} | {s['imagesPerSecond']:.1f}{_range(s)} | "
                    f"{s['imagesPerSecond'] / r['imagesPerSecond']:.2f}x |"
                )
        ort_dense = dense["engines"].get("onnxruntime", {}).get("imagesPerSecond")
        ds_sparse = result["engines"].get("deepsparse", {}).get("imagesPerSecond")
        if result.get("speedup"):
            lo, hi = result.get("speedupRange") or (result["speedup"], result["speedup"])
            lines += [
                "",
                f"DeepSparse on the sparse model vs the dense model's faster engine, per round: **{result['speedup']:.2f}x** "
                f"(median; rounds {lo:.2f}-{hi:.2f}x).",
            ]
        if ort_dense and ds_sparse:
            lines += [
                "",
                f"DeepSparse on the sparse model vs ONNX Runtime on the dense one: **{ds_sparse / ort_dense:.2f}x**; "
                f"size {_mb(dense['sizeGzipBytes'])} -> {_mb(export.get('sizeGzipBytes'))} (gzip).",
            ]
    if result.get("plot"):
        lines += ["", "![accuracy vs throughput](accuracy-vs-throughput.png)"]
    lines += [
        "",
        f"Model: {_mb(export.get('sizeBytes'))} raw, {_mb(export.get('sizeGzipBytes'))} gzip, "
        f"sparsity {export.get('sparsity', 0):.1%}, {'INT8' if export.get('quantized') else 'FP32'}.",
    ]
    return "\n".join(lines) + "\n"


def accuracy_vs_throughput_plot(recipe: str, inputs: dict, result: dict, path):
    """mAP@0.5 against img/s: the sparse model (each engine) and its dense reference, both at
    their measured accuracy on the run's validation images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparse_map = inputs.get("train", {}).get("bestMap50")
    dense = result.get("dense") or {}
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    markers = {"deepsparse": "o", "onnxruntime": "s"}
    known = [m for m in (sparse_map, dense.get("map50")) if m is not None]
    for label, engines, acc, color in (
        ("sparse", result["engines"], sparse_map, "tab:green"),
        ("dense", dense.get("engines", {}), dense.get("map50"), "tab:gray"),
    ):
        for engine, r in engines.items():
            if "imagesPerSecond" not in r:
                continue
            if acc is None:  # accuracy unknown (untrained dense reference): a line at its speed
                ax.axvline(
                    r["imagesPerSecond"],
                    color=color,
                    linestyle="--" if engine == "deepsparse" else ":",
                    label=f"{label} {engine} (accuracy not measured)",
                )
            else:
                ax.scatter(
                    [r["imagesPerSecond"]], [acc], color=color, marker=markers.get(engine, "x"), s=60, label=f"{label} {engine}: {acc:.3f}"
                )
    if known:  # an axis around the measured accuracies, from 0 so drops are seen at their size
        ax.set_ylim(0, max(0.05, max(known) * 1.2))
    ax.set_xlim(left=0)
    ax.set_xlabel(f"images/s (batch {result['batchSize']}, {result['scenario']})")
    ax.set_ylabel("mAP@0.5 (validation)")
    ax.set_title(f"{recipe}: accuracy vs throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def results_document(spec: dict, recipe: str, inputs: dict, output_uri: str, name: str) -> dict:
    train, export, bench = inputs.get("train", {}), inputs.get("export", {}), inputs.get("benchmark", {})
    engines = bench.get("engines", {})
    throughput = {e: r.get("imagesPerSecond") for e, r in engines.items() if isinstance(r, dict)}
    dense = bench.get("dense") or {}
    dense_tp = {e: v for e, v in (dense.get("imagesPerSecond") or {}).items() if v}
    model = train.get("model") or export.get("model") or {}
    doc = {
        "name": name,
        "model": spec["model"]["arch"],
        "layout": model.get("layout"),
        "activation": model.get("activation"),
        "recipe": recipe,
        "publishedAt": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "map50": train.get("bestMap50"),
        "epochs": train.get("epochs"),
        "sparsity": export.get("sparsity"),
        "quantized": export.get("quantized"),
        "sizeBytes": export.get("sizeBytes"),
        "sizeGzipBytes": export.get("sizeGzipBytes"),
        "throughput": throughput,
        "deepsparseNativeFraction": bench.get("nativeFraction"),
        "cpu": bench.get("cpu"),
        "dense": {"map50": dense.get("map50"), "sizeGzipBytes": dense.get("sizeGzipBytes"), "throughput": dense_tp} if dense else None,
        "speedup": bench.get("speedup")
        or (round(throughput["deepsparse"] / max(dense_tp.values()), 2) if dense_tp and throughput.get("deepsparse") else None),
        "speedupRange": bench.get("speedupRange"),
        "accuracyRetention": (
            round(train["bestMap50"] / dense["map50"], 3) if dense.get("map50") and train.get("bestMap50") is not None else None
        ),
        "verdicts": bench.get("verdicts") or [],
        "artifacts": {
            "onnx": export.get("onnx"),
            "checkpoint": train.get("checkpoint"),
            "lastCheckpoint": train.get("lastCheckpoint"),
            "recipe": train.get("recipeUri"),
            "benchmark": f"{output_uri}/benchmark.json",
        },
        "seed": dict(zip(("map50", "sizeMB", "deepsparseImagesPerSecond"), SEED.get(recipe, (None, None, None)))),
    }
    return doc


def _cell(v, fmt="{}") -> str:
    return "-" if v is None else fmt.format(v)


def full_markdown(doc: dict) -> str:
    """The run's result as the seed's table: the dense model and the sparse one, side by side."""
    tp = doc.get("throughput") or {}
    seed = doc.get("seed") or {}
    dense = doc.get("dense") or {}
    dtp = dense.get("throughput") or {}
    what = " ".join(x for x in (doc["model"], doc.get("layout") or "", doc.get("activation") or "") if x)
    lines = [
        f"# SparsifyJob {doc['name']}: {doc['recipe']}",
        "",
        f"Model: {what}, {doc.get('epochs') or '-'} epochs.",
        "",
        "| model | mAP@0.5 | sparsity | size (gzip) | DeepSparse img/s | ONNX Runtime img/s |",
        "|---|---|---|---|---|---|",
    ]
    if dense:
        lines.append(
            f"| dense ({'starting weights' if dense.get('map50') is not None else 'untrained reference'}) | "
            f"{_cell(dense.get('map50'), '{:.3f}')} | 0.0% | {_mb(dense.get('sizeGzipBytes'))} | "
            f"{_cell(dtp.get('deepsparse'))} | {_cell(dtp.get('onnxruntime'))} |"
        )
    lines.append(
        f"| {doc['recipe']} | {_cell(doc.get('map50'), '{:.3f}')} | {(doc.get('sparsity') or 0):.1%} | "
        f"{_mb(doc.get('sizeGzipBytes'))} | {_cell(tp.get('deepsparse'))} | {_cell(tp.get('onnxruntime'))} |"
    )
    lines.append("")
    if doc.get("speedup") is not None:
        spread = doc.get("speedupRange")
        lines.append(
            f"DeepSparse on the sparse model vs the dense model's faster engine, same node: **{doc['speedup']:.2f}x**"
            + (f" (median of interleaved rounds, spread {spread[0]:.2f}-{spread[1]:.2f}x)." if spread else ".")
        )
    if doc.get("accuracyRetention") is not None:
        lines.append(f"Accuracy retained: **{doc['accuracyRetention']:.1%}** of the dense model's mAP@0.5 on the same images.")
    for v in doc.get("verdicts") or []:
        lines.append(f"- {'ok' if v.get('ok') else 'NOT OK'}: {v.get('type')} ({v.get('reason')}): {v.get('message')}")
    if seed.get("map50") is not None:
        lines += [
            "",
            f"The seed's numbers for this recipe (COCO, 24-core c5.12xlarge, batch 64): mAP@0.5 {seed['map50']}, "
            f"{seed['sizeMB']} MB, {seed['deepsparseImagesPerSecond']} img/s.",
        ]
    lines += ["", "Artifacts:", ""] + [f"- {k}: {v}" for k, v in (doc.get("artifacts") or {}).items() if v]
    return "\n".join(lines) + "\n"
