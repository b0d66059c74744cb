"""Issue 4's workload on the engine and on its peers, side by side: vLLM's CPU build, llama.cpp
(llama-cpp-python, on a bf16 GGUF of the same checkpoint) and transformers. `make bench-peers`
installs the peers under .cache/bench-peers/ and runs this; JSON in bench/results/.

Every system is a worker process in its own venv (`bench/peer_workers.py`), loaded and warmed
up once, idle while another runs. Each round runs every system in turn (A B A B ...); a figure
is the best of its rounds, as other work on the machine only ever slows a run down.

    .venv/bin/python bench/peers.py [--rounds 5] [--backends eager compile]
        [--only bf16:single] [--systems engine llamacpp]

`--backends`: the engine runs with each (`engine` is the first, `engine-<name>` the others, in
every workload the engine runs); `--only`/`--systems` measure a subset (no summary then).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from engine_throughput import (
    RESULTS,
    build_model,
    checkpoint_parameters,
    make_prompts,
    matmul_peak,
)

BENCH = Path(__file__).parent
PEERS = BENCH.parent / ".cache" / "bench-peers"
WORKER_SYSTEMS = ("vllm", "llamacpp", "transformers")
PAUSE_S = 1.0  # between runs: lets the previous system's OpenMP threads stop spinning
# (dtype, workload) -> systems, in the order each round runs them
PLAN = {
    ("bf16", "offline"): ["engine", "vllm", "transformers"],
    ("bf16", "single"): ["engine", "vllm", "llamacpp", "transformers"],
    ("fp32", "offline"): ["engine", "vllm"],
}


class Worker:
    """One `peer_workers.py` process; `run` sends a command and waits for its result."""

    def __init__(
        self, name: str, python: Path, model: Path, prompts: Path, dtype: str, *extra: str
    ) -> None:
        self.name = name
        log = open(PEERS / f"{name}-{dtype}.log", "w")  # noqa: SIM115 - lives with the process
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0-1"}  # NOTE: else vLLM keeps a core
        system = name.partition("-")[0]
        command = [str(python), str(BENCH / "peer_workers.py"), system, str(model), str(prompts)]
        self.process = subprocess.Popen(
            [*command, dtype, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            text=True, env=env, cwd=PEERS,
        )  # fmt: skip
        if self._line() != "READY":
            raise RuntimeError(f"{name} {dtype} did not start: see {log.name}")

    def run(self, workload: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(workload + "\n")
        self.process.stdin.flush()
        kind, _, payload = self._line().partition(" ")
        if kind != "RESULT":
            raise RuntimeError(f"{self.name} failed on {workload!r}")
        result: dict[str, Any] = json.loads(payload)
        return result

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()


def engine_names(backends: list[str]) -> dict[str, str]:
    """Worker name -> engine backend: `engine` runs the first backend."""
    return {("engine" if i == 0 else f"engine-{b}"): b for i, b in enumerate(backends)}


def start_workers(
    dtype: str, model_dir: Path, prompts: Path, plan: dict[tuple[str, str], list[str]],
    backends: list[str],
) -> dict[str, Worker]:  # fmt: skip
    systems = {name for (d, _), names in plan.items() if d == dtype for name in names}
    pythons = {
        "engine": Path(sys.executable),
        "transformers": Path(sys.executable),
        "vllm": PEERS / "vllm" / "bin" / "python",
        "llamacpp": PEERS / "llamacpp" / "bin" / "python",
    }
    workers = {}
    engines = engine_names(backends)
    for name in sorted(systems):  # one at a time: startups (vLLM compiles) would compete
        model = gguf(model_dir) if name == "llamacpp" else model_dir
        extra = [engines[name]] if name in engines else []
        python = pythons[name.partition("-")[0]]
        workers[name] = Worker(name, python, model, prompts, dtype, *extra)
        print(f"{name} {dtype}: loaded", flush=True)
    return workers


def gguf(model_dir: Path) -> Path:
    """The bf16 GGUF of the checkpoint, converted once by llama.cpp's own script."""
    path = PEERS / f"{model_dir.name}-bf16.gguf"
    if not path.exists():
        python = PEERS / "llamacpp" / "bin" / "python"
        converter = [str(BENCH / "gguf_convert.py"), str(PEERS / "llama.cpp"), str(model_dir)]
        subprocess.run([str(python), *converter, str(path)], check=True, capture_output=True)
    return path


def make_plan(
    backends: list[str], only: list[str] | None, systems: list[str] | None
) -> dict[tuple[str, str], list[str]]:
    """PLAN with every engine backend where the engine runs, cut to `only` and `systems`."""
    engines = list(engine_names(backends))
    plan = {}
    for (dtype, workload), names in PLAN.items():
        if only and f"{dtype}:{workload}" not in only:
            continue
        expanded = [e for n in names for e in (engines if n == "engine" else [n])]
        plan[dtype, workload] = [
            n for n in expanded if not systems or n.partition("-")[0] in systems
        ]
    return plan


def measure(
    dtype: str, workers: dict[str, Worker], rounds: int, plan: dict[tuple[str, str], list[str]]
) -> dict[str, Any]:
    """`{workload: {system: [round results]}}`, output ids kept from the first round only."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for round_index in range(rounds):
        for (plan_dtype, workload), systems in plan.items():
            if plan_dtype != dtype:
                continue
            for name in systems:
                time.sleep(PAUSE_S)
                result = workers[name].run(workload)
                if round_index:
                    del result["ids"]
                runs.setdefault(workload, {}).setdefault(name, []).append(result)
                print(f"{dtype} {workload} {name}: {result['tokens_per_s']:.0f} tok/s", flush=True)
    return runs


def best(runs: list[dict[str, Any]]) -> float:
    return max(run["tokens_per_s"] for run in runs)


def same_outputs(runs: dict[str, list[dict[str, Any]]], a: str, b: str) -> int:
    """How many sequences two systems generated identically (first round)."""
    return sum(x == y for x, y in zip(runs[a][0]["ids"], runs[b][0]["ids"], strict=True))


def summary(results: dict[str, Any], num_params: int) -> dict[str, Any]:
    """Best tokens/s of every system, and each engine backend's ratios to the peers."""
    bf16, fp32 = results["bf16"], results["fp32"]
    single = {name: best(runs) for name, runs in bf16["single"].items()}
    engines = [name for name in bf16["offline"] if name.startswith("engine")]
    ratios, peak_fraction, identical = {}, {}, {}
    for name in engines:
        offline = {"bf16": best(bf16["offline"][name]), "fp32": best(fp32["offline"][name])}
        ratios[name] = {
            "/vllm offline bf16": offline["bf16"] / best(bf16["offline"]["vllm"]),
            "/vllm offline fp32": offline["fp32"] / best(fp32["offline"]["vllm"]),
            "/llamacpp single bf16": single[name] / single["llamacpp"],
            "/vllm single bf16": single[name] / single["vllm"],
            " offline/transformers sequential bf16": offline["bf16"] / single["transformers"],
            " offline/transformers static batch bf16": (
                offline["bf16"] / best(bf16["offline"]["transformers"])
            ),
            " single/transformers sequential bf16": single[name] / single["transformers"],
        }
        peak_fraction[name] = {
            dtype: offline[dtype] * 2 * num_params / (results[f"matmul_peak_gflops_{dtype}"] * 1e9)
            for dtype in ("bf16", "fp32")
        }
        identical[name] = {
            f"/vllm {dtype}": same_outputs(results[dtype]["offline"], name, "vllm")
            for dtype in ("bf16", "fp32")
        }
    return {
        "tokens_per_s": {
            dtype: {
                workload: {name: round(best(runs)) for name, runs in systems.items()}
                for workload, systems in results[dtype].items()
            }
            for dtype in ("bf16", "fp32")
        },
        "ratios": {name + key: value for name in engines for key, value in ratios[name].items()},
        "fraction_of_matmul_peak": peak_fraction,
        "identical_greedy_outputs_of_64": {
            name + key: value for name in engines for key, value in identical[name].items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, default=RESULTS / "qwen2-40m")
    parser.add_argument(
        "--backends", nargs="+", choices=["eager", "compile"], default=["eager", "compile"]
    )
    parser.add_argument("--only", nargs="+", choices=[f"{d}:{w}" for d, w in PLAN])
    parser.add_argument("--systems", nargs="+", choices=["engine", *WORKER_SYSTEMS])
    args = parser.parse_args()
    plan = make_plan(args.backends, args.only, args.systems)
    start = time.perf_counter()
    model_dir = build_model(args.model_dir).resolve()
    prompts_file = PEERS / "prompts.json"
    prompts_file.write_text(json.dumps(make_prompts(model_dir)))
    results: dict[str, Any] = {"rounds": args.rounds, "engine_backends": args.backends}
    for dtype in sorted({dtype for dtype, _ in plan}):
        workers = start_workers(dtype, model_dir, prompts_file, plan, args.backends)
        results[dtype] = measure(dtype, workers, args.rounds, plan)
        for worker in workers.values():
            worker.stop()
        peak = matmul_peak({"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
        results[f"matmul_peak_gflops_{dtype}"] = peak / 1e9
    if plan == make_plan(args.backends, None, None):
        results["summary"] = summary(results, checkpoint_parameters(model_dir))
    else:
        results["summary"] = {
            f"{dtype} {workload}": {name: round(best(runs)) for name, runs in systems.items()}
            for dtype in ("bf16", "fp32") if dtype in results
            for workload, systems in results[dtype].items()
        }  # fmt: skip
        single = results["summary"].get("bf16 single", {})
        results["summary"]["ratios to llamacpp, bf16 single"] = {
            name: tok_s / single["llamacpp"]
            for name, tok_s in single.items() if name.startswith("engine") and "llamacpp" in single
        }  # fmt: skip
    results["wall_seconds"] = time.perf_counter() - start
    path = RESULTS / f"peers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
