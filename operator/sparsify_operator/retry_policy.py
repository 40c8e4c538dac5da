"""The training retry policy (pure): after a failed training attempt, whether a new attempt
resumes from the last checkpoint, and at which batch size.

- Out of memory (the kernel's OOM kill, or CUDA's): half the batch, up to maxOOMRetries.
- Killed otherwise (SIGKILL: a node agent, a preemption), or any rank of a multi-node group
  failing (the group fails whole): the same batch, up to backoffLimit.
- Out of time (activeDeadlineSeconds, the start deadline) or a plain error: no new attempt; a
  single pod's own errors were already retried by the Job controller (backoffLimit)."""

from __future__ import annotations

from dataclasses import dataclass

from .api import NOT_RESUMED, Phase, Reason
from .observe import Attempt
from .spec import SparsifySpec


@dataclass(frozen=True)
class Retry:
    """The next training attempt: its batch size, and what the operator says about it."""

    batch_size: int
    reason: Reason  # OOMRetry | KilledRetry
    cause: str  # what happened to the failed attempt, in words

    def message(self, job: str) -> str:
        return f"{self.cause}; resuming from the last checkpoint with batch size {self.batch_size} (Job {job})"


def halved_batch(batch: int | None, world: int) -> int | None:
    """Half the total batch, kept divisible by the number of processes; None if impossible."""
    if not batch:
        return None
    new = (batch // 2) // world * world
    return new if new >= world else None


def resumable(spec: SparsifySpec, attempt: Attempt) -> bool:
    """A failed training attempt that a new attempt resumes from the last checkpoint: one killed
    (OOM, SIGKILL) and, for a multi-node group, any rank's failure (the group fails whole)."""
    if attempt.state != Phase.FAILED or attempt.reason in NOT_RESUMED:
        return False
    return attempt.killed or spec.multi_node


def retry_decision(spec: SparsifySpec, attempts: list[Attempt]) -> Retry | None:
    """The attempt after the last (failed) one, or None: the stage fails."""
    last, earlier = attempts[-1], attempts[:-1]
    if not resumable(spec, last):
        return None
    batch = last.batch_size or spec.training.batch_size
    if last.oom:
        if sum(a.oom for a in earlier) >= spec.training.max_oom_retries:
            return None
        new = halved_batch(batch, spec.training.world_size)
        if new is None:
            return None
        what = "ran out of GPU memory (CUDA OOM)" if last.reason == Reason.GPU_OUT_OF_MEMORY else "was OOM-killed"
        return Retry(new, Reason.OOM_RETRY, f"train attempt {last.attempt} {what} at batch size {batch}")
    if sum(not a.oom for a in earlier) >= spec.training.backoff_limit:
        return None
    how = (
        "was killed (exit 137)"
        if last.reason == Reason.KILLED
        else (f"failed on one rank ({last.reason}, exit code {last.exit_code}); the whole group stopped")
    )
    return Retry(batch, Reason.KILLED_RETRY, f"train attempt {last.attempt} {how}")
