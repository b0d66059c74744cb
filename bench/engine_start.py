"""Engine start-up with a backend that builds (compile): cold (an empty engine cache,
everything compiled) against warm (its entry, artifacts loaded), each in a fresh process. JSON in
bench/results/.

    .venv/bin/python bench/engine_start.py [--backend compile] [--dtype bf16] [--rounds 2]

Each start times, from the process's own start: imports, `build_engine` (weights, then the
backend prepared from the engine cache, with inductor's cache hits and misses) and the first
request. The warm starts load the entry after the whole cache was renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine_throughput import RESULTS, build_model

BENCH = Path(__file__).parent


def child(model_dir: Path, cache: Path, backend_name: str, dtype_name: str) -> dict[str, Any]:
    """One start in this process: seconds per phase since the interpreter started."""
    started = time.time() - _process_age()
    from engine_throughput import build_bench_engine
    from r1_runtime.engine.model_runner import PagedModelRunner
    from r1_runtime.engine.sequence import SamplingParams

    marks = {"imports": time.time() - started}
    engine = build_bench_engine(model_dir, dtype_name, backend_name, cache).engine
    marks["prepared"] = time.time() - started
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    engine.generate([[11, 12, 13, 14, 15, 16, 17]], params)
    marks["first_request_done"] = time.time() - started
    assert isinstance(engine.runner, PagedModelRunner)
    report = getattr(engine.runner.backend, "last_prepare", None)
    return {"seconds_since_start": marks, "prepare": vars(report) if report else None}


def _process_age() -> float:
    """Seconds this process has run (from /proc), so that interpreter start-up counts too."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def start(model_dir: Path, cache: Path, backend: str, dtype: str) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "engine_start.py"), "--child", str(model_dir)]
    command += [str(cache), "--backend", backend, "--dtype", dtype]
    begun = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - begun
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="compile")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, default=RESULTS / "qwen2-40m")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("MODEL", "CACHE"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.backend, args.dtype)))
        return
    model_dir = build_model(args.model_dir).resolve()
    runs: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    for round_index in range(args.rounds):  # cold, warm, cold, warm: A B A B
        with tempfile.TemporaryDirectory(prefix="engine-start-") as tmp:
            building = Path(tmp) / "building"
            building.mkdir()
            runs["cold"].append(start(model_dir, building, args.backend, args.dtype))
            published = Path(tmp) / "published"
            building.rename(published)
            runs["warm"].append(start(model_dir, published, args.backend, args.dtype))
            size = sum(f.stat().st_size for f in published.rglob("*") if f.is_file())
        for kind in runs:
            print(f"round {round_index} {kind}: {runs[kind][-1]['wall_seconds']:.1f} s")
    best = {kind: min(run["wall_seconds"] for run in kind_runs) for kind, kind_runs in runs.items()}
    result = {
        "backend": args.backend,
        "dtype": args.dtype,
        "model": str(model_dir),
        "entry_bytes": size,
        "best_wall_seconds": best,
        "cold_over_warm": best["cold"] / best["warm"],
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"engine_start-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("best_wall_seconds", "cold_over_warm")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
