"""Status pieces (pure): kstatus-style conditions and the JSON merge patch between two statuses."""

from __future__ import annotations

import datetime as dt

from .api import Phase, Reason

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # what Kubernetes writes and what the status uses


def seconds_between(start: str | None, end: str | None) -> float | None:
    """end - start for two status timestamps; None where either is missing or malformed."""
    try:
        return (dt.datetime.strptime(end, TIME_FORMAT) - dt.datetime.strptime(start, TIME_FORMAT)).total_seconds()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def condition(kind: str, ok: bool, reason: str, message: str, generation: int | None, now: str, old: list[dict] | None) -> dict:
    status = "True" if ok else "False"
    previous = next((c for c in old or [] if c.get("type") == kind), None)
    changed = previous is None or previous.get("status") != status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
    }


def conditions(phase: str, reason: str, message: str, generation: int | None, now: str, old: list[dict] | None) -> list[dict]:
    """Ready (what GitOps tools wait for), Reconciling while stages run, Stalled on failure."""
    done, failed = phase == Phase.SUCCEEDED, phase == Phase.FAILED
    running = not (done or failed)
    return [
        condition("Ready", done, Reason.SUCCEEDED if done else (reason if failed else Reason.IN_PROGRESS), message, generation, now, old),
        condition("Reconciling", running, Reason.STAGE_RUNNING if running else Reason.FINISHED, message, generation, now, old),
        condition("Stalled", failed, reason if failed else Reason.NO_FAILURE, message if failed else "", generation, now, old),
    ]


def merge_patch(old: dict | None, new: dict) -> dict:
    """RFC 7386 patch that turns `old` into `new` (keys that disappear become null)."""
    old = old or {}
    patch: dict = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch


def human_size(num_bytes: int | float | None) -> str | None:
    if num_bytes is None:
        return None
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1000
    return None
