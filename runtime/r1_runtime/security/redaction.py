"""Output redaction: text matching a rule becomes `[REDACTED:<rule name>]`, in whole texts and
in streams split anywhere.

A stream holds back text that may still turn into a match: where a rule matches partially up
to the end of the text so far (the `regex` module's partial matching), and a whole match until
`window` more characters follow it (a longer match, or a later alternative, may still win).
Lookbehinds and `\b` see up to `window` characters of the text already let out. So the joined
output of `push`es and `finish` equals `redact` of the joined text whenever no match decides
on more than `window` characters around it. The hold is bounded: once it
exceeds `max_hold` characters it is redacted as it stands (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import regex

WINDOW = 64
MAX_HOLD = 4096  # a 4096-bit RSA key in PEM is about 3,300 characters


def _always(_: str) -> bool:
    return True


@dataclass(frozen=True)
class Rule:
    """A named pattern; `is_valid` rejects candidate matches (e.g. a failed Luhn check)."""

    name: str
    pattern: regex.Pattern[str]
    is_valid: Callable[[str], bool] = field(default=_always, compare=False)

    def replacement(self) -> str:
        return f"[REDACTED:{self.name}]"


@dataclass(frozen=True)
class _Found:
    start: int
    end: int
    rule: Rule
    is_settled: bool  # False: more text may change it (a partial match, or one near the end)


def redact(rules: Iterable[Rule], text: str) -> tuple[str, int]:
    """`(text with every match replaced, number of replacements)`."""
    stream = StreamRedactor(tuple(rules))
    redacted = stream.push(text) + stream.finish()
    return redacted, stream.num_redactions


class StreamRedactor:
    """Redacts text that arrives in pieces: `push` each piece, then `finish` once.

    At each position the earliest match wins; of matches starting at the same place the
    longest, then the rule listed first. With no rules, text passes straight through.
    """

    def __init__(
        self, rules: tuple[Rule, ...], window: int = WINDOW, max_hold: int = MAX_HOLD
    ) -> None:
        self._rules = rules
        self._window = window
        self._max_hold = max_hold
        self._held = ""
        self._context = ""  # the raw text just before `_held`, for lookbehinds and `\b`
        self.num_redactions = 0

    def push(self, text: str) -> str:
        """The text that is settled now: redacted, and never changed by what comes later."""
        if not self._rules:
            return text
        return self._scan(self._held + text, is_final=False)

    def finish(self) -> str:
        """The rest, at the end of the stream."""
        return self._scan(self._held, is_final=True)

    def _scan(self, held: str, is_final: bool) -> str:
        text = self._context + held
        out: list[str] = []
        position = len(self._context)
        while (found := self._first(text, position, is_final)) is not None:
            if not found.is_settled and len(text) - found.start <= self._max_hold:
                break
            out += [text[position : found.start], found.rule.replacement()]
            self.num_redactions += 1
            position = found.end if found.is_settled else len(text)
        held_from = found.start if found is not None else len(text)
        out.append(text[position:held_from])
        self._held = text[held_from:]
        self._context = text[max(0, held_from - self._window) : held_from]
        return "".join(out)

    def _first(self, text: str, position: int, is_final: bool) -> _Found | None:
        """The match that wins at or after `position`, settled or not; None when no rule can
        match there, whatever text may follow."""
        candidates = [
            found
            for rule in self._rules
            if (found := self._find(rule, text, position, is_final)) is not None
        ]
        if not candidates:
            return None
        start = min(found.start for found in candidates)
        tied = [found for found in candidates if found.start == start]
        unsettled = [found for found in tied if not found.is_settled]
        # NOTE: max() keeps the first of equals, so the rule listed first wins a tie.
        return unsettled[0] if unsettled else max(tied, key=lambda found: found.end - start)

    def _find(self, rule: Rule, text: str, position: int, is_final: bool) -> _Found | None:
        while position <= len(text):
            match = rule.pattern.search(text, position, partial=not is_final)
            if match is None or (match.partial and match.start() == len(text)):
                return None
            if match.partial:
                return _Found(match.start(), len(text), rule, is_settled=False)
            if match.end() == match.start():  # an empty match redacts nothing
                position = match.start() + 1
                continue
            if not is_final and match.end() + self._window > len(text):
                return _Found(match.start(), match.end(), rule, is_settled=False)
            if rule.is_valid(match.group()):
                return _Found(match.start(), match.end(), rule, is_settled=True)
            position = match.start() + 1
        return None
