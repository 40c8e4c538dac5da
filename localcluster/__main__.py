"""Command line for the local cluster.

python -m localcluster up      [--state DIR]   start in the background, print the kubeconfig path
python -m localcluster down    [--state DIR]   stop it and remove what it started
python -m localcluster status  [--state DIR]   print cluster.json
python -m localcluster binaries [--node]       build/unpack the pinned binaries, print their dir
python -m localcluster logs NAMESPACE POD [CONTAINER]
python -m localcluster import-images [--state DIR] REF...   podman's images into the containerd node
python -m localcluster serve   --state DIR     the supervisor itself (foreground)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_STATE = Path(".localcluster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "serve", "logs", "import-images"):
        p = sub.add_parser(name)
        p.add_argument("--state", type=Path, default=DEFAULT_STATE)
        if name in ("up", "serve"):
            p.add_argument("--gpu-nodes", type=int, default=2)
            p.add_argument("--cpu-nodes", type=int, default=2)
            p.add_argument("--audit", action="store_true", help="log every API request's metadata to logs/audit.log")
            p.add_argument(
                "--runtime",
                choices=["process", "containerd"],
                default="process",
                help="process: simulated nodes whose pods are local processes; containerd: one real node "
                "(kubelet, containerd, runc) running the images `make images` built",
            )
        if name == "import-images":
            p.add_argument("refs", nargs="+")
        if name == "logs":
            p.add_argument("namespace")
            p.add_argument("pod")
            p.add_argument("container", nargs="?")
    b = sub.add_parser("binaries")
    b.add_argument("--node", action="store_true", help="also the containerd node's: kubelet, kube-proxy, pause")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from . import binaries
    from .cluster import ClusterInfo, LocalCluster, serve, stop_detached

    if args.cmd == "binaries":
        try:
            print(binaries.ensure_node() if args.node else binaries.ensure_all())
        except binaries.BinaryBuildError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    state = args.state.resolve()
    if args.cmd == "serve":
        serve(state, args.gpu_nodes, args.cpu_nodes, args.audit, args.runtime)
        return 0
    if args.cmd == "up":
        if (state / "supervisor.pid").exists() and (state / "cluster.json").exists():
            print(ClusterInfo.load(state).kubeconfig)
            return 0
        try:
            binaries.ensure_all() if args.runtime == "process" else binaries.ensure_node()  # in the foreground: a cold build shows here
        except binaries.BinaryBuildError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        cluster = LocalCluster(state, args.gpu_nodes, args.cpu_nodes, args.audit, args.runtime)
        info = cluster.start(detach=True)
        (state / "supervisor.pid").write_text(str(info.supervisor_pid))
        print(f"local cluster up in {info.started_seconds}s (nodes: {', '.join(info.nodes)}; S3: {info.s3_endpoint})", file=sys.stderr)
        print(f"export KUBECONFIG={info.kubeconfig}", file=sys.stderr)
        print(info.kubeconfig)
        return 0
    if args.cmd == "down":
        was_running = stop_detached(state)
        shutil.rmtree(state, ignore_errors=True)
        print("local cluster stopped" if was_running else "no local cluster was running", file=sys.stderr)
        return 0
    if args.cmd == "status":
        try:
            print((state / "cluster.json").read_text())
        except FileNotFoundError:
            print("no local cluster is running", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "import-images":
        from .containerd_node import NodeUnavailable, import_images, socket_of

        try:
            for ref, seconds in import_images(socket_of(state), args.refs).items():
                print(f"imported {ref} in {seconds:.0f}s", file=sys.stderr)
        except (NodeUnavailable, subprocess.CalledProcessError) as e:
            print(f"error: {e} (is a cluster with --runtime containerd up for {state}?)", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "logs":
        pods = sorted((state / "pods").glob(f"{args.namespace}_{args.pod}_*"))
        if not pods:
            print(f"no logs for pod {args.namespace}/{args.pod}", file=sys.stderr)
            return 1
        logs = sorted(pods[-1].glob(f"{args.container or '*'}/container.log"))
        for f in logs:
            sys.stdout.write(f.read_text(errors="replace"))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
