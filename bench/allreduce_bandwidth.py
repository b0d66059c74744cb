"""All-reduce bandwidth between local ranks (NCCL on GPUs, gloo on CPU); writes JSON.

Bus bandwidth follows nccl-tests, so numbers compare with `all_reduce_perf` runs:
algbw = bytes / time, busbw = algbw * 2(n-1)/n. Not part of the test suite.

    python bench/allreduce_bandwidth.py [--device cuda|cpu] [--world-size N] \
        [--sizes-mb 1,16,256] [--iters K] [--out PATH.json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT = timedelta(seconds=120)  # rendezvous and every collective
WARMUP_ITERS = 5
BUSBW_DEFINITION = "algbw * 2*(n-1)/n (nccl-tests all_reduce)"


@dataclass(frozen=True)
class BenchConfig:
    device: str
    world_size: int
    sizes_mb: list[int]
    iters: int
    out: str
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_all_reduces(tensor: torch.Tensor, iters: int) -> list[float]:
    """Seconds per all-reduce on this rank, one entry per iteration."""
    if not tensor.is_cuda:  # gloo's all_reduce returns when it is done
        stamps = [time.perf_counter()]
        for _ in range(iters):
            dist.all_reduce(tensor)
            stamps.append(time.perf_counter())
        return [b - a for a, b in pairwise(stamps)]
    events = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
    torch.cuda.synchronize()
    events[0].record()
    for event in events[1:]:
        dist.all_reduce(tensor)
        event.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) / 1e3 for a, b in pairwise(events)]


def measure(size_mb: int, cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    numel = size_mb * 2**20 // dtype.itemsize
    tensor = torch.zeros(numel, dtype=dtype, device=device)
    time_all_reduces(tensor, WARMUP_ITERS)
    dist.barrier()
    # An all-reduce ends when its slowest rank does: take each iteration's maximum over ranks.
    times = torch.tensor(time_all_reduces(tensor, cfg.iters), dtype=torch.float64, device=device)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    seconds = statistics.median(times.tolist())
    size_bytes = numel * dtype.itemsize
    algbw = size_bytes / seconds / 1e9
    n = cfg.world_size
    return {
        "size_bytes": size_bytes,
        "dtype": str(dtype).removeprefix("torch."),
        "time_us": seconds * 1e6,
        "algbw_gbps": algbw,
        "busbw_gbps": algbw * 2 * (n - 1) / n,
    }


def worker(rank: int, cfg: BenchConfig) -> None:
    if cfg.device == "cuda":
        torch.cuda.set_device(rank)
    device = torch.device(cfg.device, rank) if cfg.device == "cuda" else torch.device("cpu")
    dist.init_process_group(
        backend="nccl" if cfg.device == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{cfg.port}",
        rank=rank,
        world_size=cfg.world_size,
        timeout=TIMEOUT,
        device_id=device if cfg.device == "cuda" else None,
    )
    try:
        results = [measure(size_mb, cfg, device) for size_mb in cfg.sizes_mb]
        if rank == 0:
            write_report(cfg, {"results": results})
            print_table(results)
    finally:
        dist.destroy_process_group()


def write_report(cfg: BenchConfig, fields: dict[str, Any]) -> None:
    on_cuda = cfg.device == "cuda" and torch.cuda.is_available()
    report = {
        "device": torch.cuda.get_device_name(0) if on_cuda else cfg.device,
        "backend": "nccl" if cfg.device == "cuda" else "gloo",
        "world_size": cfg.world_size,
        "torch_version": torch.__version__,
        "nccl_version": ".".join(map(str, torch.cuda.nccl.version())) if on_cuda else None,
        "iters": cfg.iters,
        "warmup_iters": WARMUP_ITERS,
        "time": "median over iterations of the slowest rank's time",
        "bandwidth_unit": "GB/s (1e9 bytes/s)",
        "busbw_definition": BUSBW_DEFINITION,
        **fields,
    }
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'MiB':>6} {'dtype':>9} {'time us':>10} {'algbw GB/s':>11} {'busbw GB/s':>11}")
    for r in results:
        mib, us, alg, bus = r["size_bytes"] / 2**20, r["time_us"], r["algbw_gbps"], r["busbw_gbps"]
        print(f"{mib:6.0f} {r['dtype']:>9} {us:10.1f} {alg:11.2f} {bus:11.2f}")


def run(cfg: BenchConfig) -> None:
    """Spawns the ranks and waits at most 2 * TIMEOUT; a failing rank's error names the rank."""
    context = mp.spawn(worker, args=(cfg,), nprocs=cfg.world_size, join=False)
    limit_s = 2 * TIMEOUT.total_seconds()
    deadline = time.monotonic() + limit_s
    while not context.join(timeout=1):  # raises, naming the rank, if one fails
        if time.monotonic() > deadline:
            alive = [rank for rank, p in enumerate(context.processes) if p.is_alive()]
            for p in context.processes:
                p.terminate()
                p.join(timeout=10)
            raise TimeoutError(f"ranks {alive} still running after {limit_s:.0f}s")


def parse_args() -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--world-size", type=int, default=None)
    parser.add_argument("--sizes-mb", default="1,16,256", help="MiB per all-reduce, comma list")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", default="bench/results/allreduce_bandwidth.json")
    args = parser.parse_args()
    default_world = torch.cuda.device_count() if args.device == "cuda" else 2
    return BenchConfig(
        device=args.device,
        world_size=args.world_size if args.world_size is not None else default_world,
        sizes_mb=[int(s) for s in args.sizes_mb.split(",")],
        iters=args.iters,
        out=args.out,
        port=free_port(),
    )


def main() -> None:
    cfg = parse_args()
    visible = torch.cuda.device_count()
    if cfg.device == "cuda" and cfg.world_size < 2:
        reason = f"{visible} GPU(s) visible, world size {cfg.world_size}; all-reduce needs two"
        print(f"skipped: {reason}")
        write_report(cfg, {"skipped": reason, "config": asdict(cfg)})
        return
    if cfg.device == "cuda" and cfg.world_size > visible:
        raise SystemExit(f"--world-size {cfg.world_size} but only {visible} GPU(s) visible")
    run(cfg)


if __name__ == "__main__":
    main()
