"""Network namespaces for the containerd node, and TCP forwarders that cross into them.

The node's network (its bridge, the pods' veths and addresses, the kubelet's ports) lives in a
namespace the cluster creates; it has no route out. The control plane and S3 stay on the host's
loopback. A forwarder opens its listening socket inside the namespace (a socket keeps the
namespace it was created in) and connects out on the host's loopback, so pods reach the API
server and S3 at the node's address and nothing is routed anywhere else."""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import socket
import subprocess
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
log = logging.getLogger("localcluster.netns")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def create(name: str, bridge: str, address_cidr: str) -> Path:
    """A fresh namespace with loopback up and `bridge` holding `address_cidr` (the node's IP)."""
    delete(name)
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")
    ip("-n", name, "link", "add", bridge, "type", "bridge")
    ip("-n", name, "addr", "add", address_cidr, "dev", bridge)
    ip("-n", name, "link", "set", bridge, "up")
    subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    return Path("/run/netns") / name


def delete(name: str) -> None:
    ip("netns", "delete", name, check=False)


def listen_in(netns: Path, host: str, port: int) -> socket.socket:
    """A listening TCP socket created inside `netns`; the calling thread's namespace is restored."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({netns})")
        try:
            sock = socket.create_server((host, port), reuse_port=False)
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # never leave this thread in the node's namespace
                raise OSError(ctypes.get_errno(), "setns(back)")
    finally:
        os.close(own)
        os.close(target)
    return sock


class Forwarder:
    """Accepts in the node's namespace on host:port, relays each connection to 127.0.0.1:target."""

    def __init__(self, netns: Path, host: str, port: int, target: int):
        self.listener = listen_in(netns, host, port)
        self.target = target
        self.where = f"{host}:{port} -> 127.0.0.1:{target}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name=f"forward {self.where}", daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.5)
        while not self._stop.is_set():
            try:
                inside, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(inside,), daemon=True).start()

    def _relay(self, inside: socket.socket) -> None:
        try:
            outside = socket.create_connection(("127.0.0.1", self.target), timeout=10)
        except OSError as e:
            log.warning("forward %s: %s", self.where, e)
            inside.close()
            return
        outside.settimeout(None)
        inside.settimeout(None)
        sel = selectors.DefaultSelector()
        sel.register(inside, selectors.EVENT_READ, outside)
        sel.register(outside, selectors.EVENT_READ, inside)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=1):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            pass
        finally:
            sel.close()
            inside.close()
            outside.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
