"""A two-minute tour of the local cluster: a Job on the c5 pool, a GPU pod on a GPU node,
an S3 round trip. `make demo` runs this until the SparsifyJob demo lands."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client

from . import s3
from .cluster import LocalCluster
from .testing import api_client, create_namespace, job_condition, pod_of_job, wait_until


def main() -> int:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="localcluster-smoke-") as tmp, LocalCluster(Path(tmp)) as info:
        print(f"cluster up in {info.started_seconds}s: {info.server}, nodes {', '.join(info.nodes)}")
        kube = api_client(info.kubeconfig)
        core, batch = client.CoreV1Api(kube), client.BatchV1Api(kube)
        ns = create_namespace(core, "smoke")
        for name, selector, tolerations, resources in (
            ("on-c5", {"node.kubernetes.io/instance-type": "c5.12xlarge"}, [], {}),
            ("on-gpu", {}, [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], {"limits": {"nvidia.com/gpu": "8"}}),
        ):
            batch.create_namespaced_job(ns, {"metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "nodeSelector": selector, "tolerations": tolerations,
                "containers": [{"name": "main", "image": "python:3.11", "resources": resources,
                                "command": ["python", "-c", "import socket; open('/dev/termination-log','w').write(socket.gethostname())"]}],
            }}}})
        for name in ("on-c5", "on-gpu"):
            result = wait_until(lambda: job_condition(batch, ns, name), 60, what=f"job {name}")
            (pod,) = pod_of_job(core, ns, name)
            node = core.read_node(pod.spec.node_name)
            print(f"job {name:7s} {result:8s} pod {pod.metadata.name} on {pod.spec.node_name} "
                  f"({node.metadata.labels['node.kubernetes.io/instance-type']}), "
                  f"termination message {pod.status.container_statuses[0].state.terminated.message!r}")
        s3.create_bucket(info.s3_endpoint, "smoke")
        c = s3.client(info.s3_endpoint)
        c.put_object(Bucket="smoke", Key="hello.txt", Body=b"hello")
        print(f"S3 {info.s3_endpoint}: s3://smoke/hello.txt -> {c.get_object(Bucket='smoke', Key='hello.txt')['Body'].read()!r}")
    print(f"done in {time.monotonic() - t0:.1f}s; everything stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
