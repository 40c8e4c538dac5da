"""DeepSparse and ONNX Runtime on the same model and machine, side by side.

Each engine runs in its own subprocess: a DeepSparse engine assertion (seen with some INT8
SiLU graphs) aborts the process; here it becomes a failed engine result with its message,
never a crash or a hang of the stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ENGINE_TIMEOUT_GRACE = 180  # compile time + warm-up on top of the measured duration


def cpu_info() -> dict:
    from deepsparse.cpu import cpu_architecture

    arch = cpu_architecture()
    return {
        "isa": arch.get("isa"),
        "avx512": arch.get("isa") == "avx512",
        "vnni": bool(arch.get("vnni")),
        "vendor": arch.get("vendor"),
        "cores": arch.get("available_num_cores"),
        "bf16": bool(arch.get("bf16")),
    }


def native_fraction(model: Path, batch_size: int, cores: int | None) -> float:
    from deepsparse import compile_model

    engine = compile_model(str(model), batch_size=batch_size, num_cores=cores)
    return round(float(engine.fraction_of_supported_ops), 4)


def _measure(model: Path, engine: str, batch_size: int, cores: int | None, scenario: str, seconds: int) -> dict:
    from deepsparse.benchmark.benchmark_model import benchmark_model

    res = benchmark_model(
        str(model),
        batch_size=batch_size,
        num_cores=cores,
        scenario=scenario,
        time=seconds,
        warmup_time=max(1, seconds // 5),
        engine=engine,
        quiet=True,
    )
    r = res["benchmark_result"]
    out = {
        "imagesPerSecond": round(float(r["items_per_sec"]), 2),
        "latencyMs": round(float(r["mean"]), 2),
        "latencyMedianMs": round(float(r.get("median", r["mean"])), 2),
        "iterations": int(r.get("iterations", 0)),
        "batchSize": batch_size,
        "scenario": scenario,
        "seconds": seconds,
    }
    if engine == "deepsparse":
        out["nativeFraction"] = native_fraction(model, batch_size, cores)
    return out


def run_engine(model: Path, engine: str, batch_size: int, cores: int | None, scenario: str, seconds: int) -> dict:
    """One engine in a child process; its failure is data, not an exception."""
    cmd = [sys.executable, "-m", "sparsify_worker.benchmark", str(model), engine, str(batch_size), str(cores or 0), scenario, str(seconds)]
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + ENGINE_TIMEOUT_GRACE, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"{engine} did not finish within {seconds + ENGINE_TIMEOUT_GRACE}s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"{engine} failed (exit {proc.returncode}): {' | '.join(tail)[:400]}"}
    return json.loads(lines[-1])


def summarize(runs: list[dict]) -> dict:
    """One engine on one model over several rounds: the median round, and the spread."""
    ok = [r for r in runs if "imagesPerSecond" in r]
    if not ok:
        return runs[-1] if runs else {"error": "not run"}
    ips = sorted(r["imagesPerSecond"] for r in ok)
    median = ips[len(ips) // 2] if len(ips) % 2 else (ips[len(ips) // 2 - 1] + ips[len(ips) // 2]) / 2
    out = dict(min(ok, key=lambda r: abs(r["imagesPerSecond"] - median)))
    out.update({"imagesPerSecond": round(median, 2), "rounds": len(ok), "imagesPerSecondMin": ips[0], "imagesPerSecondMax": ips[-1]})
    if len(ok) < len(runs):
        out["failedRounds"] = len(runs) - len(ok)
    return out


def benchmark(
    model: Path,
    engines: list[str],
    batch_size: int,
    cores: int | None,
    scenario: str,
    seconds: int,
    rounds: int = 1,
    dense: Path | None = None,
) -> dict:
    """Each engine on the model (and on its dense reference when given), in `rounds` interleaved
    rounds: the machine's drift hits both models alike, and the speed-up is measured per round."""
    models = {"sparse": model, **({"dense": dense} if dense else {})}
    runs: dict[str, dict[str, list[dict]]] = {m: {e: [] for e in engines} for m in models}
    for _ in range(max(1, rounds)):
        for name, path in models.items():
            for engine in engines:
                runs[name][engine].append(run_engine(path, engine, batch_size, cores, scenario, seconds))
    results = {e: summarize(r) for e, r in runs["sparse"].items()}
    out = {
        "engines": results,
        "cpu": cpu_info(),
        "batchSize": batch_size,
        "scenario": scenario,
        "seconds": seconds,
        "rounds": max(1, rounds),
    }
    ds, ort = results.get("deepsparse", {}), results.get("onnxruntime", {})
    if "imagesPerSecond" in ds:
        out["nativeFraction"] = ds.get("nativeFraction")
    if "imagesPerSecond" in ds and "imagesPerSecond" in ort and ort["imagesPerSecond"]:
        out["speedupVsOnnxRuntime"] = round(ds["imagesPerSecond"] / ort["imagesPerSecond"], 2)
    if dense:
        out["denseEngines"] = {e: summarize(r) for e, r in runs["dense"].items()}
        ratios = paired_speedups(runs)
        if ratios:  # the speed-up users come for, measured per round: its median and spread
            out["speedupRounds"] = ratios
            out["speedup"] = round(sorted(ratios)[len(ratios) // 2], 2)
            out["speedupRange"] = [round(min(ratios), 2), round(max(ratios), 2)]
    return out


def paired_speedups(runs: dict[str, dict[str, list[dict]]]) -> list[float]:
    """Per round: DeepSparse on the sparse model / the faster engine on the dense model."""
    sparse = runs["sparse"].get("deepsparse", [])
    out = []
    for i, s in enumerate(sparse):
        dense = [r[i].get("imagesPerSecond") for r in runs["dense"].values() if i < len(r) and r[i].get("imagesPerSecond")]
        if s.get("imagesPerSecond") and dense:
            out.append(round(s["imagesPerSecond"] / max(dense), 3))
    return out


if __name__ == "__main__":
    path, engine, batch, cores, scenario, seconds = sys.argv[1:7]
    print(json.dumps(_measure(Path(path), engine, int(batch), int(cores) or None, scenario, int(seconds))), flush=True)
