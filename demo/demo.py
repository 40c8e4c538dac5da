"""`make demo`: the whole product on this machine, no cloud account.

Local control plane + local S3 come up, the operator is installed with its Helm chart, a small
detection dataset is generated and uploaded, the SparsifyJob in demo/sparsifyjob.yaml is
applied, and every stage runs the real worker under the process-kubelet. Progress is the
SparsifyJob's phase and events; the end is a results table like the seed's and the S3 URIs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client

from localcluster import s3 as local_s3
from localcluster.cluster import LocalCluster
from localcluster.controlplane import free_port
from localcluster.testing import api_client, create_namespace, helm, kubectl

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "yolo-sparsify.io", "v1alpha1", "sparsifyjobs"
SEED = {"yolov5s-baseline": (0.556, "24.8 MB", 135.8), "yolov5s-pruned": (0.534, "8.4 MB", 199.1),
        "yolov5s-pruned-quantized": (0.525, "3.3 MB", 396.7)}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="make demo")
    parser.add_argument("--job", type=Path, default=REPO / "demo" / "sparsifyjob.yaml")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    args = parser.parse_args()
    t0 = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="sparsify-demo-"))
    cluster = LocalCluster(state)
    info = cluster.start(detach=args.keep)
    say(f"local cluster up in {info.started_seconds}s ({', '.join(info.nodes)}); S3 at {info.s3_endpoint}")
    try:
        return run(info, args.job, t0)
    finally:
        if args.keep:
            say(f"cluster kept: export KUBECONFIG={info.kubeconfig}; stop it with: kill {info.supervisor_pid}")
        else:
            cluster.stop()
            say("cluster stopped")


def run(info, job_path: Path, t0: float) -> int:
    kube = api_client(info.kubeconfig)
    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    ns = create_namespace(core, "demo")
    creds = {"AWS_ACCESS_KEY_ID": local_s3.LOCAL_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": local_s3.LOCAL_SECRET_KEY}
    for bucket in ("datasets", "models"):
        local_s3.create_bucket(info.s3_endpoint, bucket)
    say("generating a small detection dataset (3 classes of shapes) and uploading it to s3://datasets/shapes/")
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": info.s3_endpoint, **creds}
    subprocess.run([sys.executable, "-m", "sparsify_worker.cli", "make-dataset", str(Path(info.state_dir) / "shapes"),
                    "--train", "128", "--val", "32", "--size", "160", "--upload", "s3://datasets/shapes"],
                   env=env, check=True, capture_output=True)
    kubectl(info.kubeconfig, "create", "secret", "generic", "s3-credentials", "-n", ns,
            *[f"--from-literal={k}={v}" for k, v in creds.items()])
    say("installing the operator with its Helm chart (charts/sparsify-operator)")
    res = helm(info.kubeconfig, "install", "sparsify", str(REPO / "charts/sparsify-operator"), "-n", "sparsify-system",
               "--create-namespace", "--set", f"defaults.s3.endpoint={info.s3_endpoint}", "--set", f"healthPort={free_port()}",
               "--set", f"metrics.port={free_port()}", "--set", "resyncSeconds=10", "--wait", "--timeout", "180s", check=False)
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        return 1
    job = yaml.safe_load(job_path.read_text())
    name = job["metadata"]["name"]
    kubectl(info.kubeconfig, "apply", "-n", ns, "-f", "-", input=json.dumps(job))
    say(f"applied SparsifyJob {ns}/{name} from {job_path.relative_to(REPO) if job_path.is_relative_to(REPO) else job_path}")
    status = follow(core, custom, ns, name)
    print()
    print(kubectl(info.kubeconfig, "get", "sparsifyjobs", "-n", ns).stdout)
    if status.get("phase") != "Succeeded":
        say(f"the SparsifyJob ended {status.get('phase')}: {json.dumps(status.get('conditions'), indent=1)}")
        return 1
    table(job, status, info.s3_endpoint)
    say(f"demo finished in {time.monotonic() - t0:.0f}s")
    return 0


def follow(core, custom, ns: str, name: str, timeout: float = 1800) -> dict:
    """Print the phase and every new Event until the SparsifyJob finishes."""
    seen: set[str] = set()
    phase = None
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name).get("status") or {}
        events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
        for e in sorted(events, key=lambda e: (e.first_timestamp or e.event_time or 0, e.metadata.name)):
            if e.metadata.uid not in seen:
                seen.add(e.metadata.uid)
                say(f"  event {e.type:7s} {e.reason:15s} {e.message}")
        if status.get("phase") != phase:
            phase = status.get("phase")
            say(f"phase: {phase}")
        if phase in ("Succeeded", "Failed"):
            return status
        time.sleep(2)
    return status


def table(job: dict, status: dict, endpoint: str) -> None:
    r = status["results"]
    recipe = status.get("recipe", "")
    tp = r.get("throughput", {})
    arch = job["spec"]["model"]["arch"]
    bench = read_json(endpoint, r["artifacts"]["report"].rsplit("/", 1)[0] + "/benchmark.json")
    dense = bench.get("dense") or {}
    dtp = {e: v.get("imagesPerSecond") for e, v in (dense.get("engines") or {}).items()}
    print("| model | recipe | mAP@0.5 | sparsity | size on disk (gzip) | DeepSparse img/s | ONNX Runtime img/s |")
    print("|---|---|---|---|---|---|---|")
    if dense:
        print(f"| {arch} | dense reference ({'untrained' if dense.get('map50') is None else 'starting weights'}) | "
              f"{dense.get('map50') if dense.get('map50') is not None else '-'} | 0% | {dense['sizeGzipBytes'] / 1e6:.1f}MB | "
              f"{dtp.get('deepsparse', '-')} | {dtp.get('onnxruntime', '-')} |")
    print(f"| {arch} | {recipe} | {r.get('map50')} | {r.get('sparsity', 0):.1%} | {r.get('size')} | "
          f"{tp.get('deepsparse', '-')} | {tp.get('onnxruntime', '-')} |")
    if recipe in SEED:
        m, size, ips = SEED[recipe]
        print(f"| seed (COCO, 24-core c5.12xlarge, batch 64) | {recipe} | {m} | | {size} | {ips} | |")
    if dtp.get("onnxruntime") and tp.get("deepsparse"):
        print(f"\nDeepSparse on the sparse model vs ONNX Runtime on the dense one, same node: "
              f"{tp['deepsparse'] / dtp['onnxruntime']:.2f}x; vs DeepSparse dense: {tp['deepsparse'] / dtp.get('deepsparse', 1):.2f}x; "
              f"size {dense['sizeGzipBytes'] / 1e6:.1f}MB -> {r.get('sizeGzipBytes', 0) / 1e6:.1f}MB (gzip).")
    print("mAP here is on generated shapes after a few epochs at 160 px, not COCO; throughput is this machine's 2 cores "
          f"at batch {bench.get('batchSize')}, {job['spec']['benchmark'].get('imgSize', 640)} px.")
    print("\nArtifacts:")
    for k, v in r.get("artifacts", {}).items():
        print(f"  {k:15s} {v}")
    if bench.get("plot"):
        print(f"  {'plot':15s} {bench['plot']}")


def read_json(endpoint: str, uri: str) -> dict:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        return json.loads(local_s3.client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception:  # noqa: BLE001  (the table is still useful without it)
        return {}


if __name__ == "__main__":
    sys.exit(main())
