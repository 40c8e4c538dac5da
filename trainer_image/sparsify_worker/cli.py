"""`sparsify-worker`: one stage of a SparsifyJob per invocation.

Input is the environment the operator sets (SPARSIFY_SPEC, SPARSIFY_OUTPUT_URI, ...; see the
design notes); output is one JSON summary in the termination message. Any failure ends with
{"stage": ..., "error": ...} there and a non-zero exit code, so the operator can say why."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

from .s3 import S3Uri, Store

log = logging.getLogger("sparsify_worker")
SUMMARY_LIMIT = 3500  # the termination message holds 4 KiB


class Stage:
    """What every stage reads from the environment."""

    def __init__(self, name: str):
        self.name = name
        self.spec = json.loads(os.environ["SPARSIFY_SPEC"])
        self.inputs = json.loads(os.environ.get("SPARSIFY_INPUTS") or "{}")
        self.out = S3Uri.parse(os.environ["SPARSIFY_OUTPUT_URI"])
        self.work = Path(os.environ.get("SPARSIFY_WORKDIR") or tempfile.gettempdir()) / "sparsify"
        self.work.mkdir(parents=True, exist_ok=True)
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store()
        return self._store

    def recipe_text(self) -> str:
        from .recipes import preset_name, preset_path

        r = self.spec["recipe"]
        if r.get("preset"):
            return preset_path(preset_name(self.spec["model"]["arch"], r["preset"])).read_text()
        if r.get("inline"):
            return r["inline"]
        return self.store.download(r["uri"], self.work / "recipe.yaml").read_text()

    def recipe_variables(self, text: str) -> dict:
        from .recipes import rescaled_variables

        epochs = self.spec.get("training", {}).get("epochs")
        return rescaled_variables(text, int(epochs)) if epochs else {}

    def stage_dataset(self) -> Path:
        """Each node's first process downloads; the others wait for its marker."""
        import time

        root = self.work / "dataset"
        marker = root / ".complete"
        if marker.exists():
            return root
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            self.store.download_tree(self.spec["dataset"]["uri"], root)
            marker.touch()
        else:
            while not marker.exists():
                time.sleep(1)
        return root


def _summary_path() -> Path:
    return Path(os.environ.get("TERMINATION_MESSAGE_PATH", "/dev/termination-log"))


def write_summary(summary: dict) -> None:
    text = json.dumps(summary, separators=(",", ":"), default=str)
    for drop in ("history", "dataset", "cpu", "dense", "problems", "maxDiff"):
        if len(text) <= SUMMARY_LIMIT:
            break
        summary = {k: v for k, v in summary.items() if k != drop}  # the full record is in S3
        text = json.dumps(summary, separators=(",", ":"), default=str)
    if len(text) > SUMMARY_LIMIT:  # never cut JSON in half: say what matters, in valid JSON
        text = json.dumps({k: (str(v)[:400] if isinstance(v, str) else v) for k, v in summary.items()
                           if k in ("stage", "error", "onnx", "checkpoint", "report", "results")}, separators=(",", ":"))
    try:
        _summary_path().write_text(text)
    except OSError:
        pass
    print(text, flush=True)


def run_validate(st: Stage) -> dict:
    from .validate import validate

    uri = S3Uri.parse(st.spec["dataset"]["uri"])
    root = st.work / "dataset-sample"
    st.store.download(uri.join("data.yaml"), root / "data.yaml")
    # A sample of images/labels is enough to judge the form; the listing gives the counts.
    objects = st.store.list(uri)
    base = uri.key.rstrip("/") + "/" if uri.key else ""
    for obj in _sample_pairs([o.key[len(base):] for o in objects]):
        st.store.download(uri.join(obj), root / obj)
    result = validate(st.recipe_text(), st.spec["model"]["arch"], st.spec["recipe"].get("targetArch"), root,
                      st.spec["model"].get("activation", "Hardswish"))
    return {"stage": "validate", **result, "objects": len(objects)}


def _sample_pairs(keys: list[str], per_split: int = 16) -> list[str]:
    chosen = []
    keyset = set(keys)
    images = [k for k in keys if "/images/" in f"/{k}" or k.startswith("images/")]
    by_split: dict[str, list[str]] = {}
    for k in images:
        by_split.setdefault(str(Path(k).parent), []).append(k)
    for ks in by_split.values():
        for k in sorted(ks)[:per_split]:
            chosen.append(k)
            label = str(Path(k.replace("images/", "labels/", 1)).with_suffix(".txt"))
            if label in keyset:
                chosen.append(label)
    # the whole labels tree is small and needed to check class ids everywhere
    chosen += [k for k in keys if k.startswith("labels/") and k not in chosen]
    return chosen


def run_train(st: Stage) -> dict:
    from .train import TrainConfig, train

    tr = st.spec["training"]
    rank = int(os.environ.get("RANK", "0"))
    text = st.recipe_text()
    ckpts = st.out.join("checkpoints")
    resume = None
    if st.store.exists(ckpts.join("last.pt")):
        resume = st.store.download(ckpts.join("last.pt"), st.work / f"resume-{rank}" / "last.pt")
    weights = None
    if st.spec["model"].get("weights") and resume is None:
        weights = st.store.download(st.spec["model"]["weights"], st.work / f"weights-{rank}" / "weights.pt")

    def publish_checkpoint(epoch: int, last: Path, best: Path | None) -> None:
        if best is not None:
            st.store.upload(best, ckpts.join("best.pt"))
        st.store.upload(last, ckpts.join("last.pt"))  # last: a resume always finds a complete best.pt

    cfg = TrainConfig(
        arch=st.spec["model"]["arch"], activation=st.spec["model"].get("activation", "Hardswish"),
        data_dir=st.stage_dataset(), recipe=text, recipe_variables=st.recipe_variables(text),
        out_dir=st.work / "train", batch_size=int(os.environ.get("SPARSIFY_BATCH_SIZE") or tr.get("batchSize", 16)),
        img_size=int(tr.get("imgSize", 640)), workers=min(4, os.cpu_count() or 1), weights=weights, resume_from=resume,
        on_checkpoint=publish_checkpoint,
    )
    result = train(cfg)
    if rank != 0:
        sys.exit(0)  # rank 0 reports for the pod
    return {"stage": "train", **result, "resumed": resume is not None,
            "checkpoint": str(ckpts.join("best.pt")), "lastCheckpoint": str(ckpts.join("last.pt")),
            "history": result["history"][-3:]}


def run_export(st: Stage) -> dict:
    from .export import export

    best = st.inputs.get("train", {}).get("checkpoint") or str(st.out.join("checkpoints", "best.pt"))
    local = st.store.download(best, st.work / "export" / "best.pt")
    ex = st.spec.get("export", {})
    result = export(local, st.work / "export" / "onnx", int(ex.get("imgSize", 640)), int(ex.get("opset", 13)),
                    bool(ex.get("dynamicBatch", True)))
    onnx_uri = st.store.upload(Path(result.pop("onnxPath")), st.out.join("model.onnx"))
    return {"stage": "export", "onnx": onnx_uri, **result}


def run_benchmark(st: Stage) -> dict:
    from .benchmark import benchmark
    from .report import benchmark_markdown

    onnx_uri = st.inputs.get("export", {}).get("onnx") or str(st.out.join("model.onnx"))
    local = st.store.download(onnx_uri, st.work / "bench" / "model.onnx")
    b = st.spec.get("benchmark", {})
    result = benchmark(local, list(b.get("engines", ["deepsparse", "onnxruntime"])), int(b.get("batchSize", 64)),
                       b.get("cores"), b.get("scenario", "sync"), int(b.get("durationSeconds", 30)))
    result["node"] = os.environ.get("NODE_NAME", "")
    if b.get("compareDense", True):
        result["dense"] = dense_reference(st, local, b)
    try:
        from .report import accuracy_vs_throughput_plot

        png = accuracy_vs_throughput_plot(st.spec, st.inputs, result, st.work / "bench" / "accuracy-vs-throughput.png")
        result["plot"] = st.store.upload(png, st.out.join("accuracy-vs-throughput.png"), "image/png")
    except Exception as e:  # noqa: BLE001  (a plot is a nicety; the numbers are in the JSON)
        log.warning("no plot: %s", e)
    st.store.put_bytes(json.dumps(result, indent=2).encode(), st.out.join("benchmark.json"))
    report = st.store.put_bytes(benchmark_markdown(st.spec, st.inputs, result).encode(), st.out.join("benchmark.md"), "text/markdown")
    failed = [e for e, r in result["engines"].items() if "error" in r]
    if failed and len(failed) == len(result["engines"]):
        raise RuntimeError("; ".join(result["engines"][e]["error"] for e in failed))
    summary = {"stage": "benchmark", **result, "report": report, "details": str(st.out.join("benchmark.json"))}
    if "dense" in result:  # the termination message stays small: the full record is benchmark.json
        summary["dense"] = {"map50": result["dense"]["map50"], "imagesPerSecond": {
            e: r.get("imagesPerSecond") for e, r in result["dense"]["engines"].items()}}
    return summary


def dense_reference(st: Stage, sparse_onnx: Path, b: dict) -> dict:
    """The dense model of the same architecture (the starting weights when the spec has them),
    exported and benchmarked on the same node: the other end of the comparison."""
    import onnx

    from .benchmark import benchmark
    from .export import dense_checkpoint, export
    from .train import load_checkpoint

    nc = st.inputs.get("export", {}).get("numClasses")
    if not nc:  # older export summary: the last output dim is 5 + classes when it is static
        out_dim = onnx.load(str(sparse_onnx), load_external_data=False).graph.output[0].type.tensor_type.shape.dim[-1].dim_value
        nc = int(out_dim) - 5
    if nc < 1:
        raise ValueError("cannot tell the number of classes of the model for the dense reference")
    weights, map50, source = None, None, "untrained (the run had no starting weights)"
    if st.spec["model"].get("weights"):
        ckpt = load_checkpoint(st.store.download(st.spec["model"]["weights"], st.work / "bench" / "dense-weights.pt"))
        if ckpt["nc"] == nc:
            weights, map50, source = ckpt.get("ema") or ckpt["model"], ckpt.get("best_map50"), st.spec["model"]["weights"]
    ckpt_path = dense_checkpoint(st.spec["model"]["arch"], nc, st.spec["model"].get("activation", "Hardswish"),
                                 st.work / "bench" / "dense.pt", weights, map50)
    ex = st.spec.get("export", {})
    info = export(ckpt_path, st.work / "bench" / "dense", int(ex.get("imgSize", 640)), int(ex.get("opset", 13)))
    res = benchmark(Path(info["onnxPath"]), list(b.get("engines", ["deepsparse", "onnxruntime"])), int(b.get("batchSize", 64)),
                    b.get("cores"), b.get("scenario", "sync"), int(b.get("durationSeconds", 30)))
    return {"source": source, "map50": map50, "sizeBytes": info["sizeBytes"], "sizeGzipBytes": info["sizeGzipBytes"],
            "engines": res["engines"]}


def run_publish(st: Stage) -> dict:
    from .report import full_markdown, results_document

    doc = results_document(st.spec, st.inputs, str(st.out), os.environ.get("SPARSIFY_NAME", ""))
    report = st.store.put_bytes(full_markdown(doc).encode(), st.out.join("report.md"), "text/markdown")
    doc["report"] = report
    # results.json last: its presence is what makes the run's artifacts a published result
    results = st.store.put_bytes(json.dumps(doc, indent=2).encode(), st.out.join("results.json"))
    return {"stage": "publish", "results": results, "report": report}


STAGES = {"validate": run_validate, "train": run_train, "export": run_export, "benchmark": run_benchmark, "publish": run_publish}


def make_dataset(args) -> int:
    from .data import generate

    root = generate(Path(args.out), train=args.train, val=args.val, size=args.size, seed=args.seed)
    if args.upload:
        store = Store()
        dest = S3Uri.parse(args.upload)
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            store.upload(f, dest.join(str(f.relative_to(root))))
        print(f"uploaded {root} to {dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparsify-worker")
    sub = parser.add_subparsers(dest="stage", required=True)
    for name in STAGES:
        sub.add_parser(name, help=f"run the {name} stage (inputs from the SPARSIFY_* environment)")
    md = sub.add_parser("make-dataset", help="generate a small YOLO dataset (tests, the demo)")
    md.add_argument("out")
    md.add_argument("--train", type=int, default=64)
    md.add_argument("--val", type=int, default=16)
    md.add_argument("--size", type=int, default=160)
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--upload", help="s3://bucket/prefix to upload it to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.stage == "make-dataset":
        return make_dataset(args)
    os.chdir(tempfile.gettempdir())  # sparseml writes logs to the working directory
    try:
        summary = STAGES[args.stage](Stage(args.stage))
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001  (every failure becomes a readable summary)
        traceback.print_exc()
        problems = getattr(e, "problems", None)
        write_summary({"stage": args.stage, "error": f"{type(e).__name__}: {e}", **({"problems": problems} if problems else {})})
        return 1
    write_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
