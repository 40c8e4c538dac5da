"""S3 staging with boto3: endpoint override (AWS, MinIO, local), multipart transfers,
retries with backoff, end-to-end checksums, and write-then-make-visible publishing.

Single-object PUTs and completed multipart uploads are atomic in S3, so a reader never sees a
half-written object; a set of artifacts becomes a result only when `results.json` (written
last) names it."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("sparsify_worker.s3")
T = TypeVar("T")
MULTIPART_THRESHOLD = 8 * 1024 * 1024
TREE_WORKERS = 32  # parallel object downloads of a dataset
RETRYABLE_CODES = {"500", "502", "503", "504", "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}


class S3Error(RuntimeError):
    pass


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise S3Error(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
        bucket, _, key = uri[5:].partition("/")
        if not bucket:
            raise S3Error(f"no bucket in {uri!r}")
        return cls(bucket, key)

    def join(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Uri(self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def client(endpoint: str | None = None, region: str | None = None):
    """Endpoint and credentials come from the environment (AWS_ENDPOINT_URL_S3, AWS_REGION,
    AWS_ACCESS_KEY_ID/...; or the pod's workload identity), as every AWS SDK reads them."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    cfg = Config(
        retries={"max_attempts": 5, "mode": "adaptive"},
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=TREE_WORKERS,
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name=region or os.environ.get("AWS_REGION", "us-east-1"), config=cfg)


def with_retries(fn: Callable[[], T], what: str, attempts: int = 5, base_delay: float = 0.5) -> T:
    """Our own retry on top of botocore's: transfers are long operations whose failure
    (a dropped connection half-way, a 5xx) is worth retrying whole."""
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (S3UploadFailedError, S3TransferFailedError) as e:  # boto3 wraps the ClientError in text
            if attempt == attempts or not any(code in str(e) for code in RETRYABLE_CODES):
                raise S3Error(f"{what} failed: {e}") from e
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if attempt == attempts or not (code in RETRYABLE_CODES or status in RETRYABLE_CODES):
                raise S3Error(f"{what} failed: {code or status} {e}") from e
        except (BotoCoreError, ConnectionError, S3Error) as e:
            if attempt == attempts:
                raise S3Error(f"{what} failed after {attempts} attempts: {e}") from e
        delay = base_delay * 2 ** (attempt - 1) * (0.5 + random.random())
        log.warning("%s: transient S3 error, retry %d/%d in %.1fs", what, attempt, attempts - 1, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Store:
    def __init__(self, s3=None):
        self.s3 = s3 or client()

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD, max_concurrency=4)

    def upload(self, path: Path, uri: S3Uri | str, content_type: str = "application/octet-stream") -> str:
        """Upload and verify: the object's recorded sha256 must match the local file."""
        uri = S3Uri.parse(uri) if isinstance(uri, str) else uri
        digest = _sha256(path)
        extra = {"Metadata": {"sha256": digest}, "ContentType": content_type}

        def put() -> None:
            self.s3.upload_file(str(path), uri.bucket, uri.key, ExtraArgs=extra, Config=self._transfer_config())
            head = self.s3.head_object(Bucket=uri.bucket, Key=uri.key)
            if head.get("Metadata", {}).get("sha256") != digest or head["ContentLength"] != path.stat().st_size:
                raise S3Error(f"upload of {uri} did not verify (size/sha256 mismatch)")

        with_retries(put, f"upload {uri}")
        return str(uri)

    def put_bytes(self, data: bytes, uri: S3Uri | str, content_type: str = "application/json") -> str:
        uri = S3Uri.parse(uri) if isinstance(uri, str) else uri
        digest = hashlib.sha256(data).hexdigest()
        with_retries(
            lambda: self.s3.put_object(Bucket=uri.bucket, Key=uri.key, Body=data, ContentType=content_type, Metadata={"sha256": digest}),
            f"put {uri}",
        )
        return str(uri)

    def download(self, uri: S3Uri | str, path: Path) -> Path:
        """Download to a temporary name, verify the sha256 recorded at upload, then rename."""
        uri = S3Uri.parse(uri) if isinstance(uri, str) else uri
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")

        def get() -> None:
            self.s3.download_file(uri.bucket, uri.key, str(tmp), Config=self._transfer_config())
            expected = self.s3.head_object(Bucket=uri.bucket, Key=uri.key).get("Metadata", {}).get("sha256")
            if expected and expected != _sha256(tmp):
                raise S3Error(f"download of {uri} is corrupt (sha256 mismatch)")

        with_retries(get, f"download {uri}")
        os.replace(tmp, path)
        return path

    def exists(self, uri: S3Uri | str) -> bool:
        from botocore.exceptions import ClientError

        uri = S3Uri.parse(uri) if isinstance(uri, str) else uri
        try:
            with_retries(lambda: self.s3.head_object(Bucket=uri.bucket, Key=uri.key), f"head {uri}")
            return True
        except S3Error as e:
            if isinstance(e.__cause__, ClientError) and str(e.__cause__.response.get("Error", {}).get("Code")) in (
                "404",
                "NoSuchKey",
                "NotFound",
            ):
                return False
            raise

    def delete(self, uri: S3Uri | str) -> None:
        uri = S3Uri.parse(uri) if isinstance(uri, str) else uri
        with_retries(lambda: self.s3.delete_object(Bucket=uri.bucket, Key=uri.key), f"delete {uri}")

    def list(self, prefix: S3Uri | str) -> list[S3Uri]:
        return [obj for obj, _, _ in self.list_detailed(prefix)]

    def list_detailed(self, prefix: S3Uri | str) -> list[tuple[S3Uri, int, str]]:
        """(object, size, ETag) of everything under the prefix, in key order."""
        prefix = S3Uri.parse(prefix) if isinstance(prefix, str) else prefix
        out: list[tuple[S3Uri, int, str]] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        key = prefix.key.rstrip("/") + "/" if prefix.key else ""
        for page in with_retries(lambda: list(paginator.paginate(Bucket=prefix.bucket, Prefix=key)), f"list {prefix}"):
            out += [(S3Uri(prefix.bucket, o["Key"]), int(o.get("Size", 0)), str(o.get("ETag", ""))) for o in page.get("Contents", [])]
        return out

    def fetch_small(self, uri: S3Uri, path: Path) -> Path:
        """One GET (no HEAD): the body and the sha256 recorded at upload come in one response."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")

        def get() -> None:
            resp = self.s3.get_object(Bucket=uri.bucket, Key=uri.key)
            data = resp["Body"].read()
            expected = (resp.get("Metadata") or {}).get("sha256")
            if expected and expected != hashlib.sha256(data).hexdigest():
                raise S3Error(f"download of {uri} is corrupt (sha256 mismatch)")
            tmp.write_bytes(data)

        with_retries(get, f"download {uri}")
        os.replace(tmp, path)
        return path

    def download_tree(
        self, prefix: S3Uri | str, root: Path, objects: list[tuple[S3Uri, int, str]] | None = None, workers: int = TREE_WORKERS
    ) -> Path:
        """Everything under the prefix, TREE_WORKERS objects at a time (a dataset is many small
        files: one at a time, latency alone would take hours for COCO's ~240k)."""
        from concurrent.futures import ThreadPoolExecutor

        prefix = S3Uri.parse(prefix) if isinstance(prefix, str) else prefix
        objects = self.list_detailed(prefix) if objects is None else objects
        if not objects:
            raise S3Error(f"nothing found under {prefix}")
        base = prefix.key.rstrip("/") + "/" if prefix.key else ""

        def one(item: tuple[S3Uri, int, str]) -> None:
            obj, size, _ = item
            rel = obj.key[len(base) :]
            if rel and not rel.endswith("/"):
                (self.download if size > MULTIPART_THRESHOLD else self.fetch_small)(obj, root / rel)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(one, objects):  # the first failure is raised here
                pass
        return root
