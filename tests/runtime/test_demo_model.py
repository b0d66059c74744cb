"""The demo model: deterministic and offline, loadable by transformers, shaped like DeepSeek-R1.

The models themselves come from the session fixtures in conftest.py (seed 0).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
from r1_runtime import cli
from r1_runtime.demo import (
    ARCHS,
    ASSISTANT,
    BOS,
    EOS,
    THINK_END,
    THINK_START,
    USER,
    build_demo_model,
)
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel

FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]
CLASSES = {"qwen2": "Qwen2ForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM"}
FIXTURES = {"qwen2": "demo_model_dir", "deepseek_v3": "demo_deepseek_v3_dir"}


def digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in directory.iterdir()
    }


def tensor_names(directory: Path) -> set[str]:
    with safe_open(directory / "model.safetensors", "pt") as checkpoint:
        return set(checkpoint.keys())


def load_model(directory: Path) -> PreTrainedModel:
    model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    return model


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(demo_model_dir)


@pytest.fixture(params=ARCHS, ids=[f"a {arch} checkpoint" for arch in ARCHS])
def arch_dir(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(FIXTURES[request.param])


# Determinism and the command line


@pytest.mark.slow
def test_the_command_in_another_process_writes_the_same_bytes_for_the_same_seed(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    command = [sys.executable, "-m", "r1_runtime.cli", "demo-model", str(again), "--seed", "0"]
    command += ["--architecture", "qwen2"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"wrote a qwen2 demo model to {again}" in result.stdout
    assert sorted(digests(again)) == FILES
    assert digests(again) == digests(demo_model_dir)


def test_another_seed_changes_the_weights_but_not_the_tokenizer_or_config(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    other = digests(build_demo_model(tmp_path, seed=1).directory)
    same = digests(demo_model_dir)
    assert {name for name in FILES if other[name] != same[name]} == {"model.safetensors"}


@pytest.mark.parametrize(
    ("flags", "default", "said"),
    [
        ([], ".cache/demo-model", "deepseek-v3"),
        (["--architecture", "qwen2"], ".cache/demo-model-qwen2", "qwen2"),
    ],
    ids=["R1's architecture by default, to .cache/demo-model", "qwen2 to a directory of its own"],
)
def test_without_a_directory_the_command_writes_under_dot_cache(
    flags: list[str],
    default: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo-model", *flags]) == 0
    assert sorted(digests(tmp_path / default)) == FILES
    assert f"wrote a {said} demo model to {default}:" in capsys.readouterr().out
    architecture = json.loads((tmp_path / default / "config.json").read_text())["architectures"]
    assert architecture == [
        "DeepseekV3ForCausalLM" if said == "deepseek-v3" else "Qwen2ForCausalLM"
    ]


def test_the_command_offers_exactly_the_archs_the_builder_knows() -> None:
    assert sorted(cli.DEMO_ARCHITECTURES.values()) == sorted(ARCHS)


# The checkpoints


def test_transformers_loads_every_weight_and_generates(arch_dir: tuple[str, Path]) -> None:
    arch, directory = arch_dir
    model = load_model(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    prompt = tokenizer("Hello, 你好", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert type(model).__name__ == CLASSES[arch]
    assert model.dtype == torch.bfloat16
    assert output.shape == (1, prompt["input_ids"].shape[1] + 8)
    assert int(output.max()) < len(tokenizer)


def test_the_qwen2_model_has_10_to_40_million_parameters_and_ties_its_embeddings(
    demo_model_dir: Path,
) -> None:
    model = load_model(demo_model_dir)
    config = model.config
    assert 10e6 <= model.num_parameters() <= 40e6
    assert config.tie_word_embeddings and "lm_head.weight" not in tensor_names(demo_model_dir)
    assert config.num_key_value_heads < config.num_attention_heads


def test_the_deepseek_v3_checkpoint_has_a_dense_first_layer_then_mla_and_moe_layers(
    demo_deepseek_v3_dir: Path,
) -> None:
    names = tensor_names(demo_deepseek_v3_dir)
    assert "model.layers.0.mlp.gate_proj.weight" in names
    assert not any(name.startswith("model.layers.0.mlp.experts.") for name in names)
    assert "model.layers.2.mlp.experts.7.down_proj.weight" in names
    assert "model.layers.2.mlp.shared_experts.up_proj.weight" in names
    assert "model.layers.2.mlp.gate.e_score_correction_bias" in names
    assert "model.layers.2.self_attn.q_a_proj.weight" in names
    assert "model.layers.2.self_attn.kv_a_proj_with_mqa.weight" in names


def test_biases_and_norm_scales_are_random_not_zero_and_one(demo_model_dir: Path) -> None:
    state = load_model(demo_model_dir).state_dict()
    bias = state["model.layers.0.self_attn.q_proj.bias"].float()
    norm = state["model.layers.0.input_layernorm.weight"].float()
    assert bias.abs().min() > 0 and not torch.allclose(norm, torch.ones_like(norm))


def test_configs_agree_with_the_tokenizer_on_vocabulary_and_bos_eos(
    arch_dir: tuple[str, Path],
) -> None:
    _, directory = arch_dir
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = load_model(directory).config
    generation = GenerationConfig.from_pretrained(directory)
    assert config.vocab_size == len(tokenizer) == max(tokenizer.get_vocab().values()) + 1
    assert generation.eos_token_id == config.eos_token_id == tokenizer.eos_token_id
    assert generation.bos_token_id == config.bos_token_id == tokenizer.bos_token_id


# The tokenizer


def test_bos_and_eos_are_the_only_special_tokens_and_eos_pads(tokenizer: Any) -> None:
    assert tokenizer.convert_ids_to_tokens(tokenizer.all_special_ids) == [BOS, EOS]
    assert tokenizer.pad_token == EOS and tokenizer.unk_token is None
    ids = [*tokenizer("hi").input_ids, tokenizer.eos_token_id]
    assert tokenizer.decode(ids) == f"{BOS}hi{EOS}"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hi"


@pytest.mark.parametrize(
    "tag",
    [THINK_START, THINK_END, USER, ASSISTANT],
    ids=["<think>", "</think>", "the user marker", "the assistant marker"],
)
def test_r1_markers_are_single_tokens_that_survive_skipping_special_tokens(
    tokenizer: Any, tag: str
) -> None:
    text = f"x{tag}\ny"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.encode(tag, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(tag)]
    assert tokenizer.convert_tokens_to_ids(tag) in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize(
    "text",
    [
        "深度求索的推理模型先思考，再回答。",  # noqa: RUF001
        "🚀 👨‍👩‍👧‍👦 🇨🇳 👋🏿 ⚠️ 1️⃣",
        "日本語のテキスト, 한국어 문장, Съешь же ещё, Ελληνικά",
        "𠀀𪚥 rare CJK, नमस्ते, ไทย, עברית",
        "  indented\n\ttabs\r\nand trailing spaces  ",
    ],
    ids=["Chinese", "emoji sequences", "other scripts", "text outside the corpus", "whitespace"],
)
def test_text_round_trips_through_encode_and_decode(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_decomposed_accents_come_back_composed_as_in_qwen2(tokenizer: Any) -> None:
    ids = tokenizer.encode("cafe\u0301", add_special_tokens=False)
    assert tokenizer.decode(ids) == "caf\u00e9"


def test_the_corpus_taught_it_chinese_words(tokenizer: Any) -> None:
    word = "模型"  # frequent in the corpus: fewer tokens than its six UTF-8 bytes
    assert len(tokenizer.encode(word, add_special_tokens=False)) < len(word.encode())


def test_transformers_and_raw_tokenizers_give_the_same_ids(
    tokenizer: Any, demo_model_dir: Path
) -> None:
    raw = Tokenizer.from_file(str(demo_model_dir / "tokenizer.json"))
    corpus = resources.files("r1_runtime.demo") / "corpus"
    for entry in corpus.iterdir():
        text = entry.read_text("utf-8") + "cafe\u0301"
        assert tokenizer(text).input_ids == raw.encode(text).ids, entry.name


# The chat template


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([{"role": "user", "content": "Hi"}], f"{BOS}{USER}Hi{ASSISTANT}{THINK_START}\n"),
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            f"{BOS}Be brief.{USER}Hi{ASSISTANT}{THINK_START}\n",
        ),
        (
            [
                {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": f"{THINK_START}\nhmm\n{THINK_END}\n\nA1"},
                {"role": "user", "content": "Q2"},
            ],
            f"{BOS}{USER}Q1{ASSISTANT}\n\nA1{EOS}{USER}Q2{ASSISTANT}{THINK_START}\n",
        ),
    ],
    ids=[
        "a user turn opens the think block",
        "the system prompt comes first, unmarked",
        "an earlier answer keeps only the text after its reasoning",
    ],
)
def test_the_chat_template_renders_r1_prompts(
    tokenizer: Any, messages: list[dict[str, str]], prompt: str
) -> None:
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == prompt


def test_a_tokenized_chat_prompt_has_one_bos_and_ends_in_the_open_think_block(
    tokenizer: Any,
) -> None:
    messages = [{"role": "user", "content": "你好 🙂"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids[-3:-1] == tokenizer.convert_tokens_to_ids([ASSISTANT, THINK_START])
    assert tokenizer.decode(ids[-1:]) == "\n"
