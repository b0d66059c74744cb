"""The decode step in C++ (`LlamaForCausalLM.native_decoder`) against the Python model it
replaces for steps of decodes only: the same logits and the same cache writes, to fp32
rounding in fp32 and to bf16 rounding in bf16, for Qwen2 (q/k/v biases, untied embeddings) and
Llama (llama3 rope scaling, tied embeddings), over contexts that span several blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from r1_runtime.engine import SamplingParams
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine.model_runner import PagedModelRunner
from r1_runtime.engine.step_inputs import StepInputs, prepare_inputs, step_entries

from .checkpoints import checkpoint_dir, make_engine, make_prompts

pytestmark = pytest.mark.slow

__all__ = ["checkpoint_dir"]

DTYPES = [torch.float32, pytest.param(torch.bfloat16, id="bf16")]
# NOTE: 40 tokens: more cache rows than the decoder fetches ahead, over ten 4-token blocks
PROMPT_LENGTHS = [3, 17, 40]


@pytest.fixture(scope="module", autouse=True)
def built(native_ops: None) -> None:
    """Every test here needs the C++ decoder."""


def decode_step(engine: LLMEngine) -> StepInputs:
    """The inputs of a step of decodes only, after every prompt's prefill."""
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    for prompt in make_prompts(PROMPT_LENGTHS):
        engine.add_request(prompt, params)
    generated: dict[str, int] = {}
    while len(generated) < len(PROMPT_LENGTHS):
        for output in engine.step():
            generated[output.seq_id] = len(output.new_token_ids)
    batch = engine.scheduler.schedule()
    assert batch is not None and not any(entry.is_prefill for entry in batch.seqs)
    assert isinstance(engine.runner, PagedModelRunner)
    return prepare_inputs(step_entries(batch), engine.runner.block_size, use_flash=False)


def run_both(engine: LLMEngine, inputs: StepInputs) -> dict[str, Any]:
    """Logits and written cache of the Python model and of the C++ decoder, from the same cache."""
    runner = engine.runner
    assert isinstance(runner, PagedModelRunner)
    decoder = runner.model.native_decoder()
    assert decoder is not None, "a packed CPU model has a C++ decoder"
    cache = runner.kv_cache
    before = cache.clone()
    with torch.inference_mode():
        expected = runner.backend.run(inputs)  # the eager backend: the Python model
        expected_cache = cache.clone()
        cache.copy_(before)
        assert inputs.meta.decodes is not None
        tables = inputs.meta.decodes.block_ids.view(len(inputs.input_ids), -1)
        logits = decoder.decode(inputs.input_ids, inputs.positions, cache, tables)
    return {
        "logits": logits,
        "expected": expected,
        "cache": cache,
        "expected_cache": expected_cache,
        "untouched": before,
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_the_decoder_gives_the_python_logits_and_cache_writes(
    checkpoint_dir: Path, name: str, dtype: torch.dtype
) -> None:
    engine = make_engine(checkpoint_dir / name, dtype=dtype)
    out = run_both(engine, decode_step(engine))
    logits, expected = out["logits"], out["expected"]
    assert logits.dtype == torch.float32 and logits.shape == expected.shape
    if dtype == torch.float32:
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out["cache"], out["expected_cache"], rtol=1e-5, atol=1e-5)
    else:  # NOTE: sums in another order round differently, by a few bf16 steps at most
        tolerance = 0.03 * expected.abs().max().item()
        assert (logits - expected).abs().max().item() <= tolerance
        # the token picked greedily is the Python decoder's, or a near-tie of it
        picked = expected.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)
        assert (expected.max(-1).values - picked).max().item() <= tolerance
        written = out["cache"].float() - out["expected_cache"].float()
        assert written.abs().max().item() <= 0.03 * out["expected_cache"].abs().max().item()
    changed = (out["cache"] != out["untouched"]).flatten(2).any(-1)  # [layer, k/v, block]
    assert changed.sum().item() > 0
    assert torch.equal(changed, (out["expected_cache"] != out["untouched"]).flatten(2).any(-1))


@pytest.fixture(scope="module")
def qwen2_runner(checkpoint_dir: Path) -> PagedModelRunner:
    runner = make_engine(checkpoint_dir / "qwen2").runner
    assert isinstance(runner, PagedModelRunner)
    return runner


def refusal(runner: PagedModelRunner, position: int, tables: list[list[int]]) -> str:
    """The error of a one-token decode at `position` with these block tables."""
    decoder = runner.model.native_decoder()
    with pytest.raises(RuntimeError) as refused:
        decoder.decode(
            torch.tensor([5]), torch.tensor([position]), runner.kv_cache, torch.tensor(tables)
        )
    return str(refused.value)


def test_a_position_beyond_its_block_table_is_refused(qwen2_runner: PagedModelRunner) -> None:
    # two 4-token blocks: positions 0 to 7
    assert "position 8 is beyond its block table" in refusal(qwen2_runner, 8, [[0, 1]])


def test_a_position_beyond_the_rotary_tables_is_refused(qwen2_runner: PagedModelRunner) -> None:
    last = qwen2_runner.model.model.rotary_emb.cos.shape[0]
    tables = [list(range(-(-(last + 1) // qwen2_runner.block_size)))]
    error = refusal(qwen2_runner, last, tables)
    assert f"position {last} is beyond the rotary tables" in error


def test_a_block_outside_the_cache_is_refused(qwen2_runner: PagedModelRunner) -> None:
    num_blocks = qwen2_runner.kv_cache.shape[2]
    error = refusal(qwen2_runner, 5, [[0, num_blocks]])
    assert f"block {num_blocks} is not in the cache" in error


def test_a_cache_of_another_dtype_is_refused(qwen2_runner: PagedModelRunner) -> None:
    decoder = qwen2_runner.model.native_decoder()
    cache = qwen2_runner.kv_cache.to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="not this model's contiguous cache"):
        decoder.decode(torch.tensor([5]), torch.tensor([0]), cache, torch.tensor([[0]]))
