"""Prometheus metrics of the operator (served on SPARSIFY_METRICS_PORT, default 9090). The work
queue's are named after controller-runtime's `workqueue_*`, so the same dashboards read them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .workqueue import PRIORITIES, QueueMetrics

JOBS_BY_PHASE = Gauge("sparsify_jobs", "SparsifyJobs by phase, as last reconciled", ["namespace", "phase"])
STAGE_SECONDS = Histogram(
    "sparsify_stage_duration_seconds",
    "Duration of finished stages (first Job created -> last one finished)",
    ["stage", "result"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 48 * 3600),
)
RETRIES = Counter("sparsify_retries_total", "Training attempts started after a kill", ["reason"])
RECONCILES = Counter("sparsify_reconciles_total", "Reconciles run", ["result"])
JOBS_CREATED = Counter("sparsify_stage_jobs_created_total", "Stage Jobs created", ["stage"])
RELIST_SECONDS = Histogram("sparsify_relist_duration_seconds", "Full relists into the cache", buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120))
EVENTS_DROPPED = Counter("sparsify_events_dropped_total", "Events not posted: the recorder's backlog was full")
LEADER = Gauge("sparsify_leader", "1 while this replica holds the leader Lease and reconciles")
LEADER_TRANSITIONS = Counter("sparsify_leader_transitions_total", "Times this replica became the leader")

API_LATENCY = Histogram(
    "sparsify_api_request_duration_seconds",
    "API requests by verb and resource (how long a reconcile waits on the API server)",
    ["verb", "resource"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENT_LOOP_LAG = Histogram(
    "sparsify_event_loop_lag_seconds",
    "How late Kopf's event loop runs a timer (every watch event waits as long before its handler)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
_LATENCY = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_PRIORITY = {p: name for p, name in zip(PRIORITIES, ("finished", "new", "normal"))}
QUEUE_DEPTH = Gauge("sparsify_workqueue_depth", "Objects waiting for a reconcile")
QUEUE_ADDS = Counter(
    "sparsify_workqueue_adds_total", "Objects queued (coalesced: already waiting, one reconcile serves both)", ["coalesced"]
)
QUEUE_LATENCY = Histogram(
    "sparsify_workqueue_queue_duration_seconds", "Seconds from queued to a worker taking it", ["priority"], buckets=_LATENCY
)
WORK_DURATION = Histogram("sparsify_workqueue_work_duration_seconds", "Seconds one reconcile took", buckets=_LATENCY)
QUEUE_RETRIES = Counter("sparsify_workqueue_retries_total", "Reconciles queued again after a failure (with backoff)")
LONGEST_RUNNING = Gauge("sparsify_workqueue_longest_running_processor_seconds", "How long the longest reconcile under way has run")


class PrometheusQueueMetrics(QueueMetrics):
    def added(self, coalesced: bool) -> None:
        QUEUE_ADDS.labels(str(coalesced).lower()).inc()

    def depth(self, n: int) -> None:
        QUEUE_DEPTH.set(n)

    def waited(self, seconds: float, priority: int) -> None:
        QUEUE_LATENCY.labels(_PRIORITY.get(priority, str(priority))).observe(seconds)

    def worked(self, seconds: float) -> None:
        WORK_DURATION.observe(seconds)

    def retried(self) -> None:
        QUEUE_RETRIES.inc()


QUEUE = PrometheusQueueMetrics()

_phases: dict[tuple[str, str], str] = {}  # (namespace, name) -> phase


def observe_phase(namespace: str, name: str, phase: str | None) -> None:
    """Keep the by-phase gauge exact: move the object from its old phase to the new one."""
    key = (namespace, name)
    old = _phases.get(key)
    if old == phase:
        return
    if old is not None:
        JOBS_BY_PHASE.labels(namespace, old).dec()
    if phase is None:
        _phases.pop(key, None)
    else:
        _phases[key] = phase
        JOBS_BY_PHASE.labels(namespace, phase).inc()


def serve(port: int, address: str = "0.0.0.0") -> None:
    if port > 0:
        start_http_server(port, addr=address)
