"""Session-wide local cluster: started once (real etcd, API server, controller-manager,
scheduler, process-kubelet, S3), torn down at the end even when tests fail; and a bare S3
server for the suites that need S3 without Kubernetes (worker, gpu)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localcluster.cluster import ClusterInfo, LocalCluster
from localcluster.testing import api_client, create_namespace, delete_namespace


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> ClusterInfo:
    state = tmp_path_factory.mktemp("localcluster")
    lc = LocalCluster(Path(state))
    info = lc.start()
    os.environ["LOCALCLUSTER_STARTED_SECONDS"] = str(info.started_seconds)
    yield info
    lc.stop()


@pytest.fixture(scope="session")
def kube(cluster):
    return api_client(cluster.kubeconfig)


@pytest.fixture(scope="session")
def core(kube):
    from kubernetes import client

    return client.CoreV1Api(kube)


@pytest.fixture(scope="session")
def batch(kube):
    from kubernetes import client

    return client.BatchV1Api(kube)


@pytest.fixture
def namespace(core, request):
    ns = create_namespace(core, prefix=request.node.name[:20].lower().replace("_", "-").strip("-"))
    yield ns
    delete_namespace(core, ns)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3-compatible server on loopback, reached only through its endpoint."""
    from localcluster import s3 as local_s3
    from localcluster.controlplane import terminate

    proc, endpoint = local_s3.start_server(tmp_path_factory.mktemp("s3") / "s3.log")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", local_s3.LOCAL_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", local_s3.LOCAL_SECRET_KEY)
    local_s3.create_bucket(endpoint, "artifacts")
    yield endpoint
    terminate(proc)
