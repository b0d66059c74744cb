"""Serving latency and throughput of `r1-runtime serve` under N concurrent streaming clients
on loopback; writes JSON to bench/results/. Not part of the test suite.

Workload (issue 4's, through the API): the 64 stdlib prompts of bench/engine_throughput.py as
token ids, 64 new tokens each, greedy, EOS ignored, streamed from /v1/completions on its
~40M Qwen2 in bf16. For each N (default 1, 8, 32, 64) the 64 requests run with at most N in
flight. Reported per N: TTFT p50/p99 (request sent -> first text chunk), inter-chunk latency
p50/p99 (a chunk carries one token unless the detokenizer held back a partial character),
e2e p50/p99, output tokens/s over the wall time. The server runs as its own process, as in
a pod; the clients share this machine's cores with it.

    .venv/bin/python bench/serve_load.py [--concurrency 1 8 32 64] [--port 8765]
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


def start_server(model_dir: Path, port: int, max_num_seqs: int) -> subprocess.Popen[bytes]:
    command = [
        *(sys.executable, "-m", "r1_runtime.cli", "serve", "--model", str(model_dir)),
        *("--served-model-name", MODEL, "--port", str(port), "--dtype", "bfloat16"),
        *("--max-num-seqs", str(max_num_seqs), "--max-batch-tokens", "2048"),
        *("--num-kv-blocks", "1024", "--max-waiting", "1024"),
    ]
    log = (RESULTS / "serve_load-server.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(base: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{base}/ready")).status_code == 200:
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


async def bench(base: str, prompts: list[list[int]], levels: list[int]) -> list[dict[str, Any]]:
    await wait_ready(base)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--model-dir", type=Path, default=RESULTS / "qwen2-40m")
    args = parser.parse_args()
    model_dir = build_model(args.model_dir)
    prompts = make_prompts(model_dir)
    server = start_server(model_dir, args.port, max(args.concurrency))
    try:
        levels = asyncio.run(bench(f"http://127.0.0.1:{args.port}", prompts, args.concurrency))
    finally:
        server.terminate()
        server.wait(120)
    result = {
        "workload": {"prompts": len(prompts), "new_tokens": NEW_TOKENS, "dtype": "bf16"},
        "machine": {"cpu": platform.processor(), "cpus": os.cpu_count()},
        "levels": levels,
    }
    path = RESULTS / f"serve_load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
