"""DMP value sets (JDV) shipped as data, generated from the files the ANS publishes.

Each ``JDV_*.json`` file here holds one value set: its name, OID, version
(``dateMaj`` of the NOS file, or the FHIR ``version`` of the ANS terminology
server resource), where it was read, and its concepts as ``[code, codeSystem,
displayName]``. Each ``ASS_*.json`` holds one correspondence table (NOS
"table d'association") as ``[sourceCode, sourceSystem, targetCode,
targetSystem]`` rows. They are facts, not code: regenerate a file from a newer
published file with::

    python -m mappings.xds.jdv.generate SOURCE_FILE NAME WHERE > mappings/xds/jdv/NAME.json

where SOURCE_FILE is a NOS ``RetrieveValueSetResponse`` XML (``.xml``; a value
set, or an ASS table of ``MappedConcept`` pairs) or the ANS FSH export of a
value set (``.fsh``, as kept in the IG-terminologie-de-sante repository).

:func:`load` returns a :class:`ValueSet`; membership is by (code, codeSystem),
as the DMP checks it (DOMAIN.md §5.4). :func:`load_map` returns a
:class:`Correspondence`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from importlib import resources

from lxml import etree

__all__ = ["Correspondence", "ValueSet", "from_fsh_value_set", "from_nos_xml", "load", "load_map"]


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


@dataclasses.dataclass(frozen=True, slots=True)
class Correspondence:
    """One NOS correspondence table (ASS): each source (code, code system) to its target (code, code system)."""

    name: str
    oid: str
    version: str
    source: str
    rows: dict[tuple[str, str], tuple[str, str]]

    def target(self, code: str, system: str) -> tuple[str, str] | None:
        """The target of (code, system), or None when the table has no row for it."""
        return self.rows.get((code, system))


@functools.cache
def load_map(name: str) -> Correspondence:
    """The correspondence table shipped as ``<name>.json`` in this package."""
    data = json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return Correspondence(
        name=data["name"],
        oid=data["oid"],
        version=data["version"],
        source=data["source"],
        rows={(c, s): (tc, ts) for c, s, tc, ts in data["rows"]},
    )


def from_nos_xml(xml: bytes, name: str, source: str) -> dict[str, object]:
    """The JSON form of a NOS ``RetrieveValueSetResponse`` file (comments, i.e. withdrawn codes, skipped).

    A value set gives ``concepts``; an ASS table (``MappedConcept`` pairs, source then target) gives ``rows``.
    """
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True))
    vs = root.find(".//{*}ValueSet")
    if vs is None:
        raise ValueError("not a NOS RetrieveValueSetResponse")
    out: dict[str, object] = {"name": name, "oid": vs.get("id", ""), "version": vs.get("dateMaj", ""), "source": source}
    pairs = [list(m.iter("{*}Concept")) for m in vs.iter("{*}MappedConcept")]
    if pairs:
        out["rows"] = [[s.get("code"), s.get("codeSystem"), t.get("code"), t.get("codeSystem")] for s, t in pairs]
    else:
        out["concepts"] = [[c.get("code"), c.get("codeSystem"), c.get("displayName")] for c in vs.iter("{*}Concept")]
    return out


# The code systems the DMP value sets draw from: NOS FSH alias -> OID (the codeSystem written in XDS metadata).
FSH_SYSTEMS = {
    "TRE-A00-ProducteurDocNonPS": "1.2.250.1.213.1.1.4.6",
    "TRE-A03-ClasseDocument": "1.2.250.1.213.1.1.4.1",
    "TRE-A06-FormatCodeComplementaire": "1.2.250.1.213.1.1.4.2.282",
    "TRE-A07-StatutVisibiliteDocument": "1.2.250.1.213.1.1.4.13",
    # TRE_A08 is HL7 Confidentiality: XDS metadata writes the HL7 OID (DOMAIN.md §5.1).
    "TRE-A08-HL7Confidentiality": "2.16.840.1.113883.5.25",
    "TRE-A05-TypeDocComplementaire": "1.2.250.1.213.1.1.4.12",
    "TRE-A11-IheFormatCode": "1.3.6.1.4.1.19376.1.2.3",
    # TRE_A12 (ASTM) codes are written with the code system "ASTM", as the NOS files write them (ASS_X04).
    "TRE-A12-NomenclatureASTM": "ASTM",
    "LNC": "2.16.840.1.113883.6.1",
    "dcmuid": "1.2.840.10008.2.6.1",
    # TRE_A10 codes (URNs) are written with the code system "URN", as the NOS files write them (ASS_X04).
    "TRE-A10-NomenclatureURN": "URN",
    "TRE-R02-SecteurActivite": "1.2.250.1.71.4.2.4",
    "TRE-R209-TypeActivite": "1.2.250.1.213.2.2",
    "TRE-R276-FormeActivite": "1.2.250.1.213.1.6.1.128",
}
_FSH_CONCEPT = re.compile(r'^\* \$([\w-]+)#(\S+) "(.*)"\s*$')
_FSH_FIELD = re.compile(r'^\* \^(version|identifier\.value) = "(.*)"\s*$')


def from_fsh_value_set(text: str, name: str, source: str) -> dict[str, object]:
    """The JSON form of an ANS FSH value set export (``* $ALIAS#code "display"`` lines, ``^version``)."""
    fields: dict[str, str] = {}
    concepts: list[list[str]] = []
    for line in text.splitlines():
        if m := _FSH_FIELD.match(line):
            fields[m[1]] = m[2]
        elif m := _FSH_CONCEPT.match(line):
            if m[1] not in FSH_SYSTEMS:
                raise ValueError(f"unknown code system alias {m[1]}")
            concepts.append([m[2], FSH_SYSTEMS[m[1]], m[3]])
    if not concepts or "version" not in fields:
        raise ValueError("not an FSH ValueSet with concepts and a version")
    oid = fields.get("identifier.value", "").removeprefix("urn:oid:")
    return {"name": name, "oid": oid, "version": fields["version"], "source": source, "concepts": concepts}
