"""The built-in redaction rule sets, `secrets` and `pii`: regular expressions with cheap
checksums where the format has one (Luhn for card numbers, mod 97 for IBANs). Heuristics: they
catch the usual shapes, not every secret or every piece of personal data."""

from __future__ import annotations

import regex

from r1_runtime.security.redaction import Rule

PEM_BODY = r"[A-Za-z0-9+/=\s]"  # base64 lines
NOT_PEM_BODY = r"[^A-Za-z0-9+/=\s]"


def luhn_ok(text: str) -> bool:
    """Whether the digits of `text` pass the Luhn check (payment card numbers)."""
    digits = [int(char) for char in text if char.isdigit()]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """Whether `text` (spaces allowed) passes the IBAN mod-97 check."""
    compact = text.replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _phone_ok(text: str) -> bool:
    return 8 <= sum(char.isdigit() for char in text) <= 15


SECRETS = (
    Rule(
        "private-key",
        regex.compile(
            rf"-----BEGIN[A-Z ]*PRIVATE KEY-----{PEM_BODY}*?"
            rf"(?:-----END[A-Z ]*PRIVATE KEY-----|(?={NOT_PEM_BODY})|\Z)"
        ),
    ),
    Rule("aws-access-key-id", regex.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b")),
    Rule(
        "github-token",
        regex.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    ),
    Rule("api-token", regex.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{20,}|\bxox[abprs]-[\w-]{10,}")),
    Rule("bearer-token", regex.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*")),
    Rule("jwt", regex.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),
)

PII = (
    Rule(
        "email",
        regex.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    ),
    Rule("credit-card", regex.compile(r"\b\d(?:[ -]?\d){12,18}\b"), luhn_ok),
    Rule(
        "iban",
        regex.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        iban_ok,
    ),
    Rule(
        "phone",
        regex.compile(
            r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\w)"
            r"|(?<!\w)\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w)"
        ),
        _phone_ok,
    ),
)

BUILTINS: dict[str, tuple[Rule, ...]] = {"secrets": SECRETS, "pii": PII}
