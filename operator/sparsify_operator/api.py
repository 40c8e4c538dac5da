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
# Set (with spec.suspend) by the operator on a stage Job whose pods could not start before the
# start deadline: "<reason>: <message>". The Job stays as the record; its pods are removed.
ANNOTATION_FAILED = f"{GROUP}/failed"
ANNOTATION_SPEC = f"{GROUP}/spec"  # the normalized spec, mounted into the pod as a file (downward API)
ANNOTATION_INPUTS = f"{GROUP}/inputs"  # the earlier stages' summaries, the same way
SPEC_DIR = "/etc/sparsify"  # where the pod finds spec.json and inputs.json

# Environment names the operator owns: a spec.env entry may not set them (admission refuses
# them and the builder drops them), so no tenant can redirect another's output or skip a rule.
RESERVED_ENV_PREFIXES = ("SPARSIFY_", "AWS_", "LD_", "PYTHON")
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

# The worker's exit code for a GPU (CUDA) out-of-memory error: like a kernel OOM kill (137) it
# fails the training attempt at once and the next one resumes with half the batch size.
EXIT_GPU_OOM = 75
EXIT_KILLED = 137  # SIGKILL: the kernel's OOM killer, or anything else that kills

GPU_RESOURCE = "nvidia.com/gpu"
RENDEZVOUS_PORT = 29500
