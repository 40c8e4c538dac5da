"""Pure builders: a SparsifyJob (+ what stage, which attempt) -> child manifests.

Deterministic names, owner references, labels; no API calls. `construct_job` is the one
place that knows how a stage Job looks: `stage_container` the part every stage shares, then
`_train_job` (GPUs, torchrun, a multi-node group) or `_cpu_stage_job` on top."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from .api import (
    ANNOTATION_BATCH_SIZE,
    ANNOTATION_INPUTS,
    ANNOTATION_SPEC,
    API_VERSION,
    EXIT_GPU_OOM,
    EXIT_KILLED,
    GPU_RESOURCE,
    KIND,
    KUEUE_QUEUE_LABEL,
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    LABEL_STAGE,
    MANAGED_BY,
    RENDEZVOUS_PORT,
    SPEC_DIR,
)
from .config import OperatorConfig
from .spec import SparsifySpec, output_uri, reserved_env, thawed

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# Stage-specific Job settings: pod retries before the stage fails, and the default deadline.
STAGE_BACKOFF = {"validate": 0, "export": 1, "benchmark": 1, "publish": 2}
STAGE_DEADLINE_SECONDS = {"validate": 1800, "export": 3600, "benchmark": 3600, "publish": 900}
STAGE_RESOURCES = {
    "validate": {"requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "2Gi"}, "limits": {"memory": "4Gi"}},
    "export": {"requests": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "4Gi"}, "limits": {"memory": "16Gi"}},
    "benchmark": {"requests": {"cpu": "16", "memory": "8Gi", "ephemeral-storage": "4Gi"}, "limits": {"memory": "32Gi"}},
    "publish": {"requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"}, "limits": {"memory": "2Gi"}},
}
# Scratch (/tmp) per CPU stage: the model, its dense twin and their ONNX files, with room to spare.
DATASET_CACHE_DIR = "/var/cache/sparsify-datasets"
STAGE_SCRATCH = {"validate": "4Gi", "export": "8Gi", "benchmark": "8Gi", "publish": "2Gi"}


def job_name(sj_name: str, stage: str, attempt: int = 0) -> str:
    return f"{sj_name}-{stage}" if attempt == 0 else f"{sj_name}-{stage}-r{attempt}"


def rendezvous_service_name(sj_name: str) -> str:
    return f"{sj_name}-rdzv"


def owner_reference(sj: dict) -> dict:
    meta = sj["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(sj: dict, name: str, labels: dict) -> dict:
    """A child's name, its SparsifyJob's namespace, its labels and the controller owner reference."""
    return {"name": name, "namespace": sj["metadata"]["namespace"], "labels": labels, "ownerReferences": [owner_reference(sj)]}


def child_labels(sj: dict, stage: str, attempt: int) -> dict:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: sj["metadata"]["name"], LABEL_STAGE: stage, LABEL_ATTEMPT: str(attempt)}


def network_policy_name(sj_name: str) -> str:
    return f"{sj_name}-train"


def stage_env(sj: dict, spec: SparsifySpec, stage: str, attempt: int, config: OperatorConfig) -> list[dict]:
    """The user's variables first, then the operator's and the platform's: for a duplicate name
    the last entry wins, and a reserved name from the spec is dropped besides (admission
    refuses it; an object stored before that rule must not get through either)."""
    meta = sj["metadata"]
    user = [{"name": e.name, "value": e.value} for e in spec.env if not reserved_env(e.name)]
    env = [
        {"name": "SPARSIFY_STAGE", "value": stage},
        {"name": "SPARSIFY_NAMESPACE", "value": meta["namespace"]},
        {"name": "SPARSIFY_NAME", "value": meta["name"]},
        {"name": "SPARSIFY_UID", "value": meta["uid"]},
        {"name": "SPARSIFY_ATTEMPT", "value": str(attempt)},
        {"name": "SPARSIFY_RECIPE", "value": spec.recipe_name},
        {"name": "SPARSIFY_OUTPUT_URI", "value": output_uri(spec, meta["namespace"], meta["name"], meta["uid"])},
        # The spec is a file (the pod's own annotation, mounted): as an environment variable a
        # long inline recipe would pass the kernel's 128 KiB limit and the pod could not start.
        {"name": "SPARSIFY_SPEC_FILE", "value": f"{SPEC_DIR}/spec.json"},
        {"name": "SPARSIFY_INPUTS_FILE", "value": f"{SPEC_DIR}/inputs.json"},
        {"name": "AWS_REGION", "value": spec.output.region},
        {"name": "AWS_DEFAULT_REGION", "value": spec.output.region},
        {"name": "NM_DISABLE_ANALYTICS", "value": "1"},
        {"name": "TERMINATION_MESSAGE_PATH", "value": TERMINATION_MESSAGE_PATH},
    ]
    if stage == "train" and config.dataset_cache_host_path:
        env.append({"name": "SPARSIFY_DATASET_CACHE", "value": DATASET_CACHE_DIR})
    endpoint = spec.output.endpoint or config.s3_endpoint
    if endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": endpoint})
    env += [{"name": k, "value": v} for k, v in config.extra_env]
    return user + env


def _compact(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # UTF-8 as is: no 6-byte escapes


def scaled_quantity(quantity: str, factor: int) -> str:
    """'8' x 4 -> '32', '48Gi' x 2 -> '96Gi', '500m' x 3 -> '1500m' (a Kubernetes quantity times n)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", quantity.strip())
    if not m:
        raise ValueError(f"not a plain quantity: {quantity!r}")
    value = float(m.group(1)) * factor
    return f"{int(value) if value == int(value) else value}{m.group(2)}"


def train_resources(spec: SparsifySpec, config: OperatorConfig) -> dict:
    """Platform per-GPU requests (and limits) scaled by gpusPerNode, then the spec's own
    resources over them, then the GPUs."""
    gpus = spec.training.gpus_per_node
    base = {"requests": {k: scaled_quantity(v, gpus) for k, v in config.train_requests_per_gpu}}
    if config.train_limits_per_gpu:
        base["limits"] = {k: scaled_quantity(v, gpus) for k, v in config.train_limits_per_gpu}
    user = spec.training.resources or {}
    for kind in ("requests", "limits"):
        if isinstance(user.get(kind), Mapping):
            base.setdefault(kind, {}).update(thawed(user[kind]))
    return _merge_resources(base, {"limits": {GPU_RESOURCE: str(gpus)}})


def train_command(sj: dict, spec: SparsifySpec, attempt: int, config: OperatorConfig) -> list[str]:
    """torchrun: one process per GPU; several nodes rendezvous (c10d) at index 0's pod."""
    nodes, gpus = spec.training.nodes, spec.training.gpus_per_node
    cmd = [*config.train_launcher, f"--nnodes={nodes}", f"--nproc_per_node={gpus}"]
    if nodes == 1:
        cmd.insert(len(config.train_launcher), "--standalone")
    else:
        name, ns = sj["metadata"]["name"], sj["metadata"]["namespace"]
        host = f"{job_name(name, 'train', attempt)}-0.{rendezvous_service_name(name)}.{ns}.svc.cluster.local"
        cmd += [
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={host}:{RENDEZVOUS_PORT}",
            f"--rdzv_id={sj['metadata']['uid']}-{attempt}",
            "--max_restarts=0",
        ]
    # The worker's supervisor runs torchrun and turns what happened to its processes into the
    # pod's exit code (torchrun itself exits 1 for any failure): 75 for a CUDA OOM, 137 for a
    # killed process, so the podFailurePolicy below can act on them.
    return [*config.worker_command, "supervise", "--", *cmd, "--no-python", *config.worker_command, "train"]


def stage_container(
    sj: dict, spec: SparsifySpec, stage: str, attempt: int, config: OperatorConfig, image: str, command: list[str], resources: dict
) -> dict:
    """The container every stage shares: hardened, the spec mounted at SPEC_DIR, scratch at /tmp."""
    container = {
        "name": stage,
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": command,
        "env": stage_env(sj, spec, stage, attempt, config),
        "resources": resources,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True}],
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.output.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.output.credentials_secret}}]
    return container


def _pod_spec(spec: SparsifySpec, container: dict, scratch: str) -> dict:
    pod_spec: dict = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": scratch}},
            {
                "name": "spec",
                "downwardAPI": {
                    "items": [
                        {"path": "spec.json", "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_SPEC}']"}},
                        {"path": "inputs.json", "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_INPUTS}']"}},
                    ]
                },
            },
        ],
        "securityContext": {"runAsNonRoot": True, "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "enableServiceLinks": False,
    }
    if spec.output.service_account_name:  # workload identity needs the projected token
        pod_spec["serviceAccountName"] = spec.output.service_account_name
        pod_spec["automountServiceAccountToken"] = True
    else:
        pod_spec["automountServiceAccountToken"] = False
    return pod_spec


def _train_job(sj: dict, spec: SparsifySpec, attempt: int, config: OperatorConfig) -> tuple[dict, dict, dict]:
    """A training attempt: torchrun on GPU nodes, one pod (or an Indexed group of `nodes` pods)."""
    tr = spec.training
    container = stage_container(
        sj,
        spec,
        "train",
        attempt,
        config,
        tr.image or config.trainer_image,
        train_command(sj, spec, attempt, config),
        train_resources(spec, config),
    )
    pod_spec = _pod_spec(spec, container, config.train_scratch_size)
    # PyTorch DataLoader workers share tensors through /dev/shm
    pod_spec["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": config.shm_size}})
    container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    if config.dataset_cache_host_path:
        pod_spec["volumes"].append({"name": "datasets", "hostPath": {"path": config.dataset_cache_host_path, "type": "DirectoryOrCreate"}})
        container["volumeMounts"].append({"name": "datasets", "mountPath": DATASET_CACHE_DIR})
    pod_spec["tolerations"] = [*config.gpu_tolerations, *thawed(tr.tolerations or ())]
    selector = thawed(tr.node_selector) or dict(config.gpu_node_selector)
    if selector:
        pod_spec["nodeSelector"] = selector
    job_spec: dict = {"backoffLimit": tr.backoff_limit}
    if tr.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = tr.active_deadline_seconds
    if tr.nodes == 1:
        # OOM (the kernel's: 137, or CUDA's: 75) fails the attempt at once: the operator resumes
        # it with half the batch size. Node loss or preemption does not count against backoffLimit.
        job_spec["podFailurePolicy"] = {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "In", "values": [EXIT_GPU_OOM, EXIT_KILLED]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        }
    else:
        # A group fails whole: one rank's failure (or its node's loss) ends the attempt at once,
        # the Job controller stops the other ranks (instead of leaving them to hang in a
        # collective), and the operator resumes the whole group from the last checkpoint.
        job_spec["podFailurePolicy"] = {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "NotIn", "values": [0]}},
                {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        }
        job_spec["backoffLimit"] = 0  # group restarts are the operator's new attempts (training.backoffLimit)
        job_spec.update({"completionMode": "Indexed", "completions": tr.nodes, "parallelism": tr.nodes})
        pod_spec["subdomain"] = rendezvous_service_name(sj["metadata"]["name"])
    queue = tr.queue_name or config.queue_name
    if queue:  # the GPU gang goes through Kueue; CPU stages start at once
        job_spec["suspend"] = True  # Kueue admits (unsuspends) it when the whole gang fits
    return job_spec, pod_spec, ({KUEUE_QUEUE_LABEL: queue} if queue else {})


def cpu_stage_resources(stage: str, config: OperatorConfig) -> dict:
    """The stage's defaults with the platform's overrides (Helm `stages.cpuStageResources`) on top."""
    out = {kind: dict(values) for kind, values in STAGE_RESOURCES[stage].items()}
    for name, raw in config.cpu_stage_resources:
        if name == stage:
            for kind, values in json.loads(raw).items():
                out.setdefault(kind, {}).update(values)
    return out


def _cpu_stage_job(sj: dict, spec: SparsifySpec, stage: str, attempt: int, config: OperatorConfig) -> tuple[dict, dict, dict]:
    """validate, export, benchmark or publish: one CPU pod, its own resources and deadline."""
    container = stage_container(
        sj, spec, stage, attempt, config, config.cpu_image, [*config.worker_command, stage], cpu_stage_resources(stage, config)
    )
    pod_spec = _pod_spec(spec, container, STAGE_SCRATCH[stage])
    if stage == "benchmark" and spec.benchmark.node_selector:
        pod_spec["nodeSelector"] = dict(spec.benchmark.node_selector)
    return {"backoffLimit": STAGE_BACKOFF[stage], "activeDeadlineSeconds": STAGE_DEADLINE_SECONDS[stage]}, pod_spec, {}


def construct_job(
    sj: dict,
    spec: SparsifySpec,
    stage: str,
    attempt: int,
    config: OperatorConfig,
    batch_size: int | None = None,
    inputs: dict | None = None,
) -> dict:
    """One attempt of one stage. A training attempt runs at `batch_size` (the spec's unless an
    OOM retry halved it): the pod receives the spec with that value, and the Job's annotation
    records it."""
    name = job_name(sj["metadata"]["name"], stage, attempt)
    labels = child_labels(sj, stage, attempt)
    annotations = {}
    if stage == "train":
        spec = spec.with_batch_size(batch_size or spec.training.batch_size)
        annotations[ANNOTATION_BATCH_SIZE] = str(spec.training.batch_size)
        job_spec, pod_spec, extra_labels = _train_job(sj, spec, attempt, config)
    else:
        job_spec, pod_spec, extra_labels = _cpu_stage_job(sj, spec, stage, attempt, config)
    pod_annotations = {ANNOTATION_SPEC: _compact(spec.to_dict()), ANNOTATION_INPUTS: _compact(inputs or {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**child_metadata(sj, name, {**labels, **extra_labels}), "annotations": annotations},
        "spec": {**job_spec, "template": {"metadata": {"labels": labels, "annotations": pod_annotations}, "spec": pod_spec}},
    }


def construct_rendezvous_service(sj: dict) -> dict:
    """Headless Service so Indexed Job pods resolve as <job>-<index>.<service>."""
    name = sj["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(sj, rendezvous_service_name(name), {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: name}),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # rendezvous happens before anything is "ready"
            "selector": {LABEL_JOB: name, LABEL_STAGE: "train"},
            "ports": [{"name": "c10d", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }


def construct_network_policy(sj: dict) -> dict:
    """Multi-node training: the ranks' ports (the c10d rendezvous store unpickles what it
    receives; NCCL's own) are open only to the same SparsifyJob's training pods."""
    name = sj["metadata"]["name"]
    train_pods = {"matchLabels": {LABEL_JOB: name, LABEL_STAGE: "train"}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(sj, network_policy_name(name), {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: name}),
        "spec": {"podSelector": train_pods, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": train_pods}]}]},
    }


def _merge_resources(user: dict, forced: dict) -> dict:
    out = {k: dict(v) for k, v in user.items() if isinstance(v, dict)}
    for kind, values in forced.items():
        out.setdefault(kind, {}).update(values)
    if GPU_RESOURCE in out.get("limits", {}) and "requests" in out:
        out["requests"][GPU_RESOURCE] = out["limits"][GPU_RESOURCE]  # extended resources: requests == limits
    return out
