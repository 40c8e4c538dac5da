"""Operator settings: what the platform team sets once (Helm values / the kustomize base ->
the operator's environment)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from .api import GPU_RESOURCE

GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class OperatorConfig:
    """How stage pods are built, whatever the SparsifyJob (see `from_env` for the variables)."""

    trainer_image: str = "ghcr.io/yolo-sparsify/trainer:0.1.0"
    cpu_image: str = "ghcr.io/yolo-sparsify/cpu-worker:0.1.0"
    worker_command: tuple[str, ...] = ("sparsify-worker",)
    train_launcher: tuple[str, ...] = ("torchrun",)
    image_pull_policy: str = "IfNotPresent"
    shm_size: str = "16Gi"
    extra_env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # Platform defaults for what a SparsifyJob leaves empty (Helm values `defaults.*`).
    gpu_node_selector: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    gpu_tolerations: tuple[dict, ...] = (GPU_TOLERATION,)
    s3_endpoint: str = ""
    queue_name: str = ""
    # A training pod requests these per GPU (scaled by gpusPerNode), so it is never BestEffort:
    # a neighbour's memory pressure must not evict it first or look like its own OOM.
    train_requests_per_gpu: tuple[tuple[str, str], ...] = (("cpu", "8"), ("memory", "48Gi"), ("ephemeral-storage", "20Gi"))
    train_limits_per_gpu: tuple[tuple[str, str], ...] = ()
    train_scratch_size: str = "100Gi"  # the dataset, checkpoints and exports under /tmp
    start_deadline_seconds: int = 300  # a stage pod that cannot start by then fails the stage with the reason
    dataset_cache_host_path: str = ""  # a node directory training pods keep datasets in between attempts and runs
    # Per CPU stage, merged over the builders' defaults (Helm `stages.cpuStageResources`): nodes
    # sized otherwise than c5.12xlarge. (stage, JSON {"requests": {...}, "limits": {...}}) pairs.
    cpu_stage_resources: tuple[tuple[str, str], ...] = field(default_factory=tuple)


# Liveness fails when the resync loop has not completed for this many periods.
LIVENESS_MISSED_RESYNCS = 4


def _argv(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if not raw:
        return default
    value = json.loads(raw)
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise ValueError(f"{name} must be a JSON list of strings, got {raw!r}")
    return tuple(value)


def from_env() -> OperatorConfig:
    d = OperatorConfig()
    extra = json.loads(os.environ.get("SPARSIFY_STAGE_ENV", "{}"))
    return OperatorConfig(
        trainer_image=os.environ.get("SPARSIFY_TRAINER_IMAGE", d.trainer_image),
        cpu_image=os.environ.get("SPARSIFY_CPU_IMAGE", d.cpu_image),
        worker_command=_argv("SPARSIFY_WORKER_COMMAND", d.worker_command),
        train_launcher=_argv("SPARSIFY_TRAIN_LAUNCHER", d.train_launcher),
        image_pull_policy=os.environ.get("SPARSIFY_IMAGE_PULL_POLICY", d.image_pull_policy),
        shm_size=os.environ.get("SPARSIFY_SHM_SIZE", d.shm_size),
        extra_env=tuple(sorted((str(k), str(v)) for k, v in extra.items())),
        gpu_node_selector=tuple(sorted(json.loads(os.environ.get("SPARSIFY_DEFAULT_GPU_NODE_SELECTOR") or "{}").items())),
        gpu_tolerations=tuple(json.loads(os.environ["SPARSIFY_DEFAULT_GPU_TOLERATIONS"]))
        if os.environ.get("SPARSIFY_DEFAULT_GPU_TOLERATIONS")
        else d.gpu_tolerations,
        s3_endpoint=os.environ.get("SPARSIFY_DEFAULT_S3_ENDPOINT", ""),
        queue_name=os.environ.get("SPARSIFY_DEFAULT_QUEUE_NAME", ""),
        train_requests_per_gpu=_quantities("SPARSIFY_TRAIN_REQUESTS_PER_GPU", d.train_requests_per_gpu),
        train_limits_per_gpu=_quantities("SPARSIFY_TRAIN_LIMITS_PER_GPU", d.train_limits_per_gpu),
        train_scratch_size=os.environ.get("SPARSIFY_TRAIN_SCRATCH_SIZE") or d.train_scratch_size,
        start_deadline_seconds=int(os.environ.get("SPARSIFY_START_DEADLINE_SECONDS") or d.start_deadline_seconds),
        dataset_cache_host_path=os.environ.get("SPARSIFY_DATASET_CACHE_HOST_PATH", ""),
        cpu_stage_resources=_stage_resources("SPARSIFY_CPU_STAGE_RESOURCES"),
    )


CPU_STAGES = ("validate", "export", "benchmark", "publish")


def _stage_resources(name: str) -> tuple[tuple[str, str], ...]:
    """{"benchmark": {"requests": {"cpu": "4"}, "limits": {...}}, ...}: checked here, so a typo
    stops the operator at start with its name rather than building pods nobody asked for."""
    raw = os.environ.get(name) or "{}"
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object keyed by stage, got {raw!r}")
    out = []
    for stage, res in sorted(value.items()):
        if stage not in CPU_STAGES:
            raise ValueError(f"{name}: unknown stage {stage!r} (CPU stages: {', '.join(CPU_STAGES)})")
        if not isinstance(res, dict) or set(res) - {"requests", "limits"}:
            raise ValueError(f"{name}.{stage} may only have requests and limits, got {res!r}")
        for kind, quantities in res.items():
            if not isinstance(quantities, dict) or not all(isinstance(v, str | int) for v in quantities.values()):
                raise ValueError(f"{name}.{stage}.{kind} must map resource names to quantities, got {quantities!r}")
        out.append((stage, json.dumps({k: {r: str(q) for r, q in v.items()} for k, v in res.items()}, sort_keys=True)))
    return tuple(out)


def _quantities(name: str, default: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """A JSON object of resource name -> quantity ('{"cpu": "8", "memory": "48Gi"}')."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = json.loads(raw or "{}")
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object of resource quantities, got {raw!r}")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def watched_namespaces() -> list[str]:
    return [n.strip() for n in os.environ.get("SPARSIFY_WATCH_NAMESPACES", "").split(",") if n.strip()]


def resync_seconds() -> float:
    return float(os.environ.get("SPARSIFY_RESYNC_SECONDS", "60"))


def metrics_port() -> int:
    return int(os.environ.get("SPARSIFY_METRICS_PORT", "9090"))


def listen_address() -> str:
    """Where the metrics endpoint listens: every interface by default (kubectl port-forward
    reaches it); the pod's own IP where pods share a network namespace (hostNetwork), so two
    replicas on one node do not want the same port."""
    return os.environ.get("SPARSIFY_LISTEN_ADDRESS", "") or "0.0.0.0"


def workers() -> int:
    """Reconciles run at once (threads draining the work queue; each object on one at a time)."""
    return max(1, int(os.environ.get("SPARSIFY_WORKERS", "16")))


def relist_seconds() -> float:
    """A full relist into the cache this often: the safety net for a watch event lost in transit
    (the periodic resync itself reconciles from the cache and reads nothing)."""
    return float(os.environ.get("SPARSIFY_RELIST_SECONDS", "600"))


@dataclass(frozen=True)
class LeaderElection:
    """Which Lease the replicas of one operator share (same namespace scope, same Lease)."""

    enabled: bool
    namespace: str
    name: str
    lease_duration: float
    renew_deadline: float
    retry_period: float


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def leader_election() -> LeaderElection:
    namespace = os.environ.get("SPARSIFY_LEADER_ELECTION_NAMESPACE", "")
    if not namespace:
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE) as f:
                namespace = f.read().strip()
        except OSError:
            namespace = "sparsify-system"
    scope = ",".join(sorted(watched_namespaces()))
    default_name = "sparsify-operator" + (f"-{hashlib.sha1(scope.encode()).hexdigest()[:8]}" if scope else "")
    return LeaderElection(
        enabled=os.environ.get("SPARSIFY_LEADER_ELECTION", "true").lower() not in ("false", "0", "no", "off"),
        namespace=namespace,
        name=os.environ.get("SPARSIFY_LEADER_ELECTION_ID") or default_name,
        lease_duration=float(os.environ.get("SPARSIFY_LEASE_DURATION_SECONDS", "10")),
        renew_deadline=float(os.environ.get("SPARSIFY_RENEW_DEADLINE_SECONDS", "7")),
        retry_period=float(os.environ.get("SPARSIFY_RETRY_PERIOD_SECONDS", "1")),
    )
