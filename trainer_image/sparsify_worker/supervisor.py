"""`sparsify-worker supervise`: run the training launcher (torchrun) and give the pod an exit
code the Job's podFailurePolicy can act on."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("sparsify_worker")
EXIT_GPU_OOM = 75  # a CUDA out-of-memory error: the operator resumes with half the batch (its api.EXIT_GPU_OOM)
EXIT_KILLED = 137  # a training process died without a word (SIGKILL: the kernel's OOM killer, a node agent)


def is_gpu_oom(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return bool(torch) and isinstance(e, torch.cuda.OutOfMemoryError)


def outcome_dir() -> Path | None:
    raw = os.environ.get("SPARSIFY_OUTCOME_DIR")
    return Path(raw) if raw else None


def report_outcome(outcome: dict) -> None:
    """Each training process tells the supervisor how it ended (torchrun's exit code cannot)."""
    d = outcome_dir()
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
