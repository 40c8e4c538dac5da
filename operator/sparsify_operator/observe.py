"""What the cluster shows about a SparsifyJob's stages (pure: Job and Pod dicts in, facts out).

The operator decides only from these observations, never from memory, so a restarted
operator reaches the same decisions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .api import (
    ANNOTATION_BATCH_SIZE,
    ANNOTATION_FAILED,
    EXIT_GPU_OOM,
    EXIT_KILLED,
    KILLED_REASONS,
    LABEL_ATTEMPT,
    LABEL_STAGE,
    OOM_REASONS,
    TERMINAL,
    Phase,
    Reason,
)

# Container waiting reasons that will not clear up by themselves (a missing Secret or key, an
# image that cannot be pulled or run): said in status at once, failed at the start deadline.
STUCK_REASONS = (
    "CreateContainerConfigError",
    "CreateContainerError",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RunContainerError",
)


@dataclass
class Attempt:
    stage: str
    attempt: int
    job: str
    state: Phase
    batch_size: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    exit_code: int | None = None
    reason: str | None = None  # OOMKilled | GPUOutOfMemory | Killed | DeadlineExceeded | BackoffLimitExceeded | Error | ...
    message: str = ""
    summary: dict = field(default_factory=dict)  # the worker's JSON termination message
    pods_failed: int = 0
    created: str | None = None  # the Job's creationTimestamp
    waiting_reason: str | None = None  # why a pod of an unfinished attempt has not started (Unschedulable, ...)
    waiting_message: str = ""
    pending_since: str | None = None  # when the wait for its pods to start began

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def oom(self) -> bool:
        """Out of memory, the kernel's (OOMKilled) or the GPU's (the worker's exit 75)."""
        return self.reason in OOM_REASONS

    @property
    def killed(self) -> bool:
        """Failed by SIGKILL (exit 137) or a GPU OOM (exit 75): the training Job fails at once on
        it (podFailurePolicy) and the operator starts a new attempt that resumes from the last
        checkpoint."""
        return self.reason in KILLED_REASONS


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
    """The worker's summary: the one JSON object it ends its termination message with, else {}
    (a Python traceback from FallbackToLogsOnError: the caller keeps that as the message)."""
    if not message:
        return {}
    try:
        value = json.loads(message)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def waiting(pods: list[dict], events: list[dict] | None = None) -> tuple[str | None, str]:
    """Why the pods of an unfinished Job are not running: a stuck container, an unschedulable
    pod, or (no pod at all) the Job controller's FailedCreate (e.g. a quota)."""
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason") in STUCK_REASONS:
                return w["reason"], w.get("message") or ""
    for pod in pods:
        for c in pod.get("status", {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return c.get("reason") or "Unschedulable", c.get("message") or ""
    refused = [e for e in events or [] if e.get("reason") == "FailedCreate"] if not pods else []
    if refused:
        last = max(refused, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return "FailedCreate", last.get("message") or ""
    return None, ""


def observe_attempt(job: dict, pods: list[dict], events: list[dict] | None = None) -> Attempt:
    meta = job["metadata"]
    labels = meta.get("labels") or {}
    status = job.get("status") or {}
    try:
        batch = int((meta.get("annotations") or {})[ANNOTATION_BATCH_SIZE])
    except (KeyError, ValueError):
        batch = None
    a = Attempt(
        stage=labels.get(LABEL_STAGE, "?"),
        attempt=int(labels.get(LABEL_ATTEMPT, "0") or 0),
        job=meta["name"],
        state=Phase.PENDING,
        batch_size=batch,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        pods_failed=int(status.get("failed") or 0),
        created=meta.get("creationTimestamp"),
    )
    complete, failed = _condition(job, "Complete"), _condition(job, "Failed")
    given_up = (meta.get("annotations") or {}).get(ANNOTATION_FAILED)
    if given_up and not complete:  # the operator stopped it: its pods could not start in time
        a.state = Phase.FAILED
        a.reason, _, a.message = given_up.partition(": ")
        return a
    if complete:
        a.state = Phase.SUCCEEDED
        done = [p for p in pods if p.get("status", {}).get("phase") == "Succeeded"]
        done.sort(key=_index)  # rank/index 0 reports for a multi-node run
        if done:
            t = _terminated(done[0]) or {}
            a.exit_code = t.get("exitCode", 0)
            a.message = t.get("message", "")
            a.summary = parse_summary(a.message)
    elif failed:
        a.state = Phase.FAILED
        a.completion_time = a.completion_time or failed.get("lastTransitionTime")
        bad = [p for p in pods if p.get("status", {}).get("phase") == "Failed" and _terminated(p)]
        bad.sort(key=lambda p: (_terminated(p) or {}).get("finishedAt") or "")
        # One pod's retries: the last says how it ended. A group (Indexed, one pod per node): the
        # first failed rank is the cause; the others were stopped because of it.
        group = (job.get("spec") or {}).get("completionMode") == "Indexed"
        t = _terminated(bad[0] if group else bad[-1]) if bad else None
        if t:
            a.exit_code = t.get("exitCode")
            a.message = t.get("message", "")
            a.summary = parse_summary(a.message)
        if t and t.get("reason") == Reason.OOM_KILLED:
            a.reason = Reason.OOM_KILLED
        elif t and t.get("exitCode") == EXIT_GPU_OOM:
            a.reason = Reason.GPU_OUT_OF_MEMORY
        elif t and t.get("exitCode") == EXIT_KILLED:
            a.reason = Reason.KILLED  # SIGKILLed by something other than the OOM killer
        elif failed.get("reason") == "PodFailurePolicy" and t:
            a.reason = t.get("reason") or Reason.ERROR
        else:
            a.reason = failed.get("reason") or (t or {}).get("reason") or Reason.FAILED
        if not a.message:
            a.message = failed.get("message", "")
    elif (job.get("spec") or {}).get("suspend"):
        a.state = Phase.SUSPENDED
    else:
        active, ready = int(status.get("active") or 0), int(status.get("ready") or 0)
        pending = [p for p in pods if (p.get("status") or {}).get("phase") in (None, "Pending")]
        if active > 0 and (ready >= active or (pods and not pending)):
            a.state = Phase.RUNNING  # every pod (every rank of a group) is up
        elif active == 0 and _finishing(job, pods):
            a.state = Phase.RUNNING  # its pods are done; the Job controller has yet to say how it ended
        else:
            a.waiting_reason, a.waiting_message = waiting(pods, events)
            # how long it has been waiting: since its oldest pod that has not started (a pod the
            # Job recreates after a failure starts its own clock), or since the Job started
            since = [p["metadata"]["creationTimestamp"] for p in pending if (p.get("metadata") or {}).get("creationTimestamp")]
            a.pending_since = min(since) if since else (a.start_time or a.created)
    return a


def _finishing(job: dict, pods: list[dict]) -> bool:
    """A Job whose pods have ended, before the Job controller adds Complete or Failed: counted,
    still being counted (uncountedTerminatedPods, while the pods' finalizers go), decided
    (SuccessCriteriaMet / FailureTarget), or plain to see in its pods."""
    status = job.get("status") or {}
    uncounted = status.get("uncountedTerminatedPods") or {}
    return bool(
        int(status.get("succeeded") or 0) + int(status.get("failed") or 0)
        or uncounted.get("succeeded")
        or uncounted.get("failed")
        or _condition(job, "SuccessCriteriaMet")
        or _condition(job, "FailureTarget")
        or (pods and all((p.get("status") or {}).get("phase") in ("Succeeded", "Failed") for p in pods))
    )


def observe_needs_pods(job: dict) -> bool:
    """A finished Job's pods say how it ended (exit codes, OOM, termination messages); they no
    longer change."""
    return bool(_condition(job, "Complete") or _condition(job, "Failed"))


def observe_needs_waiting_pods(job: dict) -> bool:
    """An unfinished, unsuspended Job not all of whose pods are ready: its pods say whether they
    run, or why not (a missing Secret, unschedulable). Read on every reconcile while it lasts."""
    meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
    active, ready = int(status.get("active") or 0), int(status.get("ready") or 0)
    return not (
        observe_needs_pods(job)
        or spec.get("suspend")
        or (meta.get("annotations") or {}).get(ANNOTATION_FAILED)
        or (active > 0 and ready >= active)
    )


def observe(
    jobs: list[dict], pods_by_job: dict[str, list[dict]], events_by_job: dict[str, list[dict]] | None = None
) -> dict[str, list[Attempt]]:
    """stage -> attempts in order."""
    out: dict[str, list[Attempt]] = {}
    for job in jobs:
        name = job["metadata"]["name"]
        a = observe_attempt(job, pods_by_job.get(name, []), (events_by_job or {}).get(name))
        out.setdefault(a.stage, []).append(a)
    for attempts in out.values():
        attempts.sort(key=lambda a: a.attempt)
    return out
