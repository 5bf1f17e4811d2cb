"""The `fhir_map` step: set and remove values of a FHIR JSON body, selected with FHIRPath.

::

    - fhir_map:
        rules:
          - select: Bundle.entry.resource.ofType(Patient)
            set: {active: true}                     # JSON values, as written in YAML
          - select: Bundle.entry.resource.ofType(Patient)
            set: {language: fr-FR}
            if_absent: true                         # a default
          - select: Bundle.entry.resource.ofType(Patient).telecom.where(system = 'fax')
            remove: true                            # the selected objects leave their list
          - select: Bundle.entry.resource.ofType(Patient)
            unset: [photo]
            if: {path: "Bundle.type", equals: transaction}

`select` is FHIRPath (fhirpathpy) and must select JSON objects. fhirpathpy
returns copies, so the selected objects are found again in the document by
value: two objects with equal content are both changed. A rule with
`required: true` refuses the message when it selects nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import fhirpathpy
from pydantic import Field, PrivateAttr, field_validator, model_validator

from hub.conditions import ValueTest
from hub.content_types import ContentType
from hub.errors import MappingError, ParseError
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.fhir.select import check_fhirpath, text_of

__all__ = ["FhirMapConfig", "fhir_map"]


class FhirCondition(ValueTest):
    """`path` (FHIRPath on the whole body) plus one test; holds when one of its values passes."""

    path: str = Field(description="FHIRPath evaluated on the whole body, e.g. `Bundle.type`.")

    @field_validator("path")
    @classmethod
    def _check(cls, v: str) -> str:
        check_fhirpath(v)
        return v


class FhirRule(ComponentConfig):
    """One rule: `select` objects, then `set`, `unset` or `remove` them."""

    select: str = Field(description="FHIRPath selecting JSON objects of the body.")
    set: dict[str, Any] | None = Field(None, description="Keys written on each selected object (JSON values).")
    if_absent: bool = Field(False, description="set: only keys the object does not have (defaults).")
    unset: list[str] | None = Field(None, description="Keys removed from each selected object.")
    remove: bool = Field(False, description="Remove the selected objects from the list or object holding them.")
    required: bool = Field(False, description="Refuse the message when `select` finds nothing.")
    if_: list[FhirCondition] = Field(
        default_factory=list, alias="if", description="Conditions that must all hold (one mapping or a list)."
    )

    @field_validator("if_", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator("select")
    @classmethod
    def _check(cls, v: str) -> str:
        check_fhirpath(v)
        return v

    @model_validator(mode="after")
    def _one_action(self) -> FhirRule:
        if sum([self.set is not None, self.unset is not None, self.remove]) != 1:
            raise ValueError("give exactly one of set, unset, remove: true")
        return self


class FhirMapConfig(ComponentConfig):
    rules: list[FhirRule] = Field(min_length=1, description="Rules, applied in order.")

    _compiled: list[tuple[FhirRule, Any, list[tuple[Any, Callable[[Iterable[str]], bool]]]]] = PrivateAttr(
        default_factory=list
    )

    @model_validator(mode="after")
    def _compile(self) -> FhirMapConfig:
        for rule in self.rules:
            conditions = [(fhirpathpy.compile(c.path), c.compile()) for c in rule.if_]
            self._compiled.append((rule, fhirpathpy.compile(rule.select), conditions))
        return self


def _holders(node: Any, targets: list[dict[str, Any]]) -> Iterable[tuple[Any, Any, dict[str, Any]]]:
    """(container, key or index, object) of every object of the document equal to one of `targets`."""
    if any(node == t for t in targets):
        yield None, None, node  # the resource itself (it cannot be removed, only changed)
    stack = [node]
    while stack:
        current = stack.pop()
        items = current.items() if isinstance(current, dict) else enumerate(current)
        for key, value in list(items):
            if isinstance(value, dict):
                if any(value == t for t in targets):
                    yield current, key, value
                stack.append(value)
            elif isinstance(value, list):
                stack.append(value)


@register("step", "fhir_map", config=FhirMapConfig, consumes=(ContentType.FHIR,), produces=ContentType.FHIR)
def fhir_map(message: Message, *, config: FhirMapConfig) -> Message:
    """Set, unset and remove values of a FHIR JSON body at objects selected with FHIRPath."""
    try:
        doc = json.loads(message.body)
    except ValueError:
        raise ParseError("the body is not JSON", code="100") from None
    if not isinstance(doc, dict):
        raise ParseError("the body is not a FHIR resource", code="100")
    for n, (rule, select, conditions) in enumerate(config._compiled):
        if not all(test([text_of(v) for v in cond(doc)]) for cond, test in conditions):
            continue
        targets = [v for v in select(doc) if isinstance(v, dict)]
        if not targets:
            if rule.required:
                raise MappingError(f"fhir_map: rules.{n}: {rule.select} selects nothing")
            continue
        found = list(_holders(doc, targets))
        if rule.remove:
            # Indexes shift as items leave a list: remove from the highest index down.
            held = [f for f in found if f[0] is not None]
            for container, key, _ in sorted(held, key=lambda f: f[1] if isinstance(f[1], int) else 0, reverse=True):
                del container[key]
            continue
        for _, _, obj in found:
            if rule.set is not None:
                for key, value in rule.set.items():
                    if not (rule.if_absent and key in obj):
                        obj[key] = value
            for key in rule.unset or ():
                obj.pop(key, None)
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return message.derive(body=body)
