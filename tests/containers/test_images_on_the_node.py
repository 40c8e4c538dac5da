"""Each image as the kubelet runs it: the chart's security settings, its own user, its entrypoint,
its libraries; and what the node enforces (the kernel's OOM kill, the kubelet's refusals)."""

from __future__ import annotations

import json

import pytest

from tests.containers.conftest import ROOT_PROBE_IMAGE, pod, run_pod

# What a process sees of its own confinement, written where the kubelet reads it back.
CONFINEMENT = r"""
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
try:
    open("/opt/written", "w")
    root_fs = "writable"
except OSError as e:
    root_fs = e.strerror
open("/tmp/scratch", "w").write("ok")
json.dump({"uid": os.getuid(), "gid": os.getgid(), "rootFs": root_fs, "capEff": status["CapEff"].strip(),
           "noNewPrivs": status["NoNewPrivs"].strip()}, open("/dev/termination-log", "w"))
"""
CHECKS = {  # image -> shell lines that must all succeed inside it
    "operator": [
        "sparsify-operator --help",
        "python3 -c 'import sparsify_operator.handlers'",
        "! python3 -c 'import torch' 2>/dev/null",  # nothing of the ML stack
    ],
    "cpu-worker": [
        "sparsify-worker --help",
        "python3 -c 'import sparsify_worker.export, sparsify_worker.benchmark, deepsparse, onnxruntime'",
    ],
    "trainer": [
        "sparsify-worker --help",
        "torchrun --help",
        "python3 -c 'import sparsify_worker.train, sparseml.pytorch, yolov5.models.yolo'",
        "python3 -c 'import torch; assert torch.version.cuda, torch.__version__'",  # CUDA-capable torch
        # the packaged v5.0 model YAMLs and the yolov5 package's v7.0 ones render presets
        "sparsify-worker recipe --arch yolov5s --preset pruned-quantized | grep -q model.23.m.0.cv2.conv.weight",
        "sparsify-worker recipe --arch yolov5n --layout v7.0 --preset transfer-pruned | grep -q model.9.cv2.conv.weight",
    ],
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_each_image_runs_confined_as_65532_and_its_entrypoints_work(name, images, core, namespace):
    checks = " && ".join(f"({c})" for c in CHECKS[name])
    script = f"set -e; {checks}; python3 -c '{CONFINEMENT}'"
    p = run_pod(core, namespace, pod(name, images[name], ["/bin/sh", "-c", script]), timeout=600)
    term = p.status.container_statuses[0].state.terminated
    assert term and term.exit_code == 0, f"{name}: {term or p.status.container_statuses[0].state}"
    seen = json.loads(term.message)
    assert (seen["uid"], seen["gid"]) == (65532, 65532)
    assert seen["rootFs"] == "Read-only file system"
    assert seen["capEff"] == "0000000000000000" and seen["noNewPrivs"] == "1"
    assert p.status.container_statuses[0].container_id.startswith("containerd://")


def test_run_as_non_root_refuses_an_image_that_would_run_as_root(images, core, namespace):
    manifest = pod("root", ROOT_PROBE_IMAGE, ["/pause"])
    manifest["spec"]["securityContext"] = {"runAsNonRoot": True}  # no runAsUser: the image's user decides
    p = run_pod(core, namespace, manifest, timeout=120)
    waiting = p.status.container_statuses[0].state.waiting
    assert waiting and waiting.reason == "CreateContainerConfigError", p.status.container_statuses[0].state
    assert "non-root" in waiting.message
    assert not p.status.container_statuses[0].state.running and not p.status.container_statuses[0].container_id


def test_without_the_restrictions_the_image_still_runs_as_its_own_user(images, core, namespace):
    """The same probe with no security settings at all: the image's USER alone keeps it off root,
    and what the restricted run did not have (a writable root, escalation) is really there."""
    p = run_pod(core, namespace, pod("open", images["operator"], ["python3", "-c", CONFINEMENT], restricted=False), timeout=120)
    term = p.status.container_statuses[0].state.terminated
    assert term and term.exit_code == 0, p.status.container_statuses[0].state
    seen = json.loads(term.message)
    assert seen["uid"] == 65532  # the image's own USER: this pod names no user
    assert seen["rootFs"] == "Permission denied"  # / is not UID 65532's to write, but it is not read-only
    assert seen["noNewPrivs"] == "0"


def test_a_memory_limit_is_enforced_by_the_kernel(images, core, namespace):
    hog = pod(
        "hog",
        images["operator"],
        ["python3", "-c", "x = bytearray(400 * 2**20); print('survived')"],
        resources={"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}},
    )
    p = run_pod(core, namespace, hog, timeout=120)
    term = p.status.container_statuses[0].state.terminated
    assert term and (term.reason, term.exit_code) == ("OOMKilled", 137), p.status.container_statuses[0].state
