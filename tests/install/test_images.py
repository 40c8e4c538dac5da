"""No image can be built here (no Docker engine); instead each Dockerfile's dependency set is
installed into a fresh virtual environment and its entrypoints are run, so the Dockerfiles
cannot silently rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = {  # Dockerfile -> checks run in the fresh venv
    "Dockerfile.operator": ["sparsify-operator --help", "python -c 'import sparsify_operator.handlers'"],
    "Dockerfile.cpu": [
        "sparsify-worker --help",
        "python -c 'import sparsify_worker.export, sparsify_worker.benchmark, deepsparse, onnxruntime'",
    ],
    "Dockerfile.trainer": [
        "sparsify-worker --help",
        "torchrun --help",
        "python -c 'import sparsify_worker.train, sparseml.pytorch, yolov5.models.yolo'",
        # the packaged v5.0 model YAMLs and the yolov5 package's v7.0 ones render presets
        "sparsify-worker recipe --arch yolov5s --preset pruned-quantized | grep -q model.23.m.0.cv2.conv.weight",
        "sparsify-worker recipe --arch yolov5n --layout v7.0 --preset transfer-pruned | grep -q model.9.cv2.conv.weight",
    ],
}


def extras(dockerfile: Path) -> str:
    m = re.search(r"^ARG EXTRAS=(\S+)$", dockerfile.read_text(), flags=re.M)
    assert m, f"{dockerfile.name} must declare ARG EXTRAS=..."
    return m.group(1)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_dependency_set_installs_and_its_entrypoints_run(name, tmp_path):
    dockerfile = REPO / "trainer_image" / name
    assert 'pip install --no-cache-dir ".[${EXTRAS}]"' in dockerfile.read_text()
    assert "USER 65532:65532" in dockerfile.read_text()  # non-root
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin/pip"), "install", "--quiet", f"{REPO}[{extras(dockerfile)}]"], capture_output=True, text=True, timeout=1500
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    for check in IMAGES[name]:
        res = subprocess.run(
            f"PATH={venv}/bin:$PATH NM_DISABLE_ANALYTICS=1 YOLO_CONFIG_DIR={tmp_path}/yolo {check}",
            shell=True,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert res.returncode == 0, f"{name}: {check}\n{res.stderr[-2000:]}"
