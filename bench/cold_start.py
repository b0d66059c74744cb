"""A pod's first start against its later starts, end to end, as the operator runs them: the
init container `r1-runtime fetch` from a Hugging Face-like hub on loopback (the fetch tests'
server, HF_ENDPOINT pointed at it), then `r1-runtime serve --backend compile` on the hot tier
with the engine cache on the warm tier, timed until `/ready` answers 200. JSON in
bench/results/.

    .venv/bin/python bench/cold_start.py [--rounds 2] [--link-mib-s 200]

Scenarios, interleaved a b c a b c ...:
  (a) empty hot and warm tiers: download the weights, load, build the engine;
  (b) weights cached, engine not built: the fetch is a no-op, the engine builds;
  (c) both cached: the fetch is a no-op, the engine loads from its cache entry.
The demo model (Qwen2 architecture, ~25M parameters, bf16) stands in for a real checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from tests.runtime.fetch.hub_server import HubServer  # noqa: E402

REPO = "deepseek-ai/demo"
SCENARIOS = {
    "a": "empty hot and warm tiers",
    "b": "weights cached, engine not built",
    "c": "weights and engine cached",
}


def timed(command: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("ab") as out:
        subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def serve_until_ready(model: Path, engines: Path, port: int, log: Path) -> float:
    """Seconds from starting `serve` to `/ready` 200; the server is stopped afterwards."""
    command = [
        *(sys.executable, "-m", "r1_runtime.cli", "serve", "--model", str(model)),
        *("--port", str(port), "--backend", "compile", "--engine-cache", str(engines)),
        *("--dtype", "bfloat16"),
    ]
    start = time.perf_counter()
    with log.open("ab") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        while not _is_ready(port):
            if server.poll() is not None:
                raise RuntimeError(f"serve exited with {server.returncode}; see {log}")
            time.sleep(0.1)
        return time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(60)


def _is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_once(scenario: str, tiers: Path, hub: HubServer, port: int) -> dict[str, Any]:
    """One pod start in `scenario`, after emptying the tiers it says are empty."""
    hot, warm = tiers / "hot", tiers / "warm"
    if scenario == "a":
        shutil.rmtree(hot, ignore_errors=True)
    if scenario in "ab":
        shutil.rmtree(warm, ignore_errors=True)
    model = hot / "hf" / REPO / "main"
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint}
    log = RESULTS / "cold_start.log"
    fetch = [sys.executable, "-m", "r1_runtime.cli", "fetch", "--source", f"hf://{REPO}"]
    fetch += ["--revision", "main", "--dest", str(model)]
    fetch_seconds = timed(fetch, env, log)
    ready_seconds = serve_until_ready(model, warm / "engines", port, log)
    return {
        "scenario": scenario,
        "fetch_s": fetch_seconds,
        "serve_to_ready_s": ready_seconds,
        "total_s": fetch_seconds + ready_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--link-mib-s", type=float, default=None, help="throttle the hub (default: loopback speed)"
    )
    args = parser.parse_args()
    from r1_runtime.demo import build_demo_model

    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="r1-cold-start-") as scratch:
        source = build_demo_model(Path(scratch) / "source").directory
        with HubServer(source, repo=REPO) as hub:
            if args.link_mib_s:
                hub.faults.bytes_per_second = args.link_mib_s * 2**20
            for _ in range(args.rounds):
                for scenario in SCENARIOS:
                    run = start_once(scenario, Path(scratch) / "tiers", hub, args.port)
                    print(json.dumps(run))
                    runs.append(run)
    best = {s: min(r["total_s"] for r in runs if r["scenario"] == s) for s in SCENARIOS}
    result = {
        "model": "demo (Qwen2, bf16)",
        "backend": "compile",
        "scenarios": SCENARIOS,
        "best_total_s": best,
        "ratio_a_over_c": best["a"] / best["c"],
        "runs": runs,
    }
    path = RESULTS / f"cold_start-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({"best_total_s": best, "ratio_a_over_c": result["ratio_a_over_c"]}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
