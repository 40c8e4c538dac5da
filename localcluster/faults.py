"""Fault injection through the API (the process-kubelet acts on these annotations)."""

from __future__ import annotations

import itertools

from kubernetes import client

FAULT_ANNOTATION = "localcluster.dev/fault"
_nonce = itertools.count(1)


def _pod_fault(core: client.CoreV1Api, namespace: str, pod: str, action: str, container: str | None) -> None:
    value = f"{action}{':' + container if container else ''}#{next(_nonce)}"
    core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {FAULT_ANNOTATION: value}}})


def kill_container(core: client.CoreV1Api, namespace: str, pod: str, container: str | None = None) -> None:
    """SIGKILL the container's processes, as if it crashed (reason Error, exit 137)."""
    _pod_fault(core, namespace, pod, "kill", container)


def oom_kill_container(core: client.CoreV1Api, namespace: str, pod: str, container: str | None = None) -> None:
    """SIGKILL it the way the kernel's OOM killer would (reason OOMKilled, exit 137)."""
    _pod_fault(core, namespace, pod, "oom", container)


def lose_node(core: client.CoreV1Api, node: str) -> None:
    """The node disappears: its processes die, its heartbeats stop, Ready turns False."""
    core.patch_node(node, {"metadata": {"annotations": {FAULT_ANNOTATION: "not-ready"}}})


def restore_node(core: client.CoreV1Api, node: str) -> None:
    core.patch_node(node, {"metadata": {"annotations": {FAULT_ANNOTATION: None}}})
