"""The operator of this checkout as a local process (`python -m sparsify_operator`), with the
stand-in stage commands (tests/standin), for the cluster tests and the scale benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from localcluster.controlplane import free_port
from localcluster.testing import wait_until

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "standin"


class OperatorProcess:
    """`source` is the checkout whose operator code runs (the benchmarks run an earlier commit's
    side by side); the stand-in stage commands are always this checkout's."""

    def __init__(self, kubeconfig: Path, log: Path, env: dict | None = None, source: Path = REPO):
        self.kubeconfig, self.log, self.extra_env, self.source = kubeconfig, log, env or {}, source
        self.proc: subprocess.Popen | None = None
        self.port, self.metrics_port = free_port(), free_port()

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SPARSIFY_WORKER_COMMAND": json.dumps(["python", str(STANDIN / "worker.py")]),
            "SPARSIFY_TRAIN_LAUNCHER": json.dumps(["python", str(STANDIN / "torchrun.py")]),
            "SPARSIFY_METRICS_PORT": str(self.metrics_port),
            "PYTHONPATH": os.pathsep.join([str(self.source / "operator"), str(self.source)]),  # this checkout's, whatever the venv has
            **self.extra_env,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster config of a machine that has one
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparsify_operator", "--liveness", f"http://127.0.0.1:{self.port}/healthz"],
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )

        def live() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited: {self.output()[-3000:]}")
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status == 200
            except OSError:
                return False

        wait_until(live, 60, what="operator liveness")
        return self

    def metrics(self) -> str:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return ""

    def leading(self) -> bool:
        """This process holds the leader Lease (its `sparsify_leader` gauge)."""
        return "\nsparsify_leader 1.0" in self.metrics()

    def wait_leading(self, timeout: float = 60) -> OperatorProcess:
        """Until it leads: a restarted operator waits out the Lease its killed predecessor held."""
        wait_until(self.leading, timeout, interval=0.2, what="the operator to hold the leader Lease")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")
