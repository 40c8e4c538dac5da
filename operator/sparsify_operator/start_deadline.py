"""The start-deadline policy (pure): a stage attempt whose pods cannot start (a missing Secret,
an image that cannot be pulled, unschedulable, a quota) fails after start_deadline_seconds
with the reason, instead of holding the run (and its quota) forever."""

from __future__ import annotations

import dataclasses

from .api import Phase, Reason
from .config import OperatorConfig
from .observe import Attempt
from .status import seconds_between


def start_overdue(attempt: Attempt, config: OperatorConfig, now: str) -> bool:
    """An unfinished attempt whose pods are not all running, past the start deadline (counted
    from its oldest waiting pod, else the Job's start: a Job Kueue holds suspended has not
    started)."""
    if attempt.state != Phase.PENDING:
        return False
    age = seconds_between(attempt.pending_since, now)
    return age is not None and age > config.start_deadline_seconds


def given_up(attempt: Attempt, config: OperatorConfig) -> Attempt:
    """The overdue attempt as failed, with why its pods did not start."""
    why = attempt.waiting_reason or Reason.NOT_STARTED
    detail = attempt.waiting_message or "no pod of the Job started"
    return dataclasses.replace(
        attempt,
        state=Phase.FAILED,
        reason=Reason.START_DEADLINE_EXCEEDED,
        message=f"{why}: {detail} (not started within {config.start_deadline_seconds}s)",
    )
