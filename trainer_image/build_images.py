"""Build the operator, cpu-worker and trainer images with whichever of podman, docker or buildah
is on PATH (`make images`). Standard library only: it runs before any virtualenv exists.

    python3 trainer_image/build_images.py                    # the Dockerfiles' public bases
    python3 trainer_image/build_images.py --base local       # a Debian bookworm base made here
    python3 trainer_image/build_images.py --ca-bundle /etc/ssl/certs/ca-certificates.crt

Images are tagged as the chart names them (ghcr.io/yolo-sparsify/<name>:<version>), so `helm
install` finds them on a node that has them, without a push.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = {  # name -> Dockerfile; the order shares layers (cpu-worker's first layers are the trainer's)
    "operator": "trainer_image/Dockerfile.operator",
    "cpu-worker": "trainer_image/Dockerfile.cpu",
    "trainer": "trainer_image/Dockerfile.trainer",
}
# The local base: plain Debian bookworm with its python3.11, built from the Debian archive by
# mmdebstrap, for machines that reach package mirrors but no container registry.
LOCAL_BASE_PACKAGES = ["python3.11", "python3.11-venv", "ca-certificates"]
LOCAL_BASE_SUITE = "bookworm"


def version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.M)[1]


class NoBuildTool(SystemExit):
    pass


def pick_tool(wanted: str) -> str:
    for tool in [wanted] if wanted != "auto" else ["podman", "docker", "buildah"]:
        if shutil.which(tool):
            return tool
    raise NoBuildTool(f"no container build tool found (wanted: {wanted}); install podman, docker or buildah (Debian: make node-deps)")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def image_exists(tool: str, ref: str) -> bool:
    cmd = [tool, "image", "inspect", ref] if tool != "buildah" else ["buildah", "inspect", "--type", "image", ref]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def image_size(tool: str, ref: str) -> int:
    if tool == "buildah":
        out = subprocess.run(["podman", "image", "inspect", ref], capture_output=True, text=True) if shutil.which("podman") else None
        return json.loads(out.stdout)[0]["Size"] if out and out.returncode == 0 else 0
    out = subprocess.run([tool, "image", "inspect", ref], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout)[0]["Size"])


def lacks_sys_resource() -> bool:
    """Without CAP_SYS_RESOURCE (some sandboxes), the runtime cannot raise a container's rlimits
    to its defaults and every RUN step fails; pinning them to this process's own limits works."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return not (int(line.split()[1], 16) >> 24) & 1
    except OSError:
        pass
    return False


def ulimit_flags() -> list[str]:
    flags = []
    # nproc above a few thousand was refused where this was measured, even under this process's own
    for name, res, cap in (("nofile", resource.RLIMIT_NOFILE, 1 << 20), ("nproc", resource.RLIMIT_NPROC, 4096)):
        soft, hard = resource.getrlimit(res)
        soft, hard = (cap if v == resource.RLIM_INFINITY else min(v, cap) for v in (soft, hard))
        flags += ["--ulimit", f"{name}={soft}:{hard}"]
    return flags


def local_base(tool: str) -> str:
    """localhost/sparsify-base:bookworm-<hash of its package list>, made once by mmdebstrap."""
    digest = hashlib.sha1(" ".join([LOCAL_BASE_SUITE, *LOCAL_BASE_PACKAGES]).encode()).hexdigest()[:10]
    ref = f"localhost/sparsify-base:{LOCAL_BASE_SUITE}-{digest}"
    if image_exists(tool, ref):
        return ref
    if not shutil.which("mmdebstrap"):
        raise SystemExit("--base local needs mmdebstrap (Debian: apt-get install mmdebstrap)")
    tar = Path(os.environ.get("TMPDIR", "/tmp")) / f"sparsify-base-{digest}.tar"
    run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(LOCAL_BASE_PACKAGES), LOCAL_BASE_SUITE, str(tar)])
    try:
        if tool == "buildah":
            ctr = run(["buildah", "from", "scratch"], capture_output=True, text=True).stdout.strip()
            run(["buildah", "add", ctr, str(tar), "/"])
            run(["buildah", "config", "--cmd", "/bin/bash", ctr])
            run(["buildah", "commit", "--rm", ctr, ref])
        else:
            run([tool, "import", "--change", 'CMD ["/bin/bash"]', str(tar), ref])
    finally:
        tar.unlink(missing_ok=True)
    return ref


def build(tool: str, name: str, dockerfile: str, ref: str, base: str | None, ca_bundle: str | None) -> None:
    cmd = [tool, "build"] if tool != "buildah" else ["buildah", "bud", "--layers"]
    cmd += ["-f", dockerfile, "-t", ref]
    if base:
        cmd += ["--build-arg", f"BASE_IMAGE={base}"]
    if ca_bundle:
        cmd += ["--secret", f"id=ca,src={ca_bundle}"]
    if tool in ("podman", "buildah") and lacks_sys_resource():
        cmd += ulimit_flags()
    env = dict(os.environ, DOCKER_BUILDKIT="1")  # RUN --mount needs BuildKit with docker
    run([*cmd, "."], cwd=ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", default=os.environ.get("IMAGE_TOOL", "auto"), choices=["auto", "podman", "docker", "buildah"])
    ap.add_argument(
        "--base",
        default="public",
        help="public: each Dockerfile's default (python:3.11 slim, nvidia/cuda); local: a Debian bookworm "
        "base made here with mmdebstrap (no registry needed); anything else: that image for all three",
    )
    ap.add_argument("--ca-bundle", default="", help="a CA bundle pip trusts inside the build (a TLS-inspecting proxy's)")
    ap.add_argument("--registry", default="ghcr.io/yolo-sparsify", help="image names are REGISTRY/<name>:TAG")
    ap.add_argument("--tag", default="", help="default: the project's version")
    ap.add_argument("--only", nargs="*", choices=list(IMAGES), help="build only these")
    ap.add_argument("--prune", action="store_true", help="remove the untagged images these builds replaced (disk)")
    ap.add_argument("--if-possible", action="store_true", help="no build tool: say so and exit 0 (the test target)")
    args = ap.parse_args(argv)

    try:
        tool = pick_tool(args.tool)
    except NoBuildTool as e:
        if not args.if_possible:
            raise
        print(f"skipping the image builds: {e.code}", file=sys.stderr)
        return 0
    tag = args.tag or version()
    ca = args.ca_bundle or None
    if ca and not Path(ca).is_file():
        raise SystemExit(f"--ca-bundle {ca}: no such file")
    base = None if args.base == "public" else local_base(tool) if args.base == "local" else args.base
    print(f"building with {tool}, base {base or 'each Dockerfile default'}, tag {tag}", flush=True)

    built = []
    for name, dockerfile in IMAGES.items():
        if args.only and name not in args.only:
            continue
        ref = f"{args.registry}/{name}:{tag}"
        t0 = time.monotonic()
        build(tool, name, dockerfile, ref, base, ca)
        built.append((ref, time.monotonic() - t0))
    if args.prune and tool != "buildah":
        subprocess.run([tool, "image", "prune", "--force"], check=False, capture_output=True)
    print("\n| image | size | build time |\n|---|---|---|")
    for ref, took in built:
        print(f"| {ref} | {image_size(tool, ref) / 1e9:.2f} GB | {took:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
