"""Serving latency and throughput of `r1-runtime serve` under N concurrent streaming clients
on loopback; writes JSON to bench/results/. Not part of the test suite.

Workload (issue 4's, through the API): the 64 stdlib prompts of bench/engine_throughput.py as
token ids, 64 new tokens each, greedy, EOS ignored, streamed from /v1/completions on its
~40M Qwen2 in bf16. For each N (default 1, 8, 32, 64) the 64 requests run with at most N in
flight. Reported per N: TTFT p50/p99 (request sent -> first text chunk), inter-chunk latency
p50/p99 (a chunk carries one token unless the detokenizer held back a partial character),
e2e p50/p99, output tokens/s over the wall time. The server runs as its own process, as in
a pod; the clients share this machine's cores with it.

Side by side: when the vLLM peer venv of `make bench-peers` exists, its OpenAI server
(`python -m vllm.entrypoints.openai.api_server`, the CPU build) serves the same model
directory with the same limits, and the two servers take turns (engine, vLLM, engine, vLLM,
... for `--rounds`), one at a time; the best round of each counts, and the JSON holds the
ratios.

    .venv/bin/python bench/serve_load.py [--concurrency 1 8 32 64] [--rounds 2] [--no-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from engine_throughput import NEW_TOKENS, RESULTS, build_model, make_prompts

MODEL = "bench-qwen2-40m"
VLLM_PYTHON = Path(__file__).resolve().parent.parent / ".cache/bench-peers/vllm/bin/python"
MAX_BATCH_TOKENS = 2048


def server_command(server: str, model_dir: Path, port: int, max_num_seqs: int) -> list[str]:
    """The same model, dtype, port and batch limits for either server."""
    if server == "engine":
        return [
            *(sys.executable, "-m", "r1_runtime.cli", "serve", "--model", str(model_dir)),
            *("--served-model-name", MODEL, "--port", str(port), "--dtype", "bfloat16"),
            *("--max-num-seqs", str(max_num_seqs), "--max-batch-tokens", str(MAX_BATCH_TOKENS)),
            *("--num-kv-blocks", "1024", "--max-waiting", "1024"),
        ]
    return [
        *(str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(model_dir), "--served-model-name", MODEL, "--port", str(port)),
        *("--dtype", "bfloat16", "--max-num-seqs", str(max_num_seqs)),
        *("--max-num-batched-tokens", str(MAX_BATCH_TOKENS)),
        # NOTE: on CPU this is the share of host memory vLLM reserves (as in peer_workers.py).
        *("--gpu-memory-utilization", "0.2"),
    ]


def start_server(
    server: str, model_dir: Path, port: int, max_num_seqs: int
) -> subprocess.Popen[bytes]:
    # NOTE: without the bind, vLLM's CPU build keeps one of the two cores for itself.
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0-1"}
    log = (RESULTS / f"serve_load-{server}.log").open("wb")
    command = server_command(server, model_dir, port, max_num_seqs)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


async def wait_ready(
    process: subprocess.Popen[bytes], base: str, path: str, timeout: float = 300.0
) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}: see its log")
            try:
                if (await client.get(f"{base}{path}")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("the server did not become ready")


async def one_request(client: httpx.AsyncClient, prompt: list[int]) -> dict[str, Any]:
    """Timings of one streamed completion."""
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": NEW_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    arrivals: list[float] = []
    usage: dict[str, int] = {}
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if chunk.get("usage"):
                usage = chunk["usage"]
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                arrivals.append(time.perf_counter())
    end = time.perf_counter()
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    return {
        "ttft": arrivals[0] - start,
        "gaps": gaps,
        "e2e": end - start,
        "output_tokens": usage["completion_tokens"],
    }


async def run_level(base: str, prompts: list[list[int]], concurrency: int) -> dict[str, Any]:
    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:

        async def limited(prompt: list[int]) -> dict[str, Any]:
            async with limit:
                return await one_request(client, prompt)

        start = time.perf_counter()
        results = await asyncio.gather(*(limited(prompt) for prompt in prompts))
        wall = time.perf_counter() - start
    gaps = [gap for result in results for gap in result["gaps"]]
    ttfts = [result["ttft"] for result in results]
    e2es = [result["e2e"] for result in results]
    output_tokens = sum(result["output_tokens"] for result in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "output_tokens": output_tokens,
        "seconds": wall,
        "output_tokens_per_s": output_tokens / wall,
        "ttft_ms": percentiles(ttfts),
        "inter_token_ms": percentiles(gaps),
        "e2e_ms": percentiles(e2es),
    }


def percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": 1000 * statistics.median(values), "p99": 1000 * cuts[98]}


async def bench(
    process: subprocess.Popen[bytes],
    base: str,
    ready_path: str,
    prompts: list[list[int]],
    levels: list[int],
) -> list[dict[str, Any]]:
    await wait_ready(process, base, ready_path)
    await run_level(base, prompts[:8], 8)  # warm-up
    results = []
    for concurrency in levels:
        result = await run_level(base, prompts, concurrency)
        print(
            f"N={concurrency:>2}: {result['output_tokens_per_s']:7.0f} tok/s, "
            f"TTFT p50 {result['ttft_ms']['p50']:7.1f} ms p99 {result['ttft_ms']['p99']:7.1f} ms, "
            f"inter-token p50 {result['inter_token_ms']['p50']:6.1f} ms "
            f"p99 {result['inter_token_ms']['p99']:6.1f} ms"
        )
        results.append(result)
    return results


READY_PATH = {"engine": "/ready", "vllm": "/health"}  # vLLM's /health: 200 once it serves


def run_server(
    server: str, model_dir: Path, port: int, prompts: list[list[int]], levels: list[int]
) -> list[dict[str, Any]]:
    print(f"-- {server}")
    process = start_server(server, model_dir, port, max(levels))
    try:
        base = f"http://127.0.0.1:{port}"
        return asyncio.run(bench(process, base, READY_PATH[server], prompts, levels))
    finally:
        process.terminate()
        process.wait(120)


def best_rounds(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per concurrency level, the round with the highest output tokens/s."""
    return [
        max(level, key=lambda r: r["output_tokens_per_s"]) for level in zip(*rounds, strict=True)
    ]


def ratios(engine: list[dict[str, Any]], vllm: list[dict[str, Any]]) -> dict[str, Any]:
    """engine/vLLM per level: output tokens/s (want >= 1) and TTFT p50 (want <= 1.5)."""
    return {
        f"N={ours['concurrency']}": {
            "output_tokens_per_s": ours["output_tokens_per_s"] / theirs["output_tokens_per_s"],
            "ttft_p50": ours["ttft_ms"]["p50"] / theirs["ttft_ms"]["p50"],
        }
        for ours, theirs in zip(engine, vllm, strict=True)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true", help="the engine alone")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--model-dir", type=Path, default=RESULTS / "qwen2-40m")
    args = parser.parse_args()
    model_dir = build_model(args.model_dir)
    prompts = make_prompts(model_dir)
    servers = ["engine"] if args.no_peer or not VLLM_PYTHON.exists() else ["engine", "vllm"]
    rounds: dict[str, list[list[dict[str, Any]]]] = {server: [] for server in servers}
    for _ in range(args.rounds):
        for server in servers:
            rounds[server].append(
                run_server(server, model_dir, args.port, prompts, args.concurrency)
            )
    best = {server: best_rounds(runs) for server, runs in rounds.items()}
    result: dict[str, Any] = {
        "workload": {"prompts": len(prompts), "new_tokens": NEW_TOKENS, "dtype": "bf16"},
        "machine": {"cpu": platform.processor(), "cpus": os.cpu_count()},
        "best": best,
        "rounds": rounds,
    }
    if "vllm" in best:
        result["engine/vllm"] = ratios(best["engine"], best["vllm"])
        print(json.dumps(result["engine/vllm"], indent=2))
    path = RESULTS / f"serve_load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
