"""The CDA R2 document structure: ClinicalDocument's children, their order and cardinality.

Written from the CDA R2 normative structure (HL7 CDA R2, POCD_MT000040.ClinicalDocument: the header
participations and acts in their fixed order, then one `component`). The normative XSD is HL7's and
no package we may depend on ships it, so this checks what a schema check of the top level would
catch: unknown elements, elements out of order, missing or repeated ones. The CI-SIS header rules
(`mappings.cda.header`) check the content.
"""

from __future__ import annotations

from lxml import etree

from mappings.cda.header import Violation

__all__ = ["CLINICAL_DOCUMENT_CHILDREN", "check_structure"]

_V3 = "urn:hl7-org:v3"

#: (element, minimum, maximum or None for unbounded), in the order CDA R2 fixes.
CLINICAL_DOCUMENT_CHILDREN: tuple[tuple[str, int, int | None], ...] = (
    ("realmCode", 0, None),
    ("typeId", 1, 1),
    ("templateId", 0, None),
    ("id", 1, 1),
    ("code", 1, 1),
    ("title", 0, 1),
    ("sdtc:statusCode", 0, 1),
    ("effectiveTime", 1, 1),
    ("confidentialityCode", 1, 1),
    ("languageCode", 0, 1),
    ("setId", 0, 1),
    ("versionNumber", 0, 1),
    ("copyTime", 0, 1),
    ("recordTarget", 1, None),
    ("author", 1, None),
    ("dataEnterer", 0, 1),
    ("informant", 0, None),
    ("custodian", 1, 1),
    ("informationRecipient", 0, None),
    ("legalAuthenticator", 0, 1),
    ("authenticator", 0, None),
    ("participant", 0, None),
    ("inFulfillmentOf", 0, None),
    ("documentationOf", 0, None),
    ("relatedDocument", 0, None),
    ("authorization", 0, None),
    ("componentOf", 0, 1),
    ("component", 1, 1),
)
_ORDER = {name: i for i, (name, _, _) in enumerate(CLINICAL_DOCUMENT_CHILDREN)}
_SDTC = "urn:hl7-org:sdtc"


def _name(el: etree._Element) -> str | None:
    q = etree.QName(el)
    if q.namespace == _V3:
        return q.localname
    if q.namespace == _SDTC:
        return f"sdtc:{q.localname}"
    return None


def check_structure(root: etree._Element) -> list[Violation]:
    """Violations of the ClinicalDocument top-level structure; an empty list means it conforms."""
    out: list[Violation] = []
    if etree.QName(root).namespace != _V3 or etree.QName(root).localname != "ClinicalDocument":
        return [Violation("cda-root", "/", "the root element is not {urn:hl7-org:v3}ClinicalDocument")]
    counts: dict[str, int] = {}
    last = -1
    for child in root:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        name = _name(child)
        where = f"/ClinicalDocument/{etree.QName(child).localname}"
        if name is None or name not in _ORDER:
            out.append(Violation("cda-unknown-element", where, "element not allowed in ClinicalDocument (CDA R2)"))
            continue
        position = _ORDER[name]
        if position < last:
            out.append(Violation("cda-order", where, "element out of the order CDA R2 fixes for ClinicalDocument"))
        last = max(last, position)
        counts[name] = counts.get(name, 0) + 1
    for name, low, high in CLINICAL_DOCUMENT_CHILDREN:
        n = counts.get(name, 0)
        where = f"/ClinicalDocument/{name.removeprefix('sdtc:')}"
        if n < low:
            out.append(Violation("cda-cardinality", where, f"required at least {low} time(s) by CDA R2"))
        if high is not None and n > high:
            out.append(Violation("cda-cardinality", where, f"allowed at most {high} time(s) by CDA R2"))
    return out
