"""`sparsify-operator`: run the Kopf operator. Kopf runs standalone (no peering objects): which
replica acts is decided by the operator's own Lease-based leader election (leader.py)."""

from __future__ import annotations

import argparse
import sys

import kopf

from . import config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparsify-operator")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="Kopf liveness endpoint")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    from . import handlers  # noqa: F401  (registers the handlers)

    namespaces = config.watched_namespaces()
    kopf.configure(verbose=args.verbose)
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=args.liveness or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
