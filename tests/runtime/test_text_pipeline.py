"""The text pipeline between engine tokens and OpenAI output: incremental detokenization,
stop strings, and R1's reasoning split, each streamed in pieces and checked against the
whole-text answer. Tokens come from the demo model's real tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from r1_runtime.demo.tokenizer import BOS as BOS_TEXT
from r1_runtime.server.detokenizer import IncrementalDetokenizer
from r1_runtime.server.reasoning import ReasoningParser, TextDelta, split_reasoning
from r1_runtime.server.stops import StopMatcher
from transformers import AutoTokenizer, PreTrainedTokenizerBase

BOS, THINK_START, THINK_END = 0, 2389, 2390

T = TypeVar("T", str, list[int])

TEXTS = [
    pytest.param("Plain ASCII text, with punctuation.", id="ascii text"),
    pytest.param("你好世界。深度求索的推理模型。", id="chinese text whose characters span tokens"),
    pytest.param("emoji 🙂🚀👩‍👩‍👧 and flags 🇫🇷", id="emoji and joined emoji sequences"),
    pytest.param("<think>\n想一想 🙂</think>\n\nThe answer: 42", id="think tags around mixed text"),
    pytest.param("crème brûlée, naïve Ünïcödé", id="accented latin letters"),
]


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(demo_model_dir)


def detokenize(tokenizer: Any, chunks: list[list[int]], skip_special_tokens: bool = True) -> str:
    detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens)
    return "".join(detokenizer.push(chunk) for chunk in chunks) + detokenizer.flush()


def split_at(items: T, cuts: list[int]) -> list[T]:
    """`items` in pieces, cut at each of `cuts` (any order, repeats give empty pieces)."""
    bounds = [0, *sorted(cuts), len(items)]
    return [items[start:end] for start, end in pairwise(bounds)]


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


# Incremental detokenization


@pytest.mark.parametrize("text", TEXTS)
def test_text_pushed_one_token_at_a_time_comes_back_whole(
    tokenizer: PreTrainedTokenizerBase, text: str
) -> None:
    ids = encode(tokenizer, text)
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push([token_id]) for token_id in ids]
    assert "".join(pieces) + detokenizer.flush() == text
    assert not any("\ufffd" in piece for piece in pieces), "a partial character escaped"


@pytest.mark.parametrize("text", TEXTS)
def test_text_split_at_every_point_comes_back_whole(
    tokenizer: PreTrainedTokenizerBase, text: str
) -> None:
    ids = encode(tokenizer, text)
    for cut in range(len(ids) + 1):
        assert detokenize(tokenizer, [ids[:cut], ids[cut:]]) == text


def test_a_character_split_across_tokens_is_emitted_once_its_last_byte_arrives(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    first, second = encode(tokenizer, "你")
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert detokenizer.push([first]) == ""
    assert detokenizer.push([second]) == "你"
    assert detokenizer.flush() == ""


def test_bytes_that_never_complete_a_character_are_flushed_as_decode_renders_them(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    first, _ = encode(tokenizer, "你")
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert detokenizer.push([first]) == ""
    assert detokenizer.flush() == tokenizer.decode([first]) == "\ufffd"


@pytest.mark.parametrize(
    ("skip_special_tokens", "expected"),
    [
        pytest.param(True, "<think>a</think>", id="special tokens are skipped, think tags kept"),
        pytest.param(False, f"{BOS_TEXT}<think>a</think>", id="all tokens kept"),
    ],
)
def test_special_tokens_follow_skip_special_tokens_and_think_tags_always_survive(
    tokenizer: PreTrainedTokenizerBase, skip_special_tokens: bool, expected: str
) -> None:
    ids = [BOS, THINK_START, *encode(tokenizer, "a"), THINK_END]
    assert detokenize(tokenizer, [[i] for i in ids], skip_special_tokens) == expected


class RecordingTokenizer:
    """Counts the ids each `decode` call is given."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.window_sizes: list[int] = []

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool = True) -> str:
        self.window_sizes.append(len(token_ids))
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens))


def test_each_push_decodes_a_small_window_not_the_whole_output(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = encode(tokenizer, "你好世界。 " * 100)
    recording = RecordingTokenizer(tokenizer)
    assert detokenize(recording, [[i] for i in ids]) == tokenizer.decode(ids)
    assert len(ids) > 500 and max(recording.window_sizes) <= 4


@settings(max_examples=300, deadline=None)
@given(data=st.data(), skip_special_tokens=st.booleans())
def test_random_ids_in_random_chunks_decode_as_the_whole_sequence_does(
    tokenizer: PreTrainedTokenizerBase, data: st.DataObject, skip_special_tokens: bool
) -> None:
    ids = data.draw(st.lists(st.integers(0, len(tokenizer) - 1), max_size=40), label="ids")
    chunks = split_at(ids, data.draw(st.lists(st.integers(0, len(ids)), max_size=8)))
    expected = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    assert detokenize(tokenizer, chunks, skip_special_tokens) == expected


# Reasoning split


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "why\nso</think>\n\nbecause",
            ("why\nso", "\n\nbecause"),
            id="reasoning then content kept as generated",
        ),
        pytest.param(
            "still thinking", ("still thinking", None), id="no end tag: everything is reasoning"
        ),
        pytest.param(
            "<think>\nhm</think>ok",
            ("\nhm", "ok"),
            id="a think tag the model opens itself is dropped",
        ),
        pytest.param(
            "a<think>b</think>c", ("a<think>b", "c"), id="a think tag after the start is text"
        ),
        pytest.param("done</think>", ("done", None), id="nothing after the end tag: no content"),
        pytest.param(
            "</think>answer", (None, "answer"), id="nothing before the end tag: no reasoning"
        ),
        pytest.param(
            "a</think>b</think>c", ("a", "b</think>c"), id="only the first end tag splits"
        ),
        pytest.param("", (None, None), id="no text: neither part"),
    ],
)
def test_split_reasoning(text: str, expected: tuple[str | None, str | None]) -> None:
    assert split_reasoning(text) == expected


def stream_reasoning(pieces: list[str]) -> Iterator[TextDelta]:
    parser = ReasoningParser()
    yield from (parser.push(piece) for piece in pieces)
    yield parser.finish()


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        pytest.param(
            ["ab</th", "ink>cd"],
            [TextDelta("ab"), TextDelta("", "cd"), TextDelta()],
            id="an end tag split across pushes",
        ),
        pytest.param(
            ["<th", "ink>", "x"],
            [TextDelta(), TextDelta(), TextDelta("x"), TextDelta()],
            id="a start tag split across pushes",
        ),
        pytest.param(
            ["a</", "b"],
            [TextDelta("a"), TextDelta("</b"), TextDelta()],
            id="a held-back tag start that is not a tag",
        ),
        pytest.param(
            ["<th"],
            [TextDelta(), TextDelta("<th")],
            id="a held-back start tag fragment is reasoning at the end",
        ),
        pytest.param(
            ["x</think", ""],
            [TextDelta("x"), TextDelta(), TextDelta("</think")],
            id="an end tag never completed is reasoning",
        ),
        pytest.param(
            ["</think>", "a", "b"],
            [TextDelta(), TextDelta("", "a"), TextDelta("", "b"), TextDelta()],
            id="content streams unheld after the tag",
        ),
    ],
)
def test_streamed_reasoning_deltas(pieces: list[str], expected: list[TextDelta]) -> None:
    assert list(stream_reasoning(pieces)) == expected


# Texts full of whole tags and tag fragments.
FRAGMENTS = ["<think>", "</think>", "<", "/", "th", "ink>", "a", "\n", "你"]
TAGGY_TEXTS = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_streamed_reasoning_joins_to_the_whole_text_split(data: st.DataObject) -> None:
    text = data.draw(TAGGY_TEXTS, label="text")
    pieces = split_at(text, data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    deltas = list(stream_reasoning(pieces))
    reasoning, content = split_reasoning(text)
    assert "".join(delta.reasoning for delta in deltas) == (reasoning or "")
    assert "".join(delta.content for delta in deltas) == (content or "")


# Stop strings


def stream_stops(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    emitted, hit = [], False
    for piece in pieces:
        text, hit = matcher.push(piece)
        emitted.append(text)
    return "".join(emitted) + matcher.flush(), hit


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        pytest.param(
            ["END"], ["abc END xyz"], ("abc ", True), id="text from the stop string on is dropped"
        ),
        pytest.param(
            ["END"], ["abc E", "N", "D xyz"], ("abc ", True), id="a stop string split across pushes"
        ),
        pytest.param(
            ["END"], ["abc EN", "d"], ("abc ENd", False), id="a held-back near miss is emitted"
        ),
        pytest.param(
            ["END"], ["abc EN"], ("abc EN", False), id="a held-back tail is flushed at the end"
        ),
        pytest.param([], ["abc"], ("abc", False), id="no stop strings: text passes through"),
        pytest.param(
            ["bc", "abcd"], ["abcd"], ("a", True), id="the stop string that ends first wins"
        ),
        pytest.param(
            ["bc", "abc"], ["xabc"], ("x", True), id="of two ending together the longer is cut"
        ),
        pytest.param(
            ["</think>"],
            ["why</th", "ink>so"],
            ("why", True),
            id="stops apply to reasoning text too",
        ),
        pytest.param(["。"], ["你好。再见"], ("你好", True), id="a non-ascii stop string"),
    ],
)
def test_stop_strings(stops: list[str], pieces: list[str], expected: tuple[str, bool]) -> None:
    assert stream_stops(stops, pieces) == expected


def test_after_a_stop_nothing_more_is_emitted() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.push("ax") == ("a", True)
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""
    assert matcher.is_stopped


def test_an_empty_stop_string_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        StopMatcher(["ok", ""])


def stop_reference(stops: list[str], text: str) -> tuple[str, bool]:
    """Generation as it happens: after each character, stop if a stop string just ended."""
    for end in range(1, len(text) + 1):
        ended = [stop for stop in stops if text[:end].endswith(stop)]
        if ended:
            return text[: end - max(map(len, ended))], True
    return text, False


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_stops_cut_streamed_text_where_a_char_by_char_generation_would_stop(
    data: st.DataObject,
) -> None:
    stops = data.draw(st.lists(st.text("abc", min_size=1, max_size=4), max_size=3), label="stops")
    text = data.draw(st.text("abcd", max_size=30), label="text")
    pieces = split_at(text, data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    assert stream_stops(stops, pieces) == stop_reference(stops, text)


# The pipeline together


def test_tokens_to_reasoning_and_content_through_the_whole_pipeline(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = encode(tokenizer, "想一想 🙂</think>\n\n答案是42。不会出现")
    detokenizer = IncrementalDetokenizer(tokenizer)
    stops = StopMatcher(["。"])
    parser = ReasoningParser()
    deltas = []
    for token_id in ids:
        text, hit = stops.push(detokenizer.push([token_id]))
        deltas.append(parser.push(text))
        if hit:
            break
    deltas.append(parser.finish())
    assert "".join(d.reasoning for d in deltas) == "想一想 🙂"
    assert "".join(d.content for d in deltas) == "\n\n答案是42"
