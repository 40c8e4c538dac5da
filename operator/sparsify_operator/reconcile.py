"""The reconcile decision (pure): the SparsifyJob + what the cluster shows -> what to create,
the status to write and the events to post. Handlers only execute the plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from .api import STAGE_PHASES, STAGES
from .builders import OperatorConfig, construct_job, construct_network_policy, construct_rendezvous_service
from .observe import Attempt
from .spec import SpecError, normalized, recipe_name, world_size
from .status import condition, conditions, human_size, seconds_between

TERMINAL = ("Succeeded", "Failed")
NOT_RESUMED = ("DeadlineExceeded", "StartDeadlineExceeded")
MESSAGE_LIMIT = 512
VERDICTS = ("NativelyRun", "FasterThanDense", "AccuracyRetained")


@dataclass
class Plan:
    create: list[dict] = field(default_factory=list)
    status: dict = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    give_up: list[tuple[str, str]] = field(default_factory=list)  # (Job name, "reason: message"): stop it, its pods never started


def halved_batch(batch: int | None, world: int) -> int | None:
    """Half the total batch, kept divisible by the number of processes; None if impossible."""
    if not batch:
        return None
    new = (batch // 2) // world * world
    return new if new >= world else None


def resumable(spec: dict, attempt: Attempt) -> bool:
    """A failed training attempt that a new attempt resumes from the last checkpoint: one killed
    (OOM, SIGKILL) and, for a multi-node group, any rank's failure (the group fails whole)."""
    if attempt.state != "Failed" or attempt.reason in NOT_RESUMED:
        return False
    return attempt.killed or int(spec["training"]["nodes"]) > 1


def next_train_attempt(spec: dict, attempts: list[Attempt]) -> int | None:
    """Batch size of the next training attempt after a resumable failure, or None when retries
    are spent: OOM halves the batch (up to maxOOMRetries); anything else keeps it (up to
    backoffLimit)."""
    last = attempts[-1]
    earlier = attempts[:-1]
    if last.oom:
        if sum(a.oom for a in earlier) >= int(spec["training"]["maxOOMRetries"]):
            return None
        return halved_batch(last.batch_size, world_size(spec))
    if sum(not a.oom for a in earlier) >= int(spec["training"]["backoffLimit"]):
        return None
    return last.batch_size


def start_overdue(attempt: Attempt, config: OperatorConfig, now: str) -> bool:
    """An unfinished attempt whose pods are not all running, past the start deadline (counted
    from its oldest waiting pod, else the Job's start: a Job Kueue holds suspended has not
    started)."""
    if attempt.state != "Pending":
        return False
    age = seconds_between(attempt.pending_since, now)
    return age is not None and age > config.start_deadline_seconds


def group_children(sj: dict, spec: dict) -> list[dict]:
    """What a multi-node training attempt needs besides its Job: the rendezvous Service and the
    NetworkPolicy that keeps other pods away from the ranks' ports."""
    if int(spec["training"]["nodes"]) <= 1:
        return []
    return [construct_rendezvous_service(sj), construct_network_policy(sj)]


def stage_status(attempts: list[Attempt]) -> dict:
    last = attempts[-1]
    s = {
        "phase": last.state,
        "job": last.job,
        "attempts": len(attempts),
        "startTime": attempts[0].start_time,
        "completionTime": last.completion_time,
        "exitCode": last.exit_code,
        "reason": last.reason,
        "message": (last.summary.get("error") or last.message or "")[:MESSAGE_LIMIT] if last.state == "Failed" else None,
        "waitingReason": last.waiting_reason if last.state == "Pending" else None,
        "waitingMessage": last.waiting_message[:MESSAGE_LIMIT] if last.state == "Pending" and last.waiting_reason else None,
        "batchSize": last.batch_size,
        "podFailures": sum(a.pods_failed for a in attempts) or None,
    }
    if len(attempts) > 1:
        s["retries"] = [{"attempt": a.attempt, "job": a.job, "reason": a.reason, "batchSize": a.batch_size} for a in attempts[:-1]]
    return {k: v for k, v in s.items() if v is not None}


def collect_results(summaries: dict[str, dict]) -> dict:
    """Status results from the stages' JSON summaries."""
    train, export, bench, publish = (summaries.get(s, {}) for s in ("train", "export", "benchmark", "publish"))
    r: dict = {}
    if "bestMap50" in train:
        r["map50"] = round(float(train["bestMap50"]), 4)
    if "epochs" in train:
        r["epochs"] = train["epochs"]
    sparsity = export.get("sparsity", train.get("sparsity"))
    if sparsity is not None:
        r["sparsity"] = round(float(sparsity), 4)
    if "sizeBytes" in export:
        r["sizeBytes"] = int(export["sizeBytes"])
    if "sizeGzipBytes" in export:
        r["sizeGzipBytes"] = int(export["sizeGzipBytes"])
    size = r.get("sizeGzipBytes", r.get("sizeBytes"))  # the seed's "size on disk" is compressed
    if size is not None:
        r["size"] = human_size(size)
    engines = bench.get("engines") or {}
    throughput = {e: round(float(v["imagesPerSecond"]), 2) for e, v in engines.items() if isinstance(v, dict) and "imagesPerSecond" in v}
    if throughput:
        r["throughput"] = throughput
        r["imagesPerSecond"] = throughput.get("deepsparse", next(iter(throughput.values())))
    if "nativeFraction" in bench:
        r["deepsparseNativeFraction"] = bench["nativeFraction"]
    if isinstance(train.get("model"), dict):
        r["model"] = {k: train["model"][k] for k in ("arch", "layout", "activation") if isinstance(train["model"].get(k), str)}
    dense = bench.get("dense") if isinstance(bench.get("dense"), dict) else {}
    if _number(dense.get("map50")):
        r["denseMap50"] = round(float(dense["map50"]), 4)
        if "map50" in r and r["denseMap50"] > 0:
            r["accuracyRetention"] = round(r["map50"] / r["denseMap50"], 3)
    dense_ips = [float(v) for v in (dense.get("imagesPerSecond") or {}).values() if _number(v) and v > 0]
    spread = bench.get("speedupRange")
    if _number(bench.get("speedup")):  # measured per interleaved round by the benchmark: median and spread
        r["speedup"] = round(float(bench["speedup"]), 2)
        if isinstance(spread, list) and len(spread) == 2 and all(_number(v) for v in spread):
            r["speedupRange"] = [round(float(v), 2) for v in spread]
    elif dense_ips and _number(throughput.get("deepsparse")):
        r["speedup"] = round(throughput["deepsparse"] / max(dense_ips), 2)  # vs the faster engine on the dense model
    artifacts = {
        "checkpoint": train.get("checkpoint"),
        "lastCheckpoint": train.get("lastCheckpoint"),
        "onnx": export.get("onnx"),
        "report": publish.get("report") or bench.get("report"),
        "results": publish.get("results"),
    }
    artifacts = {k: v for k, v in artifacts.items() if v}
    if artifacts:
        r["artifacts"] = artifacts
    return r


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def verdict_conditions(summary: dict, generation: int | None, now: str, old: list[dict] | None) -> list[dict]:
    """The benchmark's verdicts (natively run, faster than dense, accuracy retained) as status
    conditions; what a pod wrote is checked before it becomes status."""
    out = []
    for v in summary.get("verdicts") or []:
        if not (
            isinstance(v, dict)
            and v.get("type") in VERDICTS
            and isinstance(v.get("ok"), bool)
            and isinstance(v.get("reason"), str)
            and isinstance(v.get("message"), str)
        ):
            continue
        out.append(condition(v["type"], v["ok"], v["reason"][:64], v["message"][:MESSAGE_LIMIT], generation, now, old))
    return out


def plan(sj: dict, observed: dict[str, list[Attempt]], config: OperatorConfig, now: str) -> Plan:
    meta = sj["metadata"]
    old = _sane_status(sj.get("status"))
    generation = meta.get("generation")
    p = Plan()
    try:
        spec = normalized(sj.get("spec"))
    except SpecError as e:
        p.status = {
            "phase": "Failed",
            "observedGeneration": generation,
            "conditions": conditions("Failed", "InvalidSpec", str(e), generation, now, old.get("conditions")),
        }
        if old.get("phase") != "Failed":
            p.events.append(("Warning", "InvalidSpec", str(e)))
        return p

    if old.get("phase") in TERMINAL:
        # A finished run is never restarted and its status never rewritten: once its pods (or
        # Jobs) are gone, re-reading them would find nothing and wipe the results.
        p.status = old
        return p

    summaries: dict[str, dict] = {}
    stages: dict[str, dict] = {}
    phase, reason, message = "Succeeded", "Succeeded", "all stages succeeded"
    for stage in STAGES:
        attempts = observed.get(stage, [])
        if not attempts:
            batch = int(spec["training"]["batchSize"]) if stage == "train" else None
            job = construct_job(sj, spec, stage, 0, config, batch, summaries)
            p.create += [*(group_children(sj, spec) if stage == "train" else []), job]
            stages[stage] = {"phase": "Pending", "job": job["metadata"]["name"], "attempts": 1}
            phase, reason, message = STAGE_PHASES[stage], "StageRunning", f"{stage}: Job {job['metadata']['name']} created"
            break
        last = attempts[-1]
        if start_overdue(last, config, now):
            why = last.waiting_reason or "NotStarted"
            detail = last.waiting_message or "no pod of the Job started"
            last.state, last.reason = "Failed", "StartDeadlineExceeded"
            last.message = f"{why}: {detail} (not started within {config.start_deadline_seconds}s)"
            p.give_up.append((last.job, f"{last.reason}: {last.message}"))
        stages[stage] = stage_status(attempts)
        if last.state == "Succeeded":
            summaries[stage] = last.summary
            continue
        if last.state == "Failed":
            if stage == "train" and resumable(spec, last):
                retry = next_train_attempt(spec, attempts)
                if retry is not None:
                    new_batch = retry
                    job = construct_job(sj, spec, stage, last.attempt + 1, config, new_batch, summaries)
                    p.create += [*group_children(sj, spec), job]
                    if last.oom:
                        what = "ran out of GPU memory (CUDA OOM)" if last.reason == "GPUOutOfMemory" else "was OOM-killed"
                        p.events.append(
                            (
                                "Warning",
                                "OOMRetry",
                                f"train attempt {last.attempt} {what} at batch size {last.batch_size}; "
                                f"resuming from the last checkpoint with batch size {new_batch} (Job {job['metadata']['name']})",
                            )
                        )
                    else:
                        how = (
                            "was killed (exit 137)"
                            if last.reason == "Killed"
                            else (f"failed on one rank ({last.reason}, exit code {last.exit_code}); the whole group stopped")
                        )
                        p.events.append(
                            (
                                "Warning",
                                "KilledRetry",
                                f"train attempt {last.attempt} {how}; resuming from the last checkpoint "
                                f"with batch size {new_batch} (Job {job['metadata']['name']})",
                            )
                        )
                    stages[stage].update(
                        {"phase": "Pending", "job": job["metadata"]["name"], "attempts": len(attempts) + 1, "batchSize": new_batch}
                    )
                    stages[stage].setdefault("retries", []).append(
                        {"attempt": last.attempt, "job": last.job, "reason": last.reason, "batchSize": last.batch_size}
                    )
                    for k in ("exitCode", "reason", "message", "completionTime"):
                        stages[stage].pop(k, None)
                    phase, reason = STAGE_PHASES[stage], ("OOMRetry" if last.oom else "KilledRetry")
                    message = f"train: resuming with batch size {new_batch}"
                    break
            phase = "Failed"
            reason = last.reason or "Failed"
            detail = stages[stage].get("message") or ""
            code = f" with exit code {last.exit_code}" if last.exit_code is not None else ""
            message = f"stage {stage} failed ({reason}){code}" + (f": {detail}" if detail else "")
            break
        phase, reason = STAGE_PHASES[stage], "StageRunning"
        message = f"{stage}: Job {last.job} is {last.state.lower()}"
        if last.state == "Pending" and last.waiting_reason:
            reason = "PodNotStarting"
            message += (
                f": {last.waiting_reason}: {last.waiting_message} (the stage fails if no pod starts within "
                f"{config.start_deadline_seconds}s)"
            )
        break

    status = {
        "phase": phase,
        "recipe": recipe_name(spec),
        "observedGeneration": generation,
        "stages": stages,
        "results": collect_results(summaries),
        "startTime": old.get("startTime") or now,
        "conditions": conditions(phase, reason, message[:MESSAGE_LIMIT], generation, now, old.get("conditions"))
        + verdict_conditions(summaries.get("benchmark", {}), generation, now, old.get("conditions")),
    }
    if phase in TERMINAL:
        status["completionTime"] = old.get("completionTime") or now
    p.status = status
    p.events += transition_events(old, status)
    return p


def refused(sj: dict, status: dict, kind: str, name: str, code: int, server_message: str, now: str) -> tuple[dict, tuple[str, str, str]]:
    """The API server refused to create a child (a 4xx other than a conflict or throttling: a
    quota, an admission policy, an invalid object): retrying cannot help, so the SparsifyJob
    fails with the server's own words. The status to write and the event to post."""
    generation = sj["metadata"].get("generation")
    message = f"the API server refused to create {kind} {name} ({code}): {server_message}"[:MESSAGE_LIMIT]
    old = _sane_status(sj.get("status"))
    out = {
        **status,
        "phase": "Failed",
        "completionTime": old.get("completionTime") or now,
        "conditions": conditions("Failed", "ChildRejected", message, generation, now, old.get("conditions")),
    }
    return out, ("Warning", "ChildRejected", message)


def _sane_status(status) -> dict:
    """The status as this operator writes it; anything else (a user's scribbles) is ignored
    and overwritten by the next write."""
    if not isinstance(status, dict):
        return {}
    sane = dict(status)
    for key, kind in (("conditions", list), ("stages", dict), ("results", dict)):
        if not isinstance(sane.get(key), kind):
            sane.pop(key, None)
    if isinstance(sane.get("conditions"), list):
        sane["conditions"] = [c for c in sane["conditions"] if isinstance(c, dict)]
    if isinstance(sane.get("stages"), dict):
        sane["stages"] = {k: v for k, v in sane["stages"].items() if isinstance(v, dict)}
    return sane


def transition_events(old: dict, new: dict) -> list[tuple[str, str, str]]:
    events = []
    old_stages = old.get("stages") or {}
    for stage, s in new.get("stages", {}).items():
        before = (old_stages.get(stage) or {}).get("phase")
        if s["phase"] != before and s["phase"] in ("Running", "Succeeded", "Failed"):
            kind = "Warning" if s["phase"] == "Failed" else "Normal"
            text = f"stage {stage} {s['phase'].lower()} (Job {s['job']})"
            if s["phase"] == "Failed":
                text += f": {s.get('reason')}" + (f", exit code {s['exitCode']}" if s.get("exitCode") is not None else "")
                text += f": {s['message']}" if s.get("message") and s.get("exitCode") is None else ""
            events.append((kind, f"Stage{s['phase']}", text))
        waiting = s.get("waitingReason")
        if waiting and waiting != (old_stages.get(stage) or {}).get("waitingReason"):
            events.append(("Warning", waiting, f"stage {stage} (Job {s['job']}) cannot start: {s.get('waitingMessage') or waiting}"))
    was_false = {c.get("type") for c in old.get("conditions") or [] if c.get("status") == "False"}
    for c in new.get("conditions", []):
        if c["type"] in VERDICTS and c["status"] == "False" and c["type"] not in was_false:
            events.append(("Warning", c["reason"], c["message"]))  # the result is not what users came for: say so
    if new["phase"] != old.get("phase"):
        ready = next(c for c in new["conditions"] if c["type"] == "Ready")
        kind = "Warning" if new["phase"] == "Failed" else "Normal"
        events.append((kind, new["phase"], ready["message"]))
    return events
