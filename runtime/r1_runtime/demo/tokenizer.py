"""The demo tokenizer: a byte-level BPE trained on the corpus shipped beside this module,
with DeepSeek-R1's added tokens and chat template."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from tokenizers.processors import TemplateProcessing

# DeepSeek-R1's spellings: fullwidth bars (U+FF5C) and lower one-eighth blocks (U+2581).
BOS = "<｜begin▁of▁sentence｜>"  # noqa: RUF001
EOS = "<｜end▁of▁sentence｜>"  # noqa: RUF001
USER = "<｜User｜>"  # noqa: RUF001
ASSISTANT = "<｜Assistant｜>"  # noqa: RUF001
THINK_START = "<think>"
THINK_END = "</think>"

# NOTE: as in DeepSeek-R1's own tokenizer, only BOS and EOS are special. The role markers and
# the think tags are plain added tokens: single ids that survive `skip_special_tokens`.
SPECIAL_TOKENS = (BOS, EOS)
ADDED_TOKENS = (USER, ASSISTANT, THINK_START, THINK_END)

# An upper bound: training stops earlier once no pair in the corpus occurs twice.
MAX_VOCAB_SIZE = 8192

# Qwen2's pre-tokenizer split (so the R1-Distill-Qwen one), so that tools which recognise a
# tokenizer by its split pattern put this one in the right family.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_tokenizer() -> Tokenizer:
    """Train the demo tokenizer on the shipped corpus.

    BOS and EOS get ids 0 and 1; the four added tokens come last. Encoding normalizes to NFC
    and prepends BOS; decoding gives back the NFC text exactly. The same `tokenizers` version
    gives the same tokenizer, byte for byte.
    """
    tokenizer = Tokenizer(models.BPE())
    # NOTE: NFC as in Qwen2's tokenizer: transformers 5 loads any `qwen2` checkpoint's tokenizer
    # as Qwen2Tokenizer, which sets NFC whatever tokenizer.json says; with it here too, raw
    # `tokenizers` and transformers agree on every input.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(token, normalized=False) for token in ADDED_TOKENS])
    tokenizer.post_processor = TemplateProcessing(
        single=f"{BOS}:0 $A:0",
        pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
        special_tokens=[(BOS, tokenizer.token_to_id(BOS))],
    )
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: Path, model_max_length: int) -> None:
    """Write `tokenizer.json` and a `tokenizer_config.json` that transformers loads as
    PreTrainedTokenizerFast with R1's chat template."""
    tokenizer.save(str(directory / "tokenizer.json"))
    write_json(directory / "tokenizer_config.json", _tokenizer_config(model_max_length))


def write_json(path: Path, value: Any) -> None:
    """Write `value` as indented UTF-8 JSON, keys in insertion order, ending with a newline."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _tokenizer_config(model_max_length: int) -> dict[str, Any]:
    # NOTE: unk_token stays null: transformers 5 appends an id for an unk_token missing from
    # the vocabulary, and a byte-level BPE never needs one.
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": _chat_template(),
    }


def _chat_template() -> str:
    # DeepSeek-R1's template, verbatim; the file ends with a newline that R1's string does not.
    return (resources.files(__package__) / "chat_template.jinja").read_text("utf-8").rstrip("\n")


def _corpus() -> list[str]:
    folder = resources.files(__package__) / "corpus"
    return [entry.read_text("utf-8") for entry in sorted(folder.iterdir(), key=lambda e: e.name)]
