"""Read and check the header of a French CDA R2 document (CI-SIS "Structuration minimale").

Two pure functions over an lxml tree (or bytes, parsed with
:func:`mappings.xml.parse_xml`):

* :func:`read_cda_header` pulls the routing and indexing metadata a hub
  needs (patient INS and local ids, document type, ids, dates, author,
  custodian, legal authenticator, facility) into a flat ``dict[str, str]``
  that fits :attr:`hub.message.Message.metadata`. Keys are absent when the
  document does not carry the value:

  ============================  ====================================================
  ``ins`` / ``ins_oid``          recordTarget/patientRole/id whose root is an INS
                                 authority (1.2.250.1.213.1.4.8/.9/.10/.11)
  ``ipp`` / ``ipp_oid``          first other patientRole/id (local IPP, root = facility)
  ``patient_ids``                every patientRole/id as CX ``ext^^^&root&ISO``, ``~``-joined
  ``type_code`` (+ ``_system``,  ClinicalDocument/code
  ``type_display_name``)
  ``unique_id`` / ``set_id``     id / setId as ``root`` or ``root^extension``
                                 (the form XDS uses for a CDA document's uniqueId)
  ``version_number``             versionNumber/@value
  ``effective_time``             effectiveTime/@value
  ``confidentiality_code``       confidentialityCode/@code
  ``language_code``              languageCode/@code
  ``title``                      title, whitespace collapsed
  ``template_ids``               templateId/@root values, space-separated
  ``author_id`` (+ ``_root``)    first author/assignedAuthor/id (RPPS when the root
                                 is 1.2.250.1.71.4.2.1)
  ``custodian_id`` (+ ``_root``) custodian/…/representedCustodianOrganization/id
  ``legal_authenticator_id``     legalAuthenticator/assignedEntity/id
  (+ ``_root``)
  ``facility_code`` (+           componentOf/encompassingEncounter/location/
  ``_system``)                   healthCareFacility/code
  ``practice_setting_code``      first serviceEvent performer's representedOrganization/
  (+ ``_system``)                standardIndustryClassCode
  ``service_start_time`` /       first documentationOf/serviceEvent/effectiveTime low/high
  ``service_stop_time``
  ============================  ====================================================

* :func:`validate_cda_header` applies the CI-SIS header rules and returns
  one :class:`Violation` per broken rule. The rules follow the ANS
  schematron of template 1.2.250.1.213.1.1.1.1 (Structuration minimale,
  TestContenuCDA-3-0) and DOMAIN.md §3; each check below cites what it
  enforces. A violation names a rule id, an XPath-like location and a fixed
  message: never a value taken from the document.

Not checked here: value-set membership that needs the ANS terminology files
(document type JDV_J07, specialties JDV_J01, facility JDV_J02, practice
setting JDV_J04, civilité/titre JDV_J245/J246, encounter codes JDV_J142),
addr/telecom datatype details, informant, participant, informationRecipient,
authenticator, guardian, and the body (sections and entries).
"""

from __future__ import annotations

import dataclasses
import re

from lxml import etree

from hub.errors import ParseError
from hub.identity import INS_NIR_DEMO_OID, INS_NIR_TEST_OID, INS_ROOTS, InsProblem, check_nir
from mappings.cda.header_value_sets import check_value_sets
from mappings.xml import parse_xml
from mappings.xml.text import collapsed_text

__all__ = [
    "Violation",
    "read_cda_header",
    "validate_cda_header",
]

HL7_NS = "urn:hl7-org:v3"
_H = "{" + HL7_NS + "}"
_DOC = "/ClinicalDocument"

# DOMAIN.md §1.1, §9.1: the test and demonstration INS authorities, refused in production.
_INS_TEST_ROOTS = frozenset({INS_NIR_TEST_OID, INS_NIR_DEMO_OID})

_TEMPLATE_HL7_FRANCE = "2.16.840.1.113883.2.8.2.1"
_TEMPLATE_CISIS = "1.2.250.1.213.1.1.1.1"
_TEMPLATE_XDS_SD = "1.3.6.1.4.1.19376.1.2.20"
_TYPE_ID_ROOT = "2.16.840.1.113883.1.3"
_TYPE_ID_EXTENSION = "POCD_HD000040"
_STRUCTURE_ROOT = "1.2.250.1.71.4.2.2"
# Schematron (CI-SISCustodian): a health structure, or the organisation hosting
# documents the patient produced.
_CUSTODIAN_ROOTS = frozenset({_STRUCTURE_ROOT, "1.2.250.1.213.4.1"})
# Value set 2.16.840.1.113883.1.11.10228 (HL7 Confidentiality) as the schematron ships it.
_CONFIDENTIALITY_CODES = frozenset({"L", "M", "N", "R", "U", "V"})
# JDV_J143_AdministrativeGender_CISIS (1.2.250.1.213.1.1.5.590): note UN, not U.
_GENDER_CODES = frozenset({"F", "M", "UN"})
_NAME_QUALIFIERS = frozenset({"BR", "CL"})
_INS_PROBLEMS = {
    InsProblem.LENGTH: "an INS is 15 characters (13 + a 2-digit key)",
    InsProblem.CHARACTERS: "an INS is digits only, save 2A/2B for a Corsican department",
    InsProblem.KEY: "the INS key does not match its first 13 characters",
}

# HL7 datatypes as the schematron tests them: uid = OID | UUID | RUID, ts, int.
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))*")
_UID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))*|[A-Fa-f0-9]{8}(-[A-Fa-f0-9]{4}){3}-[A-Fa-f0-9]{12}|[A-Za-z][A-Za-z0-9-]*")
# TS literal (HL7 V3 datatypes): YYYY[MM[DD[HH[MM[SS[.S{1,4}]]]]]][+|-ZZzz]; the schematron only
# tests the leading digits, which would let "2025-01-02" through.
# The offset is [+-] and 1 to 4 digits, as the CDA XSD's ts pattern allows it (ANS examples carry
# "+100"): "[0-9]{1,8}|([0-9]{9,14}|[0-9]{14,14}\.[0-9]+)([+\-][0-9]{1,4})?".
_TS = re.compile(r"[0-9]{4}(?:[0-9]{2}){0,5}(?:\.[0-9]{1,4})?(?:[+-][0-9]{1,4})?")
_LANGUAGE = re.compile(r"[a-z]{2}-[A-Z]{2}")


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    """One broken header rule: a stable rule id, where, and a fixed explanation.

    ``location`` is an XPath-like path without namespace prefixes, e.g.
    ``/ClinicalDocument/author[2]/time``; ``message`` never quotes the document.
    """

    rule: str
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message} [{self.rule}]"


# --------------------------------------------------------------------------- helpers


def _root_of(root_or_bytes: etree._Element | etree._ElementTree | bytes) -> etree._Element:
    if isinstance(root_or_bytes, bytes | bytearray | memoryview):
        return parse_xml(root_or_bytes)
    if isinstance(root_or_bytes, etree._ElementTree):
        return root_or_bytes.getroot()
    return root_or_bytes


def _is_clinical_document(root: etree._Element) -> bool:
    return root.tag == _H + "ClinicalDocument"


# Children by tag with iterchildren (C), not find/findall (lxml's ElementPath, ~1.5 µs more a call; the header
# rules make ~110 such calls per document).
def _all(el: etree._Element | None, name: str) -> list[etree._Element]:
    return [] if el is None else list(el.iterchildren(_H + name))


def _one(el: etree._Element | None, name: str) -> etree._Element | None:
    return None if el is None else next(el.iterchildren(_H + name), None)


def _path(el: etree._Element | None, *names: str) -> etree._Element | None:
    for name in names:
        el = _one(el, name)
    return el


def _non_null(els: list[etree._Element]) -> list[etree._Element]:
    return [e for e in els if e.get("nullFlavor") is None]


def _full(pattern: re.Pattern[str], value: str | None) -> bool:
    return value is not None and pattern.fullmatch(value) is not None


def _ii(el: etree._Element | None) -> str:
    """An II as root or root^extension (the XDS uniqueId form)."""
    if el is None or not el.get("root"):
        return ""
    ext = el.get("extension")
    return f"{el.get('root')}^{ext}" if ext else str(el.get("root"))


# --------------------------------------------------------------------------- reader


def _patient_ids(role: etree._Element | None) -> dict[str, str]:
    """ins/ins_oid (the first INS), ipp/ipp_oid (the first other id) and patient_ids (all, as CX) of patientRole."""
    out: dict[str, str] = {}
    cx: list[str] = []
    for pid in _non_null(_all(role, "id")):
        root, ext = pid.get("root"), pid.get("extension")
        if not root or not ext:
            continue
        cx.append(f"{ext}^^^&{root}&ISO")
        if root in INS_ROOTS:
            if "ins" not in out:
                out["ins"], out["ins_oid"] = ext, root
        elif "ipp" not in out:
            out["ipp"], out["ipp_oid"] = ext, root
    if cx:
        out["patient_ids"] = "~".join(cx)
    return out


def _put_attributes(out: dict[str, str], el: etree._Element | None, keys: dict[str, str]) -> None:
    """out[key] = el's attribute, for each key: attribute pair whose attribute is present and not empty."""
    if el is None:
        return
    for key, attribute in keys.items():
        value = el.get(attribute)
        if value:
            out[key] = value


def read_cda_header(root_or_bytes: etree._Element | etree._ElementTree | bytes) -> dict[str, str]:
    """Extract the header metadata of a CDA R2 document (keys in the module docstring).

    Accepts the parsed root element, its tree, or raw bytes (parsed safely).
    Raises :class:`hub.errors.ParseError` when the bytes are not XML or the
    root is not ``{urn:hl7-org:v3}ClinicalDocument``. Missing values are left
    out rather than guessed; use :func:`validate_cda_header` to require them.
    """
    doc = _root_of(root_or_bytes)
    if not _is_clinical_document(doc):
        raise ParseError("not a CDA R2 document: root is not hl7:ClinicalDocument", location="/")
    out: dict[str, str] = {}

    def put(key: str, value: str | None) -> None:
        if value:
            out[key] = value

    out.update(_patient_ids(_path(doc, "recordTarget", "patientRole")))

    code = _one(doc, "code")
    _put_attributes(
        out, code, {"type_code": "code", "type_code_system": "codeSystem", "type_display_name": "displayName"}
    )
    put("unique_id", _ii(_one(doc, "id")))
    put("set_id", _ii(_one(doc, "setId")))
    put("version_number", _attr(doc, "versionNumber", "value"))
    put("effective_time", _attr(doc, "effectiveTime", "value"))
    put("confidentiality_code", _attr(doc, "confidentialityCode", "code"))
    put("language_code", _attr(doc, "languageCode", "code"))
    title = _one(doc, "title")
    if title is not None:
        put("title", collapsed_text(title))
    put("template_ids", " ".join(t.get("root", "") for t in _all(doc, "templateId") if t.get("root")))

    author_id = _path(doc, "author", "assignedAuthor", "id")
    _put_attributes(out, author_id, {"author_id": "extension", "author_id_root": "root"})
    custodian_id = _path(doc, "custodian", "assignedCustodian", "representedCustodianOrganization", "id")
    _put_attributes(out, custodian_id, {"custodian_id": "extension", "custodian_id_root": "root"})
    legal_id = _path(doc, "legalAuthenticator", "assignedEntity", "id")
    _put_attributes(out, legal_id, {"legal_authenticator_id": "extension", "legal_authenticator_id_root": "root"})

    facility = _path(doc, "componentOf", "encompassingEncounter", "location", "healthCareFacility", "code")
    _put_attributes(out, facility, {"facility_code": "code", "facility_code_system": "codeSystem"})
    event = _path(doc, "documentationOf", "serviceEvent")
    setting = _path(event, "performer", "assignedEntity", "representedOrganization", "standardIndustryClassCode")
    _put_attributes(out, setting, {"practice_setting_code": "code", "practice_setting_code_system": "codeSystem"})
    put("service_start_time", _attr(_path(event, "effectiveTime"), "low", "value"))
    put("service_stop_time", _attr(_path(event, "effectiveTime"), "high", "value"))
    return out


def _attr(el: etree._Element | None, child: str, attribute: str) -> str | None:
    found = _one(el, child)
    return None if found is None else found.get(attribute)


# --------------------------------------------------------------------------- validator


def validate_cda_header(
    root_or_bytes: etree._Element | etree._ElementTree | bytes,
    *,
    require_ins: bool = False,
    allow_test_ins: bool = True,
    strict_ins_key: bool = False,
) -> list[Violation]:
    """Check a CDA R2 header against the CI-SIS rules; an empty list means it passes.

    ``require_ins`` adds the rule that the patient carries an INS: mandatory
    when the document is shared (DMP / Mon espace santé), optional for
    MSSanté-only exchange (DOMAIN.md §3.3). ``allow_test_ins=False`` refuses
    the INS test and demonstration authorities (.10, .11), as production
    should (DOMAIN.md §9.1). ``strict_ins_key`` also refuses an INS whose
    2-digit key is wrong; off by default because official test samples carry
    wrong keys (DOMAIN.md §9.6).

    Bytes are parsed with :func:`mappings.xml.parse_xml` and may raise
    :class:`hub.errors.ParseError`; a tree that is not a ClinicalDocument
    yields a single ``clinical-document`` violation.
    """
    doc = _root_of(root_or_bytes)
    if not _is_clinical_document(doc):
        return [Violation("clinical-document", "/", "root element must be hl7:ClinicalDocument")]
    check = _Checker(doc)
    check.document()
    check.record_target(require_ins=require_ins, allow_test_ins=allow_test_ins, strict_ins_key=strict_ins_key)
    check.authors()
    check.custodian()
    check.legal_authenticator()
    check.documentation_of()
    check.component_of()
    # Coded header elements in their published value sets (JDV_J07, J01, J02, J04...).
    return check.violations + check_value_sets(doc)


class _Checker:
    """Accumulates violations; one method per header block, in document order."""

    def __init__(self, doc: etree._Element) -> None:
        self.doc = doc
        self.violations: list[Violation] = []

    def add(self, rule: str, location: str, message: str) -> None:
        self.violations.append(Violation(rule, location, message))

    # -- shared datatype checks (schematron DTr1 rules, as applied by the CI-SIS template)

    def exactly_one(self, rule: str, location: str, found: list[etree._Element], what: str) -> bool:
        if len(found) == 1:
            return True
        self.add(rule, location, f"{what} is required exactly once" if found else f"{what} is required")
        return False

    def ii(self, rule: str, el: etree._Element, location: str, *, extension: bool = False) -> None:
        if not el.get("root"):
            self.add(rule, location + "/@root", "@root is required")
        elif not _full(_UID, el.get("root")):
            self.add(rule, location + "/@root", "@root must be an OID, UUID or RUID")
        if extension and el.get("extension") is None:
            self.add(rule, location + "/@extension", "@extension is required")
        elif el.get("extension") == "":
            self.add(rule, location + "/@extension", "@extension must not be empty")

    def ts(self, rule: str, el: etree._Element, location: str) -> None:
        if el.get("value") is None:
            self.add(rule, location + "/@value", "@value is required")
        elif not _full(_TS, el.get("value")):
            self.add(rule, location + "/@value", "@value must be an HL7 TS (YYYY[MM[DD[HH[MM[SS]]]]])")
        if len(el):
            self.add(rule, location, "a TS must not have child elements")

    def coded(self, rule: str, el: etree._Element, location: str) -> None:
        """@code, @codeSystem (an OID) and @displayName, as the CI-SIS CE/CD rules require."""
        if not el.get("code"):
            self.add(rule, location + "/@code", "@code is required")
        if not el.get("codeSystem"):
            self.add(rule, location + "/@codeSystem", "@codeSystem is required")
        elif not _full(_OID, el.get("codeSystem")):
            self.add(rule, location + "/@codeSystem", "@codeSystem must be an OID")
        if not el.get("displayName"):
            self.add(rule, location + "/@displayName", "@displayName is required")

    # -- ClinicalDocument (schematron rule SMDS_CDAClinicalDocument; DOMAIN.md §3.1)

    def document(self) -> None:
        doc = self.doc
        if doc.get("classCode", "DOCCLIN") != "DOCCLIN":
            self.add("class-code", _DOC + "/@classCode", "classCode must be DOCCLIN")
        if doc.get("moodCode", "EVN") != "EVN":
            self.add("mood-code", _DOC + "/@moodCode", "moodCode must be EVN")

        realm = [e for e in _all(doc, "realmCode") if e.get("code") == "FR"]
        self.exactly_one("realm-code", _DOC + "/realmCode", realm, "realmCode code='FR'")

        type_ids = [
            e
            for e in _all(doc, "typeId")
            if e.get("root") == _TYPE_ID_ROOT and e.get("extension") == _TYPE_ID_EXTENSION
        ]
        self.exactly_one("type-id", _DOC + "/typeId", type_ids, f"typeId {_TYPE_ID_ROOT}/{_TYPE_ID_EXTENSION}")
        self.templates_and_body()
        self.identification()

    def templates_and_body(self) -> None:
        """The header templateIds, the volet's own, and the body they call for."""
        doc = self.doc
        templates = _all(doc, "templateId")
        roots = [t.get("root") for t in templates]
        for rule, oid in (("template-hl7-france", _TEMPLATE_HL7_FRANCE), ("template-cisis", _TEMPLATE_CISIS)):
            if roots.count(oid) != 1:
                self.add(rule, f"{_DOC}/templateId[@root='{oid}']", f"templateId {oid} is required exactly once")
        others = [
            (i, t) for i, t in enumerate(templates, 1) if t.get("root") not in (_TEMPLATE_HL7_FRANCE, _TEMPLATE_CISIS)
        ]
        if not others:
            self.add("template-volet", _DOC + "/templateId", "a templateId of the document's volet is required")
        for i, t in others:
            self.ii("template-volet", t, f"{_DOC}/templateId[{i}]")

        components = _all(doc, "component")
        body = _one(components[0], "structuredBody") if len(components) == 1 else None
        non_xml = _one(components[0], "nonXMLBody") if len(components) == 1 else None
        if body is None and non_xml is None:
            self.add("body", _DOC + "/component", "exactly one component with structuredBody or nonXMLBody")
        # An unstructured (level 1) document carries exactly the two French
        # header templates plus XDS-SD, which replaces the volet's template.
        if non_xml is not None and (
            len(roots) != 3 or {_TEMPLATE_HL7_FRANCE, _TEMPLATE_CISIS, _TEMPLATE_XDS_SD} != set(roots)
        ):
            self.add(
                "template-non-xml-body",
                _DOC + "/templateId",
                f"a nonXMLBody document has exactly the templateIds {_TEMPLATE_HL7_FRANCE}, "
                f"{_TEMPLATE_CISIS} and {_TEMPLATE_XDS_SD}",
            )

    def identification(self) -> None:
        """id, code, title, effectiveTime, confidentialityCode, languageCode, setId, versionNumber, replacement."""
        doc = self.doc
        ids = _non_null(_all(doc, "id"))
        if self.exactly_one("document-id", _DOC + "/id", ids, "id"):
            self.ii("document-id", ids[0], _DOC + "/id")

        codes = _non_null(_all(doc, "code"))
        if self.exactly_one("document-code", _DOC + "/code", codes, "code"):
            self.coded("document-code", codes[0], _DOC + "/code")

        titles = _non_null(_all(doc, "title"))
        self.exactly_one("title", _DOC + "/title", titles, "title")

        times = _non_null(_all(doc, "effectiveTime"))
        if self.exactly_one("effective-time", _DOC + "/effectiveTime", times, "effectiveTime"):
            self.ts("effective-time", times[0], _DOC + "/effectiveTime")

        self.confidentiality()

        langs = _non_null(_all(doc, "languageCode"))
        if self.exactly_one("language-code", _DOC + "/languageCode", langs, "languageCode") and not _full(
            _LANGUAGE, langs[0].get("code")
        ):
            self.add("language-code", _DOC + "/languageCode/@code", "code must read like fr-FR (ll-CC)")

        # setId is [0..1] in the IG table but mandatory in the schematron (DOMAIN.md §3.1).
        set_ids = _non_null(_all(doc, "setId"))
        if self.exactly_one("set-id", _DOC + "/setId", set_ids, "setId"):
            self.ii("set-id", set_ids[0], _DOC + "/setId")

        version = self.version_number()

        if len(_all(doc, "dataEnterer")) > 1:
            self.add("data-enterer", _DOC + "/dataEnterer", "dataEnterer appears at most once")

        self.replacement(ids, set_ids, version)

    def confidentiality(self) -> None:
        """confidentialityCode: once, from HL7 Confidentiality, with its code system and display name."""
        loc = _DOC + "/confidentialityCode"
        conf = _non_null(_all(self.doc, "confidentialityCode"))
        if not self.exactly_one("confidentiality-code", loc, conf, "confidentialityCode"):
            return
        if conf[0].get("code") not in _CONFIDENTIALITY_CODES:
            self.add(
                "confidentiality-code",
                loc + "/@code",
                "code must be one of L M N R U V (HL7 Confidentiality)",
            )
        if not _full(_OID, conf[0].get("codeSystem")):
            self.add("confidentiality-code", loc + "/@codeSystem", "@codeSystem (an OID) is required")
        if not conf[0].get("displayName"):
            self.add("confidentiality-code", loc + "/@displayName", "@displayName is required")

    def version_number(self) -> int | None:
        """The document's versionNumber (an integer from 1), or None when absent or invalid."""
        versions = _non_null(_all(self.doc, "versionNumber"))
        if not self.exactly_one("version-number", _DOC + "/versionNumber", versions, "versionNumber"):
            return None
        value = versions[0].get("value", "")
        if value.isascii() and value.isdigit() and int(value) >= 1:
            return int(value)
        self.add("version-number", _DOC + "/versionNumber/@value", "@value must be an integer from 1")
        return None

    def replacement(self, ids: list[etree._Element], set_ids: list[etree._Element], version: int | None) -> None:
        """setId / versionNumber / relatedDocument[RPLC] consistency.

        CDA R2, "Document Identification, Revisions, and Addenda": a replacement
        keeps the parent's setId, takes a new id and increments versionNumber, so
        it can be neither version 1 nor its own parent.
        """
        rplc = [
            r
            for r in _all(self.doc, "relatedDocument")
            if r.get("typeCode") == "RPLC" and _one(r, "parentDocument") is not None
        ]
        if len(rplc) > 1:
            self.add("related-document", _DOC + "/relatedDocument", "at most one RPLC relatedDocument")
        if not rplc:
            return
        loc = _DOC + "/relatedDocument/parentDocument"
        parent = _one(rplc[0], "parentDocument")
        # No rule against an RPLC at version 1: neither the CI-SIS schematrons nor the DMP refuse it
        # (ANS example CSE-CS8_2024.01 is one); only a parent version not lower than the child's is.
        parent_id = _one(parent, "id")
        if parent_id is None:
            self.add("replacement-parent", loc + "/id", "the replaced document's id is required")
        elif len(ids) == 1 and _ii(parent_id) == _ii(ids[0]):
            self.add("replacement-parent", loc + "/id", "a replacement needs a new id, not the parent's")
        parent_set = _one(parent, "setId")
        if parent_set is not None and len(set_ids) == 1 and _ii(parent_set) != _ii(set_ids[0]):
            self.add("replacement-set-id", loc + "/setId", "a replacement keeps the parent's setId")
        parent_version = _attr(parent, "versionNumber", "value")
        if (
            version is not None
            and parent_version is not None
            and (not parent_version.isdigit() or int(parent_version) >= version)
        ):
            self.add(
                "replacement-version",
                loc + "/versionNumber/@value",
                "the parent's versionNumber must be lower",
            )

    # -- recordTarget (schematron CI-SISRecordTarget; DOMAIN.md §3.2, §3.3)

    def record_target(self, *, require_ins: bool, allow_test_ins: bool, strict_ins_key: bool) -> None:
        targets = _non_null(_all(self.doc, "recordTarget"))
        if not self.exactly_one("record-target", _DOC + "/recordTarget", targets, "recordTarget"):
            return
        roles = [r for r in _all(targets[0], "patientRole") if _one(r, "patient") is not None]
        base = _DOC + "/recordTarget/patientRole"
        if not self.exactly_one("record-target", base, roles, "patientRole with a patient"):
            return
        role = roles[0]
        ins = self.patient_ids(role, base)
        self.ins_ids(ins, base, require_ins=require_ins, allow_test_ins=allow_test_ins, strict_ins_key=strict_ins_key)

        patients = _non_null(_all(role, "patient"))
        ploc = base + "/patient"
        if not self.exactly_one("patient", ploc, patients, "patient"):
            return
        patient = patients[0]
        names = _non_null(_all(patient, "name"))
        name = names[0] if self.exactly_one("patient-name", ploc + "/name", names, "patient name") else None
        if name is not None:
            self.patient_name(name, ploc + "/name")
        self.patient_traits(patient, ploc)
        if ins:
            self.ins_traits(patient, name, ploc)

    def patient_ids(self, role: etree._Element, base: str) -> list[tuple[int, etree._Element]]:
        """Each patient id well formed; returns the INS among them, with their positions."""
        ins: list[tuple[int, etree._Element]] = []
        all_ids = _all(role, "id")
        if not _non_null(all_ids):
            self.add("patient-id", base + "/id", "at least one patient id is required")
        for i, pid in enumerate(all_ids, 1):
            loc = f"{base}/id[{i}]"
            if pid.get("nullFlavor") is not None:
                continue
            self.ii("patient-id", pid, loc, extension=True)
            # IG document-core fr-core-patient-role forbids both attributes.
            for forbidden in ("assigningAuthorityName", "displayable"):
                if pid.get(forbidden) is not None:
                    self.add("patient-id", f"{loc}/@{forbidden}", f"@{forbidden} is not allowed on a patient id")
            if pid.get("root") in INS_ROOTS:
                ins.append((i, pid))
        return ins

    def ins_ids(
        self,
        ins: list[tuple[int, etree._Element]],
        base: str,
        *,
        require_ins: bool,
        allow_test_ins: bool,
        strict_ins_key: bool,
    ) -> None:
        """The INS values (format, key on request, test authorities) and the INS itself when required."""
        for i, pid in ins:
            # DOMAIN.md §1.2, §9.6: official samples carry wrong keys, so the
            # key is only enforced on request; length and characters always.
            problem = check_nir(pid.get("extension", "")).problem
            if problem in (InsProblem.LENGTH, InsProblem.CHARACTERS) or (problem is InsProblem.KEY and strict_ins_key):
                self.add("ins-format", f"{base}/id[{i}]/@extension", _INS_PROBLEMS[problem])
            if not allow_test_ins and pid.get("root") in _INS_TEST_ROOTS:
                self.add("ins-test-authority", f"{base}/id[{i}]/@root", "INS test/demonstration authority refused")
        if require_ins and not ins:
            self.add("ins-required", base + "/id", "an INS (root 1.2.250.1.213.1.4.8/.9/.10/.11) is required")

    def patient_traits(self, patient: etree._Element, ploc: str) -> None:
        """administrativeGenderCode, birthTime and birthplace of the patient."""
        gloc = ploc + "/administrativeGenderCode"
        genders = _all(patient, "administrativeGenderCode")
        if (
            self.exactly_one("gender", gloc, genders, "administrativeGenderCode")
            and genders[0].get("code") not in _GENDER_CODES
        ):
            self.add("gender", gloc + "/@code", "code must be F, M or UN (JDV_J143_AdministrativeGender_CISIS)")
        births = _all(patient, "birthTime")
        if self.exactly_one("birth-time", ploc + "/birthTime", births, "birthTime"):
            self.ts("birth-time", births[0], ploc + "/birthTime")
        places = [b for b in _all(patient, "birthplace") if _one(b, "place") is not None]
        if len(places) > 1:
            self.add("birthplace", ploc + "/birthplace", "birthplace appears at most once")
        for b in places[:1]:
            if len(_all(b, "place")) > 1:
                self.add("birthplace", ploc + "/birthplace/place", "place appears at most once")
            if len(_all(_one(b, "place"), "addr")) > 1:
                self.add("birthplace", ploc + "/birthplace/place/addr", "addr appears at most once")

    def patient_name(self, name: etree._Element, loc: str) -> None:
        """BR/CL qualifiers (DOMAIN.md §3.2, §9.4): SP and other values are refused."""
        families = _all(name, "family")
        givens = _all(name, "given")
        if not _non_null(families):
            self.add("patient-name", loc + "/family", "a family name is required")
        if not _non_null(givens):
            self.add("patient-name", loc + "/given", "a given name is required")
        for i, family in enumerate(families, 1):
            if family.get("nullFlavor") is None and family.get("qualifier") not in _NAME_QUALIFIERS:
                self.add(
                    "family-qualifier",
                    f"{loc}/family[{i}]/@qualifier",
                    "family needs qualifier BR (birth name) or CL (used name)",
                )
        for i, given in enumerate(givens, 1):
            qualifier = given.get("qualifier")
            if qualifier is not None and qualifier not in _NAME_QUALIFIERS:
                self.add(
                    "given-qualifier",
                    f"{loc}/given[{i}]/@qualifier",
                    "given qualifier must be BR (first birth given name) or CL (used given name)",
                )
        for tag in ("prefix", "suffix"):
            if len(_all(name, tag)) > 1:
                self.add("patient-name", f"{loc}/{tag}", f"{tag} appears at most once")

    def ins_traits(self, patient: etree._Element, name: etree._Element | None, loc: str) -> None:
        """With an INS, the birth identity traits are mandatory (DOMAIN.md §1.3, §9.5).

        birthTime and administrativeGenderCode, also INS traits, are required
        for every patient by their own rules, so they are not repeated here.
        """
        families = _all(name, "family")
        givens = _all(name, "given")
        if not any(f.get("qualifier") == "BR" for f in families):
            self.add("ins-traits", loc + "/name/family[@qualifier='BR']", "with an INS, the birth name is required")
        if not any(g.get("qualifier") == "BR" for g in givens):
            self.add(
                "ins-traits",
                loc + "/name/given[@qualifier='BR']",
                "with an INS, the first birth given name is required",
            )
        if not any(g.get("qualifier") is None for g in givens):
            self.add(
                "ins-traits",
                loc + "/name/given[not(@qualifier)]",
                "with an INS, the list of birth given names (given without qualifier) is required",
            )
        if not any((c.text or "").strip() for c in patient.iterfind(f"{_H}birthplace/{_H}place/{_H}addr/{_H}county")):
            self.add(
                "ins-traits",
                loc + "/birthplace/place/addr/county",
                "with an INS, the birthplace (INSEE COG code in county) is required",
            )

    # -- author (schematron CI-SISAuthor; DOMAIN.md §3.1)

    def authors(self) -> None:
        authors = [a for a in _non_null(_all(self.doc, "author")) if _one(a, "assignedAuthor") is not None]
        if not authors:
            self.add("author", _DOC + "/author", "at least one author with an assignedAuthor is required")
        for i, author in enumerate(authors, 1):
            loc = f"{_DOC}/author[{i}]"
            times = _all(author, "time")
            if self.exactly_one("author-time", loc + "/time", times, "author time"):
                self.ts("author-time", times[0], loc + "/time")
            assigned = _non_null(_all(author, "assignedAuthor"))
            if not self.exactly_one("author", loc + "/assignedAuthor", assigned, "assignedAuthor"):
                continue
            ids = _all(assigned[0], "id")
            if not ids:
                self.add(
                    "author-id",
                    loc + "/assignedAuthor/id",
                    "an author id (RPPS, ADELI, FINESS...) is required",
                )
            for j, aid in enumerate(ids, 1):
                self.ii("author-id", aid, f"{loc}/assignedAuthor/id[{j}]", extension=True)
            if len(_all(assigned[0], "assignedPerson")) + len(_all(assigned[0], "assignedAuthoringDevice")) > 1:
                self.add(
                    "author",
                    loc + "/assignedAuthor",
                    "an author is one assignedPerson or one assignedAuthoringDevice",
                )
            org = _all(assigned[0], "representedOrganization")
            if len(org) > 1:
                self.add("author", loc + "/assignedAuthor/representedOrganization", "appears at most once")
            for oid in [o for o in _all(org[0] if org else None, "id") if o.get("root") == _STRUCTURE_ROOT]:
                if not oid.get("extension"):
                    self.add(
                        "author-id",
                        loc + "/assignedAuthor/representedOrganization/id/@extension",
                        "a structure id needs its @extension",
                    )

    # -- custodian (schematron CI-SISCustodian)

    def custodian(self) -> None:
        loc = _DOC + "/custodian"
        custodians = [c for c in _non_null(_all(self.doc, "custodian")) if _one(c, "assignedCustodian") is not None]
        if not self.exactly_one("custodian", loc, custodians, "custodian with an assignedCustodian"):
            return
        assigned = [
            a
            for a in _all(custodians[0], "assignedCustodian")
            if _one(a, "representedCustodianOrganization") is not None
        ]
        loc += "/assignedCustodian"
        if not self.exactly_one("custodian", loc, assigned, "assignedCustodian with an organization"):
            return
        orgs = _all(assigned[0], "representedCustodianOrganization")
        loc += "/representedCustodianOrganization"
        if not self.exactly_one("custodian", loc, orgs, "representedCustodianOrganization"):
            return
        ids = _non_null(_all(orgs[0], "id"))
        if not self.exactly_one("custodian-id", loc + "/id", ids, "custodian organization id"):
            return
        self.ii("custodian-id", ids[0], loc + "/id")
        if ids[0].get("root") and ids[0].get("root") not in _CUSTODIAN_ROOTS:
            self.add(
                "custodian-id",
                loc + "/id/@root",
                "root must be 1.2.250.1.71.4.2.2 (structure) or 1.2.250.1.213.4.1 (patient documents host)",
            )

    # -- legalAuthenticator (schematron CI-SISLegalAuthenticator)

    def legal_authenticator(self) -> None:
        loc = _DOC + "/legalAuthenticator"
        signed = [
            la
            for la in _all(self.doc, "legalAuthenticator")
            if any(s.get("code") == "S" for s in _all(la, "signatureCode"))
        ]
        if not self.exactly_one("legal-authenticator", loc, signed, "legalAuthenticator with signatureCode S"):
            return
        la = signed[0]
        times = _all(la, "time")
        if self.exactly_one("legal-authenticator", loc + "/time", times, "legalAuthenticator time"):
            self.ts("legal-authenticator", times[0], loc + "/time")
        entities = _all(la, "assignedEntity")
        if not self.exactly_one("legal-authenticator", loc + "/assignedEntity", entities, "assignedEntity"):
            return
        ids = _non_null(_all(entities[0], "id"))
        if self.exactly_one("legal-authenticator-id", loc + "/assignedEntity/id", ids, "legalAuthenticator id"):
            self.ii("legal-authenticator-id", ids[0], loc + "/assignedEntity/id", extension=True)

    # -- documentationOf (schematron CI-SISDocumentationOf + the "acte principal" asserts)

    def documentation_of(self) -> None:
        docs = [d for d in _non_null(_all(self.doc, "documentationOf")) if _one(d, "serviceEvent") is not None]
        if not docs:
            self.add("documentation-of", _DOC + "/documentationOf", "at least one documentationOf/serviceEvent")
            return
        for i, d in enumerate(docs, 1):
            if len(_non_null(_all(d, "serviceEvent"))) != 1:
                self.add(
                    "documentation-of",
                    f"{_DOC}/documentationOf[{i}]/serviceEvent",
                    "exactly one serviceEvent",
                )
        # The first documentationOf is the main act: it needs its performer and dates.
        event = _one(docs[0], "serviceEvent")
        loc = _DOC + "/documentationOf[1]/serviceEvent"
        performers = _all(event, "performer")
        if self.exactly_one("service-event-performer", loc + "/performer", performers, "performer of the main act"):
            self.performer(performers[0], loc + "/performer")
        times = _all(event, "effectiveTime")
        if self.exactly_one("service-event-time", loc + "/effectiveTime", times, "effectiveTime of the main act"):
            lows = _all(times[0], "low")
            if not self.exactly_one("service-event-time", loc + "/effectiveTime/low", lows, "low"):
                return
            if not lows[0].get("value"):
                self.add("service-event-time", loc + "/effectiveTime/low/@value", "@value is required")

    def performer(self, performer: etree._Element, loc: str) -> None:
        if performer.get("typeCode") != "PRF":
            self.add("service-event-performer", loc + "/@typeCode", "typeCode must be PRF")
        entities = [e for e in _all(performer, "assignedEntity") if _one(e, "representedOrganization") is not None]
        if not self.exactly_one(
            "service-event-performer",
            loc + "/assignedEntity",
            entities,
            "assignedEntity with an organization",
        ):
            return
        if len(_all(entities[0], "id")) != 1:
            self.add("service-event-performer", loc + "/assignedEntity/id", "performer id is required exactly once")
        org = _one(entities[0], "representedOrganization")
        settings = _non_null(_all(org, "standardIndustryClassCode"))
        sloc = loc + "/assignedEntity/representedOrganization/standardIndustryClassCode"
        if self.exactly_one("practice-setting", sloc, settings, "practice setting (standardIndustryClassCode)"):
            self.coded("practice-setting", settings[0], sloc)

    # -- componentOf (schematron CI-SISComponentOf)

    def component_of(self) -> None:
        loc = _DOC + "/componentOf"
        comps = [c for c in _non_null(_all(self.doc, "componentOf")) if _one(c, "encompassingEncounter") is not None]
        if not self.exactly_one("component-of", loc, comps, "componentOf/encompassingEncounter"):
            return
        encounters = [e for e in _non_null(_all(comps[0], "encompassingEncounter")) if _one(e, "location") is not None]
        loc += "/encompassingEncounter"
        if not self.exactly_one("component-of", loc, encounters, "encompassingEncounter with a location"):
            return
        encounter = encounters[0]
        if len(_all(encounter, "effectiveTime")) != 1:
            self.add("encounter-time", loc + "/effectiveTime", "effectiveTime is required exactly once")
        codes = _all(encounter, "code")
        if len(codes) > 1:
            self.add("encounter-code", loc + "/code", "code appears at most once")
        elif codes:
            self.coded("encounter-code", codes[0], loc + "/code")
        locations = [lo for lo in _all(encounter, "location") if _one(lo, "healthCareFacility") is not None]
        floc = loc + "/location/healthCareFacility"
        if not self.exactly_one("facility", loc + "/location", locations, "location/healthCareFacility"):
            return
        facilities = _non_null(_all(locations[0], "healthCareFacility"))
        if not self.exactly_one("facility", floc, facilities, "healthCareFacility"):
            return
        codes = _non_null(_all(facilities[0], "code"))
        if self.exactly_one("facility", floc + "/code", codes, "healthCareFacility code"):
            self.coded("facility", codes[0], floc + "/code")
