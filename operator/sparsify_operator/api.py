"""Names of the SparsifyJob API, of what the operator stamps on its children, and of the states
and reasons it writes (str Enums: they compare equal to, and serialize as, their text)."""

from enum import Enum

GROUP = "yolo-sparsify.io"
VERSION = "v1alpha1"
PLURAL = "sparsifyjobs"
KIND = "SparsifyJob"
API_VERSION = f"{GROUP}/{VERSION}"


class _Name(str, Enum):
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Phase(_Name):
    """A SparsifyJob's phase, and a stage attempt's state."""

    PENDING = "Pending"
    SUSPENDED = "Suspended"  # a stage Job held suspended (by Kueue, until the gang fits)
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)


class Reason(_Name):
    """Why a stage attempt ended, or why the SparsifyJob is where it is (Ready's reason, Events)."""

    OOM_KILLED = "OOMKilled"  # the kernel's OOM killer
    GPU_OUT_OF_MEMORY = "GPUOutOfMemory"  # the worker's exit 75
    KILLED = "Killed"  # SIGKILL by something else
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    START_DEADLINE_EXCEEDED = "StartDeadlineExceeded"  # the operator gave up on pods that never started
    NOT_STARTED = "NotStarted"
    ERROR = "Error"
    FAILED = "Failed"
    SUCCEEDED = "Succeeded"
    STAGE_RUNNING = "StageRunning"
    STAGE_SUCCEEDED = "StageSucceeded"
    STAGE_FAILED = "StageFailed"
    POD_NOT_STARTING = "PodNotStarting"
    OOM_RETRY = "OOMRetry"
    KILLED_RETRY = "KilledRetry"
    INVALID_SPEC = "InvalidSpec"
    CHILD_REJECTED = "ChildRejected"
    JOB_CREATED = "JobCreated"
    IN_PROGRESS = "InProgress"  # condition reasons: Ready while stages run,
    FINISHED = "Finished"  # Reconciling once done,
    NO_FAILURE = "NoFailure"  # Stalled while nothing failed


OOM_REASONS = (Reason.OOM_KILLED, Reason.GPU_OUT_OF_MEMORY)
KILLED_REASONS = (*OOM_REASONS, Reason.KILLED)  # a new training attempt resumes from the last checkpoint
NOT_RESUMED = (Reason.DEADLINE_EXCEEDED, Reason.START_DEADLINE_EXCEEDED)  # out of time: a new attempt would be too

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
