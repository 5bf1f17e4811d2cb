"""DMP value sets (JDV) shipped as data, generated from the files the ANS publishes.

Each ``*.json`` file here holds one value set: its name, OID, version
(``dateMaj`` of the NOS file), where it was read, and its concepts as
``[code, codeSystem, displayName]``. They are facts, not code: regenerate a
file from a newer NOS XML with::

    python -m mappings.xds.jdv.generate NOS_FILE.xml JDV_NAME SOURCE > mappings/xds/jdv/JDV_NAME.json

:func:`load` returns a :class:`ValueSet`; membership is by (code, codeSystem),
as the DMP checks it (DOMAIN.md §5.4).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources

from lxml import etree

__all__ = ["ValueSet", "from_nos_xml", "load"]


@dataclasses.dataclass(frozen=True, slots=True)
class ValueSet:
    """One JDV: its concepts by (code, code system), with display names."""

    name: str
    oid: str
    version: str
    source: str
    concepts: dict[tuple[str, str], str]

    def __contains__(self, key: object) -> bool:
        return key in self.concepts

    def display(self, code: str, system: str) -> str:
        return self.concepts.get((code, system), "")

    @property
    def systems(self) -> frozenset[str]:
        return frozenset(system for _, system in self.concepts)


@functools.cache
def load(name: str) -> ValueSet:
    """The value set shipped as ``<name>.json`` in this package."""
    data = json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return ValueSet(
        name=data["name"],
        oid=data["oid"],
        version=data["version"],
        source=data["source"],
        concepts={(c, s): d for c, s, d in data["concepts"]},
    )


def from_nos_xml(xml: bytes, name: str, source: str) -> dict[str, object]:
    """The JSON form of a NOS ``RetrieveValueSetResponse`` file (comments, i.e. withdrawn codes, skipped)."""
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True))
    vs = root.find(".//ValueSet")
    if vs is None:
        raise ValueError("not a NOS RetrieveValueSetResponse")
    concepts = [[c.get("code"), c.get("codeSystem"), c.get("displayName")] for c in vs.iter("Concept")]
    return {
        "name": name,
        "oid": vs.get("id", ""),
        "version": vs.get("dateMaj", ""),
        "source": source,
        "concepts": concepts,
    }
