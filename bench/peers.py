"""Issue 4's workload on the engine and on its peers, side by side: vLLM's CPU build, llama.cpp
(llama-cpp-python, on a bf16 GGUF of the same checkpoint) and transformers. `make bench-peers`
installs the peers under .cache/bench-peers/ and runs this; JSON in bench/results/.

Every system is a worker process in its own venv (`bench/peer_workers.py`), loaded and warmed
up once, idle while another runs. Each round runs every system in turn (A B A B ...); a figure
is the best of its rounds, as other work on the machine only ever slows a run down.

    .venv/bin/python bench/peers.py [--rounds 5]
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
PAUSE_S = 1.0  # between runs: lets the previous system's OpenMP threads stop spinning
# (dtype, workload) -> systems, in the order each round runs them
PLAN = {
    ("bf16", "offline"): ["engine", "vllm", "transformers"],
    ("bf16", "single"): ["engine", "vllm", "llamacpp", "transformers"],
    ("fp32", "offline"): ["engine", "vllm"],
}


class Worker:
    """One `peer_workers.py` process; `run` sends a command and waits for its result."""

    def __init__(self, name: str, python: Path, model: Path, prompts: Path, dtype: str) -> None:
        self.name = name
        log = open(PEERS / f"{name}-{dtype}.log", "w")  # noqa: SIM115 - lives with the process
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0-1"}  # NOTE: else vLLM keeps a core
        command = [str(python), str(BENCH / "peer_workers.py"), name, str(model), str(prompts)]
        self.process = subprocess.Popen(
            [*command, dtype], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
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


def start_workers(dtype: str, model_dir: Path, prompts: Path) -> dict[str, Worker]:
    systems = {name for (d, _), names in PLAN.items() if d == dtype for name in names}
    pythons = {
        "engine": Path(sys.executable),
        "transformers": Path(sys.executable),
        "vllm": PEERS / "vllm" / "bin" / "python",
        "llamacpp": PEERS / "llamacpp" / "bin" / "python",
    }
    workers = {}
    for name in sorted(systems):  # one at a time: startups (vLLM compiles) would compete
        model = gguf(model_dir) if name == "llamacpp" else model_dir
        workers[name] = Worker(name, pythons[name], model, prompts, dtype)
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


def measure(dtype: str, workers: dict[str, Worker], rounds: int) -> dict[str, Any]:
    """`{workload: {system: [round results]}}`, output ids kept from the first round only."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for round_index in range(rounds):
        for (plan_dtype, workload), systems in PLAN.items():
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
    bf16, fp32 = results["bf16"], results["fp32"]
    engine = {"bf16": best(bf16["offline"]["engine"]), "fp32": best(fp32["offline"]["engine"])}
    single = {name: best(runs) for name, runs in bf16["single"].items()}
    return {
        "tokens_per_s": {
            dtype: {
                workload: {name: round(best(runs)) for name, runs in systems.items()}
                for workload, systems in results[dtype].items()
            }
            for dtype in ("bf16", "fp32")
        },
        "ratios": {
            "engine/vllm offline bf16": engine["bf16"] / best(bf16["offline"]["vllm"]),
            "engine/vllm offline fp32": engine["fp32"] / best(fp32["offline"]["vllm"]),
            "engine/llamacpp single bf16": single["engine"] / single["llamacpp"],
            "engine/vllm single bf16": single["engine"] / single["vllm"],
            "engine offline/transformers sequential bf16": engine["bf16"] / single["transformers"],
            "engine offline/transformers static batch bf16": (
                engine["bf16"] / best(bf16["offline"]["transformers"])
            ),
            "engine single/transformers sequential bf16": single["engine"] / single["transformers"],
        },
        "fraction_of_matmul_peak": {
            dtype: engine[dtype] * 2 * num_params / (results[f"matmul_peak_gflops_{dtype}"] * 1e9)
            for dtype in ("bf16", "fp32")
        },
        "identical_greedy_outputs_of_64": {
            f"engine/vllm {dtype}": same_outputs(results[dtype]["offline"], "engine", "vllm")
            for dtype in ("bf16", "fp32")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, default=RESULTS / "qwen2-40m")
    args = parser.parse_args()
    start = time.perf_counter()
    model_dir = build_model(args.model_dir).resolve()
    prompts_file = PEERS / "prompts.json"
    prompts_file.write_text(json.dumps(make_prompts(model_dir)))
    results: dict[str, Any] = {"rounds": args.rounds}
    for dtype in ("bf16", "fp32"):
        workers = start_workers(dtype, model_dir, prompts_file)
        results[dtype] = measure(dtype, workers, args.rounds)
        for worker in workers.values():
            worker.stop()
        peak = matmul_peak({"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
        results[f"matmul_peak_gflops_{dtype}"] = peak / 1e9
    results["summary"] = summary(results, checkpoint_parameters(model_dir))
    results["wall_seconds"] = time.perf_counter() - start
    path = RESULTS / f"peers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
