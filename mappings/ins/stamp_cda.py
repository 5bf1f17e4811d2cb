"""Stamp a qualified INS identity into a CDA R2 header (CI-SIS, DOMAIN.md §3.2).

Only ``/ClinicalDocument/recordTarget/patientRole`` changes:

=====================================  ===========================================================
``id``                                 one ``<id root="<INS OID>" extension="<INS>"/>``, at the place
                                       of the first INS-root id (else first); other INS-root ids are
                                       removed, local ids (IPP, root = facility OID) are kept
``patient/name``                       ``family@BR`` (birth name), ``given`` without qualifier (the
                                       birth given-name list), ``given@BR`` (first birth given name),
                                       then ``family@CL`` / ``given@CL`` when the identity has a used
                                       name (else the document's own CL parts are kept); prefix and
                                       suffix are kept; other ``name`` elements are removed (CI-SIS:
                                       exactly one)
``patient/administrativeGenderCode``   F / M / UN with JDV_J143 display names
``patient/birthTime``                  ``YYYYMMDD`` (a longer TS with the same date is kept)
``patient/birthplace/place/addr/county``  the INSEE (COG) code; an addr already holding that code
                                       is kept as is, else it is reduced to the county
=====================================  ===========================================================

The document is parsed with `mappings.xml.parse_xml` (the project's only XML
entry point) and serialised with its own XML declaration, prolog comments and
processing instructions; new elements take the indentation of their siblings.
"""

from __future__ import annotations

from lxml import etree

from hub.errors import MappingError, ParseError
from hub.identity import INS_ROOTS, InsPolicy, Sex
from mappings.ins.stamp import Stamped, StampIdentity, require_stampable, stamp_metadata
from mappings.xml import parse_xml

__all__ = ["stamp_cda"]

_NS = "urn:hl7-org:v3"
_H = "{" + _NS + "}"
_ROLE = "/ClinicalDocument/recordTarget/patientRole"

# JDV_J143_AdministrativeGender_CISIS (1.2.250.1.213.1.1.5.590): UN, not U (DOMAIN.md §3.1).
_GENDER = {Sex.FEMALE: ("F", "Féminin"), Sex.MALE: ("M", "Masculin"), Sex.UNKNOWN: ("UN", "Inconnu")}
_GENDER_SYSTEM = "2.16.840.1.113883.5.1"

# CDA R2 POCD_MT000040.Patient content model (sdtc extensions by local name), for inserting a missing child.
_PATIENT_ORDER = (
    "id", "name", "administrativeGenderCode", "birthTime", "deceasedInd", "deceasedTime", "multipleBirthInd",
    "multipleBirthOrderNumber", "maritalStatusCode", "religiousAffiliationCode", "raceCode", "ethnicGroupCode",
    "guardian", "birthplace", "languageCommunication",
)  # fmt: skip


def stamp_cda(body: bytes, identity: StampIdentity, *, policy: InsPolicy | None = None) -> Stamped:
    """Write ``identity`` into the recordTarget of a CDA R2 document; return the new bytes and the metadata.

    Raises `hub.errors.MappingError` when the identity may not be stamped (see
    `mappings.ins.stamp`) or the document has no recordTarget/patientRole/patient;
    `hub.errors.ParseError` (or `TooLarge`) when the bytes are not safe XML or
    not a ClinicalDocument.
    """
    require_stampable(identity, policy)
    root = parse_xml(body)
    if root.tag != _H + "ClinicalDocument":
        raise ParseError("not a CDA R2 document: root is not hl7:ClinicalDocument", location="/")
    role = root.find(f"{_H}recordTarget/{_H}patientRole")
    patient = role.find(_H + "patient") if role is not None else None
    if role is None or patient is None:
        raise MappingError("no recordTarget/patientRole/patient to stamp", location=_ROLE)

    _stamp_ids(role, identity)
    _stamp_name(patient, identity)
    _stamp_gender(patient, identity.traits.sex)
    _stamp_birth_time(patient, identity.traits.birth_date.strftime("%Y%m%d"))
    _stamp_birthplace(patient, identity.traits.birthplace_code)
    return Stamped(_serialise(root, bytes(body)), stamp_metadata(identity))


# --------------------------------------------------------------------------- tree editing helpers


def _ws(text: str | None) -> str | None:
    """``text`` when it is indentation (whitespace only), else None."""
    return text if text is not None and not text.strip() else None


def _indent_of(el: etree._Element) -> str | None:
    """The whitespace before ``el`` (its previous sibling's tail, or its parent's text)."""
    prev = el.getprevious()
    if prev is not None:
        return _ws(prev.tail)
    parent = el.getparent()
    return _ws(parent.text) if parent is not None else None


def _child_indent(parent: etree._Element) -> str | None:
    """Indentation for a child of ``parent``: a child element's, else one level deeper than the parent's."""
    for child in parent:
        if isinstance(child.tag, str):
            return _indent_of(child)
    own = _indent_of(parent)
    if own is None or "\n" not in own:
        return None
    step = "\t" if own.endswith("\t") else "  "
    return own + step


def _insert(parent: etree._Element, index: int, el: etree._Element) -> None:
    """Insert ``el`` at ``index`` among ``parent``'s children, with the siblings' indentation.

    Layout model: ``parent.text`` is the whitespace before the first child,
    each child's tail the whitespace before the next one, the last child's
    tail the parent's closing indentation.
    """
    indent = _child_indent(parent)
    if index < len(parent):
        el.tail = indent
        parent.insert(index, el)
        return
    if len(parent):
        last = parent[-1]
        el.tail, last.tail = last.tail, indent
    else:
        if parent.text is None or _ws(parent.text) is not None:
            parent.text = indent
        el.tail = _indent_of(parent)
    parent.append(el)


def _remove(el: etree._Element) -> None:
    """Remove ``el``, keeping the layout: the whitespace before it survives, its own tail goes."""
    parent = el.getparent()
    if parent is None:
        raise ValueError("the root element cannot be removed")
    prev = el.getprevious()
    if el.tail and el.tail.strip():
        # Text after the element (mixed content) is kept on whatever precedes it.
        if prev is not None:
            prev.tail = (prev.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    elif el is parent[-1]:
        # The last child's tail is the parent's closing indentation: hand it to the new last child.
        if prev is not None:
            prev.tail = el.tail
        elif _ws(parent.text) is not None:
            parent.text = None
    parent.remove(el)


def _new(tag: str, attrib: dict[str, str] | None = None, text: str | None = None) -> etree._Element:
    el = etree.Element(_H + tag, attrib or {})
    el.text = text
    return el


def _patient_index(patient: etree._Element, tag: str) -> int:
    """Where a missing ``tag`` goes among the patient's children (CDA content model order)."""
    rank = _PATIENT_ORDER.index(tag)
    for i, child in enumerate(patient):
        name = etree.QName(child).localname if isinstance(child.tag, str) else ""
        if name in _PATIENT_ORDER and _PATIENT_ORDER.index(name) > rank:
            return i
    return len(patient)


def _one_child(patient: etree._Element, tag: str) -> etree._Element:
    """The first ``tag`` child of ``patient`` (others removed), created at its schema place if absent."""
    found = patient.findall(_H + tag)
    for extra in found[1:]:
        _remove(extra)
    if found:
        return found[0]
    el = _new(tag)
    _insert(patient, _patient_index(patient, tag), el)
    return el


# --------------------------------------------------------------------------- the stamped elements


def _stamp_ids(role: etree._Element, identity: StampIdentity) -> None:
    ids = role.findall(_H + "id")
    ins_ids = [i for i in ids if i.get("root") in INS_ROOTS and i.get("nullFlavor") is None]
    first = ins_ids[0] if ins_ids else None
    # DOMAIN.md §3.2: root = INS OID, extension = the 15-character matricule.
    new = _new("id", {"root": identity.ins_oid, "extension": identity.ins})
    if first is not None:
        index = role.index(first)
        new.tail = first.tail
        role.remove(first)
        role.insert(index, new)
        for other in ins_ids[1:]:
            _remove(other)
    else:
        _insert(role, role.index(ids[0]) if ids else 0, new)


def _stamp_name(patient: etree._Element, identity: StampIdentity) -> None:
    names = patient.findall(_H + "name")
    for extra in names[1:]:
        _remove(extra)
    if names:
        name = names[0]
    else:
        name = _new("name")
        _insert(patient, _patient_index(patient, "name"), name)
    traits = identity.traits
    # Schematron (DOMAIN.md §1.3, §3.2): family@BR, given without qualifier = the birth given-name
    # list, given@BR = the first one; CL = used family / given name. Order as in the ANS example.
    parts = [
        _new("family", {"qualifier": "BR"}, traits.birth_name),
        _new("given", None, traits.birth_given_names),
        _new("given", {"qualifier": "BR"}, traits.first_birth_given_name),
    ]
    if identity.used_family_name:
        parts.append(_new("family", {"qualifier": "CL"}, identity.used_family_name))
    if identity.used_given_name:
        parts.append(_new("given", {"qualifier": "CL"}, identity.used_given_name))
    old = [
        c for c in name if _local(c) in ("family", "given") and (identity.has_used_name or c.get("qualifier") != "CL")
    ]
    # New parts first (after any leading prefix, the civilité), old ones removed after, so that
    # the name never empties and keeps its indentation.
    index = next((i for i, c in enumerate(name) if _local(c) != "prefix"), len(name))
    for offset, part in enumerate(parts):
        _insert(name, index + offset, part)
    for child in old:
        _remove(child)


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _stamp_gender(patient: etree._Element, sex: Sex) -> None:
    code, display = _GENDER[sex]
    el = _one_child(patient, "administrativeGenderCode")
    for attribute in list(el.attrib):
        if attribute not in ("code", "displayName", "codeSystem", "codeSystemName"):
            del el.attrib[attribute]  # a nullFlavor or an old original text would contradict the code
    el.set("code", code)
    el.set("displayName", display)
    el.set("codeSystem", _GENDER_SYSTEM)


def _stamp_birth_time(patient: etree._Element, ymd: str) -> None:
    el = _one_child(patient, "birthTime")
    if (el.get("value") or "")[:8] != ymd:
        el.attrib.pop("nullFlavor", None)
        el.set("value", ymd)


def _stamp_birthplace(patient: etree._Element, code: str) -> None:
    birthplace = _one_child(patient, "birthplace")
    place = birthplace.find(_H + "place")
    if place is None:
        place = _new("place")
        _insert(birthplace, 0, place)
    addr = place.find(_H + "addr")
    if addr is None:
        addr = _new("addr")
        _insert(place, len(place), addr)
    counties = addr.findall(_H + "county")
    if len(counties) == 1 and (counties[0].text or "").strip() == code:
        return
    # A new code keeps nothing of the old birthplace (its city described another place).
    # DOMAIN.md §3.2: county = COG code.
    county = _new("county", None, code)
    _insert(addr, 0, county)
    for child in [c for c in addr if c is not county]:
        _remove(child)


def _root_start(data: bytes) -> int | None:
    """Offset of the root element's ``<`` in ASCII-compatible XML bytes (after XMLDecl, PIs, comments)."""
    i = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while i < len(data):
        if data[i : i + 1] in (b" ", b"\t", b"\r", b"\n"):
            i += 1
        elif data.startswith(b"<?", i):
            end = data.find(b"?>", i)
            if end < 0:
                return None
            i = end + 2
        elif data.startswith(b"<!--", i):
            end = data.find(b"-->", i)
            if end < 0:
                return None
            i = end + 3
        else:
            return i if data.startswith(b"<", i) else None
    return None


def _serialise(root: etree._Element, original: bytes) -> bytes:
    """The stamped tree as bytes, keeping the original's prolog and epilog byte for byte.

    The XML declaration, the comments and processing instructions around the
    root (an ``xml-stylesheet`` PI in the ANS examples) are copied from the
    input; only the root element is serialised by lxml, which keeps element
    content and whitespace but not the layout inside tags (attribute order is
    kept, attribute line breaks are not: the infoset is the same).
    """
    encoding = root.getroottree().docinfo.encoding or "UTF-8"
    start = _root_start(original) if not encoding.upper().startswith("UTF-16") else None
    qname = etree.QName(root)
    end_tag = f"</{root.prefix + ':' if root.prefix else ''}{qname.localname}".encode("ascii")
    end = original.rfind(end_tag)
    close = original.find(b">", end) if end >= 0 else -1
    if start is None or close < 0:
        return etree.tostring(root.getroottree(), encoding=encoding, xml_declaration=True)
    return original[:start] + etree.tostring(root, encoding=encoding, xml_declaration=False) + original[close + 1 :]
