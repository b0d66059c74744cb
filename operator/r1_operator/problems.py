"""What is wrong with a spec, in a form users and conditions can both read."""

from __future__ import annotations

from dataclasses import dataclass

INVALID_SPEC = "InvalidSpec"
UNSCHEDULABLE = "Unschedulable"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: the field (`spec.resources.gpus`), what is wrong and
    what would be valid, and the condition reason it maps to."""

    field: str
    message: str
    reason: str = INVALID_SPEC

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"
