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
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch._dynamo.utils import counters
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

from r1_runtime.engine.backends import paged_runner
from r1_runtime.engine.sequence import SamplingParams

if TYPE_CHECKING:
    from r1_runtime.engine.llm_engine import LLMEngine

logger = logging.getLogger(__name__)

INDUCTOR_DIR = "inductor"  # inside the entry


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
        compiled = torch.compile(runner.model.sampled_logits, dynamic=True, fullgraph=True)
        cache_dir = entry / INDUCTOR_DIR
        cache_dir.mkdir(exist_ok=True)
        before = _cache_counts()
        start = time.perf_counter()
        with temporary_cache_dir(str(cache_dir)):
            runner.step_logits = compiled
            warm_up(engine)
        runner.step_logits = without_recompiling(compiled)
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


def without_recompiling(compiled: Callable[..., Any]) -> Callable[..., Any]:
    """`compiled`, running eagerly whenever it would otherwise compile a new variant: a
    compilation now would write outside the entry."""

    def step_logits(*args: Any) -> Any:
        with torch.compiler.set_stance("eager_on_recompile"):
            return compiled(*args)

    return step_logits


def _cache_counts() -> tuple[int, int, int, int]:
    inductor, aot = counters["inductor"], counters["aot_autograd"]
    return (
        inductor["fxgraph_cache_hit"],
        inductor["fxgraph_cache_miss"],
        aot["autograd_cache_hit"],
        aot["autograd_cache_miss"],
    )
