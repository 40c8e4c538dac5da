"""`sparsify-operator`: run the Kopf operator. Kopf runs standalone (no peering objects): which
replica acts is decided by the operator's own Lease-based leader election (leader.py)."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import socket
import sys

import kopf

from . import config

M_ARENA_MAX = -8  # glibc's mallopt parameter


def few_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena, up to 8 per core: with 16
    reconcile threads decoding API responses, memory freed in one arena is not reused by the
    others and the peak RSS grows with the thread count. Two arenas, set before any thread
    starts (the same as MALLOC_ARENA_MAX=2); elsewhere than glibc, nothing."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError, TypeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparsify-operator")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="Kopf liveness endpoint")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    from . import handlers  # noqa: F401  (registers the handlers)

    few_malloc_arenas()
    namespaces = config.watched_namespaces()
    kopf.configure(verbose=args.verbose)
    # The identity is given, not detected: Kopf's detection asks the password database for the
    # user, and a UID without an entry (an image's 65532, OpenShift's random UIDs) crashes it.
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}/sparsify-operator"
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
        identity=identity,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
