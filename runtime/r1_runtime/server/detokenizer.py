"""Incremental detokenization: token ids in, newly completed text out.

The prefix-offset/read-offset technique of vLLM's `detokenize_incrementally` (and TGI's
`decode_token`): decode a small window of ids twice, with and without the newest ones, and
emit the difference. The window keeps context for decoders whose output depends on the token
before (a SentencePiece-style leading space), and stays small, so a push costs the same at
the ten-thousandth token as at the first.
"""

from __future__ import annotations

from typing import Protocol

REPLACEMENT_CHAR = "\ufffd"


class Tokenizer(Protocol):
    """What the detokenizer needs of a Hugging Face tokenizer (whose `decode` is typed to
    return a list of strings too, for a batch)."""

    def decode(
        self, token_ids: list[int], *, skip_special_tokens: bool = ...
    ) -> str | list[str]: ...


class IncrementalDetokenizer:
    """Text of one request's output ids, as it becomes final.

    The concatenation of every `push` and then `flush` equals
    `tokenizer.decode(all_ids, skip_special_tokens=...)` for byte-level BPE tokenizers (every
    DeepSeek-R1 and distill tokenizer) with `clean_up_tokenization_spaces` off, as theirs is.
    Text is held back while it ends in U+FFFD: a multi-byte character split across tokens is
    emitted whole once its last byte arrives (or, if it never does, by `flush`).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._token_ids: list[int] = []
        # NOTE: ids before `_read_offset` are emitted, and their text ended on a complete
        # character; `_prefix_offset` (<= `_read_offset`) starts the context window.
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_ids: list[int]) -> str:
        """Add output ids; return the text they complete (often "", never a partial char)."""
        self._token_ids.extend(token_ids)
        prefix_text, text = self._decode_window()
        if len(text) <= len(prefix_text) or text.endswith(REPLACEMENT_CHAR):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._token_ids)
        return text[len(prefix_text) :]

    def flush(self) -> str:
        """Return whatever is held back, as `decode` would render it (U+FFFD for bytes that
        never formed a character). Call once, when the request has finished."""
        prefix_text, text = self._decode_window()
        self._prefix_offset = self._read_offset = len(self._token_ids)
        return text[len(prefix_text) :]

    def _decode_window(self) -> tuple[str, str]:
        """The window's text without and with the ids not yet emitted."""
        window = self._token_ids[self._prefix_offset :]
        num_read = self._read_offset - self._prefix_offset
        return self._decode(window[:num_read]), self._decode(window)

    def _decode(self, token_ids: list[int]) -> str:
        if not token_ids:
            return ""
        text = self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)
        if not isinstance(text, str):
            raise TypeError(f"decode of one sequence gave {type(text).__name__}, not str")
        return text
