"""`sparsify-worker`: one stage of a SparsifyJob per invocation (and the tools around it).

Input is what the operator gives the pod (the spec and earlier summaries as files, the run's
identity and output location as SPARSIFY_* variables; see context.py); output is one JSON
summary in the termination message. Any failure ends with {"stage": ..., "error": ...} there
and a non-zero exit code, so the operator can say why."""

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
from .supervisor import EXIT_GPU_OOM, is_gpu_oom, outcome_dir, report_outcome, supervise

log = logging.getLogger("sparsify_worker")
SUMMARY_LIMIT = 3500  # the termination message holds 4 KiB
STAGE_NAMES = ("validate", "train", "export", "benchmark", "publish")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparsify-worker")
    sub = parser.add_subparsers(dest="stage", required=True)
    for name in STAGE_NAMES:
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
    if args.stage == "train" and outcome_dir():
        (outcome_dir() / f"started-{os.environ.get('RANK', '0')}").touch()
    try:
        from .context import StageContext
        from .stages import RUNNERS

        summary = RUNNERS[args.stage](StageContext(args.stage))
    except SystemExit as e:
        if e.code in (0, None):
            report_outcome({"ok": True})
        raise
    except Exception as e:  # noqa: BLE001  (every failure becomes a readable summary)
        traceback.print_exc()
        gpu_oom = is_gpu_oom(e)
        problems = getattr(e, "problems", None)
        report_outcome({"error": f"{type(e).__name__}: {e}"[:400], "gpuOom": gpu_oom})
        write_summary(
            {
                "stage": args.stage,
                "error": f"{type(e).__name__}: {e}",
                **({"reason": "GPUOutOfMemory"} if gpu_oom else {}),
                **({"problems": problems} if problems else {}),
            }
        )
        return EXIT_GPU_OOM if gpu_oom else 1
    report_outcome({"ok": True})
    write_summary(summary)
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
