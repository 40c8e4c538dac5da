"""Test data in the local S3: a generated YOLO dataset (the worker's own `make-dataset`) and the
credentials Secret stage pods read it with. Shared by the suites that run the real worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from localcluster import s3 as local_s3
from localcluster.testing import kubectl


def upload_shapes(
    s3_endpoint: str, workdir: Path, uri: str = "s3://datasets/shapes", train: int = 48, val: int = 16, size: int = 160
) -> str:
    """Generate shapes images with YOLO labels and upload them; returns the dataset URI."""
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    local_s3.create_bucket(s3_endpoint, bucket)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_ACCESS_KEY_ID": local_s3.LOCAL_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": local_s3.LOCAL_SECRET_KEY,
    }
    cmd = [sys.executable, "-m", "sparsify_worker.cli", "make-dataset", str(workdir / "shapes")]
    cmd += ["--train", str(train), "--val", str(val), "--size", str(size), "--upload", uri]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    return uri.rstrip("/") + "/"


def create_credentials_secret(kubeconfig: str, namespace: str, name: str = "s3-credentials") -> str:
    kubectl(
        kubeconfig,
        "create",
        "secret",
        "generic",
        name,
        "-n",
        namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={local_s3.LOCAL_ACCESS_KEY}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={local_s3.LOCAL_SECRET_KEY}",
    )
    return name
