"""The `compile` backend: the runner's step (decoder, cache writes, sampled rows' logits) through
torch.compile with inductor, its compiled artifacts cached in the engine entry.

Shapes: one graph with dynamic sizes serves every batch (`dynamic=True`); inductor specialises a
few variants (decodes only, prefills only, both; one sequence or several), and `prepare` runs
each once so that the first request finds them compiled. `fullgraph=True`: the paged KV cache
writes are part of the graph (inductor performs them in place on the engine's cache tensor), and
a change that broke the graph would fail the build rather than quietly run pieces eagerly.

Artifacts: inductor's FX graph cache, AOT autograd cache and generated kernels go to
`entry/inductor` while `prepare` runs (and nowhere else); a later start with the same entry
compiles nothing but loads them. A shape no warm-up step produced runs eagerly rather than
compile outside the entry (`eager_on_recompile`).

On CPU, a step of decodes only runs in the C++ decoder built into `entry/native`
(`models.native.decoder`) rather than in the graph: see `CompiledStep`.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch._dynamo.utils import counters
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

from r1_runtime.engine.backends import paged_runner
from r1_runtime.engine.sequence import SamplingParams
from r1_runtime.models import native
from r1_runtime.models.attention import AttentionMetadata, LayerAttention, step_attention
from r1_runtime.models.decoder import DecoderForCausalLM

if TYPE_CHECKING:
    from r1_runtime.engine.llm_engine import LLMEngine

logger = logging.getLogger(__name__)

INDUCTOR_DIR = "inductor"  # inside the entry
NATIVE_DIR = "native"  # inside the entry: the C++ ops (`models.native`), CPU only
AFTER_WARM_UP = "eager_on_recompile"  # NOTE: a compilation then would write outside the entry


@dataclass(frozen=True)
class PrepareReport:
    """What one `prepare` did: seconds spent, and inductor's cache hits and misses meanwhile
    (a load from a published entry has hits and no misses)."""

    seconds: float
    fx_graph_hits: int
    fx_graph_misses: int
    aot_autograd_hits: int
    aot_autograd_misses: int


class CompileBackend:
    name = "compile"
    needs_cache = True

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.last_prepare: PrepareReport | None = None

    def versions(self) -> dict[str, str]:
        """torch and Python: inductor's generated code and its pickled graphs depend on both."""
        return {"torch": torch.__version__, "python": platform.python_version()}

    def prepare(self, engine: LLMEngine, entry: Path) -> None:
        runner = paged_runner(engine, self.name)
        # NOTE: dynamo keeps compiled code per Python function, not per model, and another
        # engine's would serve this one without writing anything to this entry. One compiled
        # engine per process: an earlier one runs eagerly from now on (`AFTER_WARM_UP`).
        torch._dynamo.reset()
        decoder = None
        if self.device.type == "cpu" and native.load(entry / NATIVE_DIR):
            decoder = native.decoder(runner.model)
        compiled = CompiledStep(runner.model, decoder)
        cache_dir = entry / INDUCTOR_DIR
        cache_dir.mkdir(exist_ok=True)
        before = _cache_counts()
        start = time.perf_counter()
        with temporary_cache_dir(str(cache_dir)):
            runner.step_logits = compiled
            warm_up(engine)
        compiled.stance = AFTER_WARM_UP
        after = _cache_counts()
        self.last_prepare = PrepareReport(
            time.perf_counter() - start, *(a - b for a, b in zip(after, before, strict=True))
        )
        logger.info("compile backend ready from %s: %s", entry, self.last_prepare)


def warm_up(engine: LLMEngine) -> None:
    """Run the step shapes a server meets, so each graph variant is compiled (or loaded): one
    sequence alone (prefill, decodes), several of different lengths (padded prefill, batched
    decodes), a prefill joining running decodes, and a prompt longer than a prefill chunk.
    Leaves the engine idle; the warm-up prompts' blocks stay in the prefix cache, evictable."""
    config = engine.scheduler.config
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    chunk = config.prefill_chunk_size or config.max_batch_tokens
    lengths = [5, 1 + config.block_size, 9]
    _generate(engine, [_prompt(lengths[0], 1)], params)
    _generate(engine, [_prompt(n, 2 + i) for i, n in enumerate(lengths)], params)
    engine.add_request(_prompt(7, 6), params)
    engine.step()  # its prefill; then its decodes in the steps where the next one's prefill runs
    _generate(engine, [_prompt(11, 7)], params)
    long_prompt = min(chunk + 3, engine.max_model_len - params.max_tokens)
    if long_prompt > chunk:
        _generate(engine, [_prompt(long_prompt, 8)], params)


def _generate(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> None:
    for prompt in prompts:
        engine.add_request(prompt, params)
    while engine.has_unfinished:
        engine.step()


def _prompt(length: int, seed: int) -> list[int]:
    """Distinct token ids (no prefix-cache hits between warm-up prompts), all below 256."""
    return [(seed * 31 + 7 * i) % 251 + 1 for i in range(length)]


class CompiledStep:
    """`DecoderForCausalLM.sampled_logits` through torch.compile (`StepLogits`). Attention runs
    as opaque ops reading the step's cache and masks from `step_attention` (see
    `models.attention.StepAttention`), so the graph only sees the number of tokens and of
    sampled rows. `stance` is torch.compile's (`torch.compiler.set_stance`) for each step:
    `AFTER_WARM_UP` once warmed up, so that a step needing a new variant runs eagerly.

    With a `decoder` (`native.decoder`), a step of decodes only runs in it instead: one C++
    call for the whole step, where the graph pays torch.compile's guards and wrapper and a
    kernel per norm, rotary and attention, which cost as much as the weights' streaming when a
    single sequence decodes."""

    def __init__(
        self,
        model: DecoderForCausalLM,
        decoder: Any = None,
        backend: str = "inductor",
        **options: Any,
    ):
        self.model = model
        self.decoder = decoder
        self.compiled = torch.compile(
            model.sampled_logits, backend=backend, dynamic=True, fullgraph=True, **options
        )
        self.stance = "default"

    def __call__(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        sample_indices: torch.Tensor,
    ) -> torch.Tensor:
        decodes = meta.decodes
        if self.decoder is not None and decodes is not None and meta.prefills is None:
            # NOTE: a decode is always sampled, so these logits are the sampled rows'
            tables = decodes.block_ids.view(decodes.num_seqs, -1)
            logits: torch.Tensor = self.decoder.decode(input_ids, positions, kv_cache, tables)
            return logits
        config = self.model.config
        attention = LayerAttention.for_model(meta, config.num_queries_per_kv, kv_cache.dtype)
        with step_context(kv_cache, attention), torch.compiler.set_stance(self.stance):
            logits = self.compiled(input_ids, positions, kv_cache, meta, sample_indices)
        return logits


@contextlib.contextmanager
def step_context(kv_cache: torch.Tensor, attention: LayerAttention) -> Iterator[None]:
    """Where the step's attention ops read the cache and masks: the C++ ops' per-thread state,
    or the Python ops' `step_attention`."""
    if not native.use_native(kv_cache):
        with step_attention(kv_cache, attention):
            yield
        return
    native.set_step(kv_cache, attention)
    try:
        yield
    finally:
        native.clear_step()


def _cache_counts() -> tuple[int, int, int, int]:
    inductor, aot = counters["inductor"], counters["aot_autograd"]
    return (
        inductor["fxgraph_cache_hit"],
        inductor["fxgraph_cache_miss"],
        aot["autograd_cache_hit"],
        aot["autograd_cache_miss"],
    )
