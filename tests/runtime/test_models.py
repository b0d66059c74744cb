"""Our Llama-family model and its loader against transformers: logits, weights fused at load
time, rope scaling, sharded checkpoints, model selection, the KV cache budget, bf16."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from r1_runtime.engine import SamplingParams, Scheduler, SchedulerConfig, Sequence
from r1_runtime.engine.kv_cache import allocate_kv_cache, bytes_per_block
from r1_runtime.engine.model_runner import PagedModelRunner, RecomputeModelRunner
from r1_runtime.engine.step_inputs import prepare_inputs, step_entries
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.deepseek_v3_config import DeepseekV3Config
from r1_runtime.models.kernels.attention import flash_attn_varlen_func
from r1_runtime.models.layers import inverse_frequencies
from r1_runtime.models.llama_config import LlamaConfig as OurLlamaConfig
from r1_runtime.models.loader import load_model
from r1_runtime.models.registry import own_model
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from .checkpoints import (
    build_model,
    checkpoint_dir,
    deepseek_v3_config,
    llama_config,
    make_engine,
    make_prompts,
    write_checkpoint,
)

__all__ = ["checkpoint_dir"]

CPU = torch.device("cpu")


def load(path: Path, dtype: torch.dtype = torch.float32) -> Any:
    info = ModelInfo.read(path)
    return load_model(own_model(info), info, dtype=dtype, device=CPU, max_positions=128)


@torch.inference_mode()
def prompt_logits(path: Path, prompt: list[int], block_size: int = 4) -> torch.Tensor:
    """Our logits at every prompt position, through the scheduler's batch and the paged cache."""
    model = load(path)
    scheduler = Scheduler(SchedulerConfig(num_blocks=64, block_size=block_size))
    scheduler.try_add(Sequence("s", prompt, SamplingParams(max_tokens=1)))
    batch = scheduler.schedule()
    assert batch is not None
    cache = allocate_kv_cache(model, 64, block_size, dtype=torch.float32, device=CPU)
    inputs = prepare_inputs(step_entries(batch), block_size, use_flash=False)
    every_row = torch.arange(len(inputs.input_ids))
    with model.step(cache, inputs.meta):
        logits: torch.Tensor = model.stage_output(inputs.input_ids, inputs.positions, every_row)
    return logits


@pytest.mark.parametrize("name", ["qwen2", "llama", "deepseek_v3"])
def test_prompt_logits_match_transformers(checkpoint_dir: Path, name: str) -> None:
    prompt = make_prompts([70])[0]  # past the llama3 scaling's original context of 64
    with torch.inference_mode():
        expected = build_model(name)(torch.tensor([prompt])).logits[0]
    torch.testing.assert_close(prompt_logits(checkpoint_dir / name, prompt), expected)


def test_q_k_v_and_gate_up_are_fused_in_checkpoint_order(checkpoint_dir: Path) -> None:
    ours = load(checkpoint_dir / "qwen2").model.layers[1]
    theirs = build_model("qwen2").model.layers[1]
    attention = theirs.self_attn
    projections = [attention.q_proj, attention.k_proj, attention.v_proj]
    torch.testing.assert_close(
        ours.self_attn.qkv_proj.weight, torch.cat([p.weight for p in projections])
    )
    torch.testing.assert_close(
        ours.self_attn.qkv_proj.bias, torch.cat([p.bias for p in projections])
    )
    gate_up = torch.cat([theirs.mlp.gate_proj.weight, theirs.mlp.up_proj.weight])
    torch.testing.assert_close(ours.mlp.gate_up_proj.weight, gate_up)


def test_tied_embeddings_share_one_tensor(checkpoint_dir: Path) -> None:
    model = load(checkpoint_dir / "llama")
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_llama3_rope_scaling_matches_transformers() -> None:
    config = llama_config()
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    ours = OurLlamaConfig.from_dict({**config.to_dict(), "architectures": ["LlamaForCausalLM"]})
    assert ours.rope_scaling is not None
    actual = inverse_frequencies(ours.head_dim, ours.rope_theta, ours.rope_scaling)
    torch.testing.assert_close(actual, expected)
    assert not torch.equal(actual, inverse_frequencies(ours.head_dim, ours.rope_theta, None))


def test_yarn_rope_scaling_matches_transformers() -> None:
    config = deepseek_v3_config()
    expected, cos_sin_factor = ROPE_INIT_FUNCTIONS["yarn"](config)
    ours = DeepseekV3Config.from_dict(
        {**config.to_dict(), "architectures": ["DeepseekV3ForCausalLM"]}
    )
    assert ours.yarn is not None
    actual = ours.yarn.inverse_frequencies(ours.qk_rope_head_dim, ours.rope_theta)
    torch.testing.assert_close(actual, expected)
    assert ours.yarn.cos_sin_factor() == pytest.approx(cos_sin_factor)
    assert ours.yarn.cos_sin_factor() != 1.0 and ours.yarn.softmax_factor() != 1.0


def test_published_checkpoints_rope_scaling_and_rope_theta_fields_are_read() -> None:
    raw = {**LlamaConfig().to_dict(), "architectures": ["LlamaForCausalLM"]}
    raw.pop("rope_parameters")
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    raw["rope_theta"] = 500000.0
    raw["rope_scaling"] = {
        **scaling,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    }
    config = OurLlamaConfig.from_dict(raw)
    assert config.rope_theta == 500000.0
    assert config.rope_scaling is not None and config.rope_scaling.factor == 8.0


def test_a_sharded_checkpoint_loads_the_same_weights(checkpoint_dir: Path, tmp_path: Path) -> None:
    sharded = write_checkpoint("qwen2", tmp_path, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("*.safetensors"))) > 1
    whole, parts = load(checkpoint_dir / "qwen2"), load(sharded)
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), parts.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def edited_checkpoint(source: Path, target: Path, edit: Any) -> Path:
    target.mkdir()
    shutil.copy(source / "config.json", target / "config.json")
    tensors = load_file(source / "model.safetensors")
    save_file(edit(tensors), target / "model.safetensors")
    return target


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda t: {k: v for k, v in t.items() if "layers.1.self_attn.k_proj.weight" not in k},
            "missing",
            id="a missing shard of a fused projection",
        ),
        pytest.param(lambda t: {**t, "extra.weight": torch.zeros(1)}, "no parameter", id="extra"),
        pytest.param(
            lambda t: {**t, "model.norm.weight": torch.zeros(3)}, "shape", id="a wrong shape"
        ),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_model_is_refused(
    checkpoint_dir: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    path = edited_checkpoint(checkpoint_dir / "qwen2", tmp_path / "edited", edit)
    with pytest.raises(ValueError, match=message):
        load(path)


@pytest.mark.parametrize(
    ("name", "config_edit", "runner"),
    [
        pytest.param("qwen2", {}, PagedModelRunner, id="Qwen2 runs on our own decoder"),
        pytest.param("llama", {}, PagedModelRunner, id="Llama runs on our own decoder"),
        pytest.param("deepseek_v3", {}, PagedModelRunner, id="DeepseekV3 runs on our own MLA"),
        pytest.param(
            "qwen2",
            {"use_sliding_window": True, "sliding_window": 8},
            RecomputeModelRunner,
            id="sliding-window Qwen2 falls back",
        ),
    ],
)
def test_the_model_is_chosen_by_the_config(
    checkpoint_dir: Path, tmp_path: Path, name: str, config_edit: dict[str, Any], runner: type
) -> None:
    path = checkpoint_dir / name
    if config_edit:
        path = Path(shutil.copytree(path, tmp_path / name))
        raw = ModelInfo.read(path).config
        (path / "config.json").write_text(json.dumps({**raw, **config_edit}))
    assert isinstance(make_engine(path).runner, runner)


def test_the_kv_cache_gets_as_many_blocks_as_the_memory_budget_holds(checkpoint_dir: Path) -> None:
    path = checkpoint_dir / "qwen2"
    model: PagedCausalLM = load(path)
    per_block = bytes_per_block(model, 4, torch.float32)
    assert per_block == 2 * 2 * 4 * 2 * 16 * 4  # k and v, layers, slots, kv heads, head dim, fp32
    engine = make_engine(path, num_kv_blocks=None, kv_cache_memory=10 * per_block + 5)
    assert engine.scheduler.config.num_blocks == 10
    assert isinstance(engine.runner, PagedModelRunner)
    assert engine.runner.kv_cache.shape == (2, 2, 10, 4, 2, 16)
    with pytest.raises(ValueError, match="holds no block"):
        make_engine(path, num_kv_blocks=None, kv_cache_memory=per_block - 1)


def test_bf16_runs_and_mostly_agrees_with_fp32_on_the_next_token(checkpoint_dir: Path) -> None:
    prompts = make_prompts([5 + 3 * i for i in range(16)])
    first = SamplingParams(temperature=0, max_tokens=1)
    fp32 = make_engine(checkpoint_dir / "qwen2").generate(prompts, first)
    bf16_engine = make_engine(checkpoint_dir / "qwen2", dtype=torch.bfloat16)
    bf16 = bf16_engine.generate(prompts, first)
    assert sum(a == b for a, b in zip(fp32, bf16, strict=True)) >= 13
    longer = bf16_engine.generate(prompts[:4], SamplingParams(temperature=0, max_tokens=16))
    assert all(len(output) == 16 for output in longer)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or flash_attn_varlen_func is None,
    reason="needs CUDA and flash-attn",
)
def test_flash_attention_on_the_paged_cache_agrees_with_fp32_on_cpu(checkpoint_dir: Path) -> None:
    path = checkpoint_dir / "qwen2"
    prompts = make_prompts([5, 40, 230, 17], prefix=make_prompts([260], seed=5)[0])
    greedy = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    engine = make_engine(path, dtype=torch.bfloat16, device="cuda", block_size=256)
    assert isinstance(engine.runner, PagedModelRunner) and engine.runner.use_flash
    cpu = make_engine(path).generate(prompts, greedy)
    first = engine.generate(prompts[:1], greedy)  # caches the shared prefix
    gpu = first + engine.generate(prompts[1:], greedy)
    assert sum(a == b for a, b in zip(cpu, gpu, strict=True)) >= 3
