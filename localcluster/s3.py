"""A real S3-compatible HTTP server on loopback (moto's server mode) and small helpers.

Code under test reaches it only through endpoint settings (AWS_ENDPOINT_URL_S3 or an
explicit endpoint_url), exactly as it would reach MinIO or AWS."""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

from .controlplane import free_port, spawn

# moto accepts any credentials; these only satisfy boto3's signer.
LOCAL_ACCESS_KEY = "localcluster"
LOCAL_SECRET_KEY = "localcluster-secret"
LOCAL_REGION = "us-east-1"


def start_server(log: Path, port: int | None = None):
    port = port or free_port()
    proc = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"S3 server exited with {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"S3 server did not answer on {endpoint}; see {log}")


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=LOCAL_REGION,
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
    )


def create_bucket(endpoint: str, name: str) -> None:
    s3 = client(endpoint)
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
