"""Convert the benchmark checkpoint to a bf16 GGUF with llama.cpp's own convert_hf_to_gguf.py
(from the llama-cpp-python sdist), for `bench/peers.py`. Runs in the llama.cpp venv:

    python bench/gguf_convert.py LLAMA_CPP_DIR MODEL_DIR OUT.gguf

NOTE: the converter names a BPE pre-tokenizer by hashing the tokens of a test string and
refuses hashes it does not know, as our freshly trained tokenizer's is. Its pre-tokenizer is
ByteLevel with the GPT-2 split regex, which llama.cpp calls "gpt-2"; nothing else is mapped.
https://github.com/ggml-org/llama.cpp/pull/6920
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def gpt2_regex_family(tokenizer_json: Path) -> bool:
    pre = json.loads(tokenizer_json.read_text())["pre_tokenizer"]
    return bool(pre["type"] == "ByteLevel" and pre.get("use_regex", True))


def main() -> None:
    llama_cpp, model_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    sys.path[:0] = [str(llama_cpp), str(llama_cpp / "gguf-py")]
    import convert_hf_to_gguf
    from conversion import base

    known = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            return str(known(self, tokenizer))
        except NotImplementedError:
            if not gpt2_regex_family(model_dir / "tokenizer.json"):
                raise
            return "gpt-2"

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", str(model_dir), "--outtype", "bf16", "--outfile", out]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
