"""Capacity planner: sizes derived from the bundled config.json files, fit verdicts, and
problems that name the field and a valid alternative."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from factories import make_manifest
from r1_operator import planner
from r1_operator.api import DeepSeekDeployment, DeepSeekDeploymentSpec
from r1_operator.gpus import GPU_TYPES, gpu_for_product
from r1_operator.planner import Plan
from r1_operator.problems import UNSCHEDULABLE
from r1_operator.shapes import ModelConfigError, ModelShape

CATALOG = Path(planner.__file__).parent / "catalog"
R1 = "deepseek-ai/DeepSeek-R1"
QWEN_7B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
QWEN_32B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
LLAMA_8B = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


def make_plan(model: str, gpu: str, num_gpus: int, **options: Any) -> Plan:
    return planner.plan(planner.catalog()[model], GPU_TYPES[gpu], num_gpus, **options)


def make_spec(overrides: dict[str, Any] | None = None) -> DeepSeekDeploymentSpec:
    return DeepSeekDeployment.from_manifest(make_manifest(overrides)).spec


def model(repo: str) -> dict[str, Any]:
    return {"model": {"name": repo, "source": {"huggingFace": {"repo": repo}}}}


# --- the catalog ---------------------------------------------------------------------------


def test_catalog_holds_r1_and_its_six_distills_named_by_repo_id() -> None:
    assert set(planner.catalog()) == {
        R1,
        QWEN_7B,
        QWEN_32B,
        LLAMA_8B,
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
    }


@pytest.mark.parametrize("path", sorted(CATALOG.glob("*.json")), ids=lambda path: path.stem)
def test_catalog_config_keeps_the_fields_sizing_reads(path: Path) -> None:
    config = json.loads(path.read_text())
    assert config["torch_dtype"] == "bfloat16"
    assert config["tie_word_embeddings"] is False
    assert config["max_position_embeddings"] in (131072, 163840)


def test_r1_config_is_natively_fp8_with_mla_and_moe() -> None:
    config = json.loads((CATALOG / "deepseek-ai--DeepSeek-R1.json").read_text())
    assert config["architectures"] == ["DeepseekV3ForCausalLM"]
    assert config["quantization_config"]["quant_method"] == "fp8"
    assert (config["kv_lora_rank"], config["qk_rope_head_dim"], config["q_lora_rank"]) == (
        512,
        64,
        1536,
    )
    assert (config["n_routed_experts"], config["num_experts_per_tok"]) == (256, 8)


# --- model shape ---------------------------------------------------------------------------

# Published totals: the safetensors parameter count on the Hub (Qwen-32B, and Llama-3.1-8B
# for the Llama-8B distill), the base model cards, and DeepSeek's 671B for R1 (main model,
# without the multi-token-prediction layer).
PARAMETERS = [
    pytest.param("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1.78e9, id="Qwen-1.5B has 1.78B"),
    pytest.param(QWEN_7B, 7.62e9, id="Qwen-7B has 7.62B"),
    pytest.param("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 14.77e9, id="Qwen-14B has 14.8B"),
    pytest.param(QWEN_32B, 32_763_876_352, id="Qwen-32B has 32.76B"),
    pytest.param(LLAMA_8B, 8_030_261_248, id="Llama-8B has 8.03B"),
    pytest.param("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 70.55e9, id="Llama-70B has 70.6B"),
    pytest.param(R1, 671e9, id="R1 has 671B in all"),
]


@pytest.mark.parametrize(("repo", "published"), PARAMETERS)
def test_parameter_count_matches_the_published_one(repo: str, published: float) -> None:
    assert planner.catalog()[repo].num_params == pytest.approx(published, rel=0.005)


def test_r1_activates_about_37b_parameters_per_token() -> None:
    # DeepSeek: 36.6B activated, output head included, input embedding (a lookup) not.
    assert planner.catalog()[R1].num_active_params == pytest.approx(36.6e9, rel=0.01)


def test_dense_models_activate_everything_but_the_embedding_lookup() -> None:
    shape = planner.catalog()[QWEN_7B]
    assert shape.num_active_params == shape.num_params - 152064 * 3584


KV_BYTES = [
    pytest.param(QWEN_7B, 2, 2 * 28 * 4 * 128 * 2, id="Qwen-7B caches 2 x 28 layers x 4 heads"),
    pytest.param(LLAMA_8B, 2, 2 * 32 * 8 * 128 * 2, id="Llama-8B caches 2 x 32 x 8 heads"),
    pytest.param(QWEN_32B, 4, 2 * 64 * 8 * 128 * 4, id="float32 doubles the cache"),
    pytest.param(R1, 2, 61 * (512 + 64) * 2, id="R1 caches the MLA latent only"),
]


@pytest.mark.parametrize(("repo", "dtype_bytes", "expected"), KV_BYTES)
def test_kv_bytes_per_token(repo: str, dtype_bytes: int, expected: int) -> None:
    assert planner.catalog()[repo].kv_bytes_per_token(dtype_bytes) == expected


def test_unknown_architecture_with_the_standard_fields_is_sized() -> None:
    config = {
        "architectures": ["MistralForCausalLM"],
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 32000,
        "max_position_embeddings": 32768,
    }
    shape = ModelShape.from_config(config, name="mistralai/Mistral-7B-v0.1")
    assert shape.num_params == pytest.approx(7.24e9, rel=0.005)
    assert shape.torch_dtype == "bfloat16"


MISSING = [
    pytest.param(QWEN_7B, "hidden_size", id="a dense model without hidden_size"),
    pytest.param(QWEN_7B, "intermediate_size", id="a dense model without intermediate_size"),
    pytest.param(LLAMA_8B, "max_position_embeddings", id="a model without a context limit"),
    pytest.param(R1, "qk_nope_head_dim", id="an MLA model without qk_nope_head_dim"),
    pytest.param(R1, "moe_intermediate_size", id="an MoE model without its expert width"),
]


@pytest.mark.parametrize(("repo", "key"), MISSING)
def test_missing_config_field_is_named(repo: str, key: str) -> None:
    config = json.loads((CATALOG / f"{repo.replace('/', '--')}.json").read_text())
    del config[key]
    with pytest.raises(ModelConfigError, match=f"config.json has no '{key}'"):
        ModelShape.from_config(config)


# --- weights -------------------------------------------------------------------------------

WEIGHTS = [
    pytest.param(QWEN_7B, "auto", None, 15.23e9, id="Qwen-7B in bfloat16 is 15.2 GB"),
    pytest.param(LLAMA_8B, "bfloat16", None, 16.06e9, id="Llama-8B in bfloat16 is 16.1 GB"),
    pytest.param(QWEN_7B, "float32", None, 30.46e9, id="float32 doubles the weights"),
    pytest.param(R1, "auto", None, 672.9e9, id="R1 is fp8 natively though quantization is unset"),
    pytest.param(QWEN_32B, "auto", "awq", 19.3e9, id="AWQ keeps about half a byte per weight"),
    pytest.param(QWEN_32B, "auto", "fp8", 34.32e9, id="fp8 keeps embeddings in bfloat16"),
]


@pytest.mark.parametrize(("repo", "dtype", "quantization", "expected"), WEIGHTS)
def test_weight_bytes(repo: str, dtype: str, quantization: str | None, expected: float) -> None:
    result = make_plan(repo, "H200", 1, dtype=dtype, quantization=quantization)
    assert result.weight_bytes == pytest.approx(expected, rel=0.01)


# --- fit -----------------------------------------------------------------------------------

FITS = [
    pytest.param(R1, "H100-80GB", 8, {}, False, id="R1 does not fit 8 x H100 80GB"),
    pytest.param(
        R1, "H100-80GB", 8, {"max_model_len": 4096}, False, id="nor does it at short context"
    ),
    pytest.param(R1, "H200", 8, {}, True, id="R1 fits 8 x H200 at its default 163840 tokens"),
    pytest.param(
        R1,
        "H100-80GB",
        16,
        {"tensor_parallel": 8},
        True,
        id="R1 fits 2 nodes x 8 H100 as tensor 8 x pipeline 2",
    ),
    pytest.param(R1, "H100-80GB", 16, {}, True, id="R1 fits 16 H100 all tensor-parallel"),
    pytest.param(QWEN_7B, "A100-80GB", 1, {}, True, id="Qwen-7B fits one A100 80GB at 131072"),
    pytest.param(
        QWEN_7B, "L4", 1, {"max_model_len": 32768}, True, id="Qwen-7B fits one L4 at 32768"
    ),
    pytest.param(QWEN_7B, "L4", 1, {}, False, id="Qwen-7B does not fit one L4 at 131072"),
    pytest.param(
        QWEN_32B, "A10", 1, {"max_model_len": 4096}, False, id="Qwen-32B overflows an A10"
    ),
    pytest.param(QWEN_32B, "A10", 8, {}, True, id="Qwen-32B fits 8 x A10"),
    pytest.param(
        QWEN_32B,
        "A100-40GB",
        1,
        {"quantization": "awq", "max_model_len": 32768},
        True,
        id="Qwen-32B in AWQ fits one A100 40GB",
    ),
]


@pytest.mark.parametrize(("repo", "gpu", "num_gpus", "options", "fits"), FITS)
def test_fit(repo: str, gpu: str, num_gpus: int, options: dict[str, Any], fits: bool) -> None:
    assert make_plan(repo, gpu, num_gpus, **options).fits is fits


MIN_GPUS = [
    pytest.param(R1, "H100-80GB", 8, 16, id="R1 needs 16 H100"),
    pytest.param(R1, "H200", 4, 8, id="R1 needs 8 H200"),
    pytest.param(QWEN_32B, "A10", 1, 8, id="Qwen-32B at 131072 needs 8 A10"),
    pytest.param(QWEN_7B, "L4", 1, 2, id="Qwen-7B at 131072 needs 2 L4"),
    pytest.param(QWEN_7B, "A100-80GB", 4, 1, id="a plan that fits needs no more than one GPU"),
]


@pytest.mark.parametrize(("repo", "gpu", "num_gpus", "least"), MIN_GPUS)
def test_min_gpus(repo: str, gpu: str, num_gpus: int, least: int) -> None:
    assert make_plan(repo, gpu, num_gpus).min_gpus == least


def test_min_gpus_is_none_when_no_count_holds_one_sequence() -> None:
    assert make_plan(QWEN_7B, "T4", 1, max_model_len=10**9).min_gpus is None


def test_mla_cache_is_replicated_on_tensor_ranks_and_split_over_stages() -> None:
    tensor_only = make_plan(R1, "H100-80GB", 16)
    two_stages = make_plan(R1, "H100-80GB", 16, tensor_parallel=8)
    assert two_stages.kv_capacity_tokens == 2 * tensor_only.kv_capacity_tokens


def test_gqa_cache_splits_over_tensor_ranks_up_to_one_kv_head_each() -> None:
    four = make_plan(QWEN_7B, "A100-80GB", 4, max_model_len=4096)
    eight = make_plan(QWEN_7B, "A100-80GB", 8, max_model_len=4096)  # 4 KV heads: replicated
    assert eight.kv_capacity_tokens < 2.1 * four.kv_capacity_tokens
    assert four.kv_capacity_tokens > 3.9 * make_plan(QWEN_7B, "A100-80GB", 1).kv_capacity_tokens


def test_plan_rejects_gpus_that_do_not_split_into_tensor_groups() -> None:
    with pytest.raises(ValueError, match="tensor-parallel groups of 3"):
        make_plan(QWEN_7B, "L4", 4, tensor_parallel=3)


# --- GPU product labels ---------------------------------------------------------------------

PRODUCTS = [
    pytest.param("NVIDIA-A100-SXM4-80GB", "A100-80GB", id="A100 SXM4 80GB"),
    pytest.param("NVIDIA-A100-PCIE-40GB", "A100-40GB", id="A100 PCIe 40GB"),
    pytest.param("NVIDIA-A100-80GB-PCIe", "A100-80GB", id="A100 80GB PCIe"),
    pytest.param("NVIDIA-A10", "A10", id="A10 is not an A100"),
    pytest.param("NVIDIA-H100-80GB-HBM3", "H100-80GB", id="H100 HBM3"),
    pytest.param("NVIDIA-H200", "H200", id="H200"),
    pytest.param("Tesla-T4", "T4", id="Tesla T4"),
    pytest.param("NVIDIA-L4", "L4", id="L4"),
    pytest.param("NVIDIA-A30", "A30", id="A30"),
    pytest.param("NVIDIA-GeForce-RTX-4090", "RTX-4090", id="GeForce RTX 4090"),
    pytest.param("AMD-Instinct-MI300X", "MI300X", id="MI300X"),
    pytest.param("H100-80GB", "H100-80GB", id="a table name is accepted"),
    pytest.param("a100-40gb", "A100-40GB", id="in any case"),
    pytest.param("NVIDIA-L40S", None, id="L40S is not an L4 and is unknown"),
    pytest.param("NVIDIA-A10G", None, id="A10G is unknown"),
    pytest.param("NVIDIA-GH200-480GB", None, id="GH200 is not an H200"),
    pytest.param("NVIDIA-H100-NVL", None, id="H100 NVL has other memory"),
    pytest.param("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", None, id="a MIG slice has other memory"),
    pytest.param("NVIDIA-A100", None, id="an A100 of unknown memory is unknown"),
]


@pytest.mark.parametrize(("label", "name"), PRODUCTS)
def test_gpu_for_product_label(label: str, name: str | None) -> None:
    gpu = gpu_for_product(label)
    assert (gpu.name if gpu else None) == name


# --- specs -----------------------------------------------------------------------------------

NOT_CHECKED = [
    pytest.param(
        model("example/not-in-the-catalog"), id="a model outside the catalog is not checked"
    ),
    pytest.param({"resources": {"gpuProduct": "NVIDIA-L40S"}}, id="an unknown GPU is not checked"),
    pytest.param({"resources": {"gpuProduct": None}}, id="an unset GPU product is not checked"),
    pytest.param(
        {"resources": {"gpus": 0, "gpuProduct": "NVIDIA-A10"}, **model(QWEN_32B)},
        id="a CPU deployment is not checked",
    ),
    pytest.param({}, id="the 7B distill on one A100 80GB fits"),
]


@pytest.mark.parametrize("overrides", NOT_CHECKED)
def test_check_spec_finds_nothing(overrides: dict[str, Any]) -> None:
    assert planner.check_spec(make_spec(overrides)) == []


def test_a_served_name_outside_the_catalog_falls_back_to_the_source_repo() -> None:
    result = planner.plan_for_spec(make_spec({"model": {"name": "r1-7b"}}))
    assert result is not None and result.shape.name == QWEN_7B


TOO_SMALL = [
    pytest.param(
        {**model(QWEN_32B), "resources": {"gpuProduct": "NVIDIA-A10"}},
        "spec.resources.gpus",
        ["1 x NVIDIA A10 (24 GB) at 0.90 utilisation gives 21.6 GB", "use at least 4 GPUs"],
        id="Qwen-32B on one A10 asks for more GPUs",
    ),
    pytest.param(
        {"resources": {"gpuProduct": "NVIDIA-L4"}, "engine": {"maxModelLen": None}},
        "spec.engine.maxModelLen",
        ["maxModelLen 131072", "set engine.maxModelLen <= ", "or use at least 2 GPUs"],
        id="Qwen-7B on one L4 at full context asks for a shorter context first",
    ),
    pytest.param(
        {
            **model(R1),
            "resources": {"gpus": 8, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
            "parallelism": {"tensor": 8},
            "engine": {"maxModelLen": None},
        },
        "spec.resources.gpus",
        ["DeepSeek-R1 in fp8 needs 672.9 GB of weights", "use at least 16 GPUs"],
        id="R1 on 8 H100 asks for 16",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "hints"), TOO_SMALL)
def test_check_spec_names_the_field_and_a_valid_alternative(
    overrides: dict[str, Any], field: str, hints: list[str]
) -> None:
    [problem] = planner.check_spec(make_spec(overrides))
    assert (problem.field, problem.reason) == (field, UNSCHEDULABLE)
    for hint in hints:
        assert hint in problem.message


def test_the_suggested_context_is_valid() -> None:
    overrides: dict[str, Any] = {"resources": {"gpuProduct": "NVIDIA-L4"}}
    [problem] = planner.check_spec(make_spec({**overrides, "engine": {"maxModelLen": None}}))
    suggested = int(problem.message.split("maxModelLen <= ")[1].split(",")[0])
    assert planner.check_spec(make_spec({**overrides, "engine": {"maxModelLen": suggested}})) == []
    too_long = make_spec({**overrides, "engine": {"maxModelLen": suggested + 16}})
    assert planner.check_spec(too_long) != []


SUGGESTED_GPUS = [
    pytest.param(QWEN_32B, "NVIDIA-A10", id="Qwen-32B on A10"),
    pytest.param(R1, "NVIDIA-H100-80GB-HBM3", id="R1 on H100"),
]


@pytest.mark.parametrize(("repo", "product"), SUGGESTED_GPUS)
def test_the_suggested_gpu_count_is_valid(repo: str, product: str) -> None:
    overrides = {**model(repo), "engine": {"maxModelLen": None}}
    [problem] = planner.check_spec(make_spec({**overrides, "resources": {"gpuProduct": product}}))
    count = int(problem.message.split("use at least ")[1].split()[0])
    resources, parallelism = {"gpus": count, "gpuProduct": product}, {"tensor": count}
    spec = make_spec({**overrides, "resources": resources, "parallelism": parallelism})
    assert planner.check_spec(spec) == []


def test_r1_fits_two_nodes_of_eight_h100() -> None:
    spec = make_spec(
        {
            **model(R1),
            "resources": {"gpus": 8, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
            "parallelism": {"tensor": 8, "pipeline": 2, "nodes": 2},
            "engine": {"maxModelLen": None},
        }
    )
    assert planner.check_spec(spec) == []


def test_plan_for_spec_uses_the_gpu_override_and_the_engine_settings() -> None:
    spec = make_spec({"engine": {"maxModelLen": 8192, "gpuMemoryUtilization": 0.8}})
    result = planner.plan_for_spec(spec, gpu_name="L4")
    assert result is not None
    assert (result.gpu.name, result.max_model_len, result.usable_bytes_per_gpu) == (
        "L4",
        8192,
        19_200_000_000,
    )
    assert planner.plan_for_spec(spec, gpu_name="NVIDIA-L40S") is None


def test_format_plan_reads_as_a_summary() -> None:
    text = planner.format_plan(make_plan(R1, "H200", 8))
    lines = text.splitlines()
    assert [line.split()[0] for line in lines] == [
        "model",
        "gpus",
        "weights",
        "overhead",
        "kv",
        "fits",
    ]
    assert "671.03B parameters (36.6B active per token), fp8" in lines[0]
    assert "8 x NVIDIA H200 (141 GB) (tensor 8 x pipeline 1)" in lines[1]
    assert "70,272 bytes per token" in lines[4]
