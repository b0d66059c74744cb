"""The compile backend's C++ code, CPU only:

- `native_ops.cpp`: the compiled graph's ops `r1_native::packed_linear` and
  `r1_native::paged_attention`, the same ATen calls as the Python ops `r1::packed_linear` and
  `r1::paged_attention` without Python per call (the attention op reads the step's cache and
  masks from `set_step`, per thread); and `r1_native::argmax`, the sampler's greedy pick.
- `native_decoder.cpp`: `r1_native.Decoder` (`decoder`), a whole step of decodes in one call.

`load(build_dir)` compiles the sources once into `build_dir` (g++ and ninja, ~10 s) or loads
what an earlier call built there; where it cannot, the step keeps the Python ops and the graph,
and a warning says why.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from r1_runtime.models.attention import LayerAttention

if TYPE_CHECKING:
    from r1_runtime.models.decoder import DecoderForCausalLM, DecoderLayer

logger = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name(name) for name in ("native_ops.cpp", "native_decoder.cpp")]
# NOTE: -march=native is safe here: the library is built into an engine-cache entry, whose key
# names this CPU's model and ISA flags. -fopenmp: at::parallel_for is serial without it.
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno"]
_loaded: list[bool] = []  # NOTE: ops register once per process; [] until `load` is called


def library_name() -> str:
    """The built library's name: it changes with the source and torch's version."""
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    digest.update(" ".join([torch.__version__, *CFLAGS]).encode())
    return f"r1_native_{digest.hexdigest()[:12]}"


def load(build_dir: Path) -> bool:
    """Make the `r1_native` ops available; False, with a warning, where they cannot be built
    (no compiler, no ninja): callers then keep the Python ops."""
    if _loaded:
        return _loaded[0]
    try:
        _build_and_load(build_dir)
    except Exception as error:  # NOTE: any build failure: slower, never a failed start
        logger.warning("C++ ops not built (%s): the compiled step calls the Python ops", error)
        _loaded.append(False)
        return False
    _register_fakes()
    _loaded.append(True)
    return True


def is_loaded() -> bool:
    return bool(_loaded and _loaded[0])


def use_native(x: torch.Tensor) -> bool:
    """Whether a traced step on `x`'s device calls the C++ ops."""
    return x.device.type == "cpu" and is_loaded()


def _build_and_load(build_dir: Path) -> None:
    name = library_name()
    built = build_dir / f"{name}.so"
    if built.exists():
        torch.ops.load_library(str(built))  # type: ignore[no-untyped-call]
        return
    from torch.utils import cpp_extension

    _put_ninja_on_path()
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=name,
        sources=[str(source) for source in SOURCES],
        build_directory=str(build_dir),
        extra_cflags=CFLAGS,
        is_python_module=False,
    )


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the `ninja` wheel (a runtime dependency) installs it in the
    environment's bin directory, which the caller's PATH may lack (e.g. `.venv/bin/pytest`)."""
    import ninja

    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path])


def _register_fakes() -> None:
    def linear_shape(
        x: torch.Tensor, weight: torch.Tensor, bias: Any, residual: Any, out_features: int
    ) -> torch.Tensor:
        return x.new_empty(*x.shape[:-1], out_features)

    def attention_shape(q: torch.Tensor, k: Any, v: Any, layer: int) -> torch.Tensor:
        return torch.empty_like(q, memory_format=torch.contiguous_format)

    torch.library.register_fake("r1_native::packed_linear", linear_shape)
    torch.library.register_fake("r1_native::paged_attention", attention_shape)


def set_step(kv_cache: torch.Tensor, attention: LayerAttention) -> None:
    """What the step's `r1_native::paged_attention` ops read, on this thread, until
    `clear_step`."""
    batches = attention.batches
    torch.ops.r1_native.set_step(
        kv_cache,
        attention.slot_mapping,
        [sdpa.batch.block_ids for sdpa in batches],
        [sdpa.mask for sdpa in batches],
        [sdpa.batch.query_rows for sdpa in batches],
        [sdpa.batch.num_tokens for sdpa in batches],
    )


def clear_step() -> None:
    torch.ops.r1_native.clear_step()


def decoder(model: DecoderForCausalLM) -> Any:
    """`model` as an `r1_native.Decoder`, which runs a decode step (one new token for each
    sequence) in one call; None where the C++ ops are not loaded or the weights not packed."""
    if not is_loaded() or model.lm_head.packed_weight is None:
        return None
    config, inner = model.config, model.model
    weights: list[torch.Tensor | None] = []
    biases: list[torch.Tensor | None] = []
    for layer in cast("Iterable[DecoderLayer]", inner.layers):
        attention, mlp = layer.self_attn, layer.mlp
        linears = (attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj)
        packed = [linear.packed_weight for linear in linears]
        weights += [layer.input_layernorm.weight, packed[0], packed[1]]
        weights += [layer.post_attention_layernorm.weight, packed[2], packed[3]]
        biases += [linear.bias for linear in linears]
    return torch.classes.r1_native.Decoder(
        inner.embed_tokens.weight,
        weights,
        biases,
        inner.norm.weight,
        model.lm_head.packed_weight,
        inner.rotary_emb.cos,
        inner.rotary_emb.sin,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.rms_norm_eps,
    )
