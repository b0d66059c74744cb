"""Engine backends: eager, compile (torch.compile, inductor artifacts in the engine entry) and
tensorrt (GPU only). One compiled engine per session: compiling takes tens of seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from r1_runtime.config import ConfigError
from r1_runtime.engine.backends import get_backend
from r1_runtime.engine.compile_backend import (
    INDUCTOR_DIR,
    CompileBackend,
    CompiledStep,
    step_context,
)
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine.model_runner import PagedModelRunner
from r1_runtime.engine.sequence import SamplingParams
from r1_runtime.engine.step_inputs import prepare_inputs
from r1_runtime.models.attention import LayerAttention

ROOT = Path(__file__).parents[2]
CPU = torch.device("cpu")
GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
PROMPTS = [[5 + i % 90 for i in range(n)] for n in (7, 23, 2, 40)]  # different lengths


def make_engine(model_dir: Path, device: str = "cpu") -> LLMEngine:
    return LLMEngine.from_model_dir(
        model_dir,
        dtype=torch.float32,
        device=device,
        max_num_seqs=8,
        max_batch_tokens=48,  # NOTE: the 40-token prompt joins running decodes in chunks
        max_model_len=256,
        num_kv_blocks=64,
    )


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


@pytest.fixture(scope="session")
def eager_engine(demo_model_dir: Path) -> LLMEngine:
    return make_engine(demo_model_dir)


@pytest.fixture(scope="session")
def compile_entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines") / "compile-entry"


@pytest.fixture(scope="session")
def compiled(demo_model_dir: Path, compile_entry: Path) -> tuple[LLMEngine, CompileBackend]:
    """The demo model built with the compile backend into an empty entry."""
    engine = make_engine(demo_model_dir)
    backend = get_backend("compile", CPU)
    assert isinstance(backend, CompileBackend)
    compile_entry.mkdir()
    backend.prepare(engine, compile_entry)
    return engine, backend


def compiled_step(engine: LLMEngine) -> CompiledStep:
    assert isinstance(engine.runner, PagedModelRunner)
    assert isinstance(engine.runner.step_logits, CompiledStep)
    return engine.runner.step_logits


def test_eager_builds_nothing_and_keeps_the_model_as_it_is(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    engine = make_engine(demo_model_dir)
    backend = get_backend("eager", CPU)
    assert (backend.name, backend.needs_cache) == ("eager", False)
    assert backend.versions() == {"torch": torch.__version__}
    backend.prepare(engine, tmp_path)
    assert isinstance(engine.runner, PagedModelRunner)
    assert engine.runner.step_logits == engine.runner.model.sampled_logits
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "device", "message"),
    [
        ("onnx", CPU, "--backend 'onnx' is not one of eager, compile, tensorrt"),
        ("tensorrt", CPU, "--backend tensorrt needs an NVIDIA GPU"),
        ("tensorrt", torch.device("cuda"), "--backend tensorrt needs an NVIDIA GPU"),
    ],
    ids=["an unknown backend", "tensorrt on a CPU", "tensorrt with no GPU visible"],
)
def test_a_backend_that_cannot_run_here_is_refused_naming_the_flag(
    name: str, device: torch.device, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=message):
        get_backend(name, device)


def test_tensorrt_on_a_gpu_without_torch_tensorrt_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # NOTE: import raises ImportError
    with pytest.raises(ConfigError, match=r"needs Torch-TensorRT \(`pip install"):
        get_backend("tensorrt", torch.device("cuda"))


def test_compile_refuses_the_transformers_fallback(
    demo_deepseek_v3_dir: Path, tmp_path: Path
) -> None:
    engine = make_engine(demo_deepseek_v3_dir)
    with pytest.raises(ConfigError, match="--backend compile: this model runs through the"):
        get_backend("compile", CPU).prepare(engine, tmp_path)


def test_compile_traces_the_whole_step_as_one_graph(
    eager_engine: LLMEngine,
) -> None:
    """No graph break: the paged cache writes run inside the graph's attention ops."""
    runner = eager_engine.runner
    assert isinstance(runner, PagedModelRunner)
    eager_engine.add_request(PROMPTS[1], GREEDY)
    batch = eager_engine.scheduler.schedule()
    assert batch is not None
    inputs = prepare_inputs(batch, runner.block_size, use_flash=False)
    attention = LayerAttention.for_model(
        inputs.meta, runner.model.config.num_queries_per_kv, torch.float32
    )
    args = (inputs.input_ids, inputs.positions, runner.kv_cache, inputs.meta, inputs.sample_indices)
    with torch.inference_mode(), step_context(runner.kv_cache, attention):
        explained = torch._dynamo.explain(runner.model.sampled_logits)(*args)
    eager_engine.abort(batch.seqs[0].seq.seq_id)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_compile_gives_eager_greedy_outputs_one_request_at_a_time(
    compiled: tuple[LLMEngine, CompileBackend], eager_engine: LLMEngine
) -> None:
    engine, _ = compiled
    compiled_step(engine).stance = "fail_on_recompile"  # NOTE: proves each step ran compiled
    try:
        outputs = one_at_a_time(engine, PROMPTS)
    finally:
        compiled_step(engine).stance = "eager_on_recompile"
    assert outputs == one_at_a_time(eager_engine, PROMPTS)


def test_compile_gives_eager_greedy_outputs_for_mixed_batches(
    compiled: tuple[LLMEngine, CompileBackend], eager_engine: LLMEngine
) -> None:
    engine, _ = compiled
    compiled_step(engine).stance = "fail_on_recompile"
    try:
        outputs = staggered(engine, PROMPTS)
    finally:
        compiled_step(engine).stance = "eager_on_recompile"
    assert outputs == staggered(eager_engine, PROMPTS)


class CountingDecoder:
    """A `native.decoder` that counts its steps."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.steps = 0

    def decode(self, *args: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        logits: torch.Tensor = self.decoder.decode(*args)
        return logits


def test_compile_runs_steps_of_decodes_only_in_the_native_decoder(
    compiled: tuple[LLMEngine, CompileBackend], eager_engine: LLMEngine
) -> None:
    engine, _ = compiled
    step = compiled_step(engine)
    assert step.decoder is not None, "the C++ decoder builds on this machine"
    counting = CountingDecoder(step.decoder)
    step.decoder = counting
    try:
        outputs = one_at_a_time(engine, PROMPTS[:2])
    finally:
        step.decoder = counting.decoder
    # NOTE: each prompt's prefill step samples its first token; every later token is a decode
    assert counting.steps == 2 * (GREEDY.max_tokens - 1)
    assert outputs == one_at_a_time(eager_engine, PROMPTS[:2])


def test_compile_builds_into_the_entry_only(
    compiled: tuple[LLMEngine, CompileBackend], compile_entry: Path
) -> None:
    _, backend = compiled
    report = backend.last_prepare
    assert report is not None and report.fx_graph_misses > 0
    assert any((compile_entry / INDUCTOR_DIR / "fxgraph").rglob("*"))
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR", "") != str(compile_entry / INDUCTOR_DIR)
    assert backend.versions()["torch"] == torch.__version__


RELOAD = """
import json, sys
from pathlib import Path
import torch
from r1_runtime.engine.backends import get_backend
from tests.runtime.test_backends import PROMPTS, make_engine, one_at_a_time
engine = make_engine(Path(sys.argv[1]))
backend = get_backend("compile", torch.device("cpu"))
backend.prepare(engine, Path(sys.argv[2]))
print(json.dumps({"report": vars(backend.last_prepare), "outputs": one_at_a_time(engine, PROMPTS)}))
"""


def test_a_renamed_entry_loads_in_a_new_process_without_compiling(
    compiled: tuple[LLMEngine, CompileBackend],
    compile_entry: Path,
    demo_model_dir: Path,
    eager_engine: LLMEngine,
    tmp_path: Path,
) -> None:
    """The cache publishes an entry by renaming it: nothing in it may name its old path."""
    published = tmp_path / "published"
    shutil.copytree(compile_entry, tmp_path / "building")
    (tmp_path / "building").rename(published)
    command = [sys.executable, "-c", RELOAD, str(demo_model_dir), str(published)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(done.stdout.splitlines()[-1])
    report = result["report"]
    assert (report["fx_graph_misses"], report["aot_autograd_misses"]) == (0, 0)
    assert report["fx_graph_hits"] == compiled[1].last_prepare.fx_graph_misses  # type: ignore[union-attr]
    assert result["outputs"] == one_at_a_time(eager_engine, PROMPTS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_tensorrt_builds_reloads_and_gives_eager_outputs(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch_tensorrt")
    eager = make_engine(demo_model_dir, device="cuda")
    expected = one_at_a_time(eager, PROMPTS[:2])
    for _ in ("build", "reload"):
        engine = make_engine(demo_model_dir, device="cuda")
        get_backend("tensorrt", torch.device("cuda")).prepare(engine, tmp_path)
        assert any((tmp_path / "tensorrt").iterdir())
        assert one_at_a_time(engine, PROMPTS[:2]) == expected
