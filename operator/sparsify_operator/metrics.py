"""Prometheus metrics of the operator (served on SPARSIFY_METRICS_PORT, default 9090)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

JOBS_BY_PHASE = Gauge("sparsify_jobs", "SparsifyJobs by phase, as last reconciled", ["namespace", "phase"])
STAGE_SECONDS = Histogram(
    "sparsify_stage_duration_seconds",
    "Duration of finished stages",
    ["stage", "result"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 48 * 3600),
)
RETRIES = Counter("sparsify_retries_total", "Training attempts started after a kill", ["reason"])
RECONCILES = Counter("sparsify_reconciles_total", "Reconciles run", ["result"])
JOBS_CREATED = Counter("sparsify_stage_jobs_created_total", "Stage Jobs created", ["stage"])

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


def serve(port: int) -> None:
    if port > 0:
        start_http_server(port)
