"""`make demo`: the whole product on this machine, no cloud account.

Local control plane + local S3 come up, the operator is installed with its Helm chart, the
real data goes to S3 (coco128 split 96/32 and the COCO-pretrained YOLOv5n from ../shared/data;
without them, generated shapes and the seed's from-scratch recipe), the SparsifyJob is applied,
and every stage runs the real worker under the process-kubelet. Progress is the SparsifyJob's
phase and events; the end is a table like the seed's, dense and sparse side by side, with the
measured speed-up (and its spread over interleaved rounds) and accuracy retained."""

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
from localcluster.testing import api_client, create_namespace, helm_install_operator, kubectl
from sparsify_operator.api import GROUP, PLURAL, VERSION

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
COCO128, WEIGHTS = SHARED / "coco128", SHARED / "weights" / "yolov5n-v7.0.pt"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="make demo")
    parser.add_argument(
        "--job", type=Path, default=None, help="default: demo/sparsifyjob.yaml with ../shared/data, else demo/sparsifyjob-shapes.yaml"
    )
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
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": info.s3_endpoint, **creds}
    real = COCO128.is_dir() and WEIGHTS.exists()
    if job_path is None:
        job_path = REPO / "demo" / ("sparsifyjob.yaml" if real else "sparsifyjob-shapes.yaml")
    if real:
        say(f"real data: coco128 from {COCO128} (first 96 images train, the other 32 validate) -> s3://datasets/coco128/")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sparsify_worker.cli",
                "make-dataset",
                str(Path(info.state_dir) / "coco128"),
                "--from",
                str(COCO128),
                "--train",
                "96",
                "--val",
                "32",
                "--upload",
                "s3://datasets/coco128",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        local_s3.create_bucket(info.s3_endpoint, "weights")
        local_s3.client(info.s3_endpoint).upload_file(str(WEIGHTS), "weights", "yolov5n-v7.0.pt")
        say(f"COCO-pretrained YOLOv5n (Ultralytics v7.0 checkpoint) from {WEIGHTS} -> s3://weights/yolov5n-v7.0.pt")
    else:
        say(
            f"{SHARED} has no coco128 + yolov5n-v7.0.pt: falling back to generated shapes and the seed's from-scratch recipe "
            "(no pretrained weights, so no accuracy comparison)"
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sparsify_worker.cli",
                "make-dataset",
                str(Path(info.state_dir) / "shapes"),
                "--train",
                "128",
                "--val",
                "32",
                "--size",
                "160",
                "--upload",
                "s3://datasets/shapes",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    kubectl(
        info.kubeconfig, "create", "secret", "generic", "s3-credentials", "-n", ns, *[f"--from-literal={k}={v}" for k, v in creds.items()]
    )
    say("installing the operator with its Helm chart (charts/sparsify-operator)")
    res = helm_install_operator(
        info.kubeconfig, REPO / "charts/sparsify-operator", {"defaults.s3.endpoint": info.s3_endpoint, "resyncSeconds": "10"}
    )
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
    verdict = table(job, status, info.s3_endpoint)
    say(f"demo finished in {time.monotonic() - t0:.0f}s")
    return verdict


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


def table(job: dict, status: dict, endpoint: str) -> int:
    """The seed's table for this run: the dense model and the sparse one, measured side by side.
    Returns 1 when the result is not what users come for (slower than dense, accuracy not
    compared or dropped), so the demo says so plainly and fails."""
    r = status["results"]
    doc = read_json(endpoint, r["artifacts"]["results"])
    dense = doc.get("dense") or {}
    dtp, tp = dense.get("throughput") or {}, doc.get("throughput") or {}
    bench = read_json(endpoint, r["artifacts"]["report"].rsplit("/", 1)[0] + "/benchmark.json")
    ranges = {
        (m, e): v
        for m, engines in (("sparse", bench.get("engines") or {}), ("dense", (bench.get("dense") or {}).get("engines") or {}))
        for e, v in engines.items()
    }

    def ips(model: str, engine: str, value) -> str:
        v = ranges.get((model, engine)) or {}
        spread = f" ({v['imagesPerSecondMin']:.0f}-{v['imagesPerSecondMax']:.0f})" if "imagesPerSecondMin" in v else ""
        return "-" if value is None else f"{value:.1f}{spread}"

    def m(v) -> str:
        return "-" if v is None else f"{v:.3f}"

    what = f"{doc.get('model')} ({doc.get('layout')}, {doc.get('activation')})"
    print(f"| {what} | mAP@0.5 | sparsity | size (gzip) | DeepSparse img/s (range) | ONNX Runtime img/s (range) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| dense ({'pretrained, as is' if dense.get('map50') is not None else 'untrained reference'}) | {m(dense.get('map50'))} | 0% | "
        f"{(dense.get('sizeGzipBytes') or 0) / 1e6:.1f} MB | {ips('dense', 'deepsparse', dtp.get('deepsparse'))} | "
        f"{ips('dense', 'onnxruntime', dtp.get('onnxruntime'))} |"
    )
    print(
        f"| {doc['recipe']} | {m(doc.get('map50'))} | {(doc.get('sparsity') or 0):.1%} | {(doc.get('sizeGzipBytes') or 0) / 1e6:.1f} MB | "
        f"{ips('sparse', 'deepsparse', tp.get('deepsparse'))} | {ips('sparse', 'onnxruntime', tp.get('onnxruntime'))} |"
    )
    print()
    lo, hi = doc.get("speedupRange") or (None, None)
    if doc.get("speedup") is not None:
        print(
            f"Speed-up, DeepSparse on the sparse model vs the dense model's faster engine, same node: {doc['speedup']:.2f}x "
            f"(median of {bench.get('rounds', 1)} interleaved rounds; spread {lo:.2f}-{hi:.2f}x)"
        )
    if doc.get("accuracyRetention") is not None:
        print(f"Accuracy retained: {doc['accuracyRetention']:.1%} of the dense model's mAP@0.5 on the same 32 validation images")
    for v in doc.get("verdicts") or []:
        print(f"  {'ok ' if v['ok'] else 'NOT'} {v['type']}: {v['message']}")
    spec = job["spec"]
    print(
        f"\nmAP on {spec['dataset']['uri']} validation images after {doc.get('epochs')} epochs at {spec['training'].get('imgSize')} px, "
        f"not COCO val; throughput is this machine's cores at batch {bench.get('batchSize')}. The pretrained weights saw these "
        "images in training: only the difference between the rows means something."
    )
    print("\nArtifacts:")
    for k, v in r.get("artifacts", {}).items():
        print(f"  {k:15s} {v}")
    if bench.get("plot"):
        print(f"  {'plot':15s} {bench['plot']}")
    failed = [v for v in doc.get("verdicts") or [] if not v["ok"]]
    if failed:
        print(f"\nTHE RESULT IS NOT WHAT USERS COME FOR: {', '.join(v['reason'] for v in failed)} (see above)")
    return 1 if failed else 0


def read_json(endpoint: str, uri: str) -> dict:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        return json.loads(local_s3.client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception:  # noqa: BLE001  (the table is still useful without it)
        return {}


if __name__ == "__main__":
    sys.exit(main())
