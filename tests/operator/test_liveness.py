"""Liveness tells the truth: an operator whose API calls hang (a half-open connection, a stuck
proxy) stops answering /healthz with 200 once its resync loop has not completed for several
periods, so the kubelet restarts it instead of it looking healthy while doing nothing."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from localcluster.testing import wait_until
from tests.support.operator_process import OperatorProcess

pytestmark = pytest.mark.cluster


class FreezableProxy:
    """A TCP relay to the API server that can stop passing bytes (connections stay open)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.1)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def health(port: int) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_liveness_fails_when_the_resync_loop_stops_completing(operator_kubeconfig, namespace, tmp_path):
    cfg = yaml.safe_load(Path(operator_kubeconfig).read_text())
    server = urllib.parse.urlsplit(cfg["clusters"][0]["cluster"]["server"])
    proxy = FreezableProxy((server.hostname, server.port))
    cfg["clusters"][0]["cluster"]["server"] = f"https://{server.hostname}:{proxy.port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(cfg))
    # its own operator, watching only this test's (empty) namespace, resyncing every 3 s
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log", {"SPARSIFY_WATCH_NAMESPACES": namespace, "SPARSIFY_RESYNC_SECONDS": "3"})
    try:
        op.start()
        assert health(op.port) == 200
        proxy.frozen.set()  # every API call from now on hangs
        t0 = time.monotonic()
        wait_until(lambda: health(op.port) == 500, 90, interval=1, what="/healthz failing")
        seconds = time.monotonic() - t0
        print(f"\nliveness failed {seconds:.1f}s after the API calls started hanging (resync 3s, limit 4 periods)")
        assert "the resync loop has not completed" in op.output()
        proxy.frozen.clear()  # the calls complete: the next resync makes it healthy again
        wait_until(lambda: health(op.port) == 200, 150, interval=1, what="/healthz healthy again")
    finally:
        proxy.frozen.clear()
        op.stop()
        proxy.close()
