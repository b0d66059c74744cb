"""The input filter: a prompt (the text the model will read, after the chat template) is
refused when it is longer than the limit or matches a deny pattern."""

from __future__ import annotations

import re
from dataclasses import dataclass


class PromptBlocked(ValueError):
    """A refused prompt. The message names the rule (the pattern's index, or the limit) and
    never quotes the prompt or the pattern: neither is the client's business."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class InputFilter:
    """`deny_patterns` (Python `re`) are searched anywhere in the prompt; no patterns and no
    limit: off."""

    deny_patterns: tuple[re.Pattern[str], ...] = ()
    max_prompt_chars: int | None = None

    @property
    def is_enabled(self) -> bool:
        return bool(self.deny_patterns) or self.max_prompt_chars is not None

    def check(self, prompt: str) -> None:
        """Raise `PromptBlocked` unless the prompt passes."""
        if self.max_prompt_chars is not None and len(prompt) > self.max_prompt_chars:
            raise PromptBlocked(
                f"the prompt is {len(prompt)} characters; this server accepts at most "
                f"{self.max_prompt_chars} (security.inputFilter.maxPromptChars)",
                code="prompt_too_long",
            )
        for index, pattern in enumerate(self.deny_patterns):
            if pattern.search(prompt):
                raise PromptBlocked(
                    "the prompt was blocked by the server's input filter: it matches "
                    f"security.inputFilter.denyPatterns[{index}]",
                    code="content_blocked",
                )
