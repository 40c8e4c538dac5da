"""Operator scale, side by side in one run, each on a fresh local control plane with the API
server's audit log on (request counts are exact). Stage commands are the tests' stand-ins
(tests/standin): every pod is a real process run by the process-kubelet; validate exits at
once, train sleeps (so training Jobs stay put while GPUs are scarce: 16 on the two simulated
p4d nodes). The operator runs as in production: its own process, its ServiceAccount's RBAC,
the default resync period.

    # N SparsifyJobs at once: the floor (N plain Jobs with the same pod), the operator at an
    # earlier commit (--before REV) and this checkout's
    .venv/bin/python benchmarks/operator_scale.py burst --counts 100 500 1000 --before a638432
    .venv/bin/python benchmarks/operator_scale.py burst --counts 100 --modes operator --until succeeded
    # a cluster holding N finished SparsifyJobs (with their Jobs) and M active ones
    .venv/bin/python benchmarks/operator_scale.py hold --finished 10000 --active 100
    # two replicas; the leader SIGKILLed K times during a burst of N whole lifecycles
    .venv/bin/python benchmarks/operator_scale.py failover --count 100 --kills 10

Figures: create -> first (validate) Job and stage finished -> next stage's Job (p50, p99),
time for all N, operator CPU seconds and peak RSS, operator requests and writes per
SparsifyJob (creates + status patches + events) and request kinds, duplicate Jobs (more than
one per stage attempt, and creates answered 409: two writers), the work queue's figures from
the operator's own metrics; `hold`: startup, RSS, requests per resync period at rest and the
active ones' latencies; `failover`: takeover time per kill (the leader killed -> the standby
holds the Lease), duplicates, runs stranded. `--smoke` (what CI runs) asserts counts, never
times."""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config
from urllib3.exceptions import ProtocolError

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]  # this checkout's code, even where the venv installed another

from localcluster.cluster import LocalCluster  # noqa: E402
from localcluster.testing import create_namespace, kubectl, service_account_kubeconfig, wait_until  # noqa: E402
from sparsify_operator.api import GROUP, LABEL_ATTEMPT, LABEL_JOB, LABEL_STAGE, PLURAL, STAGES, VERSION  # noqa: E402
from tests.support import objects  # noqa: E402
from tests.support.operator_process import STANDIN, OperatorProcess  # noqa: E402

OPERATOR_USER = "system:serviceaccount:sparsify-system:sparsify-operator"
# GPUs are scarce on purpose (16 for N training pods): without Kueue, a training pod waiting for
# one would fail the run at the default 300 s start deadline; here it waits.
OPERATOR_ENV = {"SPARSIFY_START_DEADLINE_SECONDS": "7200", **json.loads(os.environ.get("SCALE_OPERATOR_ENV", "{}"))}
PHASE_ORDER = ["Pending", "Validating", "Training", "Exporting", "Benchmarking", "Publishing", "Succeeded"]
WRITES = ("create jobs", "patch sparsifyjobs/status", "create events", "patch jobs", "create services", "create networkpolicies")


def sparsifyjob(name: str, train_seconds: float) -> dict:
    return objects.sparsifyjob(name, env={"STANDIN_TRAIN_SECONDS": train_seconds}, training={"gpusPerNode": 1, "batchSize": 16})


def plain_job(name: str, namespace: str) -> dict:
    """The floor: the validate stage's Job exactly as the operator builds it, minus the owner."""
    from sparsify_operator.builders import construct_job
    from sparsify_operator.config import OperatorConfig
    from sparsify_operator.spec import normalized

    sj = {**sparsifyjob(name, 0), "metadata": {"name": name, "namespace": namespace, "uid": "none"}}
    cfg = OperatorConfig(worker_command=("python", str(STANDIN / "worker.py")))
    job = construct_job(sj, normalized(sj["spec"]), "validate", 0, cfg)
    job["metadata"].update(name=name, ownerReferences=[])
    return job


# ---- measuring ----------------------------------------------------------------------------


class Watcher(threading.Thread):
    """List+watch one resource in a namespace as raw JSON and hand each object to `on_object`."""

    def __init__(self, list_fn, on_object, stop: threading.Event, **selectors):
        super().__init__(daemon=True)
        self.list_fn, self.on_object, self.stop, self.selectors = list_fn, on_object, stop, selectors

    def run(self) -> None:
        rv = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    listed = json.loads(self.list_fn(_preload_content=False, **self.selectors).data)
                    rv = listed["metadata"]["resourceVersion"]
                    for obj in listed["items"]:
                        self.on_object(obj)
                resp = self.list_fn(
                    watch=True,
                    resource_version=rv,
                    timeout_seconds=30,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                    **self.selectors,
                )
                for line in resp:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        rv = None
                        break
                    rv = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.on_object(event["object"])
                    if self.stop.is_set():
                        break
            except ProtocolError:  # the server ended the watch at its timeout: resume from rv
                continue
            except Exception as e:  # noqa: BLE001  (a dropped watch is resumed)
                print(f"# watch restarted: {e}", file=sys.stderr)
                rv = None
                time.sleep(0.5)


def first_seen(store: dict, key, at: float | None = None) -> None:
    store.setdefault(key, at or time.monotonic())


def complete(job: dict) -> bool:
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or [])


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds user+system, peak RSS MB) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return cpu, int(hwm.split()[1]) / 1024


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def between(start: dict, end: dict) -> dict:
    """p50 / p99 / max / mean seconds from `start` to `end` over the keys that have both."""
    values = [end[k] - t for k, t in start.items() if k in end]
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
        "mean": round(statistics.fmean(values), 2),
    }


def audit(audit_log: Path, since: dt.datetime, until: dt.datetime) -> dict:
    """Requests received within the window: by user; the operator's by 'verb resource[/sub]';
    the operator's Job creates answered 409 (another writer was first)."""
    by_user: collections.Counter = collections.Counter()
    operator: collections.Counter = collections.Counter()
    conflicts = 0
    for f in sorted(audit_log.parent.glob("audit*.log")):  # rotated files too
        with open(f) as lines:
            for line in lines:
                e = json.loads(line)
                at = dt.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00"))
                if not since <= at <= until:
                    continue
                user = e["user"]["username"]
                by_user[user] += 1
                if user == OPERATOR_USER:
                    ref = e.get("objectRef") or {}
                    what = ref.get("resource", e.get("requestURI", "?")) + ("/" + ref["subresource"] if ref.get("subresource") else "")
                    operator[f"{e['verb']} {what}"] += 1
                    if e["verb"] == "create" and ref.get("resource") == "jobs" and (e.get("responseStatus") or {}).get("code") == 409:
                        conflicts += 1
    return {"byUser": by_user, "operator": operator, "jobCreateConflicts": conflicts}


def scrape(port: int) -> dict[str, float]:
    """The operator's Prometheus metrics, as {'name{labels}': value}."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def queue_figures(metrics: dict[str, float]) -> dict:
    """Work queue figures from the histograms: mean wait and reconcile time, and the bucket
    holding the 99th percentile of the wait (per priority)."""
    out: dict = {}
    for priority in ("finished", "new", "normal"):
        count = metrics.get(f'sparsify_workqueue_queue_duration_seconds_count{{priority="{priority}"}}', 0)
        if not count:
            continue
        total = metrics.get(f'sparsify_workqueue_queue_duration_seconds_sum{{priority="{priority}"}}', 0)
        buckets = sorted(
            (float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), v)
            for k, v in metrics.items()
            if (m := re.match(rf'sparsify_workqueue_queue_duration_seconds_bucket\{{le="([^"]+)",priority="{priority}"\}}', k))
        )
        p99 = next((le for le, v in buckets if v >= 0.99 * count), float("inf"))
        out[priority] = {"n": int(count), "meanWaitSeconds": round(total / count, 4), "p99WaitAtMostSeconds": p99}
    n = metrics.get("sparsify_workqueue_work_duration_seconds_count", 0)
    if n:
        out["reconciles"] = int(n)
        out["meanReconcileSeconds"] = round(metrics.get("sparsify_workqueue_work_duration_seconds_sum", 0) / n, 4)
    lag_n = metrics.get("sparsify_event_loop_lag_seconds_count", 0)
    if lag_n:
        out["eventLoopLagMeanSeconds"] = round(metrics.get("sparsify_event_loop_lag_seconds_sum", 0) / lag_n, 4)
        out["eventLoopLagOver100msShare"] = round(1 - metrics.get('sparsify_event_loop_lag_seconds_bucket{le="0.1"}', 0) / lag_n, 3)
    api = {}
    for k, v in metrics.items():
        m = re.match(r'sparsify_api_request_duration_seconds_count\{resource="([^"]+)",verb="([^"]+)"\}', k)
        if m and v:
            total = metrics.get(k.replace("_count{", "_sum{"), 0)
            api[f"{m.group(2)} {m.group(1)}"] = {"n": int(v), "meanSeconds": round(total / v, 3)}
    if api:
        out["api"] = dict(sorted(api.items(), key=lambda kv: -kv[1]["n"])[:8])
    adds = {c: metrics.get(f'sparsify_workqueue_adds_total{{coalesced="{c}"}}', 0) for c in ("true", "false")}
    if sum(adds.values()):
        out["addsCoalesced"] = round(adds["true"] / sum(adds.values()), 3)
    return out


def operator_source(ref: str | None, work: Path) -> Path:
    """This checkout, or a worktree of an earlier commit (outside /tmp: pods have their own)."""
    if not ref:
        return REPO
    path = work / f"src-{ref}"
    if not path.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref], check=True, capture_output=True)
    return path


# ---- one cluster, its watchers and operators ----------------------------------------------


class Bench:
    """A fresh cluster with the audit log on, a namespace, watchers that time every SparsifyJob's
    phases and every stage Job's creation and completion, and the operator's RBAC installed."""

    def __init__(self, state: Path):
        self.state = state
        self.cluster = LocalCluster(state, audit=True)
        self.info = self.cluster.start()
        cfg = client.Configuration()
        config.load_kube_config(self.info.kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 16
        self.api = client.ApiClient(cfg)
        self.core, self.batch, self.custom = client.CoreV1Api(self.api), client.BatchV1Api(self.api), client.CustomObjectsApi(self.api)
        self.ns = create_namespace(self.core, "scale")
        self.stop_watching = threading.Event()
        self.job_added: dict[str, dict] = collections.defaultdict(dict)  # stage -> owner -> t
        self.job_done: dict[str, dict] = collections.defaultdict(dict)
        self.jobs_seen: dict[str, set] = collections.defaultdict(set)  # owner -> {(stage, attempt)}
        self.job_names: dict[str, set] = collections.defaultdict(set)  # owner -> Job names
        self.reached: dict[str, dict] = collections.defaultdict(dict)  # phase -> owner -> t
        self.seen: dict[str, float] = {}  # SparsifyJob -> first seen on a watch (the floor of any reaction to it)
        self.operators: list[OperatorProcess] = []
        self.kubeconfig: Path | None = None
        Watcher(functools.partial(self.batch.list_namespaced_job, self.ns), self._on_job, self.stop_watching).start()

    def _on_job(self, job: dict) -> None:
        labels = job["metadata"].get("labels") or {}
        owner = labels.get(LABEL_JOB, job["metadata"]["name"])
        stage = labels.get(LABEL_STAGE, "?")  # the floor's plain Jobs carry the same labels: "validate"
        first_seen(self.job_added[stage], owner)
        self.job_names[owner].add(job["metadata"]["name"])
        self.jobs_seen[owner].add((stage, labels.get(LABEL_ATTEMPT, "0")))
        if complete(job):
            first_seen(self.job_done[stage], owner)

    def _on_sj(self, sj: dict) -> None:
        first_seen(self.seen, sj["metadata"]["name"])
        phase = (sj.get("status") or {}).get("phase")
        if phase in PHASE_ORDER:
            for p in PHASE_ORDER[: PHASE_ORDER.index(phase) + 1]:
                first_seen(self.reached[p], sj["metadata"]["name"])
        elif phase == "Failed":
            first_seen(self.reached["Failed"], sj["metadata"]["name"])

    def install_operator(self) -> None:
        for f in ("crd.yaml", "namespace.yaml", "rbac.yaml"):
            kubectl(self.info.kubeconfig, "apply", "-f", str(REPO / "manifests/base" / f))
        kubectl(self.info.kubeconfig, "wait", "--for=condition=Established", "crd/sparsifyjobs.yolo-sparsify.io", "--timeout=60s")
        wait_until(
            lambda: self.core.list_namespaced_service_account("sparsify-system", field_selector="metadata.name=sparsify-operator").items,
            30,
            what="operator ServiceAccount",
        )
        self.kubeconfig = service_account_kubeconfig(
            self.info.kubeconfig, self.core, "sparsify-system", "sparsify-operator", self.state / "operator.kubeconfig"
        )
        Watcher(
            functools.partial(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, PLURAL), self._on_sj, self.stop_watching
        ).start()

    def start_operator(
        self, source: Path = REPO, name: str = "operator", env: dict | None = None, wait_leading: bool = True
    ) -> OperatorProcess:
        op = OperatorProcess(self.kubeconfig, self.state / f"{name}.log", {**OPERATOR_ENV, **(env or {})}, source=source).start()
        if wait_leading and source == REPO:
            op.wait_leading(60)
        self.operators.append(op)
        return op

    def submit(self, make, names: list[str]) -> dict[str, float]:
        submitted: dict[str, float] = {}

        def one(name: str) -> None:
            submitted[name] = time.monotonic()
            make(name)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, names))
        return submitted

    def create_sparsifyjob(self, name: str, train_seconds: float) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, sparsifyjob(name, train_seconds))

    def wait_for(self, done: dict, n: int, timeout: float, what: str, t0: float) -> None:
        last = 0
        while len(done) < n:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{what}: only {len(done)} of {n} after {timeout}s")
            if len(done) // 100 != last // 100:
                print(f"# {what}: {len(done)} of {n} after {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
            last = len(done)
            time.sleep(0.2)

    def duplicates(self, names: list[str]) -> dict:
        """Jobs beyond one per stage attempt (none can share a name; any extra attempt that no
        fault caused would show here)."""
        extra = sum(max(0, len(self.job_names[n]) - len(self.jobs_seen[n])) for n in names)
        retries = sum(1 for n in names for _, attempt in self.jobs_seen[n] if attempt != "0")
        return {"extraJobs": extra, "unexpectedRetries": retries}

    def events_per_sparsifyjob(self, names: list[str]) -> dict:
        events = self.core.list_namespaced_event(self.ns, field_selector="involvedObject.kind=SparsifyJob").items
        by: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for e in events:
            by[e.involved_object.name][(e.reason, e.message)] += 1
        repeated = sum(c - 1 for n in names for c in by[n].values() if c > 1)  # the same thing said twice
        warnings = collections.Counter(e.reason for e in events if e.type == "Warning" and e.involved_object.name in set(names))
        return {
            "eventsPerSparsifyJob": round(sum(sum(by[n].values()) for n in names) / len(names), 2),
            "normalEventsPerSparsifyJob": round(sum(c for n in names for (r, _), c in by[n].items() if r not in warnings) / len(names), 2),
            "warnings": dict(warnings),
            "repeatedEvents": repeated,
        }

    def close(self) -> None:
        self.stop_watching.set()
        for op in self.operators:
            op.stop()
        self.cluster.stop()  # flushes the audit log

    def audit(self, since: dt.datetime, until: dt.datetime) -> dict:
        return audit(self.state / "logs" / "audit.log", since, until)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def request_figures(counts: dict, n: int) -> dict:
    by_user, operator = counts["byUser"], counts["operator"]
    return {
        "requestsPerObject": round(sum(by_user.values()) / n, 1),
        "requestsByUserPerObject": {u: round(c / n, 2) for u, c in by_user.most_common(6)},
        "operatorRequestsPerSparsifyJob": round(sum(operator.values()) / n, 2),
        "operatorWritesPerSparsifyJob": round(sum(operator[w] for w in WRITES) / n, 2),
        "operatorRequestKinds": {k: round(c / n, 2) for k, c in operator.most_common(10)},
        "jobCreateConflicts": counts["jobCreateConflicts"],
    }


def next_stage_latency(bench: Bench) -> dict:
    """Stage finished -> the next stage's Job created, over every transition seen."""
    start, end = {}, {}
    for a, b in zip(STAGES, STAGES[1:]):
        for owner, t in bench.job_done[a].items():
            start[(owner, a)] = t
            if owner in bench.job_added[b]:
                end[(owner, a)] = bench.job_added[b][owner]
    return between(start, end)


# ---- scenarios ----------------------------------------------------------------------------


def burst(mode: str, n: int, until: str, work: Path, timeout: float, before: str | None) -> dict:
    """N at once: plain Jobs (the floor), or SparsifyJobs under the operator (this checkout's,
    or `before`'s)."""
    bench = Bench(work / f"{mode}-{n}")
    names = [f"sj-{i:04d}" for i in range(n)]
    target = "Succeeded" if until == "succeeded" else "Training"
    result: dict = {"scenario": "burst", "mode": mode, "n": n, "until": until}
    try:
        op = None
        if mode != "plain":
            bench.install_operator()
            op = bench.start_operator(operator_source(before if mode == "before" else None, work))
            if mode == "before":
                result["ref"] = before
                time.sleep(3)  # no leader gauge before: its watches settle
            cpu0, _ = proc_stats(op.proc.pid)
            train_seconds = 0 if until == "succeeded" else 3600

            def make(name: str) -> None:
                bench.create_sparsifyjob(name, train_seconds)

            done = bench.reached[target]
        else:

            def make(name: str) -> None:
                bench.batch.create_namespaced_job(bench.ns, plain_job(name, bench.ns))

            done = bench.job_done["validate"]
        since = _now()
        t0 = time.monotonic()
        submitted = bench.submit(make, names)
        result["createSeconds"] = round(time.monotonic() - t0, 1)
        bench.wait_for(done, n, timeout, f"{mode} N={n}", t0)
        result["allDoneSeconds"] = round(max(done.values()) - t0, 1)
        time.sleep(5)  # let the last status writes and events land before counting
        if op:
            cpu1, rss = proc_stats(op.proc.pid)
            result.update(
                createToValidateJob=between(submitted, bench.job_added["validate"]),
                createToSeen=between(submitted, bench.seen),  # the create call and a watch's delivery: no operator involved
                createToTrainJob=between(submitted, bench.job_added["train"]),
                stageDoneToNextJob=next_stage_latency(bench),
                createToPhase=between(submitted, done),
                operatorCpuSeconds=round(cpu1 - cpu0, 1),
                operatorPeakRssMB=round(rss, 1),
                queue=queue_figures(scrape(op.metrics_port)) if mode == "operator" else {},
                duplicates=bench.duplicates(names),
                **bench.events_per_sparsifyjob(names),
            )
            op.stop()
        else:
            result.update(
                createToComplete=between(submitted, bench.job_done["validate"]),
                createToSeen=between(submitted, bench.job_added["validate"]),  # the create call and a watch's delivery
            )
        until_wall = _now()
    finally:
        bench.close()
    result.update(request_figures(bench.audit(since, until_wall), n))
    return result


def hold(finished: int, active: int, work: Path, timeout: float, resync: float) -> dict:
    """A cluster that already holds `finished` finished SparsifyJobs, each with its five Jobs
    (managed by no controller: they run no pods), then `active` new ones: the operator's
    startup, memory, requests per resync period while the finished ones sit there, and the
    active ones' reaction times."""
    bench = Bench(work / f"hold-{finished}-{active}")
    result: dict = {"scenario": "hold", "finished": finished, "active": active, "resyncSeconds": resync}
    try:
        bench.install_operator()
        t0 = time.monotonic()
        populate_finished(bench, finished)
        result["populateSeconds"] = round(time.monotonic() - t0, 1)
        env = {"SPARSIFY_RESYNC_SECONDS": str(resync)}
        started = time.monotonic()
        op = bench.start_operator(env=env)
        result["startupSeconds"] = round(time.monotonic() - started, 1)  # process start -> relisted, leading
        metrics = scrape(op.metrics_port)
        if metrics.get("sparsify_relist_duration_seconds_count"):
            result["relistSeconds"] = round(
                metrics["sparsify_relist_duration_seconds_sum"] / metrics["sparsify_relist_duration_seconds_count"], 2
            )
        time.sleep(resync)  # settle: Kopf's own initial lists of everything
        _, rss_idle = proc_stats(op.proc.pid)
        result["rssAtRestMB"] = round(rss_idle, 1)
        since = _now()
        time.sleep(resync * 2)  # two resync periods at rest
        quiet = bench.audit(since, _now())
        result["operatorRequestsPerResyncAtRest"] = round(sum(quiet["operator"].values()) / 2, 1)
        result["restRequestKinds"] = dict(quiet["operator"].most_common(6))
        names = [f"active-{i:04d}" for i in range(active)]
        t1 = time.monotonic()
        submitted = bench.submit(lambda name: bench.create_sparsifyjob(name, 3600), names)
        bench.wait_for(bench.reached["Training"], active, timeout, f"hold: {active} active to Training", t1)
        time.sleep(3)
        _, rss = proc_stats(op.proc.pid)
        result.update(
            createToValidateJob=between(submitted, bench.job_added["validate"]),
            stageDoneToNextJob=next_stage_latency(bench),
            operatorPeakRssMB=round(rss, 1),
            duplicates=bench.duplicates(names),
            queue=queue_figures(scrape(op.metrics_port)),
        )
        op.stop()
    finally:
        bench.close()
    return result


def populate_finished(bench: Bench, n: int) -> None:
    """N finished SparsifyJobs (status as the operator leaves a successful run) with their five
    Jobs each, which the built-in Job controller leaves alone (spec.managedBy): they look like
    a year of finished runs, without running 5N pods on a 2-core machine."""
    from sparsify_operator.builders import construct_job
    from sparsify_operator.config import OperatorConfig
    from sparsify_operator.spec import normalized

    cfg = OperatorConfig(worker_command=("python", str(STANDIN / "worker.py")))
    status = {
        "phase": "Succeeded",
        "recipe": "yolov5s-pruned-quantized",
        "observedGeneration": 1,
        "startTime": "2026-01-01T00:00:00Z",
        "completionTime": "2026-01-01T02:00:00Z",
        "stages": {
            s: {
                "phase": "Succeeded",
                "job": f"x-{s}",
                "attempts": 1,
                "startTime": "2026-01-01T00:00:00Z",
                "completionTime": "2026-01-01T01:00:00Z",
            }
            for s in STAGES
        },
        "results": {"map50": 0.5123, "sparsity": 0.7412, "size": "2.3MB", "imagesPerSecond": 396.7, "speedup": 2.92},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Succeeded",
                "message": "all stages succeeded",
                "lastTransitionTime": "2026-01-01T02:00:00Z",
            }
        ],
    }

    def one(i: int) -> None:
        name = f"done-{i:05d}"
        sj = bench.custom.create_namespaced_custom_object(GROUP, VERSION, bench.ns, PLURAL, sparsifyjob(name, 0))
        bench.custom.patch_namespaced_custom_object_status(GROUP, VERSION, bench.ns, PLURAL, name, {"status": status})
        spec = normalized(sj["spec"])
        for stage in STAGES:
            job = construct_job(sj, spec, stage, 0, cfg)
            job["spec"]["managedBy"] = "yolo-sparsify.io/scale-benchmark"
            job["spec"]["suspend"] = True
            bench.batch.create_namespaced_job(bench.ns, job, _preload_content=False)
        if i and i % 1000 == 0:
            print(f"# populated {i} finished SparsifyJobs", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def failover(n: int, kills: int, work: Path, timeout: float) -> dict:
    """Two replicas; N whole lifecycles at once; the leader SIGKILLed `kills` times, each time
    once the standby had taken over, and started again as the new standby."""
    bench = Bench(work / f"failover-{n}-{kills}")
    names = [f"sj-{i:04d}" for i in range(n)]
    result: dict = {"scenario": "failover", "n": n, "kills": kills}
    takeovers: list[float] = []
    try:
        bench.install_operator()
        ops = [bench.start_operator(name="a"), bench.start_operator(name="b", wait_leading=False)]
        since = _now()
        t0 = time.monotonic()
        submitted = bench.submit(lambda name: bench.create_sparsifyjob(name, 2), names)
        done = bench.reached["Succeeded"]
        for k in range(kills):
            if len(done) >= n:
                break
            leader = next(op for op in ops if op.leading())
            standby = next(op for op in ops if op is not leader)
            leader.kill()
            killed = time.monotonic()
            standby.wait_leading(60)
            takeovers.append(time.monotonic() - killed)
            print(f"# kill {k + 1}: the standby led after {takeovers[-1]:.1f}s; {len(done)} of {n} done", file=sys.stderr, flush=True)
            leader.start()  # the Deployment's new pod: the next standby
            time.sleep(2)
        bench.wait_for(done, n, timeout, f"failover N={n}", t0)
        result["allDoneSeconds"] = round(max(done.values()) - t0, 1)
        time.sleep(5)
        result.update(
            killsDone=len(takeovers),
            takeoverSeconds={
                "p50": round(percentile(takeovers, 50), 2),
                "p99": round(percentile(takeovers, 99), 2),
                "max": round(max(takeovers), 2),
                "all": [round(t, 1) for t in takeovers],
            },
            createToPhase=between(submitted, done),
            stranded=n - len(done),
            failed=len(bench.reached["Failed"]),
            duplicates=bench.duplicates(names),
            **bench.events_per_sparsifyjob(names),
        )
        until_wall = _now()
    finally:
        bench.close()
    counts = bench.audit(since, until_wall)
    result.update(request_figures(counts, n))
    return result


# ---- output -------------------------------------------------------------------------------


def fmt(d: dict) -> str:
    return f"{d['p50']} / {d['p99']}" if d.get("n") else "-"


def report(results: list[dict]) -> None:
    bursts = [r for r in results if r["scenario"] == "burst"]
    if bursts:
        print(
            "| N | run | create -> seen on a watch p50 / p99 s | create -> first Job p50 / p99 s | stage done -> next Job p50 / p99 s | "
            "all N there s | operator CPU s | peak RSS MB | requests / SJ | writes / SJ | duplicates | all requests / object |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in bursts:
            if r["mode"] == "plain":
                print(
                    f"| {r['n']} | plain Job (floor), to Complete | {fmt(r.get('createToSeen', {}))} | {fmt(r['createToComplete'])} (Complete) | - | "
                    f"{r['allDoneSeconds']} | - | - | - | - | - | {r['requestsPerObject']} |"
                )
                continue
            label = f"operator at {r['ref']}" if r["mode"] == "before" else "operator (this checkout)"
            dup = r["duplicates"]["extraJobs"] + r["duplicates"]["unexpectedRetries"] + r["jobCreateConflicts"]
            print(
                f"| {r['n']} | {label}, to {r['until']} | {fmt(r.get('createToSeen', {}))} | {fmt(r['createToValidateJob'])} | "
                f"{fmt(r['stageDoneToNextJob'])} | "
                f"{r['allDoneSeconds']} | {r['operatorCpuSeconds']} | {r['operatorPeakRssMB']} | {r['operatorRequestsPerSparsifyJob']} | "
                f"{r['operatorWritesPerSparsifyJob']} | {dup} | {r['requestsPerObject']} |"
            )
        for r in bursts:
            if r["mode"] != "plain":
                kinds = ", ".join(f"{k} {v}" for k, v in r["operatorRequestKinds"].items())
                print(f"\nN={r['n']} {r['mode']}: events per SJ {r['eventsPerSparsifyJob']}; operator requests per SJ: {kinds}")
                if r.get("queue"):
                    print(f"N={r['n']} {r['mode']}: work queue {json.dumps(r['queue'])}")
    for r in results:
        if r["scenario"] == "hold":
            print(
                f"\nhold: {r['finished']} finished + {r['active']} active: startup {r['startupSeconds']} s (relist {r.get('relistSeconds', '-')} s), "
                f"RSS at rest {r['rssAtRestMB']} MB, peak {r['operatorPeakRssMB']} MB, operator requests per resync period at rest "
                f"{r['operatorRequestsPerResyncAtRest']} ({r['restRequestKinds']}), active: create -> first Job {fmt(r['createToValidateJob'])} s, "
                f"stage done -> next Job {fmt(r['stageDoneToNextJob'])} s, duplicates {r['duplicates']}"
            )
        if r["scenario"] == "failover":
            print(
                f"\nfailover: N={r['n']}, {r['killsDone']} leader kills: takeover p50 {r['takeoverSeconds']['p50']} s, "
                f"p99 {r['takeoverSeconds']['p99']} s (max {r['takeoverSeconds']['max']}); stranded {r['stranded']}, failed {r['failed']}, "
                f"duplicates {r['duplicates']}, Job creates answered 409: {r['jobCreateConflicts']}, repeated events {r['repeatedEvents']}; "
                f"all {r['n']} Succeeded after {r['allDoneSeconds']} s"
            )


def smoke_check(r: dict, max_requests: float, max_writes: float) -> list[str]:
    """What the CI smoke run asserts: counts, never times."""
    problems = []
    if r["duplicates"]["extraJobs"] or r["duplicates"]["unexpectedRetries"] or r["jobCreateConflicts"]:
        problems.append(f"duplicates: {r['duplicates']}, 409s {r['jobCreateConflicts']}")
    if r["operatorRequestsPerSparsifyJob"] > max_requests:
        problems.append(f"{r['operatorRequestsPerSparsifyJob']} operator requests per SparsifyJob (at most {max_requests})")
    if r["operatorWritesPerSparsifyJob"] > max_writes:
        problems.append(f"{r['operatorWritesPerSparsifyJob']} operator writes per SparsifyJob (at most {max_writes})")
    if r.get("repeatedEvents"):
        problems.append(f"{r['repeatedEvents']} events said twice")
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="scenario", required=True)
    b = sub.add_parser("burst")
    b.add_argument("--counts", nargs="+", type=int, default=[100, 500, 1000])
    b.add_argument("--modes", nargs="+", default=["plain", "before", "operator"], choices=["plain", "before", "operator"])
    b.add_argument("--before", default=None, help="the commit whose operator is 'before' (mode before)")
    b.add_argument("--until", default="training", choices=["training", "succeeded"])
    h = sub.add_parser("hold")
    h.add_argument("--finished", type=int, default=10000)
    h.add_argument("--active", type=int, default=100)
    h.add_argument("--resync", type=float, default=60)
    f = sub.add_parser("failover")
    f.add_argument("--count", type=int, default=100)
    f.add_argument("--kills", type=int, default=10)
    for s in (b, h, f):
        s.add_argument("--timeout", type=float, default=1800)
        s.add_argument("--json", type=Path)
        s.add_argument("--keep", type=Path, help="keep cluster state and logs here")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = []
        if args.scenario == "burst":
            modes = [m for m in args.modes if m != "before" or args.before]
            runs = [functools.partial(burst, m, n, args.until, work, args.timeout, args.before) for n in args.counts for m in modes]
        elif args.scenario == "hold":
            runs = [functools.partial(hold, args.finished, args.active, work, args.timeout, args.resync)]
        else:
            runs = [functools.partial(failover, args.count, args.kills, work, args.timeout)]
        for run in runs:
            r = run()
            print(json.dumps(r), file=sys.stderr, flush=True)
            results.append(r)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)  # the --before checkouts
    report(results)


if __name__ == "__main__":
    main()
