"""DeepSeek-R1's reasoning split: the think block becomes `reasoning_content`, the rest
`content`, as vLLM's `deepseek_r1` reasoning parser does.

R1's chat template ends the prompt with `<think>\\n`, so generation starts inside the think
block: text before `</think>` is reasoning and text after it is content. A `<think>` the model
writes itself at the very start is dropped (older templates left it to the model). When
`</think>` never comes, everything is reasoning: that is vLLM's choice, and the right reading
of a generation cut short by `max_tokens` mid-thought.

Content is the text after `</think>` exactly as generated, usually starting with "\\n\\n":
vLLM does the same, and so `reasoning + "</think>" + content` is the generated text again.
Only the first `</think>` counts; a later one, or a later `<think>`, is content.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"


@dataclass(frozen=True)
class TextDelta:
    """New text of each kind; either may be empty."""

    reasoning: str = ""
    content: str = ""

    @property
    def is_empty(self) -> bool:
        return not self.reasoning and not self.content


def split_reasoning(text: str) -> tuple[str | None, str | None]:
    """`(reasoning_content, content)` of a whole generation; None where a part is empty."""
    text = text.removeprefix(THINK_START)
    reasoning, tag, content = text.partition(THINK_END)
    if not tag:
        return reasoning or None, None
    return reasoning or None, content or None


class _State(enum.Enum):
    START = "start"  # nothing emitted yet: a leading `<think>` may still be arriving
    REASONING = "reasoning"
    CONTENT = "content"


class ReasoningParser:
    """The same split, streamed: `push` each new piece of text, then `finish` once.

    A tag split across pushes is recognised: text that may be the start of a tag is held
    back until the next push or `finish` settles it. Joined, the deltas' reasoning and
    content equal `split_reasoning` of the joined text (with "" for None).
    """

    def __init__(self) -> None:
        self._state = _State.START
        self._held = ""

    def push(self, text: str) -> TextDelta:
        """Split newly generated text; may hold back up to `len("</think>") - 1` chars."""
        text = self._held + text
        self._held = ""
        if self._state is _State.START:
            text = self._strip_think_start(text)
        if self._state is _State.REASONING:
            return self._push_reasoning(text)
        if self._state is _State.CONTENT:
            return TextDelta(content=text)
        return TextDelta()  # still at the start: all of it is held

    def finish(self) -> TextDelta:
        """The held-back tail: it was no tag, so it is reasoning (no `</think>` came)."""
        held, self._held = self._held, ""
        return TextDelta(reasoning=held)

    def _strip_think_start(self, text: str) -> str:
        if len(text) < len(THINK_START) and THINK_START.startswith(text):  # maybe the tag
            self._held = text
            return ""
        self._state = _State.REASONING
        return text.removeprefix(THINK_START)

    def _push_reasoning(self, text: str) -> TextDelta:
        reasoning, tag, content = text.partition(THINK_END)
        if tag:
            self._state = _State.CONTENT
            return TextDelta(reasoning, content)
        num_held = _partial_suffix_len(reasoning, THINK_END)
        self._held = reasoning[len(reasoning) - num_held :]
        return TextDelta(reasoning=reasoning[: len(reasoning) - num_held])


def _partial_suffix_len(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0
