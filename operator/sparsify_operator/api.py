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

# The worker's exit code for a GPU (CUDA) out-of-memory error: like a kernel OOM kill (137) it
# fails the training attempt at once and the next one resumes with half the batch size.
EXIT_GPU_OOM = 75
EXIT_KILLED = 137  # SIGKILL: the kernel's OOM killer, or anything else that kills

GPU_RESOURCE = "nvidia.com/gpu"
RENDEZVOUS_PORT = 29500
