"""The launcher leaves no process behind: on a clean stop, and when its supervisor is
SIGKILLed (an interrupted test run)."""

from __future__ import annotations

import os
import signal

import pytest
from kubernetes import client

from localcluster.cluster import LocalCluster
from localcluster.pod_worker import descendants
from localcluster.testing import api_client, create_namespace, wait_until

pytestmark = pytest.mark.cluster


def alive(pids: set[int]) -> set[int]:
    out = set()
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.add(p)
        except OSError:
            pass
    return out


def start_with_running_pod(tmp_path) -> tuple[LocalCluster, set[int]]:
    lc = LocalCluster(tmp_path / "cluster", gpu_nodes=1, cpu_nodes=1)
    info = lc.start()
    core = client.CoreV1Api(api_client(info.kubeconfig))
    ns = create_namespace(core, "teardown")
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "sleeper"},
            "spec": {"containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", "import time; time.sleep(600)"]}]},
        },
    )
    wait_until(lambda: core.read_namespaced_pod("sleeper", ns).status.phase == "Running", 30, what="sleeper running")
    procs = set(descendants(info.supervisor_pid)) | {info.supervisor_pid}
    assert len(procs) >= 7  # supervisor, etcd, apiserver, controller-manager, scheduler, S3, the pod
    return lc, procs


def test_clean_stop_leaves_no_processes(tmp_path):
    lc, procs = start_with_running_pod(tmp_path)
    lc.stop()
    wait_until(lambda: not alive(procs), 15, what="every cluster process to exit")


def test_killed_supervisor_takes_everything_with_it(tmp_path):
    lc, procs = start_with_running_pod(tmp_path)
    os.kill(lc.proc.pid, signal.SIGKILL)  # what an interrupted/killed test run does to it
    lc.proc.wait()
    try:
        wait_until(lambda: not alive(procs), 15, what="orphans to die with the supervisor")
    finally:
        for p in alive(procs):
            os.kill(p, signal.SIGKILL)
        lc.proc = None
