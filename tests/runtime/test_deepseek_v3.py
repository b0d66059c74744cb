"""DeepSeek-V3's own pieces, beside the engine tests that compare its tokens with
transformers' (test_engine.py): the router against a hand-worked table, the KV cache's bytes
against the operator's planner, fp8 checkpoints against the reference dequantization, and
which experts each expert-parallel rank loads."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from r1_operator.shapes import ModelShape
from r1_runtime.config import ConfigError, RuntimeConfig, read_settings
from r1_runtime.demo.fp8 import is_quantized, quantize_block_fp8, quantize_checkpoint
from r1_runtime.engine.kv_cache import allocate_kv_cache, bytes_per_block
from r1_runtime.engine.sequence import SamplingParams
from r1_runtime.engine.step_inputs import StepEntry, prepare_inputs
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.deepseek_v3 import DeepseekV3ForCausalLM
from r1_runtime.models.loader import load_model, load_weights
from r1_runtime.models.moe import Routing, route
from r1_runtime.models.parallel import ModelShard
from r1_runtime.models.registry import own_model
from r1_runtime.plan import plan_engine
from safetensors.torch import load_file, save_file

from .checkpoints import ENGINE_DEFAULTS, checkpoint_dir, make_engine, make_prompts
from .parallel.replicas import run_replica

__all__ = ["checkpoint_dir"]

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)

ROOT = Path(__file__).resolve().parents[2]
R1_CONFIG = ROOT / "operator" / "r1_operator" / "catalog" / "deepseek-ai--DeepSeek-R1.json"

# One token, 8 experts in 2 groups: scores (the logits' sigmoids) 0.9 0.1 0.2 0.3 | 0.6 0.7
# 0.65 0.1. Group scores are the sums of each group's best two: 1.2 and 1.35.
SCORES = [0.9, 0.1, 0.2, 0.3, 0.6, 0.7, 0.65, 0.1]
ROUTES = [
    pytest.param(None, 1, {5: 0.7 / 1.35 * 2.5, 6: 0.65 / 1.35 * 2.5}, id="the second group wins"),
    pytest.param(
        [0, 0.5, 0, 0, 0, 0, 0, 0],
        1,
        # the bias lifts expert 1 to 0.6 for the choice: group one's score 1.5 wins, and
        # expert 1 is chosen; its weight is still its own score, 0.1
        {0: 0.9 / 1.0 * 2.5, 1: 0.1 / 1.0 * 2.5},
        id="the correction bias steers the choice, not the weights",
    ),
    pytest.param(None, 2, {0: 0.9 / 1.6 * 2.5, 5: 0.7 / 1.6 * 2.5}, id="both groups kept"),
]


@pytest.mark.parametrize(("bias", "topk_group", "expected"), ROUTES)
def test_grouped_top_k_routing_matches_the_hand_worked_table(
    bias: list[float] | None, topk_group: int, expected: dict[int, float]
) -> None:
    scores = torch.tensor([SCORES])
    logits = torch.log(scores / (1 - scores))
    routing = Routing(
        top_k=2, n_group=2, topk_group=topk_group, norm_topk_prob=True, routed_scaling_factor=2.5
    )
    weights, ids = route(logits, None if bias is None else torch.tensor(bias), routing)
    chosen = dict(zip(ids[0].tolist(), weights[0].tolist(), strict=True))
    assert chosen.keys() == expected.keys()
    for expert, weight in expected.items():
        assert chosen[expert] == pytest.approx(weight, rel=1e-5)


def test_r1s_latent_cache_is_the_bytes_per_token_the_operator_plans_with() -> None:
    raw = json.loads(R1_CONFIG.read_text())
    with torch.device("meta"):
        model = DeepseekV3ForCausalLM(DeepseekV3ForCausalLM.config_from(raw), 16)
    per_token = bytes_per_block(model, 16, torch.bfloat16) // 16
    assert per_token == 61 * (512 + 64) * 2 == 70_272
    assert per_token == ModelShape.from_config(raw).kv_bytes_per_token(2)


def loaded(path: Path, shard: ModelShard, dtype: torch.dtype = torch.float32) -> PagedCausalLM:
    own = own_model(ModelInfo.read(path))
    with torch.device("meta"):
        model = own.model_class(own.config, 64, shard)
    model = model.to(dtype).to_empty(device="cpu")
    model.reset_buffers()
    load_weights(model, path)
    return model


def test_an_fp8_checkpoint_loads_as_the_reference_dequantization(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    """16 x 16 blocks, so that the tiny tensors span several; each rank of TP2 (heads, MLP
    columns and rows, its experts) gets its part of the same dequantized tensors."""
    path = Path(shutil.copytree(checkpoint_dir / "deepseek_v3", tmp_path / "fp8"))
    original = load_file(path / "model.safetensors")
    quantize_checkpoint(path, block=(16, 16))
    stored = load_file(path / "model.safetensors")
    assert stored["model.layers.1.mlp.experts.3.up_proj.weight"].dtype == torch.float8_e4m3fn
    expected = {
        name: _dequantized(stored[name], stored[f"{name}_scale_inv"], 16)
        if is_quantized(name, tensor)
        else tensor
        for name, tensor in original.items()
    }
    whole = dict(loaded(path, ModelShard()).named_parameters())
    assert torch.equal(whole["model.layers.0.self_attn.q_b_proj.weight"], expected[
        "model.layers.0.self_attn.q_b_proj.weight"])  # fmt: skip
    up = whole["model.layers.1.mlp.experts.gate_up_proj"][3, 32:]
    assert torch.equal(up, expected["model.layers.1.mlp.experts.3.up_proj.weight"])
    fp8_error = (up - original["model.layers.1.mlp.experts.3.up_proj.weight"]).abs().max()
    assert 0 < fp8_error < 0.1 * original["model.layers.1.mlp.experts.3.up_proj.weight"].abs().max()
    ranks = [
        dict(loaded(path, ModelShard(tp_rank=r, tp_size=2)).named_parameters()) for r in (0, 1)
    ]
    down = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(torch.cat([rank[down] for rank in ranks], dim=1), expected[down])
    o_proj = "model.layers.1.self_attn.o_proj.weight"
    assert torch.equal(torch.cat([rank[o_proj] for rank in ranks], dim=1), expected[o_proj])


def _dequantized(weight: torch.Tensor, scale: torch.Tensor, block: int) -> torch.Tensor:
    rows, cols = weight.shape
    expanded = scale.repeat_interleave(block, 0).repeat_interleave(block, 1)[:rows, :cols]
    return weight.float() * expanded


def test_each_expert_parallel_rank_holds_and_reads_only_its_experts(checkpoint_dir: Path) -> None:
    path = checkpoint_dir / "deepseek_v3"
    whole = loaded(path, ModelShard())
    experts = "model.layers.1.mlp.experts.gate_up_proj"
    full = dict(whole.named_parameters())[experts]
    for rank in range(4):
        model = loaded(path, ModelShard(tp_rank=rank, tp_size=4))
        mine = dict(model.named_parameters())[experts]
        assert mine.shape[0] == 2  # 8 experts over 4 ranks
        assert torch.equal(mine, full[2 * rank : 2 * rank + 2])
        held = sum(p.nbytes for p in model.parameters())
        assert held < 0.5 * sum(p.nbytes for p in whole.parameters())


def test_quantize_block_fp8_round_trips_within_fp8_precision() -> None:
    weight = torch.randn(40, 24)
    quantized, scale = quantize_block_fp8(weight, (16, 16))
    assert scale.shape == (math.ceil(40 / 16), math.ceil(24 / 16))
    back = _dequantized(quantized, scale, 16)
    assert (back - weight).abs().max() <= 0.07 * weight.abs().max()


def test_the_mtp_layer_is_kept_not_dropped(checkpoint_dir: Path, tmp_path: Path) -> None:
    """R1's checkpoint carries one multi-token-prediction layer after the last (layer 61 of
    61); the tiny one gets a layer 2 of 2: the last stage keeps its tensors, each rank only
    its own experts', and the engine does not run them."""
    path = Path(shutil.copytree(checkpoint_dir / "deepseek_v3", tmp_path / "mtp"))
    tensors = load_file(path / "model.safetensors")
    mtp = {
        "model.layers.2.enorm.weight": torch.ones(64),
        "model.layers.2.eh_proj.weight": torch.ones(64, 128),
        **{
            f"model.layers.2.mlp.experts.{e}.up_proj.weight": torch.full((32, 64), e)
            for e in range(8)
        },
    }
    save_file({**tensors, **mtp}, str(path / "model.safetensors"), metadata={"format": "pt"})
    whole = loaded(path, ModelShard())
    assert whole.side_tensors.keys() == mtp.keys()
    ranks = [loaded(path, ModelShard(tp_rank=r, tp_size=2)) for r in (0, 1)]
    experts = [sorted(k for k in rank.side_tensors if ".experts." in k) for rank in ranks]
    assert experts == [
        [f"model.layers.2.mlp.experts.{e}.up_proj.weight" for e in range(4)],
        [f"model.layers.2.mlp.experts.{e}.up_proj.weight" for e in range(4, 8)],
    ]
    first_stage = loaded(path, ModelShard(layers=range(0, 1), is_last_stage=False))
    assert first_stage.side_tensors == {}


def test_settings_say_fp8_only_for_an_fp8_checkpoint(checkpoint_dir: Path, tmp_path: Path) -> None:
    """The operator writes `quantization: fp8` into settings.json from spec.model.quantization:
    accepted for an fp8 checkpoint (dequantized at load), refused for another."""
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"quantization": "fp8"}))
    plain = checkpoint_dir / "deepseek_v3"
    fp8 = Path(shutil.copytree(plain, tmp_path / "fp8"))
    quantize_checkpoint(fp8, block=(16, 16))
    for path in (plain, fp8):
        config = RuntimeConfig(model=path, served_model_name="r1", settings=read_settings(settings))
        if path == plain:
            with pytest.raises(ConfigError, match="has no fp8 quantization_config"):
                plan_engine(config, ModelInfo.read(path))
        else:
            assert plan_engine(config, ModelInfo.read(path)).own_model is not None


@pytest.fixture(scope="module")
def fp8_checkpoint(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny DeepSeek-V3 in R1's fp8 format, 16 x 16 blocks (several per tensor, and whole
    blocks in each TP2 slice)."""
    path = Path(shutil.copytree(checkpoint_dir / "deepseek_v3", tmp_path_factory.mktemp("f") / "m"))
    quantize_checkpoint(path, block=(16, 16))
    return path


def test_precision_fp8_keeps_the_weights_in_fp8_and_computes_the_same_logits(
    fp8_checkpoint: Path,
) -> None:
    """Held in fp8 and dequantized per matmul, or dequantized once at load: the same bf16
    weights either way, so the same logits, in about half the weight memory."""
    info = ModelInfo.read(fp8_checkpoint)
    config = RuntimeConfig(model=fp8_checkpoint, served_model_name="r1", precision="fp8")
    plan = plan_engine(config, info)
    assert plan.own_model is not None and plan.own_model.config.keep_fp8
    models = [
        load_model(own, info, dtype=torch.bfloat16, device=torch.device("cpu"), max_positions=64)
        for own in (plan.own_model, own_model(info))
    ]
    logits = [prompt_logits(model, make_prompts([21])[0]) for model in models]
    assert torch.equal(logits[0], logits[1])
    kept = models[0]
    assert kept.model.layers[1].mlp.experts.gate_up_proj.dtype == torch.float8_e4m3fn
    assert kept.model.layers[0].self_attn.q_b_proj.weight.dtype == torch.float8_e4m3fn
    sizes = [sum(p.nbytes for p in model.parameters()) for model in models]
    quantized = sum(p.nbytes for p in kept.parameters() if p.dtype == torch.float8_e4m3fn)
    assert sizes[0] == pytest.approx(sizes[1] - quantized, rel=0.05)  # 1 byte a weight, not 2


@torch.inference_mode()
def prompt_logits(model: PagedCausalLM, prompt: list[int]) -> torch.Tensor:
    cache = allocate_kv_cache(model, 16, 4, dtype=torch.bfloat16, device=torch.device("cpu"))
    entries = (StepEntry(prompt, 0, list(range(-(-len(prompt) // 4))), True, True),)
    inputs = prepare_inputs(entries, 4, use_flash=False)
    rows = torch.arange(len(prompt))
    with model.step(cache, inputs.meta):
        logits: torch.Tensor = model.stage_output(inputs.input_ids, inputs.positions, rows)
    return logits


@pytest.mark.slow
def test_precision_fp8_over_tp2_gives_the_single_process_tokens(fp8_checkpoint: Path) -> None:
    """Each rank keeps its whole-block slices of the fp8 weights with their scales."""
    prompts = make_prompts([9, 30, 3, 21])
    knobs = {**ENGINE_DEFAULTS, "precision": "fp8"}
    expected = make_engine(fp8_checkpoint, **knobs).generate(prompts, GREEDY)
    run = run_replica(fp8_checkpoint, tp=2, pp=1, batches=[prompts], params=GREEDY, **knobs)
    assert run.outputs == expected


@pytest.mark.slow
def test_the_compile_backend_runs_deepseek_v3_with_eager_tokens(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    """The expert dispatch (an opaque op: its per-expert token counts are data) and latent
    attention stay single graph nodes; the rest is compiled."""
    path = checkpoint_dir / "deepseek_v3"
    prompts = make_prompts([9, 30, 3, 21])
    expected = make_engine(path, **ENGINE_DEFAULTS).generate(prompts, GREEDY)
    compiled = {**ENGINE_DEFAULTS, "backend": "compile", "engine_cache": tmp_path / "engines"}
    assert make_engine(path, **compiled).generate(prompts, GREEDY) == expected
