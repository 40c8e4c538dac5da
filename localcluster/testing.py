"""Helpers for tests and scripts that drive the local cluster through its API."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from . import binaries

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def wait_until(fn: Callable[[], T], timeout: float = 60, interval: float = 0.25, what: str = "condition") -> T:
    """Poll `fn` until it returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise Timeout(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def api_client(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(kubeconfig)


def create_namespace(core: client.CoreV1Api, prefix: str = "t") -> str:
    """A fresh namespace, returned once its default ServiceAccount exists (pods need it)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_until(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        30,
        what=f"default ServiceAccount in {name}",
    )
    return name


def delete_namespace(core: client.CoreV1Api, name: str) -> None:
    try:
        core.delete_namespace(name)
    except ApiException as e:
        if e.status != 404:
            raise


def kubectl(kubeconfig: str, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    return subprocess.run([str(binaries.binary("kubectl")), *args], input=input, text=True, capture_output=True, env=env, check=check)


def helm(kubeconfig: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": kubeconfig, "HELM_CACHE_HOME": "/tmp/helm-cache", "HELM_CONFIG_HOME": "/tmp/helm-config"}
    return subprocess.run([str(binaries.binary("helm")), *args], text=True, capture_output=True, env=env, check=check)


def helm_install_operator(kubeconfig: str, chart: Path, values: dict[str, str]) -> subprocess.CompletedProcess:
    """The operator's chart installed as release `sparsify` in sparsify-system, on free local
    ports for its health and metrics endpoints, waited for; `values` are the --set overrides."""
    from .controlplane import free_port

    # The process-kubelet's pods share this machine's network (as with hostNetwork): each
    # replica listens on its own pod IP (127.1.0.x), or the second could not bind the ports.
    settings = {"healthPort": str(free_port()), "metrics.port": str(free_port()), "listenOnPodIP": "true", **values}
    sets = [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
    return helm(
        kubeconfig,
        "install",
        "sparsify",
        str(chart),
        "-n",
        "sparsify-system",
        "--create-namespace",
        *sets,
        "--wait",
        "--timeout",
        "180s",
        check=False,
    )


def pod_of_job(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items


def job_condition(batch: client.BatchV1Api, namespace: str, job: str) -> str | None:
    """'Complete' or 'Failed' once the Job controller has decided, else None."""
    j = batch.read_namespaced_job(job, namespace)
    for c in j.status.conditions or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return c.type
    return None


def service_account_kubeconfig(admin_kubeconfig: str, core: client.CoreV1Api, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a day-long token): runs a
    component with exactly the RBAC its manifests grant."""
    token = core.create_namespaced_service_account_token(sa, namespace, {"spec": {"expirationSeconds": 86400}}).status.token
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": sa}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path
