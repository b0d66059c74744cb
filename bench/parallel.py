"""Tensor and pipeline parallelism side by side: TP1, TP2 and PP2 (or TP over every GPU)
on one workload, each rank in its own process as `serve` runs them; writes JSON to
bench/results/.

Per layout: throughput and time per engine step; per rank: bytes moved per step (the
hidden states a pipeline stage sends, the tensor-parallel all-reduce and all-gather
payloads), the pipeline bubble (the share of a step a stage waits rather than computes),
the weights it holds and read, and the growth of its peak RSS while loading (about 1/T of
the weights plus its KV cache, not the whole checkpoint).

Model: a random Qwen2 (hidden 1024, 8 layers, 16 heads, 4 KV heads, intermediate 2816,
vocab 32000; ~95M parameters, 380 MB in fp32), written once under bench/results/.

    .venv/bin/python bench/parallel.py [--layouts 1x1,2x1,1x2] [--device cpu]
    .venv/bin/python bench/parallel.py --device cuda --tensor-parallel-size 8   # one node
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import queue
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from r1_runtime.build import build_engine, build_stage
from r1_runtime.config import RuntimeConfig
from r1_runtime.distributed import messages
from r1_runtime.distributed.group import Rendezvous, free_port, join, leave
from r1_runtime.distributed.stage import StageRunner
from r1_runtime.distributed.worker import run_worker
from r1_runtime.engine import SamplingParams
from r1_runtime.engine.kv_cache import bytes_per_block
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.layers import Linear

RESULTS = Path(__file__).parent / "results"
MODEL_DIR = RESULTS / "qwen2-95m"
NUM_PROMPTS, PROMPT_LEN, NEW_TOKENS = 16, 64, 32
TIMEOUT_S = 600.0


def build_model(directory: Path) -> Path:
    """The benchmark checkpoint (seed 0, fp32), written once."""
    if (directory / "config.json").exists():
        return directory
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return directory


def held_bytes(model: torch.nn.Module) -> int:
    """The bytes of a rank's weights, packed (oneDNN's layout on CPU) or not."""
    tensors = {id(p): p for p in model.parameters()}
    for module in model.modules():
        if isinstance(module, Linear) and module.packed_weight is not None:
            tensors[id(module.packed_weight)] = module.packed_weight
    return sum(tensor.nbytes for tensor in tensors.values())


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_rank(rank: int, layout: tuple[int, int], device: str, port: int, results: Any) -> None:
    tp, pp = layout
    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // (tp * pp)))
    config = RuntimeConfig(
        model=MODEL_DIR,
        served_model_name="bench",
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        device=device,
        dtype="float32" if device == "cpu" else "bfloat16",
        max_num_seqs=NUM_PROMPTS,
        max_batch_tokens=NUM_PROMPTS * PROMPT_LEN,
        max_model_len=PROMPT_LEN + NEW_TOKENS,
        num_kv_blocks=NUM_PROMPTS * 8,
    )
    info = ModelInfo.read(MODEL_DIR)
    rendezvous = Rendezvous("127.0.0.1", port, TIMEOUT_S, TIMEOUT_S)
    place = config.layout.place(0, rank)
    torch_device = torch.device(device, rank) if device == "cuda" else torch.device("cpu")
    groups = join(config.layout, place, torch_device, rendezvous)
    rss_before = peak_rss_bytes()
    if rank == 0:
        engine = build_engine(config, info, groups=groups).engine
        stage: StageRunner = engine.runner.stage  # type: ignore[attr-defined]
    else:
        stage = build_stage(config, info, groups)
    num_blocks = config.num_kv_blocks or 0
    loaded = {
        "rss_growth_at_load_bytes": peak_rss_bytes() - rss_before,
        "weights_bytes": held_bytes(stage.model),
        "kv_cache_bytes": num_blocks * bytes_per_block(stage.model, config.block_size, stage.dtype),
    }
    report: dict[str, Any] = {"rank": rank, "tp_rank": place.tp_rank, "pp_rank": place.pp_rank}
    if rank == 0:
        prompts = [
            [(7 * i + j) % 31000 + 100 for j in range(PROMPT_LEN)] for i in range(NUM_PROMPTS)
        ]
        params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
        engine.generate(prompts[:2], SamplingParams(temperature=0.0, max_tokens=2))  # warm-up
        start_steps, traffic_before = stage.times.steps, asdict(stage.model.shard.traffic)
        started = time.perf_counter()
        engine.generate(prompts, params)
        seconds = time.perf_counter() - started
        steps = stage.times.steps - start_steps
        report["workload"] = {
            "seconds": seconds,
            "steps": steps,
            "output_tokens_per_s": NUM_PROMPTS * NEW_TOKENS / seconds,
            "step_ms": 1000 * seconds / steps,
            "traffic_before": traffic_before,
        }
        messages.send(groups, messages.Kind.STOP)
    else:
        run_worker(stage)
    times = stage.times
    report |= loaded | {
        "steps": times.steps,
        "p2p_bytes_sent": times.bytes_sent,
        "collectives": asdict(stage.model.shard.traffic),
        "compute_seconds": times.compute,
        "step_seconds": times.total,
        "bubble_fraction": 1 - times.compute / times.total if times.total else 0.0,
    }
    results.put(report)
    leave()


def run_layout(layout: tuple[int, int], device: str) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    world = layout[0] * layout[1]
    ranks = [
        context.Process(target=run_rank, args=(rank, layout, device, port, results))
        for rank in range(world)
    ]
    for process in ranks:
        process.start()
    reports = []
    try:
        for _ in ranks:
            reports.append(results.get(timeout=TIMEOUT_S))
    except queue.Empty:
        raise RuntimeError(f"layout {layout}: a rank gave no report in {TIMEOUT_S} s") from None
    finally:
        for process in ranks:
            process.join(TIMEOUT_S)
            if process.exitcode is None:
                process.kill()
    reports.sort(key=lambda report: report["rank"])
    workload = reports[0].pop("workload")
    for report in reports:  # per step of the timed workload (the warm-up's share is small)
        report["bytes_per_step"] = (
            report["p2p_bytes_sent"]
            + report["collectives"]["all_reduce_bytes"]
            + report["collectives"]["all_gather_bytes"]
        ) / max(1, report["steps"])
    stages = [r for r in reports if r["tp_rank"] == 0]
    return {
        "tensor_parallel_size": layout[0],
        "pipeline_parallel_size": layout[1],
        **{k: v for k, v in workload.items() if k != "traffic_before"},
        "pipeline_bubble_fraction": sum(r["bubble_fraction"] for r in stages) / len(stages),
        "ranks": reports,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--layouts", default=None, help="TPxPP,... (default 1x1,2x1,1x2)")
    parser.add_argument("--tensor-parallel-size", type=int, help="compare TP1 with TP N")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.tensor_parallel_size:
        layouts = [(1, 1), (args.tensor_parallel_size, 1)]
    else:
        text = args.layouts or "1x1,2x1,1x2"
        layouts = [tuple(int(n) for n in item.split("x")) for item in text.split(",")]
    build_model(MODEL_DIR)
    runs = [run_layout(layout, args.device) for layout in layouts]  # type: ignore[arg-type]
    base = runs[0]["output_tokens_per_s"]
    for run in runs:
        run["throughput_vs_first"] = run["output_tokens_per_s"] / base
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    result = {
        "benchmark": "parallel",
        "device": args.device,
        "device_name": device_name or platform.machine(),
        "cpu_count": multiprocessing.cpu_count(),
        "torch": torch.__version__,
        "workload": {"prompts": NUM_PROMPTS, "prompt_tokens": PROMPT_LEN, "new_tokens": NEW_TOKENS},
        "checkpoint_bytes": sum(p.stat().st_size for p in MODEL_DIR.glob("*.safetensors")),
        "runs": runs,
    }
    out = args.out or RESULTS / f"parallel-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for run in runs:
        print(
            f"TP{run['tensor_parallel_size']} PP{run['pipeline_parallel_size']}: "
            f"{run['output_tokens_per_s']:.1f} tok/s ({run['throughput_vs_first']:.2f}x), "
            f"{run['step_ms']:.1f} ms/step, bubble {run['pipeline_bubble_fraction']:.2f}, "
            "per rank: "
            + ", ".join(
                f"{r['bytes_per_step'] / 1e6:.2f} MB/step, peak RSS "
                f"+{r['rss_growth_at_load_bytes'] / 1e6:.0f} MB at load "
                f"({r['weights_bytes'] / 1e6:.0f} MB weights, "
                f"{r['kv_cache_bytes'] / 1e6:.0f} MB KV)"
                for r in run["ranks"]
            )
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
