"""Stop strings matched in streamed text, across push boundaries.

The server applies them to the raw generated text, before the reasoning split, as OpenAI and
vLLM do: a stop string inside the think block stops the generation too.
"""

from __future__ import annotations


class StopMatcher:
    """Emits streamed text up to the first stop string, which is never emitted, nor anything
    after it. Text that may be the start of a stop string is held back until the next push or
    `flush` settles it.

    "First" is the stop string that ends earliest in the text (generation would have stopped
    there), and among those ending at the same place the longest. The result does not depend
    on how the text is split into pushes. With no stop strings, text passes straight through.
    """

    def __init__(self, stops: list[str]) -> None:
        if any(not stop for stop in stops):
            raise ValueError("stop strings must not be empty")
        self._stops = list(dict.fromkeys(stops))
        self._held = ""
        self._is_stopped = False

    @property
    def is_stopped(self) -> bool:
        """Whether a stop string has been hit: the server ends the request then."""
        return self._is_stopped

    def push(self, text: str) -> tuple[str, bool]:
        """`(text safe to emit, whether a stop string was hit)`. Once one is hit, every later
        push returns `("", True)`."""
        if self._is_stopped:
            return "", True
        text = self._held + text
        stop_at = self._first_stop(text)
        if stop_at is not None:
            self._is_stopped = True
            self._held = ""
            return text[:stop_at], True
        num_held = self._partial_suffix_len(text)
        self._held = text[len(text) - num_held :]
        return text[: len(text) - num_held], False

    def flush(self) -> str:
        """The held-back tail, at the end of generation: no stop string completed in it."""
        held, self._held = self._held, ""
        return held

    def _first_stop(self, text: str) -> int | None:
        """Where the stop string that ends first starts, or None when none occurs."""
        found = []
        for stop in self._stops:
            start = text.find(stop)
            if start >= 0:
                found.append((start + len(stop), start))
        return min(found)[1] if found else None

    def _partial_suffix_len(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        longest = max((len(stop) for stop in self._stops), default=1)
        for length in range(min(len(text), longest - 1), 0, -1):
            suffix = text[-length:]
            if any(stop.startswith(suffix) for stop in self._stops):
                return length
        return 0
