"""Worker fixtures: a tiny generated dataset and one short prune+QAT run shared by tests
(real torch, sparseml, onnx, deepsparse; CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
IMG = 128


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from sparsify_worker.data import generate

    return generate(tmp_path_factory.mktemp("dataset"), train=32, val=8, size=IMG, seed=1)
