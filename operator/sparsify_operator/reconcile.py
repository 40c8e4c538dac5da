"""The reconcile decision (pure): the SparsifyJob + what the cluster shows -> what to create,
the status to write and the events to post. Handlers only execute the plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from .api import ANNOTATION_BATCH_SIZE, LABEL_ATTEMPT, STAGE_PHASES, STAGES, TERMINAL, Phase, Reason
from .builders import construct_job, construct_network_policy, construct_rendezvous_service
from .config import OperatorConfig
from .observe import Attempt
from .retry_policy import retry_decision
from .spec import SparsifySpec, SpecError, normalized
from .start_deadline import given_up, start_overdue
from .status import condition, conditions, human_size, seconds_between

MESSAGE_LIMIT = 512
VERDICTS = ("NativelyRun", "FasterThanDense", "AccuracyRetained")
Event = tuple[str, str, str]  # (type, reason, message)


@dataclass
class Plan:
    create: list[dict] = field(default_factory=list)
    status: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    announce: dict[str, list[Event]] = field(default_factory=dict)  # Job name -> events to post only if this reconcile creates it
    give_up: list[tuple[str, str]] = field(default_factory=list)  # (Job name, "reason: message"): stop it, its pods never started


def group_children(sj: dict, spec: SparsifySpec) -> list[dict]:
    """What a multi-node training attempt needs besides its Job: the rendezvous Service and the
    NetworkPolicy that keeps other pods away from the ranks' ports."""
    if not spec.multi_node:
        return []
    return [construct_rendezvous_service(sj), construct_network_policy(sj)]


def stage_status(attempts: list[Attempt], before: dict | None = None, now: str | None = None) -> dict:
    """A stage's status from its attempts. `startTime` is when its first Job was created (known
    from the create's answer, so it never needs a write of its own); `runningTime` is when the
    operator first saw the current attempt running, kept from the status written `before`."""
    last = attempts[-1]
    same_job = isinstance(before, dict) and before.get("job") == last.job
    running_since = before.get("runningTime") if same_job else None
    if last.state == Phase.RUNNING and not running_since:
        running_since = now
    s = {
        "phase": last.state,
        "job": last.job,
        "attempts": len(attempts),
        "startTime": attempts[0].created or attempts[0].start_time,
        "runningTime": running_since if last.state != Phase.PENDING else None,
        "completionTime": last.completion_time,
        "exitCode": last.exit_code,
        "reason": last.reason,
        "message": (last.summary.get("error") or last.message or "")[:MESSAGE_LIMIT] if last.state == Phase.FAILED else None,
        "waitingReason": last.waiting_reason if last.state == Phase.PENDING else None,
        "waitingMessage": last.waiting_message[:MESSAGE_LIMIT] if last.state == Phase.PENDING and last.waiting_reason else None,
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
            "phase": Phase.FAILED,
            "observedGeneration": generation,
            "conditions": conditions(Phase.FAILED, Reason.INVALID_SPEC, str(e), generation, now, old.get("conditions")),
        }
        if old.get("phase") != Phase.FAILED:
            p.events.append(("Warning", Reason.INVALID_SPEC, str(e)))
        return p

    if old.get("phase") in TERMINAL:
        # A finished run is never restarted and its status never rewritten: once its pods (or
        # Jobs) are gone, re-reading them would find nothing and wipe the results.
        p.status = old
        return p

    summaries: dict[str, dict] = {}
    stages: dict[str, dict] = {}
    old_stages = old.get("stages") or {}
    phase, reason, message = Phase.SUCCEEDED, Reason.SUCCEEDED, "all stages succeeded"
    for stage in STAGES:
        attempts = list(observed.get(stage, []))
        if not attempts:
            job = _create_attempt(p, sj, spec, stage, 0, config, None, summaries)
            stages[stage] = stage_status([_planned(stage, job)], old_stages.get(stage), now)
            phase, reason, message = STAGE_PHASES[stage], Reason.STAGE_RUNNING, f"{stage}: Job {job['metadata']['name']} created"
            break
        last = attempts[-1]
        if start_overdue(last, config, now):
            last = attempts[-1] = given_up(last, config)
            p.give_up.append((last.job, f"{last.reason}: {last.message}"))
        if last.state == Phase.SUCCEEDED:
            stages[stage] = stage_status(attempts, old_stages.get(stage), now)
            summaries[stage] = last.summary
            continue
        retry = retry_decision(spec, attempts) if stage == "train" and last.state == Phase.FAILED else None
        if retry:
            job = _create_attempt(p, sj, spec, stage, last.attempt + 1, config, retry.batch_size, summaries)
            p.announce[job["metadata"]["name"]].append(("Warning", retry.reason, retry.message(job["metadata"]["name"])))
            stages[stage] = stage_status([*attempts, _planned(stage, job)], old_stages.get(stage), now)
            phase, reason, message = STAGE_PHASES[stage], retry.reason, f"train: resuming with batch size {retry.batch_size}"
            break
        stages[stage] = stage_status(attempts, old_stages.get(stage), now)
        if last.state == Phase.FAILED:
            phase = Phase.FAILED
            reason = last.reason or Reason.FAILED
            detail = stages[stage].get("message") or ""
            code = f" with exit code {last.exit_code}" if last.exit_code is not None else ""
            message = f"stage {stage} failed ({reason}){code}" + (f": {detail}" if detail else "")
            break
        phase, reason = STAGE_PHASES[stage], Reason.STAGE_RUNNING
        message = f"{stage}: Job {last.job} is {last.state.lower()}"
        if last.state == Phase.PENDING and last.waiting_reason:
            reason = Reason.POD_NOT_STARTING
            message += (
                f": {last.waiting_reason}: {last.waiting_message} (the stage fails if no pod starts within "
                f"{config.start_deadline_seconds}s)"
            )
        break

    status = {
        "phase": phase,
        "recipe": spec.recipe_name,
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


def _create_attempt(
    p: Plan,
    sj: dict,
    spec: SparsifySpec,
    stage: str,
    attempt: int,
    config: OperatorConfig,
    batch_size: int | None,
    summaries: dict[str, dict],
) -> dict:
    """Add one stage attempt (and, for a training group, its Service and NetworkPolicy) to the plan."""
    job = construct_job(sj, spec, stage, attempt, config, batch_size, summaries)
    p.create += [*(group_children(sj, spec) if stage == "train" else []), job]
    p.announce[job["metadata"]["name"]] = []
    return job


def _planned(stage: str, job: dict) -> Attempt:
    """The attempt this plan creates, as its stage status shows it until the Job is seen."""
    meta = job["metadata"]
    batch = meta["annotations"].get(ANNOTATION_BATCH_SIZE)
    return Attempt(
        stage=stage,
        attempt=int(meta["labels"][LABEL_ATTEMPT]),
        job=meta["name"],
        state=Phase.PENDING,
        batch_size=int(batch) if batch else None,
    )


def refused(sj: dict, status: dict, kind: str, name: str, code: int, server_message: str, now: str) -> tuple[dict, tuple[str, str, str]]:
    """The API server refused to create a child (a 4xx other than a conflict or throttling: a
    quota, an admission policy, an invalid object): retrying cannot help, so the SparsifyJob
    fails with the server's own words. The status to write and the event to post."""
    generation = sj["metadata"].get("generation")
    message = f"the API server refused to create {kind} {name} ({code}): {server_message}"[:MESSAGE_LIMIT]
    old = _sane_status(sj.get("status"))
    out = {
        **status,
        "phase": Phase.FAILED,
        "completionTime": old.get("completionTime") or now,
        "conditions": conditions(Phase.FAILED, Reason.CHILD_REJECTED, message, generation, now, old.get("conditions")),
    }
    return out, ("Warning", Reason.CHILD_REJECTED, message)


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


def transition_events(old: dict, new: dict) -> list[Event]:
    """What a person reading `kubectl describe` wants to see, from the status change alone (so a
    retried reconcile, a restarted operator or a new leader, which find the status already
    written, never say a thing twice):
      - one Normal event for the run's progress in this step: the stages that finished and the
        Job that starts the next stage, or the run's success with its results;
      - one Warning when the run fails (the failed stage, its reason and message);
      - a Warning when a stage's pod cannot start, and for each benchmark verdict that fails.
    A stage going from Pending to Running is in its status (`runningTime`), not an event; a
    retry's event is the plan's own (`Plan.announce`), posted only by the reconcile that
    created the new attempt."""
    progress: list[str] = []
    warnings: list[Event] = []
    failed: str | None = None
    finished_a_stage = False
    old_stages = old.get("stages") or {}
    for stage in STAGES:
        s = (new.get("stages") or {}).get(stage)
        if not s:
            continue
        before = old_stages.get(stage) or {}
        if s["phase"] == Phase.SUCCEEDED and before.get("phase") != Phase.SUCCEEDED:
            took = seconds_between(s.get("startTime"), s.get("completionTime"))
            progress.append(f"{stage} succeeded (Job {s['job']}" + (f", {took:.0f}s)" if took is not None else ")"))
            finished_a_stage = True
        retried = len(s.get("retries") or []) > len(before.get("retries") or [])
        if s.get("job") != before.get("job") and not retried:
            progress.append(f"{stage}: created Job {s['job']}")
        if s["phase"] == Phase.FAILED and before.get("phase") != Phase.FAILED:
            failed = f"stage {stage} failed (Job {s['job']}): {s.get('reason') or Reason.FAILED}"
            failed += f", exit code {s['exitCode']}" if s.get("exitCode") is not None else ""
            failed += f": {s['message']}" if s.get("message") else ""
        waiting = s.get("waitingReason")
        if waiting and waiting != before.get("waitingReason"):
            warnings.append(("Warning", waiting, f"stage {stage} (Job {s['job']}) cannot start: {s.get('waitingMessage') or waiting}"))
    was_false = {c.get("type") for c in old.get("conditions") or [] if c.get("status") == "False"}
    for c in new.get("conditions", []):
        if c["type"] in VERDICTS and c["status"] == "False" and c["type"] not in was_false:
            warnings.append(("Warning", c["reason"], c["message"]))  # the result is not what users came for: say so
    events: list[Event] = []
    if new["phase"] != old.get("phase") and new["phase"] == Phase.FAILED:
        ready = next(c for c in new["conditions"] if c["type"] == "Ready")
        events.append(("Warning", Reason.STAGE_FAILED if failed else ready["reason"], failed or ready["message"]))
    elif new["phase"] != old.get("phase") and new["phase"] == Phase.SUCCEEDED:
        events.append(("Normal", Reason.SUCCEEDED, "; ".join([*progress, f"all stages succeeded{_results_line(new.get('results'))}"])))
    elif progress:
        events.append(("Normal", Reason.STAGE_SUCCEEDED if finished_a_stage else Reason.JOB_CREATED, "; ".join(progress)))
    return events + warnings


def _results_line(results: dict | None) -> str:
    """The figures users came for, in one line (what `kubectl get sj` shows)."""
    r = results or {}
    parts = []
    if _number(r.get("map50")):
        parts.append(f"mAP@0.5 {r['map50']}" + (f" ({r['accuracyRetention']:.0%} of dense)" if _number(r.get("accuracyRetention")) else ""))
    if r.get("size"):
        parts.append(str(r["size"]))
    if _number(r.get("imagesPerSecond")):
        parts.append(f"{r['imagesPerSecond']} img/s")
    if _number(r.get("speedup")):
        parts.append(f"{r['speedup']}x dense")
    return (": " + ", ".join(parts)) if parts else ""
