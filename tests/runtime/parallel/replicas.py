"""A tensor- or pipeline-parallel replica in processes on loopback, for the tests: every rank
in a spawned process of its own over gloo, as `serve` runs them; rank 0 generates and hands
back what it saw. Every wait is bounded and every process reaped.

Kept free of transformers: each spawned rank imports this module.
"""

from __future__ import annotations

import multiprocessing
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from r1_runtime.build import build_engine, build_stage
from r1_runtime.config import RuntimeConfig
from r1_runtime.distributed import messages
from r1_runtime.distributed.group import Rendezvous, free_port, join, leave
from r1_runtime.distributed.worker import run_worker
from r1_runtime.engine.sequence import SamplingParams
from r1_runtime.model_info import ModelInfo

TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ReplicaRun:
    outputs: list[list[int]]  # per batch of prompts, in order
    num_preemptions: int
    num_prefix_cache_hits: int


def run_replica(
    path: Path,
    *,
    tp: int,
    pp: int,
    batches: list[list[list[int]]],
    params: SamplingParams,
    **knobs: Any,
) -> ReplicaRun:
    """Generate each batch of prompts in turn on a TP x PP replica of `path`."""
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[ReplicaRun | str] = context.Queue()
    port = free_port()
    config = {"tensor_parallel_size": tp, "pipeline_parallel_size": pp, **knobs}
    ranks = [
        context.Process(target=_rank, args=(rank, port, path, config, batches, params, results))
        for rank in range(tp * pp)
    ]
    for process in ranks:
        process.start()
    try:
        result = results.get(timeout=TIMEOUT_S)
    except queue.Empty:
        result = "rank 0 gave no result in time"
    finally:
        for process in ranks:
            process.join(TIMEOUT_S if isinstance(result, ReplicaRun) else 1)
            if process.exitcode is None:
                process.kill()
                process.join()
    assert isinstance(result, ReplicaRun), result
    assert [process.exitcode for process in ranks] == [0] * len(ranks)
    return result


def _rank(
    rank: int,
    port: int,
    path: Path,
    knobs: dict[str, Any],
    batches: list[list[list[int]]],
    params: SamplingParams,
    results: multiprocessing.Queue[ReplicaRun | str],
) -> None:
    torch.set_num_threads(1)
    config = RuntimeConfig(model=path, served_model_name=path.name, device="cpu", **knobs)
    layout, info = config.layout, ModelInfo.read(path)
    rendezvous = Rendezvous("127.0.0.1", port, TIMEOUT_S, TIMEOUT_S)
    groups = join(layout, layout.place(0, rank), torch.device("cpu"), rendezvous)
    if rank != 0:
        run_worker(build_stage(config, info, groups))
        leave()
        return
    try:
        engine = build_engine(config, info, groups=groups).engine
        outputs = [output for batch in batches for output in engine.generate(batch, params)]
        scheduler = engine.scheduler
        results.put(ReplicaRun(outputs, scheduler.num_preemptions, scheduler.num_prefix_cache_hits))
    except Exception as error:
        results.put(f"rank 0 failed: {type(error).__name__}: {error}")
        raise
    finally:
        messages.send(groups, messages.Kind.STOP)
        leave()
