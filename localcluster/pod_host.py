"""What a pod worker needs from the node it runs on (the real kubelet's podSyncer seam): a few
calls and a few fixed facts. ProcessKubelet is the one implementation; PodWorker sees only this."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .pod_worker import PodWorker
    from .volumes import VolumeBuilder


@dataclass(frozen=True)
class NodeRuntime:
    """Fixed for the node's life: where pods live, what "an image" is, how volumes are made."""

    state_dir: Path
    runtime_paths: list[str]  # paths every container may read (the Python environment "image")
    image_entrypoints: dict[str, list[str]]
    volume_builder: VolumeBuilder
    stopping: threading.Event  # the node is shutting down


class PodHost(Protocol):
    runtime: NodeRuntime

    def base_env(self, pod: dict, pod_ip: str) -> dict[str, str]: ...

    secret_values: Callable[[str, str], dict[str, str] | None]
    config_map_data: Callable[[str, str], dict[str, str] | None]

    def hosts_content(self, namespace: str, worker: PodWorker) -> str: ...

    def track(self, pid: int) -> None: ...

    def patch_pod_status(self, worker: PodWorker, status: dict) -> bool: ...

    def delete_pod(self, namespace: str, name: str, uid: str) -> None: ...

    def worker_finished(self, worker: PodWorker) -> None: ...
