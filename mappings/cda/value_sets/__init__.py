"""CI-SIS value sets (JDV) shipped as data, with their source and version.

Each ``<name>.json`` holds one published value set as ANS distributes it (SVS): ``id`` (OID),
``name``, ``version`` (the ANS ``dateMaj``), ``source`` and ``concepts`` (code, code system,
display name). Only facts are shipped, never ANS files. ``make conformance`` checks each one
against the SVS file of the ANS checkout it is given.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources

__all__ = ["ValueSet", "value_set"]


@dataclasses.dataclass(frozen=True, slots=True)
class ValueSet:
    """A published value set: membership by code, as the structuration minimale tests it."""

    id: str
    name: str
    version: str
    source: str
    codes: frozenset[str]
    systems: dict[str, frozenset[str]]
    """code -> the code systems it is published under."""

    def __contains__(self, code: object) -> bool:
        return code in self.codes


@functools.cache
def value_set(name: str) -> ValueSet:
    """The value set shipped as ``<name>.json`` (e.g. ``JDV_J07_XdsTypeCode_CISIS``)."""
    data = json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    systems: dict[str, set[str]] = {}
    for concept in data["concepts"]:
        systems.setdefault(concept["code"], set()).add(concept["code_system"])
    return ValueSet(
        data["id"],
        data["name"],
        data["version"],
        data["source"],
        frozenset(systems),
        {code: frozenset(s) for code, s in systems.items()},
    )
