"""Turn a DeepSeekDeployment manifest into a typed object, or into problems a user can fix.

Used by the reconciler (an invalid spec becomes a condition, never a crash) and by the CLI.
"""

from __future__ import annotations

import difflib
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from r1_operator import planner
from r1_operator.api import API_VERSION, KIND, DeepSeekDeployment
from r1_operator.problems import INVALID_SPEC, UNSCHEDULABLE, Problem


class InvalidSpecError(ValueError):
    """A manifest that cannot be served; `problems` says what to change."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems

    @property
    def reason(self) -> str:
        """Unschedulable when the spec is well-formed but does not fit; else InvalidSpec."""
        if all(problem.reason == UNSCHEDULABLE for problem in self.problems):
            return UNSCHEDULABLE
        return INVALID_SPEC


def validate(manifest: dict[str, Any], *, check_fit: bool = True) -> DeepSeekDeployment:
    """Parse and check a manifest: schema, cross-field rules, then (unless `check_fit` is
    False) the capacity planner."""
    header = _header_problems(manifest)
    if header:
        raise InvalidSpecError(header)
    try:
        dsd = DeepSeekDeployment.from_manifest(manifest)
    except ValidationError as error:
        raise InvalidSpecError(problems_from(error)) from None
    fit = planner.check_spec(dsd.spec) if check_fit else []
    if fit:
        raise InvalidSpecError(fit)
    return dsd


def _header_problems(manifest: dict[str, Any]) -> list[Problem]:
    problems = []
    if manifest.get("apiVersion") != API_VERSION:
        problems.append(Problem("apiVersion", f"must be {API_VERSION}"))
    if manifest.get("kind") != KIND:
        problems.append(Problem("kind", f"must be {KIND}"))
    return problems


def problems_from(error: ValidationError) -> list[Problem]:
    """One Problem per pydantic error, with the field path as `spec.a.b[0].c`."""
    return [_problem(detail) for detail in error.errors()]


def _problem(detail: ErrorDetails) -> Problem:
    loc = detail["loc"]
    field = _field_path(loc)
    if detail["type"] == "extra_forbidden":
        return Problem(field, _unknown_field_message(loc))
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] not in ("value_error", "missing"):
        message += f" (got {detail['input']!r})"
    return Problem(field, message)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".") or "spec"


def _unknown_field_message(loc: tuple[int | str, ...]) -> str:
    known = sorted(_known_fields(loc[:-1]))
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown field; {hint}valid fields here: {', '.join(known)}"


def _known_fields(parent: tuple[int | str, ...]) -> list[str]:
    """Aliases accepted at `parent` (a pydantic loc), found by walking the models."""
    model: type[BaseModel] | None = DeepSeekDeployment
    for part in parent:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        model = _model_in(field.annotation) if field else None
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside `X`, `X | None`, `list[X]` or `dict[str, X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, list, dict):
        for argument in get_args(annotation):
            found = _model_in(argument)
            if found:
                return found
    return None
