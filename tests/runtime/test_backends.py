"""Engine backends: eager, compile (torch.compile, inductor artifacts in the engine entry) and
tensorrt (GPU only), as `r1_runtime.build` plans and prepares them. The compile tests load the
session's `compiled_cache` rather than compile again: compiling takes tens of seconds."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from r1_runtime import cli
from r1_runtime.build import BuiltEngine, build_engine
from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.engine.backends import BackendUnavailableError, get_backend
from r1_runtime.engine.backends.compile import INDUCTOR_DIR, CompileBackend
from r1_runtime.engine.backends.compiled_step import CompiledStep
from r1_runtime.engine.backends.eager import EagerBackend
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine.model_runner import PagedModelRunner
from r1_runtime.engine.sequence import SamplingParams
from r1_runtime.engine.step_inputs import prepare_inputs, step_entries
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.kernels import PYTHON, TRACEABLE
from r1_runtime.plan import plan_engine

from .conftest import COMPILE_FLAGS, CompiledCache

CPU = torch.device("cpu")
GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
PROMPTS = [[5 + i % 90 for i in range(n)] for n in (7, 23, 2, 40)]  # different lengths


def config_of(flags: list[str]) -> RuntimeConfig:
    return RuntimeConfig.from_args(cli._parser().parse_args(["serve", *flags]), {})


def build(model_dir: Path, *extra: str) -> BuiltEngine:
    """The demo model with the compile tests' engine flags (and `extra`), eager by default."""
    config = config_of(["--model", str(model_dir), *COMPILE_FLAGS, "--backend", "eager", *extra])
    return build_engine(config, ModelInfo.read(model_dir))


def staggered(engine: LLMEngine, prompts: list[list[int]]) -> list[list[int]]:
    """Greedy outputs when each prompt arrives one step after the previous: prefills join
    running decodes (mixed steps), batches of every size from one to all."""
    ids = []
    outputs: dict[str, list[int]] = {}
    for prompt in prompts:
        ids.append(engine.add_request(prompt, GREEDY))
        for output in engine.step():
            outputs.setdefault(output.seq_id, []).extend(output.new_token_ids)
    while engine.has_unfinished:
        for output in engine.step():
            outputs.setdefault(output.seq_id, []).extend(output.new_token_ids)
    return [outputs[seq_id] for seq_id in ids]


def one_at_a_time(engine: LLMEngine, prompts: list[list[int]]) -> list[list[int]]:
    return [engine.generate([prompt], GREEDY)[0] for prompt in prompts]


def runner_of(engine: LLMEngine) -> PagedModelRunner:
    assert isinstance(engine.runner, PagedModelRunner)
    return engine.runner


@pytest.fixture(scope="session")
def eager_engine(demo_model_dir: Path) -> LLMEngine:
    return build(demo_model_dir).engine


@pytest.fixture(scope="session")
def compiled(compiled_cache: CompiledCache) -> BuiltEngine:
    """The session's compile engine, loaded in this process from the entry another process
    built (and published by renaming its build directory)."""
    config = config_of(compiled_cache.flags)
    return build_engine(config, ModelInfo.read(config.model))


def compiled_step(engine: LLMEngine) -> CompiledStep:
    backend = runner_of(engine).backend
    assert isinstance(backend, CompileBackend)
    return backend.step


def test_eager_builds_nothing_and_runs_the_python_kernels(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    built = build(demo_model_dir, "--engine-cache", str(tmp_path / "engines"))
    runner = runner_of(built.engine)
    assert isinstance(runner.backend, EagerBackend) and not runner.backend.needs_cache
    assert runner.backend.versions() == {"torch": torch.__version__}
    assert runner.model.kernels is PYTHON and runner.sampler.argmax is PYTHON.argmax
    assert built.cache_entry is None and not (tmp_path / "engines").exists()


@pytest.mark.parametrize(
    ("name", "device", "message"),
    [
        ("onnx", CPU, "'onnx' is not one of eager, compile, tensorrt"),
        ("tensorrt", CPU, "tensorrt needs an NVIDIA GPU"),
        ("tensorrt", torch.device("cuda"), "tensorrt needs an NVIDIA GPU"),
    ],
    ids=["an unknown backend", "tensorrt on a CPU", "tensorrt with no GPU visible"],
)
def test_a_backend_that_cannot_run_here_is_refused_saying_why(
    name: str, device: torch.device, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=message):
        get_backend(name, device)


def test_the_plan_refuses_a_backend_naming_the_flag(demo_model_dir: Path) -> None:
    config = config_of(["--model", str(demo_model_dir), "--backend", "tensorrt"])
    with pytest.raises(ConfigError, match=r"^--backend tensorrt needs an NVIDIA GPU"):
        plan_engine(config, ModelInfo.read(demo_model_dir))


def test_tensorrt_on_a_gpu_without_torch_tensorrt_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # NOTE: import raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"needs Torch-TensorRT \(`pip install"):
        get_backend("tensorrt", torch.device("cuda"))


def test_compile_refuses_the_transformers_fallback_before_loading_it(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    path = sliding_window_copy(demo_model_dir, tmp_path)
    config = config_of(["--model", str(path), "--backend", "compile"])
    with pytest.raises(ConfigError, match="--backend compile: this model runs through the"):
        plan_engine(config, ModelInfo.read(path))


def sliding_window_copy(model_dir: Path, tmp_path: Path) -> Path:
    """The demo model's config with sliding-window attention, which our models refuse (the
    transformers fallback runs it): enough for planning, which reads no weight."""
    path = tmp_path / "sliding"
    path.mkdir()
    raw = json.loads((model_dir / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**raw, "use_sliding_window": True}))
    return path


def test_the_traceable_kernels_trace_the_whole_step_as_one_graph(demo_model_dir: Path) -> None:
    """No graph break: the paged cache writes run inside the graph's attention ops."""
    engine = build(demo_model_dir).engine
    runner = runner_of(engine)
    runner.model.use_kernels(TRACEABLE)
    engine.add_request(PROMPTS[1], GREEDY)
    batch = engine.scheduler.schedule()
    assert batch is not None
    inputs = prepare_inputs(step_entries(batch), runner.block_size, use_flash=False)
    args = (inputs.input_ids, inputs.positions, inputs.sample_indices)
    with torch.inference_mode(), runner.model.step(runner.kv_cache, inputs.meta):
        explained = torch._dynamo.explain(runner.model.stage_output)(*args)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


@pytest.mark.slow
def test_an_entry_built_by_another_process_loads_without_compiling(
    compiled: BuiltEngine, compiled_cache: CompiledCache
) -> None:
    """The cache publishes an entry by renaming its build directory: nothing in it may name
    its old path, or this load would compile again."""
    backend = runner_of(compiled.engine).backend
    assert isinstance(backend, CompileBackend) and backend.last_prepare is not None
    report = backend.last_prepare
    assert (report.fx_graph_misses, report.aot_autograd_misses) == (0, 0)
    assert report.fx_graph_hits > 0
    assert compiled.cache_entry is not None and compiled.cache_entry.entry == compiled_cache.entry
    assert not compiled.cache_entry.is_built
    inductor = str(compiled_cache.entry / INDUCTOR_DIR)
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR", "") != inductor
    assert backend.versions()["torch"] == torch.__version__


@pytest.mark.slow
def test_compile_gives_eager_greedy_outputs_one_request_at_a_time(
    compiled: BuiltEngine, eager_engine: LLMEngine
) -> None:
    step = compiled_step(compiled.engine)
    step.stance = "fail_on_recompile"  # NOTE: proves each step ran compiled
    try:
        outputs = one_at_a_time(compiled.engine, PROMPTS)
    finally:
        step.stance = "eager_on_recompile"
    assert outputs == one_at_a_time(eager_engine, PROMPTS)


@pytest.mark.slow
def test_compile_gives_eager_greedy_outputs_for_mixed_batches(
    compiled: BuiltEngine, eager_engine: LLMEngine
) -> None:
    step = compiled_step(compiled.engine)
    step.stance = "fail_on_recompile"
    try:
        outputs = staggered(compiled.engine, PROMPTS)
    finally:
        step.stance = "eager_on_recompile"
    assert outputs == staggered(eager_engine, PROMPTS)


class CountingDecoder:
    """A native decoder that counts its steps."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.steps = 0

    def decode(self, *args: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        logits: torch.Tensor = self.decoder.decode(*args)
        return logits


@pytest.mark.slow
def test_compile_runs_steps_of_decodes_only_in_the_native_decoder(
    compiled: BuiltEngine, eager_engine: LLMEngine
) -> None:
    step = compiled_step(compiled.engine)
    assert step.decoder is not None, "the C++ decoder builds on this machine"
    assert runner_of(compiled.engine).model.kernels.name == "native"
    counting = CountingDecoder(step.decoder)
    step.decoder = counting
    try:
        outputs = one_at_a_time(compiled.engine, PROMPTS[:2])
    finally:
        step.decoder = counting.decoder
    # NOTE: each prompt's prefill step samples its first token; every later token is a decode
    assert counting.steps == 2 * (GREEDY.max_tokens - 1)
    assert outputs == one_at_a_time(eager_engine, PROMPTS[:2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_tensorrt_builds_reloads_and_gives_eager_outputs(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch_tensorrt")
    expected = one_at_a_time(build(demo_model_dir).engine, PROMPTS[:2])  # eager, on the GPU
    cache = str(tmp_path / "engines")
    for is_built in (True, False):
        built = build(demo_model_dir, "--backend", "tensorrt", "--engine-cache", cache)
        assert built.cache_entry is not None and built.cache_entry.is_built is is_built
        assert any((built.cache_entry.entry / "tensorrt").iterdir())
        assert one_at_a_time(built.engine, PROMPTS[:2]) == expected
