"""The `security` object of `settings.json`, parsed once at start-up.

```json
"security": {
  "inputFilter": {"denyPatterns": ["(?i)ignore (all )?previous instructions"],
                  "maxPromptChars": 32000},
  "outputRedaction": {"builtins": ["secrets", "pii"],
                      "patterns": [{"name": "employee-id", "regex": "EMP-[0-9]{6}"}]},
  "audit": {"enabled": true, "includePrompts": false}
}
```

A missing (or null) key means off, or the default. Unknown keys are refused rather than
ignored: a misspelt key must not switch a control off without a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import regex

from r1_runtime.security.builtins import BUILTINS
from r1_runtime.security.input_filter import InputFilter
from r1_runtime.security.redaction import Rule

RULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}")  # the CRD's pattern and length
PREFIX = "settings.json security"


class SecuritySettingsError(ValueError):
    """A `security` setting that cannot be honoured; the message names the key."""


@dataclass(frozen=True)
class AuditSettings:
    enabled: bool = False
    include_prompts: bool = False


@dataclass(frozen=True)
class SecuritySettings:
    """The input filter, the redaction rules (built-ins first, then custom) and the audit."""

    input_filter: InputFilter = field(default_factory=InputFilter)
    redaction_rules: tuple[Rule, ...] = ()
    audit: AuditSettings = field(default_factory=AuditSettings)


def parse_security(raw: Any) -> SecuritySettings:
    """Parse the value of `security`; raise `SecuritySettingsError` naming the bad key."""
    section = _object(raw, "", {"inputFilter", "outputRedaction", "audit"})
    return SecuritySettings(
        input_filter=_input_filter(section.get("inputFilter")),
        redaction_rules=_redaction(section.get("outputRedaction")),
        audit=_audit(section.get("audit")),
    )


def _input_filter(raw: Any) -> InputFilter:
    where = ".inputFilter"
    section = _object(raw, where, {"denyPatterns", "maxPromptChars"})
    patterns = _list(section.get("denyPatterns"), f"{where}.denyPatterns")
    deny = tuple(_deny(text, f"{where}.denyPatterns[{i}]") for i, text in enumerate(patterns))
    limit = section.get("maxPromptChars")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise _error(f"{where}.maxPromptChars", f"must be an integer >= 1, got {limit!r}")
    return InputFilter(deny_patterns=deny, max_prompt_chars=limit)


def _redaction(raw: Any) -> tuple[Rule, ...]:
    where = ".outputRedaction"
    section = _object(raw, where, {"builtins", "patterns"})
    rules: list[Rule] = []
    for index, name in enumerate(_list(section.get("builtins"), f"{where}.builtins")):
        if name not in BUILTINS:
            known = ", ".join(BUILTINS)
            raise _error(f"{where}.builtins[{index}]", f"unknown set {name!r} (known: {known})")
        rules += BUILTINS[name]
    for index, item in enumerate(_list(section.get("patterns"), f"{where}.patterns", dict)):
        rules.append(_custom_rule(item, f"{where}.patterns[{index}]"))
    return tuple(rules)


def _custom_rule(raw: dict[str, Any], where: str) -> Rule:
    item = _object(raw, where, {"name", "regex"})
    name = item.get("name")
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        raise _error(
            f"{where}.name",
            f"must be 1-63 letters, digits, '.', '_' or '-' (it goes in the replacement "
            f"[REDACTED:<name>]), got {name!r}",
        )
    return Rule(name, _regex(item.get("regex"), f"{where}.regex"))


def _audit(raw: Any) -> AuditSettings:
    where = ".audit"
    section = _object(raw, where, {"enabled", "includePrompts"})
    values = {}
    for key, attribute in (("enabled", "enabled"), ("includePrompts", "include_prompts")):
        value = section.get(key)
        if value is not None and not isinstance(value, bool):
            raise _error(f"{where}.{key}", f"must be true or false, got {value!r}")
        values[attribute] = bool(value)
    return AuditSettings(**values)


def _object(raw: Any, where: str, known: set[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _error(where, f"must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _error(where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return raw


def _list(raw: Any, where: str, kind: type = str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _error(where, f"must be a list, got {type(raw).__name__}")
    for index, item in enumerate(raw):
        if not isinstance(item, kind):
            raise _error(f"{where}[{index}]", f"must be {_json_type(kind)}, got {item!r}")
    return raw


def _deny(text: Any, where: str) -> re.Pattern[str]:
    """A deny pattern: Python `re`, as the operator checks it; one that matches the empty
    string would refuse every prompt, so it is refused here."""
    if not isinstance(text, str) or not text:
        raise _error(where, f"must be a non-empty regular expression, got {text!r}")
    try:
        pattern = re.compile(text)
    except re.error as error:
        raise _error(where, f"not a valid regular expression: {error}") from error
    if pattern.search(""):
        raise _error(where, "matches the empty string, so it would refuse every prompt")
    return pattern


def _regex(text: Any, where: str) -> regex.Pattern[str]:
    """A redaction pattern, compiled with `regex` (a superset of `re`) for partial matching.
    Empty matches are skipped when redacting."""
    if not isinstance(text, str) or not text:
        raise _error(where, f"must be a non-empty regular expression, got {text!r}")
    try:
        return regex.compile(text)
    except regex.error as error:
        raise _error(where, f"not a valid regular expression: {error}") from error


def _json_type(kind: type) -> str:
    return "an object" if kind is dict else "a string" if kind is str else kind.__name__


def _error(where: str, problem: str) -> SecuritySettingsError:
    return SecuritySettingsError(f"{PREFIX}{where}: {problem}")
