"""The five stage bodies: each reads its StageContext, writes its artifacts to the run's
output location and returns the summary the operator reads from the termination message."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from .context import StageContext
from .model import ModelSpec
from .s3 import S3Error, S3Uri
from .staging import sample_pairs

log = logging.getLogger("sparsify_worker")


def run_validate(st: StageContext) -> dict:
    from .validate import validate

    uri = S3Uri.parse(st.spec["dataset"]["uri"])
    root = st.work / "dataset-sample"
    st.store.download(uri.join("data.yaml"), root / "data.yaml")
    # A sample of images and labels is enough to judge the form; the listing gives the counts.
    objects = st.store.list_detailed(uri)
    base = uri.key.rstrip("/") + "/" if uri.key else ""
    sample = set(sample_pairs([o.key[len(base) :] for o, _, _ in objects]))
    st.store.download_tree(uri, root, [o for o in objects if o[0].key[len(base) :] in sample])
    problems = probe_output(st)
    try:
        weights = st.weights_path()
    except S3Error as e:
        weights = None
        problems.append(f"model.weights {st.spec['model']['weights']} cannot be read: {e}")
    result = validate(st.spec, root, st.recipe_text, weights, problems)
    result["dataset"]["labelsTotal"] = sum(1 for o, _, _ in objects if o.key.endswith(".txt") and "labels/" in o.key)
    return {"stage": "validate", **result, "objects": len(objects)}


def probe_output(st: StageContext) -> list[str]:
    """Write (and delete) a probe object under the run's own prefix: a missing bucket, a
    read-only one or missing credentials show up now, not after an epoch of GPU time."""
    import uuid

    probe = st.out.join(f".probe-{uuid.uuid4().hex[:12]}")
    try:
        st.store.put_bytes(b"sparsify-worker write probe", probe, "text/plain")
    except S3Error as e:
        return [
            f"the output location {st.out} cannot be written ({e}): check output.bucket exists and that the run's credentials "
            "may s3:PutObject under it"
        ]
    try:
        st.store.delete(probe)
    except S3Error as e:  # writing is what a run needs; deleting is not
        log.warning("could not delete the write probe %s: %s", probe, e)
    return []


def run_train(st: StageContext) -> dict:
    from .data import load_data_yaml
    from .train import TrainConfig, checkpoint_model, load_checkpoint, recipe_value, train
    from .weights import read_weights, resolve

    tr = st.spec["training"]
    rank = int(os.environ.get("RANK", "0"))
    ckpts = st.out.join("checkpoints")
    data_dir = st.stage_dataset()
    resume = weights = None
    if st.store.exists(ckpts.join("last.pt")):
        resume = st.store.download(ckpts.join("last.pt"), st.work / f"resume-{rank}" / "last.pt")
        ckpt = load_checkpoint(resume)
        model = checkpoint_model(ckpt)  # the run keeps the model and the schedule it started with
        if recipe_value(ckpt["recipe"], ckpt.get("recipe_variables") or {}, "distillation_weight", 0.0) > 0:
            weights = st.weights_path()  # the distillation teacher
    else:
        weights = st.weights_path()
        model = resolve(st.spec["model"], load_data_yaml(data_dir)["nc"], read_weights(weights) if weights else None)
    text = st.recipe_text(model)
    if rank == 0 and resume is None:
        st.store.put_bytes(text.encode(), st.out.join("recipe.yaml"), "application/yaml")  # what this run trains with

    def publish_checkpoint(epoch: int, last: Path, best: Path | None) -> None:
        if best is not None:
            st.store.upload(best, ckpts.join("best.pt"))
        st.store.upload(last, ckpts.join("last.pt"))  # last: a resume always finds a complete best.pt

    cfg = TrainConfig(
        arch=model.arch,
        layout=model.layout,
        activation=model.activation,
        data_dir=data_dir,
        recipe=text,
        recipe_variables=st.recipe_variables(text),
        out_dir=st.work / "train",
        batch_size=int(tr["batchSize"]),  # this attempt's: an OOM retry's pod is given the halved one
        img_size=int(tr["imgSize"]),
        workers=min(4, os.cpu_count() or 1),
        weights=weights,
        resume_from=resume,
        on_checkpoint=publish_checkpoint,
        run_uid=st.run_uid,
    )
    result = train(cfg)
    result.pop("rankDigests", None)  # checked between the ranks after every epoch; not for the summary
    if rank != 0:
        sys.exit(0)  # rank 0 reports for the pod
    return {
        "stage": "train",
        **result,
        "resumed": resume is not None,
        "recipeUri": str(st.out.join("recipe.yaml")),
        "checkpoint": str(ckpts.join("best.pt")),
        "lastCheckpoint": str(ckpts.join("last.pt")),
        "history": result["history"][-3:],
    }


def run_export(st: StageContext) -> dict:
    from .export import export

    best = st.inputs.get("train", {}).get("checkpoint") or str(st.out.join("checkpoints", "best.pt"))
    local = st.store.download(best, st.work / "export" / "best.pt")
    ex = st.spec["export"]
    result = export(local, st.work / "export" / "onnx", int(ex["imgSize"]), int(ex["opset"]), bool(ex["dynamicBatch"]))
    onnx_uri = st.store.upload(Path(result.pop("onnxPath")), st.out.join("model.onnx"))
    return {"stage": "export", "onnx": onnx_uri, **result}


def run_benchmark(st: StageContext) -> dict:
    from .benchmark import benchmark
    from .onnx_stats import op_types
    from .report import benchmark_markdown

    onnx_uri = st.inputs.get("export", {}).get("onnx") or str(st.out.join("model.onnx"))
    local = st.store.download(onnx_uri, st.work / "bench" / "model.onnx")
    b = st.spec["benchmark"]
    dense = dense_reference(st, local) if b["compareDense"] else None
    result = benchmark(
        local,
        list(b["engines"]),
        int(b["batchSize"]),
        b.get("cores"),
        b["scenario"],
        int(b["durationSeconds"]),
        int(b["rounds"]),
        Path(dense.pop("onnxPath")) if dense else None,
    )
    result["node"] = os.environ.get("NODE_NAME", "")
    if dense:
        result["dense"] = {**dense, "engines": result.pop("denseEngines")}
    result["verdicts"] = judge(result, st.inputs, op_types(local))
    try:
        from .report import accuracy_vs_throughput_plot

        png = accuracy_vs_throughput_plot(st.recipe, st.inputs, result, st.work / "bench" / "accuracy-vs-throughput.png")
        result["plot"] = st.store.upload(png, st.out.join("accuracy-vs-throughput.png"), "image/png")
    except Exception as e:  # noqa: BLE001  (a plot is a nicety; the numbers are in the JSON)
        log.warning("no plot: %s", e)
    st.store.put_bytes(json.dumps(result, indent=2).encode(), st.out.join("benchmark.json"))
    report = st.store.put_bytes(benchmark_markdown(st.recipe, st.inputs, result).encode(), st.out.join("benchmark.md"), "text/markdown")
    failed = [e for e, r in result["engines"].items() if "error" in r]
    if failed and len(failed) == len(result["engines"]):
        raise RuntimeError("; ".join(result["engines"][e]["error"] for e in failed))
    summary = {"stage": "benchmark", **result, "report": report, "details": str(st.out.join("benchmark.json"))}
    if "dense" in result:  # the termination message stays small: the full record is benchmark.json
        summary["dense"] = {
            "map50": result["dense"]["map50"],
            "sizeGzipBytes": result["dense"]["sizeGzipBytes"],
            "imagesPerSecond": {e: r.get("imagesPerSecond") for e, r in result["dense"]["engines"].items()},
        }
    return summary


def judge(result: dict, inputs: dict, ops: set[str]) -> list[dict]:
    """The verdicts on this run's result: natively run, faster than dense, accuracy retained."""
    from . import verdicts

    out = [verdicts.native(result.get("nativeFraction"), ops, result.get("cpu"))]
    dense = result.get("dense") or {}
    sparse_ds = result["engines"].get("deepsparse", {}).get("imagesPerSecond")
    fast = verdicts.speed(
        sparse_ds,
        {e: r.get("imagesPerSecond") for e, r in (dense.get("engines") or {}).items()},
        result.get("cpu"),
        result.get("speedupRounds"),
    )
    if fast:
        out.append(fast)
    if dense:
        out.append(verdicts.accuracy(inputs.get("train", {}).get("bestMap50"), dense.get("map50"), dense.get("source", "")))
    return out


def dense_reference(st: StageContext, sparse_onnx: Path) -> dict:
    """The dense model of the same architecture (the starting weights when the spec has them),
    exported for the same input: the other end of the comparison, benchmarked in the same
    rounds. Its accuracy is the starting weights' mAP on the run's validation images, measured
    by train."""
    import onnx

    from .export import dense_checkpoint, export
    from .weights import read_weights

    exported = st.inputs.get("export", {})
    nc = exported.get("numClasses")
    if not nc:  # older export summary: the last output dim is 5 + classes when it is static
        out_dim = onnx.load(str(sparse_onnx), load_external_data=False).graph.output[0].type.tensor_type.shape.dim[-1].dim_value
        nc = int(out_dim) - 5
    if nc < 1:
        raise ValueError("cannot tell the number of classes of the model for the dense reference")
    m = exported.get("model") or {}
    spec = ModelSpec(m.get("arch", st.spec["model"]["arch"]), m.get("layout", "v5.0"), m.get("activation", "Hardswish"), int(nc))
    weights, map50, source = None, None, "untrained (the run had no starting weights): its accuracy is not comparable"
    if st.spec["model"].get("weights"):
        weights = read_weights(st.weights_path())
        source = f"the starting weights {st.spec['model']['weights']}"
        if weights.nc != spec.nc:
            source += " (Detect head re-initialised for the dataset's classes: accuracy not comparable)"
        else:
            map50 = st.inputs.get("train", {}).get("startMap50")
    ckpt_path = dense_checkpoint(spec, st.work / "bench" / "dense.pt", weights, map50)
    ex = st.spec["export"]
    info = export(
        ckpt_path, st.work / "bench" / "dense", int(exported.get("imgSize") or ex["imgSize"]), int(exported.get("opset") or ex["opset"])
    )
    return {
        "source": source,
        "map50": map50,
        "sizeBytes": info["sizeBytes"],
        "sizeGzipBytes": info["sizeGzipBytes"],
        "onnxPath": info["onnxPath"],
    }


def run_publish(st: StageContext) -> dict:
    from .report import full_markdown, results_document

    doc = results_document(st.spec, st.recipe, st.inputs, str(st.out), st.run_name)
    report = st.store.put_bytes(full_markdown(doc).encode(), st.out.join("report.md"), "text/markdown")
    doc["report"] = report
    # results.json last: its presence is what makes the run's artifacts a published result
    results = st.store.put_bytes(json.dumps(doc, indent=2).encode(), st.out.join("results.json"))
    return {"stage": "publish", "results": results, "report": report}


RUNNERS = {"validate": run_validate, "train": run_train, "export": run_export, "benchmark": run_benchmark, "publish": run_publish}
