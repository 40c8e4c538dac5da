"""Reports and the summary written to the termination message (pure)."""

import json

from sparsify_worker import cli
from sparsify_worker.report import accuracy_vs_throughput_plot, benchmark_markdown, full_markdown, results_document

SPEC = {"model": {"arch": "yolov5s"}, "recipe": {"preset": "pruned-quantized"}}
RECIPE = "yolov5s-pruned-quantized"  # the operator gives the pod the full name
INPUTS = {
    "train": {"bestMap50": 0.41, "checkpoint": "s3://m/best.pt"},
    "export": {"onnx": "s3://m/model.onnx", "sizeBytes": 7_500_000, "sizeGzipBytes": 2_300_000, "sparsity": 0.74, "quantized": True},
}
RESULT = {
    "engines": {
        "deepsparse": {"imagesPerSecond": 40.0, "latencyMs": 100.0, "nativeFraction": 0.84},
        "onnxruntime": {"imagesPerSecond": 20.0, "latencyMs": 200.0},
    },
    "cpu": {"vendor": "AMD", "isa": "avx512", "vnni": True, "cores": 2},
    "batchSize": 16,
    "scenario": "sync",
    "seconds": 10,
    "speedupVsOnnxRuntime": 2.0,
    "dense": {
        "source": "untrained",
        "map50": None,
        "sizeBytes": 29_000_000,
        "sizeGzipBytes": 26_900_000,
        "engines": {"deepsparse": {"imagesPerSecond": 16.0}, "onnxruntime": {"imagesPerSecond": 10.0}},
    },
}


def test_benchmark_report_compares_sparse_with_dense():
    md = benchmark_markdown(RECIPE, INPUTS, RESULT)
    assert "| deepsparse | 40.0 | 100.0 | 84% |" in md
    assert "| deepsparse | 16.0 | 40.0 | 2.50x |" in md
    assert "ONNX Runtime on the dense one: **4.00x**" in md and "26.9 MB -> 2.3 MB" in md


def test_plot_is_a_png(tmp_path):
    path = accuracy_vs_throughput_plot(RECIPE, INPUTS, RESULT, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_results_document_and_report():
    doc = results_document(SPEC, RECIPE, {**INPUTS, "benchmark": RESULT}, "s3://m/run", "demo")
    assert doc["recipe"] == "yolov5s-pruned-quantized" and doc["throughput"] == {"deepsparse": 40.0, "onnxruntime": 20.0}
    assert doc["seed"] == {"map50": 0.525, "sizeMB": 3.3, "deepsparseImagesPerSecond": 396.7}
    assert "| yolov5s-pruned-quantized | 0.410 | 74.0% | 2.3 MB | 40.0 | 20.0 |" in full_markdown(doc)


def test_report_has_the_dense_row_the_measured_speedup_and_the_verdicts():
    bench = {
        **RESULT,
        "speedup": 2.4,
        "speedupRange": [2.2, 2.6],
        "dense": {"map50": 0.5, "sizeGzipBytes": 26_900_000, "imagesPerSecond": {"deepsparse": 16.0, "onnxruntime": 10.0}},
        "verdicts": [{"type": "AccuracyRetained", "ok": False, "reason": "AccuracyDrop", "message": "82% retained"}],
    }
    doc = results_document(SPEC, RECIPE, {**INPUTS, "benchmark": bench}, "s3://m/run", "demo")
    md = full_markdown(doc)
    assert "| dense (starting weights) | 0.500 | 0.0% | 26.9 MB | 16.0 | 10.0 |" in md
    assert "**2.40x** (median of interleaved rounds, spread 2.20-2.60x)" in md
    assert "Accuracy retained: **82.0%**" in md and "NOT OK: AccuracyRetained (AccuracyDrop): 82% retained" in md


def test_summary_always_fits_and_stays_json(tmp_path, monkeypatch):
    monkeypatch.setenv("TERMINATION_MESSAGE_PATH", str(tmp_path / "term"))
    cli.write_summary({"stage": "train", "history": ["x" * 100] * 100, "bestMap50": 0.5})
    assert json.loads((tmp_path / "term").read_text()) == {"stage": "train", "bestMap50": 0.5}
    cli.write_summary({"stage": "validate", "error": "e" * 10_000, "other": "y" * 10_000})
    out = json.loads((tmp_path / "term").read_text())
    assert out["stage"] == "validate" and len(out["error"]) == 400
