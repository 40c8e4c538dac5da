"""Node objects for the local cluster (pure builders: spec -> manifest).

GPU nodes look like p4d.24xlarge workers with the NVIDIA device plugin's extended resource and
the usual GPU taint; CPU nodes look like c5.12xlarge. The real scheduler places pods on them."""

from __future__ import annotations

from dataclasses import dataclass, field

MANAGED_LABEL = "localcluster.dev/managed"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
KUBELET_VERSION = "v1.34.4"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    instance_type: str
    cpu: str
    memory: str
    gpus: int = 0
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict, ...] = ()


def gpu_node(index: int) -> NodeSpec:
    return NodeSpec(
        name=f"gpu-node-{index}",
        instance_type="p4d.24xlarge",
        cpu="96",
        memory="1152Gi",
        gpus=8,
        labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.count": "8"},
        taints=(GPU_TAINT,),
    )


def c5_node(index: int) -> NodeSpec:
    return NodeSpec(name=f"cpu-node-{index}", instance_type="c5.12xlarge", cpu="48", memory="96Gi")


def default_nodes(gpu: int = 2, cpu: int = 2) -> list[NodeSpec]:
    return [gpu_node(i) for i in range(gpu)] + [c5_node(i) for i in range(cpu)]


def node_manifest(spec: NodeSpec) -> dict:
    capacity = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.pods), "ephemeral-storage": "200Gi"}
    if spec.gpus:
        capacity[GPU_RESOURCE] = str(spec.gpus)
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": spec.instance_type,
        "topology.kubernetes.io/zone": "local-a",
        MANAGED_LABEL: "true",
        **spec.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {"taints": [dict(t) for t in spec.taints]} if spec.taints else {},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def ready_condition(ready: bool, now: str, reason: str = "", message: str = "") -> dict:
    return {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": reason or ("KubeletReady" if ready else "KubeletNotReady"),
        "message": message or ("process-kubelet is posting ready status" if ready else "node marked not ready"),
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def node_status(spec: NodeSpec, ready: bool, now: str, reason: str = "", message: str = "") -> dict:
    manifest = node_manifest(spec)
    pressure = [
        {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": "", "lastHeartbeatTime": now, "lastTransitionTime": now}
        for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"), ("PIDPressure", "SufficientPID"))
    ]
    return {
        **manifest["status"],
        "conditions": [*pressure, ready_condition(ready, now, reason, message)],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": spec.name}],
        "nodeInfo": {
            "machineID": spec.name,
            "systemUUID": spec.name,
            "bootID": spec.name,
            "kernelVersion": "local",
            "osImage": "localcluster process-kubelet",
            "containerRuntimeVersion": "process://local",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }
