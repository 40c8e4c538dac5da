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
        from botocore.config import Config
        import boto3

        raw = boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1",
                           config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
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
