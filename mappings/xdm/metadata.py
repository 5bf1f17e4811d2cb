"""METADATA.XML of an IHE XDM archive: read it (any sender), write it (what the hub sends).

An XDM subset's METADATA.XML is an XDS ``lcm:SubmitObjectsRequest`` (IHE ITI
TF-1 §16, ITI TF-3 §4.2) whose DocumentEntries carry a ``URI`` slot naming the
document file; MSSanté receivers identify the patient from ``patientId``
(DOMAIN.md §6).

:func:`read_metadata` is namespace-agnostic on purpose: elements are matched
on their local names (``ExtrinsicObject``, ``Slot``...) and schemes on the
XDS UUIDs (ITI TF-3 Table 4.2.5-1), so a sender that declares the ebRIM
namespace under an unusual prefix, or forgets it (one ANS sample does),
still reads. The tree must come from :func:`mappings.xml.parse_xml`.

:func:`build_metadata` writes one SubmissionSet and one DocumentEntry per
document, from the CDA header. The values follow the hub's XDS.b builder
(:mod:`mappings.xds.metadata`) where the DMP and XDM agree, without the
DMP-only requirements: a patient without an INS is written with its local
id (``^PI``), since an INS is optional for MSSanté-only exchange
(DOMAIN.md §3.3). The SubmissionSet carries ``intendedRecipient`` (the mail
recipients, XTN ``^^Internet^address``), the XDM-specific attribute
(ITI TF-3 §4.2.3.3.7).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping, Sequence

from lxml import etree
from pydantic import Field

from hub.errors import MessageError
from hub.identity import INS_ROOTS
from hub.registry import ComponentConfig
from mappings.cda import read_cda_header
from mappings.xdm.archive import XdmError
from mappings.xds import hl7
from mappings.xds.ebrim import DE, HAS_MEMBER, NS, SS, RimWriter, q
from mappings.xml import parse_xml
from mappings.xml.text import collapsed_text

__all__ = ["DocumentMeta", "XdmCode", "XdmMetadataConfig", "XdmSubmission", "build_metadata", "read_metadata"]

_H = "{urn:hl7-org:v3}"
CONFIDENTIALITY_SCHEME = "2.16.840.1.113883.5.25"
VISIBILITY_SCHEME = "1.2.250.1.213.1.1.4.13"
"""TRE_A07 (DMP/MSSanté masking and visibility codes: MASQUE_PS, INVISIBLE_PATIENT...)."""
_VISIBILITY_DISPLAY = {
    "INVISIBLE_PATIENT": "Non visible par le patient",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "Non visible par les représentants légaux du patient",
    "MASQUE_PS": "Masqué aux professionnels de santé",
}
_CONFIDENTIALITY_DISPLAY = {"N": "Normal", "R": "Restreint", "V": "Très restreint"}
_NS_DOC = uuid.uuid5(uuid.NAMESPACE_URL, "urn:interop-hub:xdm:document-entry")
_NS_SET = uuid.uuid5(uuid.NAMESPACE_URL, "urn:interop-hub:xdm:submission-set")
_XDS_SD_PDF = ("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "Document à corps non structuré en Pdf/A-1")


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True, slots=True)
class DocumentMeta:
    """One DocumentEntry of a METADATA.XML, as read (values are ``""`` when absent)."""

    entry_id: str
    mime_type: str
    uri: str
    hash: str
    size: str
    unique_id: str
    patient_id: str
    source_patient_id: str
    title: str
    type_code: str
    type_code_scheme: str
    confidentiality: tuple[tuple[str, str], ...]
    """(code, coding scheme) pairs: HL7 N/R/V and TRE_A07 visibility codes."""

    def __repr__(self) -> str:
        return f"DocumentMeta(entry_id={self.entry_id!r}, mime_type={self.mime_type!r})"


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if _local(c) == name]


def _slots(el: etree._Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for slot in _children(el, "Slot"):
        values = [v.text or "" for vl in _children(slot, "ValueList") for v in _children(vl, "Value")]
        out.setdefault(slot.get("name", ""), []).extend(values)
    return out


def _localized(el: etree._Element, child: str) -> str:
    for holder in _children(el, child):
        for ls in _children(holder, "LocalizedString"):
            return ls.get("value", "")
    return ""


def read_metadata(root: etree._Element) -> list[DocumentMeta]:
    """The DocumentEntries (rim:ExtrinsicObject) of a METADATA.XML tree, in document order.

    Raises :class:`XdmError` when the root is not a SubmitObjectsRequest (or
    a RegistryObjectList) or when it holds no DocumentEntry.
    """
    if _local(root) not in ("SubmitObjectsRequest", "RegistryObjectList", "ProvideAndRegisterDocumentSetRequest"):
        raise XdmError("METADATA.XML is not an XDS SubmitObjectsRequest")
    out: list[DocumentMeta] = []
    for eo in root.iter():
        if _local(eo) != "ExtrinsicObject":
            continue
        slots = _slots(eo)
        codes: dict[str, list[tuple[str, str]]] = {}
        for c in _children(eo, "Classification"):
            scheme = c.get("classificationScheme", "")
            coding = (_slots(c).get("codingScheme") or [""])[0]
            codes.setdefault(scheme, []).append((c.get("nodeRepresentation", ""), coding))
        ids = {e.get("identificationScheme", ""): e.get("value", "") for e in _children(eo, "ExternalIdentifier")}
        type_code = (codes.get(DE.TYPE_CODE) or [("", "")])[0]
        out.append(
            DocumentMeta(
                entry_id=eo.get("id", ""),
                mime_type=eo.get("mimeType", ""),
                uri=(slots.get("URI") or [""])[0],
                hash=(slots.get("hash") or [""])[0].lower(),
                size=(slots.get("size") or [""])[0],
                unique_id=ids.get(DE.UNIQUE_ID, ""),
                patient_id=ids.get(DE.PATIENT_ID, ""),
                source_patient_id=(slots.get("sourcePatientId") or [""])[0],
                title=_localized(eo, "Name"),
                type_code=type_code[0],
                type_code_scheme=type_code[1],
                confidentiality=tuple(codes.get(DE.CONFIDENTIALITY_CODE, [])),
            )
        )
    if not out:
        raise XdmError("METADATA.XML has no DocumentEntry")
    return out


# --------------------------------------------------------------------------- writing


class XdmCode(ComponentConfig):
    """A coded XDS value: code, coding scheme OID, display name."""

    code: str = Field(min_length=1, description="The code (nodeRepresentation).")
    coding_scheme: str = Field(min_length=1, description="OID of the code system (codingScheme slot).")
    display_name: str = Field(min_length=1, description="Display name (the Classification's Name).")


class XdmMetadataConfig(ComponentConfig):
    """What the hub adds to the CDA header to write an XDM METADATA.XML."""

    source_id: str = Field(
        "2.25.1", pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$", description="XDSSubmissionSet.sourceId: OID of the hub."
    )
    content_type_code: XdmCode | None = Field(
        None, description="SubmissionSet contentTypeCode (TRE_R209); unset: the first document's typeCode."
    )
    class_codes: dict[str, XdmCode] = Field(
        default_factory=dict,
        description="classCode per CDA typeCode (ASS_X04); a type not listed uses its typeCode as classCode.",
    )
    format_codes: dict[str, XdmCode] = Field(
        default_factory=dict,
        description="formatCode per CDA typeCode; unset: XDS-SD PDF for a PDF level-1 body, else "
        "`urn:ihe:iti:xds:2017:mimeTypeSufficient`.",
    )
    institution_name: str = Field("", description="Name of the sending structure (SubmissionSet authorInstitution).")
    institution_id: str = Field("", description="idNat_Struct of the sending structure (XON-10).")


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class XdmSubmission:
    """One document to put in an XDM subset: its bytes, file name and (optional) visibility codes."""

    data: bytes
    file_name: str
    visibility: tuple[str, ...] = ()
    """TRE_A07 codes (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX)."""


def _first(el: etree._Element | None, path: str) -> etree._Element | None:
    return None if el is None else el.find(path.replace("h:", _H))


def _dtm(ts: str | None) -> str:
    try:
        return hl7.hl7_ts_to_dtm(ts) if ts else ""
    except ValueError:
        return ""


def _person_xcn(entity: etree._Element | None) -> str:
    ident = _first(entity, "h:id")
    if ident is None or not ident.get("root"):
        return ""
    person = _first(entity, "h:assignedPerson/h:name")
    root = ident.get("root", "")
    return hl7.xcn(
        ident.get("extension", ""),
        collapsed_text(_first(person, "h:family")),
        collapsed_text(_first(person, "h:given")),
        root,
        id_type="IDNPS" if root == "1.2.250.1.71.4.2.1" else "EI",
    )


def _organization_xon(org: etree._Element | None) -> str:
    ident = _first(org, "h:id")
    if ident is None or not ident.get("root") or not ident.get("extension"):
        return ""
    return hl7.xon(collapsed_text(_first(org, "h:name")), ident.get("root", ""), ident.get("extension", ""))


def _source_patient_info(doc: etree._Element) -> list[str]:
    patient = _first(doc, "h:recordTarget/h:patientRole/h:patient")
    name = _first(patient, "h:name")
    families = [f for f in (name.findall(_H + "family") if name is not None else []) if f.get("qualifier") == "BR"]
    givens = name.findall(_H + "given") if name is not None else []
    first = next((collapsed_text(g) for g in givens if g.get("qualifier") == "BR"), "")
    out: list[str] = []
    if families or first:
        family = collapsed_text(families[0]) if families else ""
        out.append(f"PID-5|{hl7.escape(family)}^{hl7.escape(first)}^^^^^L")
    birth = _first(patient, "h:birthTime")
    if birth is not None and birth.get("value"):
        out.append(f"PID-7|{birth.get('value', '')[:8]}")
    gender = _first(patient, "h:administrativeGenderCode")
    sex = {"F": "F", "M": "M", "UN": "U"}.get(gender.get("code", "") if gender is not None else "")
    if sex:
        out.append(f"PID-8|{sex}")
    return out


class _Writer(RimWriter):
    def code(self, parent: etree._Element, scheme: str, code: str, coding: str, display: str) -> None:
        c = etree.SubElement(
            parent,
            q("rim", "Classification"),
            classificationScheme=scheme,
            classifiedObject=parent.get("id", ""),
            id=self.next_id("cl"),
            nodeRepresentation=code,
        )
        self.slot(c, "codingScheme", [coding])
        self.localized(c, "Name", display or code)

    def author(self, parent: etree._Element, scheme: str, person: str, institution: str) -> None:
        # ITI TF-3 §4.2.3.1.4: an author is a Classification with an empty nodeRepresentation.
        c = etree.SubElement(
            parent,
            q("rim", "Classification"),
            classificationScheme=scheme,
            classifiedObject=parent.get("id", ""),
            id=self.next_id("cl"),
            nodeRepresentation="",
        )
        if person:
            self.slot(c, "authorPerson", [person])
        if institution:
            self.slot(c, "authorInstitution", [institution])


def _patient_cx(header: Mapping[str, str]) -> str:
    # DOMAIN.md §9.2: in XDS the INS is a CX with CX-5 "NH" and an empty HD namespace.
    if header.get("ins") and header.get("ins_oid") in INS_ROOTS:
        return hl7.cx(header["ins"], header["ins_oid"], "NH")
    if header.get("ipp") and header.get("ipp_oid"):
        return hl7.cx(header["ipp"], header["ipp_oid"], "PI")
    raise XdmError("the document names no patient identifier (recordTarget/patientRole/id)")


@dataclasses.dataclass(frozen=True)
class _Entry:
    """What the SubmissionSet takes from one DocumentEntry."""

    entry_uuid: str
    patient: str
    author: str
    type_code: tuple[str, str, str]


def _document_entry(
    w: _Writer, rol: etree._Element, submission: XdmSubmission, config: XdmMetadataConfig, submission_id: str
) -> _Entry:
    """The ExtrinsicObject (XDSDocumentEntry) of one CDA document, appended to the RegistryObjectList."""
    try:
        doc = parse_xml(submission.data)
        header = read_cda_header(doc)
    except MessageError as exc:
        raise XdmError(f"a document is not a usable CDA: {exc.reason}") from None
    patient = _patient_cx(header)
    unique_id = header.get("unique_id", "")
    if not unique_id:
        raise XdmError("a document has no ClinicalDocument/id (XDS uniqueId)")
    entry_uuid = f"urn:uuid:{uuid.uuid5(_NS_DOC, submission_id + '|' + unique_id)}"
    eo = etree.SubElement(
        rol, q("rim", "ExtrinsicObject"), id=entry_uuid, mimeType="text/xml", objectType=DE.OBJECT_TYPE_STABLE
    )
    # Slots, then Name, Classifications and ExternalIdentifiers (ebRIM RegistryObjectType order).
    _entry_slots(w, eo, submission, doc, header, patient)
    w.localized(eo, "Name", header.get("title") or header.get("type_display_name") or "Document")
    author = _first(doc, "h:author/h:assignedAuthor")
    person = _person_xcn(author)
    w.author(eo, DE.AUTHOR, person, _organization_xon(_first(author, "h:representedOrganization")))
    type_code = header.get("type_code", "")
    type_scheme = header.get("type_code_system", "")
    type_display = header.get("type_display_name") or header.get("title") or type_code
    if not type_code or not type_scheme:
        raise XdmError("a document has no ClinicalDocument/code (XDS typeCode)")
    _entry_codes(w, eo, submission, doc, header, config)
    w.code(eo, DE.TYPE_CODE, type_code, type_scheme, type_display)
    w.identifier(eo, DE.PATIENT_ID, patient, "XDSDocumentEntry.patientId")
    w.identifier(eo, DE.UNIQUE_ID, unique_id, "XDSDocumentEntry.uniqueId")
    return _Entry(entry_uuid, patient, person, (type_code, type_scheme, type_display))


def _entry_slots(
    w: _Writer,
    eo: etree._Element,
    submission: XdmSubmission,
    doc: etree._Element,
    header: dict[str, str],
    patient: str,
) -> None:
    """The DocumentEntry's slots, in name order as ebRIM writes them."""
    if created := _dtm(header.get("effective_time")):
        w.slot(eo, "creationTime", [created])
    w.slot(eo, "hash", [hashlib.sha1(submission.data).hexdigest()])  # ITI TF-3 §4.2.3.2: SHA-1, hex
    w.slot(eo, "languageCode", [header.get("language_code") or "fr-FR"])
    legal = _person_xcn(_first(doc, "h:legalAuthenticator/h:assignedEntity"))
    if legal:
        w.slot(eo, "legalAuthenticator", [legal])
    if start := _dtm(header.get("service_start_time")):
        w.slot(eo, "serviceStartTime", [start])
    if stop := _dtm(header.get("service_stop_time")):
        w.slot(eo, "serviceStopTime", [stop])
    w.slot(eo, "size", [str(len(submission.data))])
    if header.get("ipp") and header.get("ipp_oid"):
        w.slot(eo, "sourcePatientId", [hl7.cx(header["ipp"], header["ipp_oid"], "PI")])
    else:
        w.slot(eo, "sourcePatientId", [patient])
    if info := _source_patient_info(doc):
        w.slot(eo, "sourcePatientInfo", info)
    w.slot(eo, "URI", [submission.file_name])


def _entry_codes(
    w: _Writer,
    eo: etree._Element,
    submission: XdmSubmission,
    doc: etree._Element,
    header: dict[str, str],
    config: XdmMetadataConfig,
) -> None:
    """The DocumentEntry's class, confidentiality, format, facility and practice setting codes."""
    type_code = header["type_code"]
    type_scheme = header["type_code_system"]
    type_display = header.get("type_display_name") or header.get("title") or type_code
    klass = config.class_codes.get(type_code)
    if klass is not None:
        w.code(eo, DE.CLASS_CODE, klass.code, klass.coding_scheme, klass.display_name)
    else:
        w.code(eo, DE.CLASS_CODE, type_code, type_scheme, type_display)
    conf = header.get("confidentiality_code", "N")
    w.code(eo, DE.CONFIDENTIALITY_CODE, conf, CONFIDENTIALITY_SCHEME, _CONFIDENTIALITY_DISPLAY.get(conf, conf))
    for code in submission.visibility:
        w.code(eo, DE.CONFIDENTIALITY_CODE, code, VISIBILITY_SCHEME, _VISIBILITY_DISPLAY.get(code, code))
    fmt = config.format_codes.get(type_code)
    body = _first(doc, "h:component/h:nonXMLBody/h:text")
    if fmt is not None:
        w.code(eo, DE.FORMAT_CODE, fmt.code, fmt.coding_scheme, fmt.display_name)
    elif body is not None and (body.get("mediaType") or "").lower() == "application/pdf":
        w.code(eo, DE.FORMAT_CODE, *_XDS_SD_PDF)
    else:
        # ITI TF-3 §4.2.3.2.9: a generic format code when the mime type says enough.
        w.code(eo, DE.FORMAT_CODE, "urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3", "Format")
    if header.get("facility_code") and header.get("facility_code_system"):
        w.code(
            eo,
            DE.HEALTHCARE_FACILITY_TYPE_CODE,
            header["facility_code"],
            header["facility_code_system"],
            header["facility_code"],
        )
    if header.get("practice_setting_code") and header.get("practice_setting_code_system"):
        w.code(
            eo,
            DE.PRACTICE_SETTING_CODE,
            header["practice_setting_code"],
            header["practice_setting_code_system"],
            header["practice_setting_code"],
        )


def build_metadata(
    documents: Sequence[XdmSubmission],
    config: XdmMetadataConfig,
    *,
    submission_id: str,
    submission_time: dt.datetime,
    recipients: Sequence[str] = (),
) -> bytes:
    """METADATA.XML (UTF-8 bytes) for CDA documents stored in the same subset folder.

    ``submission_id`` (the hub message id) names the SubmissionSet: its
    uniqueId is ``2.25.<id as an integer>`` and every entryUUID a UUIDv5, so
    a retried delivery writes the same metadata. Raises :class:`XdmError`
    (a MessageError) when a document is not a CDA or names no patient, or
    when the documents are about different patients.
    """
    if submission_time.tzinfo is None:
        raise ValueError("submission_time must be timezone-aware")
    w = _Writer()
    root = etree.Element(q("lcm", "SubmitObjectsRequest"), nsmap={"lcm": NS["lcm"], "rim": NS["rim"]})
    rol = etree.SubElement(root, q("rim", "RegistryObjectList"))
    set_uuid = f"urn:uuid:{uuid.uuid5(_NS_SET, submission_id)}"
    entries = [_document_entry(w, rol, submission, config, submission_id) for submission in documents]
    if not entries:
        raise XdmError("no document to put in the archive")
    patient_ids = {entry.patient for entry in entries}
    if len(patient_ids) > 1:
        # An XDM SubmissionSet is about one patient (ITI TF-3 §4.2.3.3.8 patientId).
        raise XdmError("the documents are about different patients")
    first_author = next((entry.author for entry in entries if entry.author), "")

    rp = etree.SubElement(rol, q("rim", "RegistryPackage"), id=set_uuid)
    w.slot(rp, "submissionTime", [submission_time.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S")])
    if recipients:
        # ITI TF-3 §4.2.3.3.7 intendedRecipient: XON|XCN|XTN; only the mail address (XTN) is known.
        w.slot(rp, "intendedRecipient", [f"||^^Internet^{hl7.escape(r)}" for r in recipients])
    institution = ""
    if config.institution_name and config.institution_id:
        institution = hl7.xon(config.institution_name, "1.2.250.1.71.4.2.2", config.institution_id)
    w.author(rp, SS.AUTHOR, first_author, institution)
    if config.content_type_code is not None:
        ct = config.content_type_code
        w.code(rp, SS.CONTENT_TYPE_CODE, ct.code, ct.coding_scheme, ct.display_name)
    else:
        w.code(rp, SS.CONTENT_TYPE_CODE, *entries[0].type_code)
    w.identifier(rp, SS.UNIQUE_ID, f"2.25.{uuid.uuid5(_NS_SET, submission_id).int}", "XDSSubmissionSet.uniqueId")
    w.identifier(rp, SS.SOURCE_ID, config.source_id, "XDSSubmissionSet.sourceId")
    w.identifier(rp, SS.PATIENT_ID, next(iter(patient_ids)), "XDSSubmissionSet.patientId")
    etree.SubElement(
        rol,
        q("rim", "Classification"),
        classifiedObject=set_uuid,
        classificationNode=SS.CLASSIFICATION_NODE,
        id=w.next_id("cl"),
    )
    for entry in entries:
        member = etree.SubElement(
            rol,
            q("rim", "Association"),
            associationType=HAS_MEMBER,
            id=w.next_id("as"),
            sourceObject=set_uuid,
            targetObject=entry.entry_uuid,
        )
        w.slot(member, "SubmissionSetStatus", ["Original"])
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
