"""Network policy, input filter, output redaction and audit settings."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
)

from r1_operator.api.base import (
    DNS_LABEL,
    Spec,
)


class NetworkPolicySpec(Spec):
    """Ingress to the API: only from the listed namespaces and pods."""

    enabled: bool = True
    """Render NetworkPolicies: ingress to the serving pods as below, none to the pre-build
    Job's pod."""
    allowed_namespaces: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(default_factory=list)
    """Namespaces whose pods may call the API (all their pods)."""
    allowed_pod_labels: list[dict[str, str]] = Field(default_factory=list)
    """Label sets of pods in the deployment's namespace that may call the API."""
    metrics_namespaces: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(
        default_factory=lambda: ["monitoring"]
    )
    """Namespaces of the metrics scraper (Prometheus), allowed on the API port."""


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"{pattern!r} is not a valid regular expression (Python re): {error}; "
            "escape characters meant literally, such as ( [ . *, with a backslash"
        ) from None
    return pattern


def _matches_something(pattern: str) -> str:
    """The runtime's rule (r1_runtime/security/settings.py `_deny`): a deny pattern that
    matches the empty string matches every prompt, so the runtime refuses to start."""
    if re.search(pattern, "") is not None:
        raise ValueError(
            f"{pattern!r} matches the empty string, so the runtime would refuse every prompt "
            "(and does not start); make it require at least one character, e.g. x+ not x?"
        )
    return pattern


Regex = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_compiles)]
"""A regular expression in Python `re` syntax (the runtime compiles it as is)."""
DenyPattern = Annotated[Regex, AfterValidator(_matches_something)]
"""A Regex that does not match the empty string."""


class InputFilter(Spec):
    """Prompts the runtime refuses with 400 before they reach the engine."""

    deny_patterns: list[DenyPattern] = Field(default_factory=list, max_length=256)
    """Regular expressions (Python `re`); a prompt any of them matches (`re.search`) is refused.
    A pattern that matches the empty string (`x?`, `a*`, `^`) would refuse every prompt and is
    refused itself."""
    max_prompt_chars: int | None = Field(default=None, ge=1)
    """Longest prompt in characters of the text the model reads (chat template applied);
    unset: only the model's limit."""


class RedactionPattern(Spec):
    """One redaction: a match becomes `[REDACTED:<name>]`."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_.-]+$")
    """Label in the replacement text."""
    regex: Regex
    """Regular expression (Python `re`)."""


Builtin = Literal["secrets", "pii"]
BUILTIN_REDACTIONS: tuple[Builtin, ...] = ("pii", "secrets")


class OutputRedaction(Spec):
    """What the runtime redacts from completions, streamed ones included."""

    builtins: list[Builtin] = Field(
        default_factory=lambda: list(BUILTIN_REDACTIONS),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """The runtime's own pattern sets: `secrets` (keys, tokens), `pii` (e-mail, phone, card
    numbers); an empty list turns them off."""
    patterns: list[RedactionPattern] = Field(default_factory=list, max_length=256)
    """More patterns."""


class Audit(Spec):
    """Audit log of requests: JSON lines on the cold tier, hash-chained."""

    enabled: bool = True
    """Write the audit log (who, when, model, token counts)."""
    include_prompts: bool = False
    """Also log prompts and completions."""


class Security(Spec):
    """Network isolation, content filters and the audit log."""

    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    """Ingress NetworkPolicy."""
    input_filter: InputFilter = Field(default_factory=InputFilter)
    """Prompts refused before the engine."""
    output_redaction: OutputRedaction = Field(default_factory=OutputRedaction)
    """Redaction of secrets and personal data in completions."""
    audit: Audit = Field(default_factory=Audit)
    """Audit log."""
