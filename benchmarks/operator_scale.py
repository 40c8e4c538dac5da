"""Operator scale: create N SparsifyJobs at once on the local control plane and measure how fast
the operator gets every one of them to the training stage, next to the floor (N plain batch/v1
Jobs created directly, with the same pod). Each run gets a fresh cluster with the API server's
audit log on, so request counts are exact.

    .venv/bin/python benchmarks/operator_scale.py [--counts 100 500 1000] [--modes plain operator]
                                                  [--until training|succeeded] [--json FILE]

Stage commands are the tests' stand-ins (tests/standin): each pod is a real process run by the
process-kubelet, validate exits at once, train sleeps (so training Jobs stay put while GPUs are
scarce: 16 on the two simulated p4d nodes). The operator runs as in production: its own process,
its ServiceAccount's RBAC, default resync period.

Figures, per N:
  floor     plain Job: create -> Job Complete (p50, p99), time for all N
  operator  create -> validate Job exists; create -> train Job exists (p50, p99);
            time for all N to reach phase Training (or Succeeded with --until succeeded);
            operator CPU seconds and peak RSS; API requests by the operator per SparsifyJob
            (from the audit log) and by every component per object, top request kinds."""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import functools
import json
import os
import statistics
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
from sparsify_operator.api import GROUP, LABEL_JOB, LABEL_STAGE, PLURAL, VERSION  # noqa: E402
from tests.support import objects  # noqa: E402
from tests.support.operator_process import STANDIN, OperatorProcess  # noqa: E402

OPERATOR_USER = "system:serviceaccount:sparsify-system:sparsify-operator"
PHASE_ORDER = ["Pending", "Validating", "Training", "Exporting", "Benchmarking", "Publishing", "Succeeded"]


def sparsifyjob(name: str, train_seconds: int) -> dict:
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


def first_seen(store: dict, key: str) -> None:
    store.setdefault(key, time.monotonic())


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


def audit_counts(audit_log: Path, since: dt.datetime, until: dt.datetime) -> tuple[collections.Counter, collections.Counter]:
    """(requests by user, operator requests by 'verb resource[/sub]') received within the window."""
    by_user: collections.Counter = collections.Counter()
    operator: collections.Counter = collections.Counter()
    lines = [line for f in sorted(audit_log.parent.glob("audit*.log")) for line in f.read_text().splitlines()]  # rotated files too
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
    return by_user, operator


def admin_clients(kubeconfig: str) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = 16
    return client.ApiClient(cfg)


def run_once(mode: str, n: int, until: str, work: Path, timeout: float) -> dict:
    state = work / f"{mode}-{n}"
    cluster = LocalCluster(state, audit=True)
    info = cluster.start()
    stop = threading.Event()
    op = None
    try:
        api = admin_clients(info.kubeconfig)
        core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
        ns = create_namespace(core, "scale")
        submitted: dict[str, float] = {}
        job_added: dict[str, dict[str, float]] = collections.defaultdict(dict)  # stage -> owner -> t
        job_done: dict[str, dict[str, float]] = collections.defaultdict(dict)
        reached: dict[str, float] = {}
        target = "Succeeded" if until == "succeeded" else "Training"

        def on_job(job: dict) -> None:
            labels = job["metadata"].get("labels") or {}
            owner = labels.get(LABEL_JOB, job["metadata"]["name"])
            stage = labels.get(LABEL_STAGE, "?")  # the floor's plain Jobs carry the same labels: "validate"
            first_seen(job_added[stage], owner)
            if complete(job):
                first_seen(job_done[stage], owner)

        def on_sj(sj: dict) -> None:
            phase = (sj.get("status") or {}).get("phase")
            if phase in PHASE_ORDER and PHASE_ORDER.index(phase) >= PHASE_ORDER.index(target):
                first_seen(reached, sj["metadata"]["name"])

        Watcher(functools.partial(batch.list_namespaced_job, ns), on_job, stop).start()
        if mode == "operator":
            for f in ("crd.yaml", "namespace.yaml", "rbac.yaml"):
                kubectl(info.kubeconfig, "apply", "-f", str(REPO / "manifests/base" / f))
            kubectl(info.kubeconfig, "wait", "--for=condition=Established", "crd/sparsifyjobs.yolo-sparsify.io", "--timeout=60s")
            wait_until(
                lambda: core.list_namespaced_service_account("sparsify-system", field_selector="metadata.name=sparsify-operator").items,
                30,
                what="operator ServiceAccount",
            )
            kc = service_account_kubeconfig(info.kubeconfig, core, "sparsify-system", "sparsify-operator", state / "operator.kubeconfig")
            op = OperatorProcess(kc, state / "operator.log").start()
            Watcher(functools.partial(custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL), on_sj, stop).start()
            cpu0, _ = proc_stats(op.proc.pid)
            train_seconds = 0 if until == "succeeded" else 3600

            def make(name: str) -> None:
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, sparsifyjob(name, train_seconds))
        else:

            def make(name: str) -> None:
                batch.create_namespaced_job(ns, plain_job(name, ns))

        names = [f"sj-{i:04d}" for i in range(n)]
        started_wall = dt.datetime.now(dt.timezone.utc)
        t0 = time.monotonic()

        def submit(name: str) -> None:
            submitted[name] = time.monotonic()
            make(name)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(submit, names))
        created_in = time.monotonic() - t0
        done = reached if mode == "operator" else job_done["validate"]
        last = 0
        while len(done) < n:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{mode} N={n}: only {len(done)} of {n} done after {timeout}s")
            if len(done) // 100 != last // 100:
                print(f"# {mode} N={n}: {len(done)} done after {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
            last = len(done)
            time.sleep(0.2)
        all_done = max(done.values()) - t0
        result = {"mode": mode, "n": n, "until": until, "createSeconds": round(created_in, 1), "allDoneSeconds": round(all_done, 1)}

        if mode == "operator":
            time.sleep(5)  # let the last status writes and events land before counting
            cpu1, rss = proc_stats(op.proc.pid)
            op.stop()
            result.update(
                createToValidateJob=between(submitted, job_added["validate"]),
                createToTrainJob=between(submitted, job_added["train"]),
                validateDoneToTrainJob=between(job_done["validate"], job_added["train"]),
                createToPhase=between(submitted, reached),
                operatorCpuSeconds=round(cpu1 - cpu0, 1),
                operatorPeakRssMB=round(rss, 1),
            )
        else:
            time.sleep(5)
            result.update(createToComplete=between(submitted, job_done["validate"]))
        ended_wall = dt.datetime.now(dt.timezone.utc)
    finally:
        stop.set()
        if op:
            op.stop()
        cluster.stop()  # flushes the audit log
    by_user, operator_reqs = audit_counts(state / "logs" / "audit.log", started_wall, ended_wall)
    result["requestsPerObject"] = round(sum(by_user.values()) / n, 1)
    result["requestsByUserPerObject"] = {u: round(c / n, 2) for u, c in by_user.most_common(6)}
    if mode == "operator":
        result["operatorRequestsPerSparsifyJob"] = round(sum(operator_reqs.values()) / n, 2)
        result["operatorRequestKinds"] = {k: round(c / n, 2) for k, c in operator_reqs.most_common(8)}
    return result


def between(start: dict[str, float], end: dict[str, float]) -> dict:
    """p50 / p99 / mean seconds from `start` to `end` over the objects that have both."""
    values = [end[k] - t for k, t in start.items() if k in end]
    return {
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "mean": round(statistics.fmean(values), 2) if values else float("nan"),
    }


def report(results: list[dict]) -> None:
    print(
        "| N | run | create -> first Job p50 / p99 s | create -> train Job p50 / p99 s | all N there s | "
        "operator CPU s | operator peak RSS MB | operator requests / SJ | all requests / object |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["mode"] == "plain":
            c = r["createToComplete"]
            print(
                f"| {r['n']} | plain Job (floor): create -> Complete | {c['p50']} / {c['p99']} | - | {r['allDoneSeconds']} | - | - | - | "
                f"{r['requestsPerObject']} |"
            )
        else:
            v, t = r["createToValidateJob"], r["createToTrainJob"]
            print(
                f"| {r['n']} | SparsifyJob to {r['until']} | {v['p50']} / {v['p99']} | {t['p50']} / {t['p99']} | {r['allDoneSeconds']} | "
                f"{r['operatorCpuSeconds']} | {r['operatorPeakRssMB']} | {r['operatorRequestsPerSparsifyJob']} | {r['requestsPerObject']} |"
            )
    for r in results:
        if r["mode"] == "operator":
            kinds = ", ".join(f"{k} {v}" for k, v in r["operatorRequestKinds"].items())
            print(
                f"\nN={r['n']}: validate Complete -> train Job p50 {r['validateDoneToTrainJob']['p50']} s, "
                f"p99 {r['validateDoneToTrainJob']['p99']} s; operator requests per SparsifyJob: {kinds}"
            )
        users = ", ".join(f"{u.split(':')[-1]} {c}" for u, c in r["requestsByUserPerObject"].items())
        print(f"N={r['n']} {r['mode']}: requests per object by component: {users}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", nargs="+", type=int, default=[100, 500, 1000])
    p.add_argument("--modes", nargs="+", default=["plain", "operator"], choices=["plain", "operator"])
    p.add_argument("--until", default="training", choices=["training", "succeeded"])
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", type=Path, help="keep cluster state and logs here")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = args.keep or Path(tmp)
        for n in args.counts:
            for mode in args.modes:
                r = run_once(mode, n, args.until, work, args.timeout)
                print(json.dumps(r), file=sys.stderr, flush=True)
                results.append(r)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
    report(results)


if __name__ == "__main__":
    main()
