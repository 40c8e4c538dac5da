"""The container suite: the images `make images` built, run by a real kubelet with containerd and
runc (the local cluster's `--runtime containerd` node). What the process-kubelet cannot show is
shown here: an image really starts as UID 65532 on a read-only root filesystem, the kernel
enforces memory limits, and the kubelet refuses what a security context forbids. The `kube`,
`core` and `namespace` fixtures are the root conftest's, on this suite's `cluster`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from localcluster.cluster import ClusterInfo, LocalCluster
from localcluster.containerd_node import NODE_NAME, NodeUnavailable, check_prerequisites, image_of_pause_binary, import_images, socket_of
from localcluster.testing import wait_until

REPO = Path(__file__).resolve().parents[2]
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), flags=re.M)[1]
IMAGES = {name: f"ghcr.io/yolo-sparsify/{name}:{VERSION}" for name in ("operator", "cpu-worker", "trainer")}
# A root image (no USER): the pause binary, which is never started when the kubelet refuses it.
ROOT_PROBE_IMAGE = "localhost/localcluster/root-probe:1"
# The chart's pod and container security settings, as every stage pod carries them.
# (runAsGroup matters: containerd 1.6's CRI takes only the UID from an image's `USER uid:gid`
# and runs the process with GID 0 unless the pod names the group.)
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _unavailable() -> str | None:
    try:
        check_prerequisites()
    except NodeUnavailable as e:
        return str(e)
    missing = [ref for ref in IMAGES.values() if subprocess.run(["podman", "image", "exists", ref]).returncode != 0]
    if missing:
        return f"images not built: {', '.join(missing)} (make images)"
    return None


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    why = _unavailable()
    if why:
        pytest.skip(f"container suite: {why}")
    return IMAGES


@pytest.fixture(scope="session")
def cluster(images, tmp_path_factory) -> ClusterInfo:
    state = Path(tmp_path_factory.mktemp("ctr"))
    lc = LocalCluster(state, runtime="containerd")
    info = lc.start()
    image_of_pause_binary(ROOT_PROBE_IMAGE)
    took = import_images(socket_of(state), [*images.values(), ROOT_PROBE_IMAGE])
    print(f"\ncontainerd node up in {info.started_seconds}s; image imports: {json.dumps({k: round(v) for k, v in took.items()})}")
    yield info
    lc.stop()


def pod(name: str, image: str, command: list[str], restricted: bool = True, **container) -> dict:
    """A one-shot pod on the containerd node; `restricted`: the chart's security settings."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeName": NODE_NAME,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": RESTRICTED_POD if restricted else {},
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    **({"securityContext": RESTRICTED_CONTAINER} if restricted else {}),
                    **container,
                }
            ],
        },
    }


def run_pod(core, namespace: str, manifest: dict, timeout: float = 300):
    """Create the pod and wait until its container has terminated (or is stuck waiting on an error)."""
    name = manifest["metadata"]["name"]
    core.create_namespaced_pod(namespace, manifest)

    def done():
        p = core.read_namespaced_pod(name, namespace)
        for cs in p.status.container_statuses or []:
            if cs.state.terminated or (cs.state.waiting and cs.state.waiting.reason not in ("ContainerCreating", "PodInitializing")):
                return p
        return None

    return wait_until(done, timeout, interval=0.5, what=f"pod {namespace}/{name} to finish")
