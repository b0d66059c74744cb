"""The native kernels (`r1_runtime.models.kernels.native`) against the Python kernels: the same
results bit for bit, the same cache writes, and a start that survives a failed build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from r1_runtime.engine import SamplingParams, Scheduler, SchedulerConfig, Sequence
from r1_runtime.engine.step_inputs import prepare_inputs, step_entries
from r1_runtime.models.kernels import PYTHON, TRACEABLE, native
from r1_runtime.models.kernels.attention import LayerAttention, paged_attention
from r1_runtime.models.kernels.ops import can_pack

pytestmark = pytest.mark.slow

BLOCK_SIZE, NUM_BLOCKS, NUM_LAYERS, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 4, 32, 2, 4, 2, 8
DTYPES = [torch.float32, pytest.param(torch.bfloat16, id="bf16")]


@pytest.fixture(scope="module", autouse=True)
def built(native_ops: None) -> None:
    """Every test here needs the C++ ops."""


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no bias", "bias"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["alone", "plus residual"])
@pytest.mark.parametrize("rows", [1, 5])
def test_packed_linear_equals_the_python_op(
    dtype: torch.dtype, with_bias: bool, with_residual: bool, rows: int
) -> None:
    if not can_pack(dtype):
        pytest.skip(f"oneDNN does not run {dtype} here")
    torch.manual_seed(0)
    weight = torch.ops.mkldnn._reorder_linear_weight(torch.randn(48, 32, dtype=dtype), 8)
    x = torch.randn(rows, 32, dtype=dtype)
    bias = torch.randn(48, dtype=dtype) if with_bias else None
    residual = torch.randn(rows, 48, dtype=dtype) if with_residual else None
    expected = PYTHON.packed_linear(x, weight, bias, residual, 48)
    assert torch.equal(TRACEABLE.packed_linear(x, weight, bias, residual, 48), expected)
    assert torch.equal(torch.ops.r1_native.packed_linear(x, weight, bias, residual, 48), expected)


def mixed_step(dtype: torch.dtype) -> tuple[int, LayerAttention]:
    """Three decodes and two prefill chunks of different lengths (padded rows): the step's
    token count and its attention metadata."""
    scheduler = Scheduler(SchedulerConfig(num_blocks=NUM_BLOCKS, block_size=BLOCK_SIZE))
    params = SamplingParams(max_tokens=8)
    for i, length in enumerate((3, 9, 5)):
        scheduler.try_add(Sequence(f"a{i}", list(range(1, length + 1)), params))
    first = scheduler.schedule()
    assert first is not None
    scheduler.postprocess(first, [7] * len(first.sampled))
    for i, length in enumerate((6, 2)):
        scheduler.try_add(Sequence(f"b{i}", list(range(10, 10 + length)), params))
    batch = scheduler.schedule()
    assert batch is not None and batch.num_tokens == 3 + 6 + 2
    inputs = prepare_inputs(step_entries(batch), BLOCK_SIZE, use_flash=False)
    return batch.num_tokens, LayerAttention.for_model(inputs.meta, NUM_HEADS // NUM_KV_HEADS, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_paged_attention_equals_the_python_op_and_writes_the_same_cache(
    dtype: torch.dtype,
) -> None:
    torch.manual_seed(0)
    num_tokens, attention = mixed_step(dtype)
    shape = (NUM_LAYERS, 2, NUM_BLOCKS, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    cache = torch.randn(shape, dtype=dtype)
    reference_cache = cache.clone()
    q = torch.randn(num_tokens, NUM_HEADS, HEAD_DIM, dtype=dtype)
    k, v = (torch.randn(num_tokens, NUM_KV_HEADS, HEAD_DIM, dtype=dtype) for _ in "kv")
    with native.step(cache, attention):
        out = torch.ops.r1_native.paged_attention(q, k, v, 1)
    expected = paged_attention(q, k, v, reference_cache[1], attention)
    assert torch.equal(out, expected)
    assert torch.equal(cache, reference_cache)


def test_paged_attention_outside_a_step_is_refused() -> None:
    q = torch.zeros(1, NUM_HEADS, HEAD_DIM)
    k = torch.zeros(1, NUM_KV_HEADS, HEAD_DIM)
    with pytest.raises(RuntimeError, match="set_step first"):
        torch.ops.r1_native.paged_attention(q, k, k, 0)


FAILED_BUILD = """
import logging, sys
from pathlib import Path
from r1_runtime.models.kernels import native
logging.basicConfig(level=logging.WARNING)
print(native.load(Path(sys.argv[1])))
"""


def test_a_failed_build_warns_and_returns_no_kernels(tmp_path: Path) -> None:
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    command = [sys.executable, "-c", FAILED_BUILD, str(tmp_path / "native")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["None"]
    assert "C++ ops not built" in done.stderr


@pytest.mark.parametrize("vocab", [1, 37, 32000])
def test_argmax_is_torchs_first_maximum_with_ties_and_nan(vocab: int) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, vocab).round()  # NOTE: rounded: ties between maxima
    logits[1] = 2.0  # one value everywhere: index 0
    logits[2, -1] = 100.0  # the maximum last
    logits[3, vocab // 2] = float("nan")  # NaN counts as the maximum
    logits[4] = float("-inf")
    expected = logits.argmax(dim=-1)
    assert torch.equal(torch.ops.r1_native.argmax(logits), expected)
    assert torch.equal(PYTHON.argmax(logits), expected)
