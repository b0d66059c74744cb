"""The cache key: stable for equal inputs, different for any change an engine depends on;
model digests from full hashes, the fetch marker or the warm tier's memo; device
descriptors that tell instruction sets apart."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from r1_runtime.engine_cache import digests
from r1_runtime.engine_cache.device import cpu_descriptor, device_descriptor
from r1_runtime.engine_cache.digests import (
    FETCH_MARKER,
    DigestMemo,
    model_file_digests,
)
from r1_runtime.engine_cache.key import cache_key, canonical_json, key_inputs

WEIGHTS = {"path": "model.safetensors", "size": 3, "sha256": "a" * 64}
CONFIG = {"path": "config.json", "size": 2, "sha256": "b" * 64}


def make_inputs(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "model_files": [WEIGHTS, CONFIG],
        "backend": "compile",
        "precision": "auto",
        "dtype": "bfloat16",
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "rank": 0,
        "max_batch_tokens": 2048,
        "max_num_seqs": 64,
        "max_model_len": None,
        "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "capability": "9.0"},
        "versions": {"torch": "2.13.0"},
        "runtime_version": "0.1.0",
    }
    return key_inputs(**(values | overrides))


def test_equal_inputs_give_the_same_key_whatever_the_order() -> None:
    shuffled = make_inputs(model_files=[CONFIG, WEIGHTS], versions={"torch": "2.13.0"})
    assert cache_key(make_inputs()) == cache_key(shuffled)
    assert len(cache_key(make_inputs())) == 64
    assert canonical_json({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"model_files": [{**WEIGHTS, "sha256": "c" * 64}, CONFIG]}, id="new weights"),
        pytest.param({"model_files": [WEIGHTS]}, id="a file fewer"),
        pytest.param({"backend": "tensorrt"}, id="another backend"),
        pytest.param({"precision": "fp16"}, id="another precision"),
        pytest.param({"dtype": "float16"}, id="another dtype"),
        pytest.param({"tensor_parallel_size": 2}, id="tensor parallel"),
        pytest.param({"pipeline_parallel_size": 2}, id="pipeline parallel"),
        pytest.param({"tensor_parallel_size": 2, "rank": 1}, id="another rank's shard"),
        pytest.param({"max_batch_tokens": 4096}, id="a larger step budget"),
        pytest.param({"max_num_seqs": 32}, id="fewer sequences"),
        pytest.param({"max_model_len": 8192}, id="a context limit"),
        pytest.param(
            {"device": {"type": "cuda", "name": "NVIDIA A100-SXM4-80GB", "capability": "8.0"}},
            id="another GPU",
        ),
        pytest.param({"versions": {"torch": "2.14.0"}}, id="a new torch"),
        pytest.param({"versions": {"torch": "2.13.0", "tensorrt": "10.9"}}, id="TensorRT added"),
        pytest.param({"runtime_version": "0.2.0"}, id="a new runtime"),
    ],
)
def test_any_change_an_engine_depends_on_changes_the_key(change: dict[str, Any]) -> None:
    assert cache_key(make_inputs(**change)) != cache_key(make_inputs())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    (directory / "sub").mkdir(parents=True)
    (directory / "config.json").write_text('{"a": 1}')
    (directory / "model.safetensors").write_bytes(b"w" * 100)
    (directory / "sub" / "tokenizer.json").write_text("{}")
    (directory / ".cache").mkdir()
    (directory / ".cache" / "huggingface.lock").write_text("")
    return directory


def test_small_files_are_hashed_in_full_and_hidden_files_are_not_part_of_the_model(
    model_dir: Path,
) -> None:
    (model_dir / FETCH_MARKER).write_text("{}")
    files = model_file_digests(model_dir)
    assert files == [
        {"path": "config.json", "size": 8, "sha256": sha256(b'{"a": 1}')},
        {"path": "model.safetensors", "size": 100, "sha256": sha256(b"w" * 100)},
        {"path": "sub/tokenizer.json", "size": 2, "sha256": sha256(b"{}")},
    ]


def write_marker(model_dir: Path, size: int, digest: str, mtime_ns: int | None = None) -> None:
    """The marker as `r1-runtime fetch` writes it (r1_runtime.fetch.store.write_marker)."""
    weights = model_dir / "model.safetensors"
    listed = [
        {
            "path": "model.safetensors",
            "size": size,
            "sha256": digest,
            "gitSha1": None,
            "mtimeNs": weights.stat().st_mtime_ns if mtime_ns is None else mtime_ns,
        },
        {"path": "config.json", "size": 8, "sha256": None, "gitSha1": "0" * 40, "mtimeNs": 0},
    ]
    (model_dir / FETCH_MARKER).write_text(json.dumps({"source": "hf://x/y", "files": listed}))


def test_a_large_file_takes_its_digest_from_the_fetch_marker(model_dir: Path) -> None:
    write_marker(model_dir, 100, "f" * 64)
    files = model_file_digests(model_dir, large_file_bytes=50)
    assert files[1] == {"path": "model.safetensors", "size": 100, "sha256": "f" * 64}
    assert files[0]["sha256"] == sha256(b'{"a": 1}')  # small: hashed, never from the marker


def test_a_marker_that_lists_another_size_is_not_trusted(model_dir: Path, tmp_path: Path) -> None:
    write_marker(model_dir, 99, "f" * 64)
    memo = DigestMemo(tmp_path / "digests.json")
    files = model_file_digests(model_dir, memo, large_file_bytes=50)
    assert files[1]["sha256"] == sha256(b"w" * 100)


def test_large_files_are_hashed_once_then_read_from_the_memo_until_they_change(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo_path = tmp_path / "cache" / "digests.json"
    hashed: list[Path] = []
    real_sha256_file = digests.sha256_file

    def counting_sha256_file(path: Path) -> str:
        hashed.append(path)
        return real_sha256_file(path)

    monkeypatch.setattr(digests, "sha256_file", counting_sha256_file)
    weights = model_dir / "model.safetensors"
    model_file_digests(model_dir, DigestMemo(memo_path), large_file_bytes=50)
    assert weights in hashed and memo_path.exists()

    hashed.clear()
    model_file_digests(model_dir, DigestMemo(memo_path), large_file_bytes=50)
    assert weights not in hashed  # a new memo object: read back from the file

    weights.write_bytes(b"v" * 100)
    os.utime(weights, ns=(1, 1))  # a new mtime even on a coarse clock
    files = model_file_digests(model_dir, DigestMemo(memo_path), large_file_bytes=50)
    assert files[1]["sha256"] == sha256(b"v" * 100)


def test_an_unreadable_memo_is_ignored(model_dir: Path, tmp_path: Path) -> None:
    memo_path = tmp_path / "digests.json"
    memo_path.write_text("not json")
    files = model_file_digests(model_dir, DigestMemo(memo_path), large_file_bytes=50)
    assert files[1]["sha256"] == sha256(b"w" * 100)
    assert json.loads(memo_path.read_text())["version"] == 1


def test_changing_the_tokenizer_changes_the_key(model_dir: Path) -> None:
    before = cache_key(make_inputs(model_files=model_file_digests(model_dir)))
    (model_dir / "sub" / "tokenizer.json").write_text('{"added": 1}')
    after = cache_key(make_inputs(model_files=model_file_digests(model_dir)))
    assert before != after


SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8 ht

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8 ht
"""
ICE_LAKE = SAPPHIRE_RAPIDS.replace("8480+", "8380").replace(" avx512_bf16 amx_bf16", "")
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve sve2 bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd4f
"""


def test_a_cpu_is_described_by_vendor_model_and_isa_flags() -> None:
    described = cpu_descriptor(SAPPHIRE_RAPIDS)
    assert described["vendor"] == "GenuineIntel"
    assert described["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    x86 = "sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8"
    assert described["flags"] == sorted(x86.split())
    assert cpu_descriptor(ICE_LAKE)["flags"] == [
        f for f in described["flags"] if f not in ("avx512_bf16", "amx_bf16")
    ]
    arm = cpu_descriptor(GRAVITON)
    assert (arm["vendor"], arm["model"]) == ("0x41", "0xd4f")
    assert arm["flags"] == ["asimd", "bf16", "i8mm", "sve", "sve2"]


def test_this_hosts_cpu_descriptor_has_its_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(SAPPHIRE_RAPIDS)
    described = device_descriptor(torch.device("cpu"), cpuinfo)
    assert described["type"] == "cpu" and "amx_bf16" in described["flags"]
    assert described["isa"] == torch.backends.cpu.get_cpu_capability()


def test_the_marker_fetch_writes_is_the_one_read(model_dir: Path) -> None:
    from r1_runtime.fetch.listing import Listing, RemoteFile
    from r1_runtime.fetch.store import write_marker as fetch_write_marker

    listed = RemoteFile(path="model.safetensors", size=100, sha256="e" * 64)
    fetch_write_marker(
        model_dir, "hf://org/model", "main", Listing(commit="c0ffee", files=(listed,))
    )
    files = model_file_digests(model_dir, large_file_bytes=50)
    assert files[1] == {"path": "model.safetensors", "size": 100, "sha256": "e" * 64}
