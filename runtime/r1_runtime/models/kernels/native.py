"""The native kernels, CPU only, in C++:

- `native_ops.cpp`: `r1_native::packed_linear` and `r1_native::paged_attention`, the same ATen
  calls as the Python kernels (`ops.py`) without Python per call (attention reads the step's
  cache and masks from `set_step`, per thread), and `r1_native::argmax`, the greedy pick;
- `native_decoder.cpp`: `r1_native.Decoder`, a whole step of decodes of a Llama-family model
  in one call (built by `LlamaForCausalLM.native_decoder`).

`load(build_dir)` compiles the sources once into `build_dir` (g++ and ninja, ~10 s) or loads
what an earlier call built there, and returns the kernels; where it cannot, None, and a warning
says why (the caller keeps the traceable Python kernels).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from r1_runtime.models.kernels import Kernels
from r1_runtime.models.kernels.attention import LayerAttention
from r1_runtime.models.kernels.ops import attention_shape, linear_shape, step_attention

logger = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name(name) for name in ("native_ops.cpp", "native_decoder.cpp")]
# NOTE: -march=native is safe here: the library is built into an engine-cache entry, whose key
# names this CPU's model and ISA flags. -fopenmp: at::parallel_for is serial without it.
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno"]
_loaded: list[Kernels | None] = []  # NOTE: ops register once per process; [] until `load`


def library_name() -> str:
    """The built library's name: it changes with the source and torch's version."""
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    digest.update(" ".join([torch.__version__, *CFLAGS]).encode())
    return f"r1_native_{digest.hexdigest()[:12]}"


def load(build_dir: Path) -> Kernels | None:
    """The native kernels, built into (or loaded from) `build_dir`; None, with a warning,
    where they cannot be built (no compiler, no ninja). Once per process: a later call
    returns what the first one did."""
    if not _loaded:
        _loaded.append(_try_load(build_dir))
    return _loaded[0]


def _try_load(build_dir: Path) -> Kernels | None:
    try:
        _build_and_load(build_dir)
    except Exception as error:  # NOTE: any build failure: slower, never a failed start
        logger.warning("C++ ops not built (%s): the compiled step calls the Python ops", error)
        return None
    torch.library.register_fake("r1_native::packed_linear", linear_shape)
    torch.library.register_fake("r1_native::paged_attention", attention_shape)
    return Kernels(
        name="native",
        paged_attention=torch.ops.r1_native.paged_attention,
        latent_attention=torch.ops.r1.latent_attention,  # NOTE: no C++ form yet
        packed_linear=torch.ops.r1_native.packed_linear,
        argmax=torch.ops.r1_native.argmax,
        step=step,
    )


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


@contextlib.contextmanager
def step(kv_cache: torch.Tensor, attention: LayerAttention) -> Iterator[None]:
    """What the step's `r1_native::paged_attention` ops read, on this thread (and the Python
    `r1::latent_attention`, through `ops.step_attention`)."""
    batches = attention.batches
    torch.ops.r1_native.set_step(
        kv_cache,
        attention.slot_mapping,
        [sdpa.batch.block_ids for sdpa in batches],
        [sdpa.mask for sdpa in batches],
        [sdpa.batch.query_rows for sdpa in batches],
        [sdpa.batch.num_tokens for sdpa in batches],
    )
    try:
        with step_attention(kv_cache, attention):
            yield
    finally:
        torch.ops.r1_native.clear_step()
