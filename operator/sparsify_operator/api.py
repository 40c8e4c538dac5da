"""Names of the SparsifyJob API and of what the operator stamps on its children."""

GROUP = "yolo-sparsify.io"
VERSION = "v1alpha1"
PLURAL = "sparsifyjobs"
KIND = "SparsifyJob"
API_VERSION = f"{GROUP}/{VERSION}"

STAGES = ("validate", "train", "export", "benchmark", "publish")
STAGE_PHASES = {
    "validate": "Validating",
    "train": "Training",
    "export": "Exporting",
    "benchmark": "Benchmarking",
    "publish": "Publishing",
}

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "sparsify-operator"
LABEL_JOB = f"{GROUP}/sparsifyjob"
LABEL_STAGE = f"{GROUP}/stage"
LABEL_ATTEMPT = f"{GROUP}/attempt"
ANNOTATION_BATCH_SIZE = f"{GROUP}/batch-size"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

GPU_RESOURCE = "nvidia.com/gpu"
RENDEZVOUS_PORT = 29500
