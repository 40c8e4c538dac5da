"""What the cluster shows about a SparsifyJob's stages (pure: Job and Pod dicts in, facts out).

The operator decides only from these observations, never from memory, so a restarted
operator reaches the same decisions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .api import ANNOTATION_BATCH_SIZE, EXIT_GPU_OOM, EXIT_KILLED, LABEL_ATTEMPT, LABEL_STAGE

OOM_REASONS = ("OOMKilled", "GPUOutOfMemory")


@dataclass
class Attempt:
    stage: str
    attempt: int
    job: str
    state: str  # Suspended | Pending | Running | Succeeded | Failed
    batch_size: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    exit_code: int | None = None
    reason: str | None = None  # OOMKilled | GPUOutOfMemory | Killed | DeadlineExceeded | BackoffLimitExceeded | Error | ...
    message: str = ""
    summary: dict = field(default_factory=dict)  # the worker's JSON termination message
    pods_failed: int = 0

    @property
    def finished(self) -> bool:
        return self.state in ("Succeeded", "Failed")

    @property
    def oom(self) -> bool:
        """Out of memory, the kernel's (OOMKilled) or the GPU's (the worker's exit 75)."""
        return self.reason in OOM_REASONS

    @property
    def killed(self) -> bool:
        """Failed by SIGKILL (exit 137) or a GPU OOM (exit 75): the training Job fails at once on
        it (podFailurePolicy) and the operator starts a new attempt that resumes from the last
        checkpoint."""
        return self.reason in (*OOM_REASONS, "Killed")


def _condition(job: dict, kind: str) -> dict | None:
    for c in job.get("status", {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def _terminated(pod: dict) -> dict | None:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        t = (cs.get("state") or {}).get("terminated")
        if t:
            return t
    return None


def _index(pod: dict) -> int:
    ann = pod.get("metadata", {}).get("annotations") or {}
    try:
        return int(ann.get("batch.kubernetes.io/job-completion-index", 0))
    except ValueError:
        return 0


def parse_summary(message: str | None) -> dict:
    """The worker ends with one JSON object in its termination message; anything else
    (a Python traceback from FallbackToLogsOnError) is kept as text."""
    if not message:
        return {}
    try:
        value = json.loads(message)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def observe_attempt(job: dict, pods: list[dict]) -> Attempt:
    meta = job["metadata"]
    labels = meta.get("labels") or {}
    status = job.get("status") or {}
    try:
        batch = int((meta.get("annotations") or {})[ANNOTATION_BATCH_SIZE])
    except (KeyError, ValueError):
        batch = None
    a = Attempt(stage=labels.get(LABEL_STAGE, "?"), attempt=int(labels.get(LABEL_ATTEMPT, "0") or 0), job=meta["name"],
                state="Pending", batch_size=batch, start_time=status.get("startTime"),
                completion_time=status.get("completionTime"), pods_failed=int(status.get("failed") or 0))
    complete, failed = _condition(job, "Complete"), _condition(job, "Failed")
    if complete:
        a.state = "Succeeded"
        done = [p for p in pods if p.get("status", {}).get("phase") == "Succeeded"]
        done.sort(key=_index)  # rank/index 0 reports for a multi-node run
        if done:
            t = _terminated(done[0]) or {}
            a.exit_code = t.get("exitCode", 0)
            a.message = t.get("message", "")
            a.summary = parse_summary(a.message)
    elif failed:
        a.state = "Failed"
        a.completion_time = a.completion_time or failed.get("lastTransitionTime")
        bad = [p for p in pods if p.get("status", {}).get("phase") == "Failed" and _terminated(p)]
        bad.sort(key=lambda p: (_terminated(p) or {}).get("finishedAt") or "")
        t = _terminated(bad[-1]) if bad else None
        if t:
            a.exit_code = t.get("exitCode")
            a.message = t.get("message", "")
            a.summary = parse_summary(a.message)
        if t and t.get("reason") == "OOMKilled":
            a.reason = "OOMKilled"
        elif t and t.get("exitCode") == EXIT_GPU_OOM:
            a.reason = "GPUOutOfMemory"
        elif t and t.get("exitCode") == EXIT_KILLED:
            a.reason = "Killed"  # SIGKILLed by something other than the OOM killer
        elif failed.get("reason") == "PodFailurePolicy" and t:
            a.reason = t.get("reason") or "Error"
        else:
            a.reason = failed.get("reason") or (t or {}).get("reason") or "Failed"
        if not a.message:
            a.message = failed.get("message", "")
    elif (job.get("spec") or {}).get("suspend"):
        a.state = "Suspended"
    elif int(status.get("active") or 0) > 0 and (int(status.get("ready") or 0) > 0
                                                  or any(p.get("status", {}).get("phase") == "Running" for p in pods)):
        a.state = "Running"
    return a


def observe_needs_pods(job: dict) -> bool:
    """Only a finished Job's pods add anything (exit codes, OOM, termination messages); a
    running one shows as such in the Job's own status (`ready`)."""
    return bool(_condition(job, "Complete") or _condition(job, "Failed"))


def observe(jobs: list[dict], pods_by_job: dict[str, list[dict]]) -> dict[str, list[Attempt]]:
    """stage -> attempts in order."""
    out: dict[str, list[Attempt]] = {}
    for job in jobs:
        a = observe_attempt(job, pods_by_job.get(job["metadata"]["name"], []))
        out.setdefault(a.stage, []).append(a)
    for attempts in out.values():
        attempts.sort(key=lambda a: a.attempt)
    return out
