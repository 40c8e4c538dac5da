"""Container entry for the process-kubelet, run inside a fresh mount + UTS namespace.

    unshare --mount --uts --propagation private -- python -m localcluster.podexec SPEC.json

It gives the process the view of the filesystem a container runtime would: volumes
bind-mounted at their mountPaths, a private /tmp, /etc/hosts, the termination-message file,
the root filesystem read-only when the securityContext asks, the pod's hostname; then it
execs the container's command in place, so the kubelet waits on the real process."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _mount(source: str | None, target: str, flags: int) -> None:
    if _libc.mount(source.encode() if source else None, target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target}: {os.strerror(err)}")


def _prepare_target(source_is_dir: bool, target: str) -> None:
    if source_is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    # Open every source before mounting anything: a mount over /tmp must not hide a source
    # that lives under /tmp. Binding from /proc/self/fd/N uses the already-opened directory.
    mounts = sorted(spec["mounts"], key=lambda m: m["target"].rstrip("/").count("/"))
    fds = [os.open(m["source"], os.O_PATH) for m in mounts]
    is_dir = [os.path.isdir(m["source"]) for m in mounts]
    for m, fd, d in zip(mounts, fds, is_dir):
        _prepare_target(d, m["target"])
        _mount(f"/proc/self/fd/{fd}", m["target"], MS_BIND)
        if m.get("readOnly"):
            _mount(None, m["target"], MS_REMOUNT | MS_BIND | MS_RDONLY)
    for fd in fds:
        os.close(fd)
    if spec.get("readOnlyRoot"):
        _mount(None, "/", MS_REMOUNT | MS_BIND | MS_RDONLY)
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    os.chdir(spec.get("workingDir") or "/")
    argv, env = spec["argv"], spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:  # what a runtime reports as "executable file not found"
        print(f"localcluster: cannot start {argv[0]!r}: {e}", file=sys.stderr)
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)


if __name__ == "__main__":
    main(sys.argv[1])
