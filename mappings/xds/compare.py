"""Compare the structure of two ITI-41 requests, metadata point by metadata point.

A *point* is one thing a registry reads: a slot of an object, a coded
classification with its coding scheme, an external identifier, an
association between two kinds of objects, a VIHF attribute. Values are left
out (they differ per patient and document); coding schemes, fixed codes of
the lot signature and the VIHF's AuthnContextClassRef are kept, because the
DMP checks them.

Used by the test that holds our requests against the ANS request to the DMP
test platform (ansforge/DRIM-M_DATA ``informatif/XDS/publication.xml``), and
as a tool on two files (SOAP envelopes, or MTOM requests as captured)::

    python -m mappings.xds.compare OURS.xml REFERENCE.xml
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

from lxml import etree

from mappings.xds.ebrim import DE, IDENTIFIER_NAMES, SCHEME_NAMES, read_submission
from mappings.xml import parse_xml

__all__ = ["missing_points", "points_of"]

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
_SIGNATURE_CLASS = "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"
_FIXED = {"classCode", "typeCode", "formatCode"}  # fixed codes on the lot signature entry (IHE DSG)


def _kind(obj: object) -> str:
    klass = obj.code(DE.CLASS_CODE)  # type: ignore[attr-defined]
    if getattr(obj, "kind", "") == "submission_set":
        return "SubmissionSet"
    return "Signature" if klass is not None and klass.code == _SIGNATURE_CLASS else "DocumentEntry"


def points_of(envelope_or_body: etree._Element) -> set[str]:
    """Every metadata point of one request (a SOAP Envelope, or the ProvideAndRegister body alone)."""
    body = next(envelope_or_body.iter("{urn:ihe:iti:xds-b:2007}ProvideAndRegisterDocumentSetRequest"), None)
    if body is None:
        raise ValueError("no ProvideAndRegisterDocumentSetRequest")
    parsed = read_submission(body)
    points: set[str] = set()
    kinds: dict[str, str] = {}
    for obj in [*parsed.submission_sets, *parsed.entries]:
        kind = _kind(obj)
        kinds[obj.id] = kind
        points.update(f"{kind} slot {name}" for name in obj.slots)
        for scheme, name in SCHEME_NAMES.items():
            for c in obj.codes(scheme):
                if name == "author":
                    points.update(f"{kind} author {slot}" for slot in c.slots)
                    continue
                point = f"{kind} {name} [{c.coding_scheme}]"
                if kind == "Signature" and name in _FIXED:
                    point += f" = {c.code}"
                points.add(point)
        for scheme in obj.identifiers:
            points.add(f"{kind} identifier {IDENTIFIER_NAMES.get(scheme, scheme)}")
        if kind == "DocumentEntry":
            points.add(f"DocumentEntry mimeType {obj.mime_type}")
    for a in parsed.associations:
        points.add(f"association {a.type.rsplit(':', 1)[-1]} {kinds.get(a.source, '?')} -> {kinds.get(a.target, '?')}")
    for assertion in envelope_or_body.iter(f"{{{SAML}}}Assertion"):
        points.update(f"VIHF attribute {a.get('Name')}" for a in assertion.iter(f"{{{SAML}}}Attribute"))
        ref = assertion.findtext(f".//{{{SAML}}}AuthnContextClassRef")
        if ref:
            points.add(f"VIHF AuthnContextClassRef {ref.strip()}")
        if assertion.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID") is not None:
            points.add("VIHF Subject/NameID")
    return points


def missing_points(ours: Iterable[str], reference: Iterable[str]) -> list[str]:
    """The reference's points that ours lacks, sorted."""
    return sorted(set(reference) - set(ours))


def _root_of(data: bytes) -> etree._Element:
    """The SOAP envelope of a file: plain XML, or the first XML part of a captured MTOM request."""
    start = data.find(b"<soap:Envelope")
    if start < 0:
        start = data.find(b"<")
    end = data.find(b"Envelope>", start)
    chunk = data[start : end + len(b"Envelope>")] if end > 0 else data[start:]
    # A capture may declare prefixes on the first line only; keep what parses.
    chunk = re.sub(rb"^\s+", b"", chunk)
    return parse_xml(chunk)


def main(argv: list[str]) -> int:  # pragma: no cover - command-line wrapper
    ours_path, ref_path = argv[:2]
    with open(ours_path, "rb") as fh:
        ours = points_of(_root_of(fh.read()))
    with open(ref_path, "rb") as fh:
        reference = points_of(_root_of(fh.read()))
    common = ours & reference
    print(f"{len(common)} of {len(reference)} reference points present")
    for point in missing_points(ours, reference):
        print(f"missing: {point}")
    for point in sorted(ours - reference):
        print(f"extra:   {point}")
    return 0 if not missing_points(ours, reference) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
