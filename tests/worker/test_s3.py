"""S3 staging against a real S3-compatible server on loopback (moto's server mode), including
transient errors injected by a proxy in front of it."""

from __future__ import annotations

import http.client
import http.server
import os
import threading
from pathlib import Path

import pytest

from sparsify_worker.s3 import S3Error, S3Uri, Store, client

pytestmark = pytest.mark.s3


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Answers the first `failures` requests with 503 SlowDown, then forwards to S3."""

    def __init__(self, upstream: str, failures: int):
        self.upstream = upstream.removeprefix("http://")
        self.failures = failures
        self.seen = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), FlakyHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    def _any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen += 1
            fail = self.server.seen <= self.server.failures
        if fail:
            payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(self.server.upstream, timeout=30)
        conn.request(self.command, self.path, body=body, headers={k: v for k, v in self.headers.items()})
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

    def log_message(self, *args) -> None:
        pass


def test_round_trip_multipart_with_checksums(s3_endpoint, tmp_path):
    store = Store(client(s3_endpoint))
    src = tmp_path / "model.onnx"
    src.write_bytes(os.urandom(20 * 1024 * 1024))  # above the multipart threshold
    uri = store.upload(src, "s3://artifacts/runs/ns/demo/model.onnx")
    assert uri == "s3://artifacts/runs/ns/demo/model.onnx"
    got = store.download(uri, tmp_path / "back" / "model.onnx")
    assert got.read_bytes() == src.read_bytes()
    assert store.exists(uri) and not store.exists("s3://artifacts/runs/ns/demo/missing.onnx")
    assert [str(u) for u in store.list("s3://artifacts/runs/ns")] == [uri]
    assert not list((tmp_path / "back").glob(".*.part"))  # nothing half-written left behind


def test_transient_errors_are_retried(s3_endpoint, tmp_path):
    proxy = FlakyProxy(s3_endpoint, failures=3)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        # botocore's own retries are off here, so only the worker's retry loop can save it
        import boto3
        from botocore.config import Config

        raw = boto3.client(
            "s3",
            endpoint_url=proxy.endpoint,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )
        store = Store(raw)
        src = tmp_path / "best.pt"
        src.write_bytes(b"checkpoint" * 1000)
        store.upload(src, "s3://artifacts/ckpt/best.pt")
        assert proxy.seen > 3  # it failed three times and still landed
        assert store.download("s3://artifacts/ckpt/best.pt", tmp_path / "got.pt").read_bytes() == src.read_bytes()
    finally:
        proxy.shutdown()


def test_permanent_errors_fail_with_a_clear_message(s3_endpoint, tmp_path):
    store = Store(client(s3_endpoint))
    with pytest.raises(S3Error, match="NoSuchBucket"):
        store.put_bytes(b"{}", "s3://no-such-bucket/x.json")
    with pytest.raises(S3Error, match="not an S3 URI"):
        S3Uri.parse("https://bucket/key")
    assert str(S3Uri.parse("s3://b/a/").join("c", "/d")) == "s3://b/a/c/d"
    assert Path(tmp_path).exists()


def counting_store(endpoint: str) -> tuple[Store, dict]:
    """A Store whose client counts the S3 operations it sends (botocore's own event hook)."""
    s3 = client(endpoint)
    calls: dict[str, int] = {}

    def count(event_name: str, **_) -> None:
        op = event_name.rsplit(".", 1)[-1]
        calls[op] = calls.get(op, 0) + 1

    s3.meta.events.register("before-call.s3", count)
    return Store(s3), calls


def test_a_dataset_tree_comes_down_in_parallel_with_one_request_per_object(s3_endpoint, tmp_path):
    src = tmp_path / "src"
    files = {f"labels/train/{i:04d}.txt": f"0 0.5 0.5 0.1 0.{i % 9 + 1}\n".encode() for i in range(300)}
    files["data.yaml"] = b"nc: 1\nnames: [a]\n"
    store, calls = counting_store(s3_endpoint)
    for rel, data in files.items():
        store.put_bytes(data, f"s3://artifacts/ds/tree/{rel}")
    calls.clear()
    store.download_tree("s3://artifacts/ds/tree/", src)
    assert {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()} == files
    assert calls.get("GetObject") == 301 and "HeadObject" not in calls  # no HEAD per object any more
    assert calls.get("ListObjectsV2") == 1


def test_a_corrupt_object_in_a_tree_fails_the_transfer(s3_endpoint, tmp_path):
    s3 = client(s3_endpoint)
    s3.put_object(Bucket="artifacts", Key="ds/bad/a.txt", Body=b"what was uploaded", Metadata={"sha256": "0" * 64})
    with pytest.raises(S3Error, match="corrupt"):
        Store(s3).download_tree("s3://artifacts/ds/bad/", tmp_path / "bad")


def test_the_nodes_dataset_cache_is_reused_while_the_listing_matches_and_refetched_when_it_changes(s3_endpoint, tmp_path):
    from sparsify_worker.staging import cached_dataset

    store, calls = counting_store(s3_endpoint)
    for i in range(20):
        store.put_bytes(f"0 0.5 0.5 0.1 0.1 # {i}\n".encode(), f"s3://artifacts/ds/cached/labels/{i}.txt")
    root = cached_dataset(store, "s3://artifacts/ds/cached/", tmp_path / "cache")
    assert len(list(root.rglob("*.txt"))) == 20 and calls["GetObject"] == 20
    calls.clear()
    assert cached_dataset(store, "s3://artifacts/ds/cached/", tmp_path / "cache") == root  # another attempt on the node
    assert calls == {"ListObjectsV2": 1}  # listed, compared, nothing fetched
    store.put_bytes(b"1 0.5 0.5 0.2 0.2\n", "s3://artifacts/ds/cached/labels/3.txt")  # the dataset changed
    root = cached_dataset(store, "s3://artifacts/ds/cached/", tmp_path / "cache")
    assert (root / "labels/3.txt").read_bytes() == b"1 0.5 0.5 0.2 0.2\n" and calls["GetObject"] == 20
