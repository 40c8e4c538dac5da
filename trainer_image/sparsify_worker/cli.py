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

from .model import ModelSpec
from .s3 import S3Error, S3Uri, Store

log = logging.getLogger("sparsify_worker")
SUMMARY_LIMIT = 3500  # the termination message holds 4 KiB
EXIT_GPU_OOM = 75  # a CUDA out-of-memory error: the operator resumes with half the batch (its api.EXIT_GPU_OOM)
EXIT_KILLED = 137  # a training process died without a word (SIGKILL: the kernel's OOM killer, a node agent)


class Stage:
    """What every stage reads from the environment."""

    def __init__(self, name: str):
        self.name = name
        self.spec = read_json("SPARSIFY_SPEC")
        self.inputs = read_json("SPARSIFY_INPUTS", {})
        self.out = S3Uri.parse(os.environ["SPARSIFY_OUTPUT_URI"])
        self.work = Path(os.environ.get("SPARSIFY_WORKDIR") or tempfile.gettempdir()) / "sparsify"
        self.work.mkdir(parents=True, exist_ok=True)
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store()
        return self._store

    def recipe_text(self, model: ModelSpec) -> str:
        """The spec's recipe; a preset is rendered for the resolved model (its layout)."""
        from .recipes import render

        r = self.spec["recipe"]
        if r.get("preset"):
            return render(model.arch, r["preset"], model.layout, r.get("targetSparsity"))
        if r.get("inline"):
            return r["inline"]
        return self.store.download(r["uri"], self.work / "recipe.yaml").read_text()

    def recipe_variables(self, text: str) -> dict:
        """The epochs override (the schedule rescaled), then the spec's own variable overrides."""
        from .recipes import rescaled_variables

        epochs = self.spec.get("training", {}).get("epochs")
        out = rescaled_variables(text, int(epochs)) if epochs else {}
        return {**out, **{k: float(v) for k, v in (self.spec["recipe"].get("variables") or {}).items()}}

    def weights_path(self) -> Path | None:
        """The spec's starting weights, downloaded once per process."""
        uri = self.spec["model"].get("weights")
        if not uri:
            return None
        path = self.work / f"weights-{os.environ.get('RANK', '0')}" / "weights.pt"
        return path if path.exists() else self.store.download(uri, path)

    def stage_dataset(self) -> Path:
        """Each node's first process downloads (in parallel); the others wait for its marker.
        With a node-level cache (SPARSIFY_DATASET_CACHE, a hostPath the platform mounts), a
        dataset whose listing (keys, sizes, ETags) matches the cached copy's is not fetched
        again: not by the next attempt, not by another run on the node."""
        import time

        uri = self.spec["dataset"]["uri"]
        cache = os.environ.get("SPARSIFY_DATASET_CACHE")
        if cache:
            return cached_dataset(self.store, uri, Path(cache))
        root = self.work / "dataset"
        marker = root / ".complete"
        if marker.exists():
            return root
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            self.store.download_tree(uri, root)
            marker.touch()
        else:
            while not marker.exists():
                time.sleep(1)
        return root


def dataset_manifest(objects: list) -> str:
    return json.dumps([[o.key, size, etag] for o, size, etag in objects], separators=(",", ":"))


def cached_dataset(store: Store, uri: str, cache: Path) -> Path:
    """The dataset under `cache`, keyed by its URI and checked against its listing: reused when
    the listing is what the copy was made from, fetched again (whole, atomically) otherwise.
    One process per node fetches; the others wait on the lock."""
    import fcntl
    import hashlib
    import shutil

    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    root, manifest_file = cache / key, cache / f"{key}.manifest.json"
    cache.mkdir(parents=True, exist_ok=True)
    objects = store.list_detailed(uri)
    manifest = dataset_manifest(objects)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir() and manifest_file.exists() and manifest_file.read_text() == manifest:
            log.info("dataset %s: reusing the node's copy (%d objects, listing unchanged)", uri, len(objects))
            return root
        tmp = cache / f".{key}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        store.download_tree(uri, tmp, objects)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
        manifest_file.write_text(manifest)
        log.info("dataset %s: fetched %d objects into the node's cache", uri, len(objects))
    return root


def read_json(name: str, default=None):
    """A stage's input: the file $NAME_FILE names (in a pod: its own annotation, mounted by the
    operator) or, for local runs, the JSON in $NAME itself."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return json.loads(Path(path).read_text() or "null") or default
    if name in os.environ:
        return json.loads(os.environ[name])
    if default is not None:
        return default
    raise KeyError(f"neither {name}_FILE nor {name} is set")


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
        text = json.dumps(
            {
                k: (str(v)[:400] if isinstance(v, str) else v)
                for k, v in summary.items()
                if k in ("stage", "error", "onnx", "checkpoint", "report", "results")
            },
            separators=(",", ":"),
        )
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
    # A sample of images and labels is enough to judge the form; the listing gives the counts.
    objects = st.store.list_detailed(uri)
    base = uri.key.rstrip("/") + "/" if uri.key else ""
    sample = set(_sample_pairs([o.key[len(base) :] for o, _, _ in objects]))
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


def probe_output(st: Stage) -> list[str]:
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


def _sample_pairs(keys: list[str], per_split: int = 16, labels: int = 2000) -> list[str]:
    """The first images of each split with their labels, plus a deterministic sample of all
    labels (class ids and coordinates are checked on those; validate says how many)."""
    import random

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
    all_labels = sorted(k for k in keys if k.endswith(".txt") and ("/labels/" in f"/{k}") and k not in chosen)
    chosen += random.Random(0).sample(all_labels, min(labels, len(all_labels)))
    return chosen


def run_train(st: Stage) -> dict:
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
        batch_size=int(os.environ.get("SPARSIFY_BATCH_SIZE") or tr.get("batchSize", 16)),
        img_size=int(tr.get("imgSize", 640)),
        workers=min(4, os.cpu_count() or 1),
        weights=weights,
        resume_from=resume,
        on_checkpoint=publish_checkpoint,
        run_uid=os.environ.get("SPARSIFY_UID", ""),
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


def run_export(st: Stage) -> dict:
    from .export import export

    best = st.inputs.get("train", {}).get("checkpoint") or str(st.out.join("checkpoints", "best.pt"))
    local = st.store.download(best, st.work / "export" / "best.pt")
    ex = st.spec.get("export", {})
    result = export(
        local, st.work / "export" / "onnx", int(ex.get("imgSize", 640)), int(ex.get("opset", 13)), bool(ex.get("dynamicBatch", True))
    )
    onnx_uri = st.store.upload(Path(result.pop("onnxPath")), st.out.join("model.onnx"))
    return {"stage": "export", "onnx": onnx_uri, **result}


def run_benchmark(st: Stage) -> dict:
    from .benchmark import benchmark
    from .onnx_stats import op_types
    from .report import benchmark_markdown

    onnx_uri = st.inputs.get("export", {}).get("onnx") or str(st.out.join("model.onnx"))
    local = st.store.download(onnx_uri, st.work / "bench" / "model.onnx")
    b = st.spec.get("benchmark", {})
    dense = dense_reference(st, local) if b.get("compareDense", True) else None
    result = benchmark(
        local,
        list(b.get("engines", ["deepsparse", "onnxruntime"])),
        int(b.get("batchSize", 64)),
        b.get("cores"),
        b.get("scenario", "sync"),
        int(b.get("durationSeconds", 30)),
        int(b.get("rounds", 3)),
        Path(dense.pop("onnxPath")) if dense else None,
    )
    result["node"] = os.environ.get("NODE_NAME", "")
    if dense:
        result["dense"] = {**dense, "engines": result.pop("denseEngines")}
    result["verdicts"] = judge(result, st.inputs, op_types(local))
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


def dense_reference(st: Stage, sparse_onnx: Path) -> dict:
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
    ex = st.spec.get("export", {})
    info = export(
        ckpt_path,
        st.work / "bench" / "dense",
        int(exported.get("imgSize") or ex.get("imgSize", 640)),
        int(exported.get("opset") or ex.get("opset", 13)),
    )
    return {
        "source": source,
        "map50": map50,
        "sizeBytes": info["sizeBytes"],
        "sizeGzipBytes": info["sizeGzipBytes"],
        "onnxPath": info["onnxPath"],
    }


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
    from .data import generate, split

    if args.source:
        root = split(args.source, Path(args.out), args.train, args.val)
    else:
        root = generate(Path(args.out), train=args.train, val=args.val, size=args.size, seed=args.seed)
    if args.upload:
        store = Store()
        dest = S3Uri.parse(args.upload)
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            store.upload(f, dest.join(str(f.relative_to(root))))
        print(f"uploaded {root} to {dest}")
    return 0


def is_gpu_oom(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return bool(torch) and isinstance(e, torch.cuda.OutOfMemoryError)


def _outcome_dir() -> Path | None:
    raw = os.environ.get("SPARSIFY_OUTCOME_DIR")
    return Path(raw) if raw else None


def _report_outcome(outcome: dict) -> None:
    """Each training process tells the supervisor how it ended (torchrun's exit code cannot)."""
    d = _outcome_dir()
    if d:
        (d / f"outcome-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(outcome))


def supervise(command: list[str]) -> int:
    """Run the launcher (torchrun) and turn what happened to its processes into the pod's exit
    code: torchrun exits 1 for any failure, but the Job's podFailurePolicy must tell a CUDA OOM
    (75: resume with half the batch) and a killed process (137: resume) from a bug (fail)."""
    import shutil
    import signal
    import subprocess

    if not command:
        print("supervise needs a command after --", file=sys.stderr)
        return 2
    outcomes = Path(tempfile.gettempdir()) / "sparsify-outcomes"
    shutil.rmtree(outcomes, ignore_errors=True)
    outcomes.mkdir(parents=True)
    proc = subprocess.Popen(command, env={**os.environ, "SPARSIFY_OUTCOME_DIR": str(outcomes)})
    for sig in (signal.SIGTERM, signal.SIGINT):  # graceful deletion reaches torchrun and its workers
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    code = proc.wait()
    started = {p.name.removeprefix("started-") for p in outcomes.glob("started-*")}
    reported = {p.name.removeprefix("outcome-").removesuffix(".json"): json.loads(p.read_text()) for p in outcomes.glob("outcome-*.json")}
    if any(o.get("gpuOom") for o in reported.values()):
        log.error("a training process ran out of GPU memory: exit %d", EXIT_GPU_OOM)
        return EXIT_GPU_OOM
    if code != 0 and started - set(reported):
        log.error("training process(es) %s ended without a word (killed): exit %d", sorted(started - set(reported)), EXIT_KILLED)
        return EXIT_KILLED
    return code


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
    md.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="split this YOLO dataset (e.g. coco128) instead of generating one: the first --train images train, the next --val validate",
    )
    sup = sub.add_parser(
        "supervise", help="run the training launcher (torchrun ... -- sparsify-worker train) and map its outcome to an exit code"
    )
    sup.add_argument("launcher", nargs=argparse.REMAINDER)
    rec = sub.add_parser("recipe", help="print a preset recipe as a run would use it")
    rec.add_argument("--arch", required=True)
    rec.add_argument("--layout", default=None)
    rec.add_argument("--preset", required=True)
    rec.add_argument("--target-sparsity", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.stage == "make-dataset":
        return make_dataset(args)
    if args.stage == "supervise":
        return supervise(args.launcher[1:] if args.launcher[:1] == ["--"] else args.launcher)
    if args.stage == "recipe":
        from .recipes import render

        print(render(args.arch, args.preset, args.layout, args.target_sparsity), end="")
        return 0
    os.chdir(tempfile.gettempdir())  # sparseml writes logs to the working directory
    if args.stage == "train" and _outcome_dir():
        (_outcome_dir() / f"started-{os.environ.get('RANK', '0')}").touch()
    try:
        summary = STAGES[args.stage](Stage(args.stage))
    except SystemExit as e:
        if e.code in (0, None):
            _report_outcome({"ok": True})
        raise
    except Exception as e:  # noqa: BLE001  (every failure becomes a readable summary)
        traceback.print_exc()
        gpu_oom = is_gpu_oom(e)
        problems = getattr(e, "problems", None)
        _report_outcome({"error": f"{type(e).__name__}: {e}"[:400], "gpuOom": gpu_oom})
        write_summary(
            {
                "stage": args.stage,
                "error": f"{type(e).__name__}: {e}",
                **({"reason": "GPUOutOfMemory"} if gpu_oom else {}),
                **({"problems": problems} if problems else {}),
            }
        )
        return EXIT_GPU_OOM if gpu_oom else 1
    _report_outcome({"ok": True})
    write_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
