"""Output redaction: the built-in rules on what they must and must not catch, and streams cut
anywhere (including a secret spread over several deltas) redacting exactly as the whole text
does, through the server's real text pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st
from r1_runtime.security.builtins import PII, SECRETS, iban_ok, luhn_ok
from r1_runtime.security.redaction import Rule, StreamRedactor, redact
from r1_runtime.server.generation import OutputText
from transformers import AutoTokenizer, PreTrainedTokenizerBase

RULES = SECRETS + PII
EMPLOYEE = Rule("employee-id", regex.compile(r"EMP-[0-9]{6}"))
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3\nxfn/ygWep4PAtGoRBh==\n"
PEM_FOOTER = "-----END RSA PRIVATE KEY-----"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0T"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "id AKIAIOSFODNN7EXAMPLE.", "id [REDACTED:aws-access-key-id].", id="an AWS key id"
        ),
        pytest.param(
            f"key:\n{PEM}{PEM_FOOTER}\ndone.",
            "key:\n[REDACTED:private-key]\ndone.",
            id="a PEM private key, header to footer",
        ),
        pytest.param(
            f"key: {PEM}and then, prose.",
            "key: [REDACTED:private-key], prose.",
            id="a PEM private key without its footer, up to the first non-base64 character",
        ),
        pytest.param(
            "use sk-proj-abcdefghijklmnopqrstuvwx1234 now",
            "use [REDACTED:api-token] now",
            id="an sk- API token",
        ),
        pytest.param(
            "Authorization: Bearer abcdefghijklmnopqrstuvwxyz.123",
            "Authorization: [REDACTED:bearer-token]",
            id="a bearer token",
        ),
        pytest.param(
            "gh ghp_" + "a1B2" * 9 + " end", "gh [REDACTED:github-token] end", id="a GitHub token"
        ),
        pytest.param(f"jwt {JWT} end", "jwt [REDACTED:jwt] end", id="a JWT"),
        pytest.param(
            "mail bob.smith+x@mail.example.co.uk now",
            "mail [REDACTED:email] now",
            id="an email address",
        ),
        pytest.param(
            "card 4111 1111 1111 1111, 4111-1111-1111-1111 and 4111111111111111",
            "card [REDACTED:credit-card], [REDACTED:credit-card] and [REDACTED:credit-card]",
            id="card numbers that pass the Luhn check, grouped or not",
        ),
        pytest.param(
            "iban DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432.",
            "iban [REDACTED:iban] or [REDACTED:iban].",
            id="IBANs that pass the mod-97 check",
        ),
        pytest.param(
            "call +1 415 555 2671 or (415) 555-2671",
            "call [REDACTED:phone] or [REDACTED:phone]",
            id="phone numbers, international and North American",
        ),
    ],
)
def test_builtin_rules_redact(text: str, expected: str) -> None:
    assert redact(RULES, text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("card 4111 1111 1111 1112 fails Luhn", id="a card number failing Luhn"),
        pytest.param("iban DE89 3704 0044 0532 0130 02", id="an IBAN failing mod 97"),
        pytest.param("on 2024-01-15 at 10:30, build 1234567", id="dates, times, short numbers"),
        pytest.param("sk-short and AKIA-not-a-key", id="prefixes without a secret's length"),
        pytest.param("the user@ sign and a .com alone", id="half an email address"),
        pytest.param("Plain prose: 你好世界, emoji 🙂, nothing secret.", id="plain text"),
    ],
)
def test_builtin_rules_leave_lookalikes_alone(text: str) -> None:
    assert redact(RULES, text) == (text, 0)


def test_checksums() -> None:
    assert luhn_ok("4111 1111 1111 1111") and not luhn_ok("4111 1111 1111 1112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83WEST12345698765432")


def test_a_custom_rule_counts_each_replacement() -> None:
    assert redact([EMPLOYEE], "EMP-123456 and EMP-654321, not EMP-12345") == (
        "[REDACTED:employee-id] and [REDACTED:employee-id], not EMP-12345",
        2,
    )


def stream(rules: tuple[Rule, ...], pieces: list[str], **limits: int) -> tuple[list[str], int]:
    redactor = StreamRedactor(rules, **limits)
    out = [redactor.push(piece) for piece in pieces]
    return [*out, redactor.finish()], redactor.num_redactions


def test_a_secret_spread_over_several_pushes_never_leaves_in_part() -> None:
    pieces = ["my key is AK", "IAIOSF", "ODNN7EX", "AMPLE", " and that is all for today, thanks."]
    out, count = stream(RULES, pieces)
    assert (
        "".join(out) == "my key is [REDACTED:aws-access-key-id] and that is all for today, thanks."
    )
    assert count == 1
    assert not any(fragment in "".join(out) for fragment in ("AK", "IAIOSF", "EXAMPLE"))


def test_text_that_cannot_start_a_match_is_not_held() -> None:
    out, _ = stream((EMPLOYEE,), ["hello there, ", "EM", "P-12", "3456 ok"])
    assert out[:3] == ["hello there, ", "", ""]  # "EM..." could still be an employee id
    assert "".join(out) == "hello there, [REDACTED:employee-id] ok"


def test_word_boundaries_see_the_text_already_let_out() -> None:
    out, count = stream(RULES, ["你好", "AKIAIOSFODNN7EXAMPLE ok"])
    assert ("".join(out), count) == ("你好AKIAIOSFODNN7EXAMPLE ok", 0)  # no boundary after 好


def test_a_hold_past_the_bound_is_redacted_as_it_stands() -> None:
    rule = Rule("long", regex.compile(r"X[a-z]+Y"))
    out, count = stream((rule,), ["say X", "a" * 50, "a" * 50, "Y later"], max_hold=80)
    assert out[2] == "[REDACTED:long]"  # fail closed: never released unredacted
    assert "".join(out) == "say [REDACTED:long]Y later" and count == 1


PIECES = st.lists(
    st.sampled_from(
        [
            "AKIAIOSFODNN7EXAMPLE",
            "4111 1111 1111 1111",
            "bob@example.com",
            "EMP-123456",
            JWT,
            PEM,
            PEM_FOOTER,
            "+1 415 555 2671",
            "DE89 3704 0044 0532 0130 00",
            "sk-",
            "abcdefghijklmnopqrstuvwxyz",
            " ",
            "\n",
            ".",
            "-",
            "1",
            "@",
            "EMP-",
            "你好",
        ]
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), parts=PIECES)
def test_a_stream_cut_anywhere_redacts_as_the_whole_text_does(
    data: st.DataObject, parts: list[str]
) -> None:
    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    rules = (*RULES, EMPLOYEE)
    out, count = stream(rules, pieces)
    assert ("".join(out), count) == redact(rules, text)


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(demo_model_dir)


def test_tokens_to_redacted_reasoning_and_content_one_token_at_a_time(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    generated = (
        "Keys: AKIAIOSFODNN7EXAMPLE, mail bob@example.com.</think>\n\n"
        "Pay with 4111 1111 1111 1111, staff EMP-123456."
    )
    token_ids = tokenizer.encode(generated, add_special_tokens=False)
    text = OutputText(tokenizer, [], split_reasoning=True, redaction_rules=(*RULES, EMPLOYEE))
    deltas = [text.push([token_id]) for token_id in token_ids] + [text.finish()]
    reasoning = "".join(delta.reasoning for delta in deltas)
    content = "".join(delta.content for delta in deltas)
    assert reasoning == "Keys: [REDACTED:aws-access-key-id], mail [REDACTED:email]."
    assert content == "\n\nPay with [REDACTED:credit-card], staff [REDACTED:employee-id]."
    assert text.num_redactions == 4
    # NOTE: the reasoning's held tail leaves as soon as content starts, not at the very end.
    first_content = next(i for i, delta in enumerate(deltas) if delta.content)
    assert reasoning == "".join(delta.reasoning for delta in deltas[: first_content + 1])


def test_stop_strings_cut_the_raw_text_before_redaction(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    token_ids = tokenizer.encode("id EMP-123456 STOP EMP-654321", add_special_tokens=False)
    text = OutputText(tokenizer, ["STOP"], split_reasoning=False, redaction_rules=(EMPLOYEE,))
    deltas = [text.push([token_id]) for token_id in token_ids]
    assert text.is_stopped
    content = "".join(delta.content for delta in [*deltas, text.finish()])
    assert content == "id [REDACTED:employee-id] "
