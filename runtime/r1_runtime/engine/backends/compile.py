"""The `compile` backend: the model's step through torch.compile with inductor, its compiled
artifacts cached in the engine entry.

Shapes: one graph with dynamic sizes serves every batch (`dynamic=True`); inductor specialises a
few variants (decodes only, prefills only, both; one sequence or several), and the warm-up runs
each once so that the first request finds them compiled. `fullgraph=True`: the paged KV cache
writes are part of the graph (the attention ops perform them in place on the engine's cache
tensor), and a change that broke the graph would fail the build rather than quietly run pieces
eagerly.

Artifacts: inductor's FX graph cache, AOT autograd cache and generated kernels go to
`entry/inductor` while `prepare` runs (and nowhere else); a later start with the same entry
compiles nothing but loads them. A shape no warm-up step produced runs eagerly rather than
compile outside the entry (`AFTER_WARM_UP`).

Kernels: on CPU, the native C++ kernels built into `entry/native` (`models.kernels.native`),
and a step of decodes only runs in the model's C++ decoder rather than in the graph (see
`CompiledStep`); elsewhere, or where they cannot be built, the traceable Python kernels.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch._dynamo.utils import counters
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

from r1_runtime.engine.backends.base import Backend, WarmUp
from r1_runtime.engine.backends.compiled_step import AFTER_WARM_UP, CompiledStep
from r1_runtime.engine.step_inputs import StepInputs
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.kernels import TRACEABLE, Kernels, native

logger = logging.getLogger(__name__)

INDUCTOR_DIR = "inductor"  # inside the entry
NATIVE_DIR = "native"  # inside the entry: the native kernels, CPU only


@dataclass(frozen=True)
class PrepareReport:
    """What one `prepare` did: seconds spent, and inductor's cache hits and misses meanwhile
    (a load from a published entry has hits and no misses)."""

    seconds: float
    fx_graph_hits: int
    fx_graph_misses: int
    aot_autograd_hits: int
    aot_autograd_misses: int


class CompileBackend(Backend):
    name = "compile"
    needs_cache = True

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.last_prepare: PrepareReport | None = None

    def versions(self) -> dict[str, str]:
        """torch and Python: inductor's generated code and its pickled graphs depend on both."""
        return {"torch": torch.__version__, "python": platform.python_version()}

    def prepare(
        self, model: PagedCausalLM, kv_cache: torch.Tensor, entry: Path | None, warm_up: WarmUp
    ) -> Kernels:
        assert entry is not None, "the compile backend builds into an engine-cache entry"
        # NOTE: dynamo keeps compiled code per Python function, not per model, and another
        # engine's would serve this one without writing anything to this entry. One compiled
        # engine per process: an earlier one runs eagerly from now on (`AFTER_WARM_UP`).
        torch._dynamo.reset()
        native_kernels = native.load(entry / NATIVE_DIR) if self.device.type == "cpu" else None
        kernels = native_kernels or TRACEABLE
        model.use_kernels(kernels)
        decoder = model.native_decoder() if native_kernels is not None else None
        self.step = CompiledStep(model, kv_cache, decoder)
        cache_dir = entry / INDUCTOR_DIR
        cache_dir.mkdir(exist_ok=True)
        before = _cache_counts()
        start = time.perf_counter()
        with temporary_cache_dir(str(cache_dir)):
            warm_up()
        self.step.stance = AFTER_WARM_UP
        after = _cache_counts()
        self.last_prepare = PrepareReport(
            time.perf_counter() - start, *(a - b for a, b in zip(after, before, strict=True))
        )
        logger.info("compile backend ready from %s: %s", entry, self.last_prepare)
        return kernels

    def run(self, inputs: StepInputs) -> torch.Tensor:
        return self.step(inputs)


def _cache_counts() -> tuple[int, int, int, int]:
    inductor, aot = counters["inductor"], counters["aot_autograd"]
    return (
        inductor["fxgraph_cache_hit"],
        inductor["fxgraph_cache_miss"],
        aot["autograd_cache_hit"],
        aot["autograd_cache_miss"],
    )
