"""Build the French CI-SIS CDA R2 header with lxml: the pieces every produced document shares.

Mappings that *produce* CDA (:mod:`mappings.cda.crbio`,
:mod:`mappings.cda.hl7v2_documents`) assemble a document from these
functions, in the element order of the CDA R2 schema (POCD_HD000040).
Nothing here concatenates strings into XML: every value goes through an lxml
element or attribute, and characters XML 1.0 cannot carry (C0 controls) are
dropped first, so a hostile HL7 field can neither inject markup nor make the
serializer fail.

The rules each piece satisfies are those of the CI-SIS header
(``mappings.cda.header.validate_cda_header``, DOMAIN.md §3): realmCode FR,
typeId, the two French templateIds, id/setId/versionNumber, recordTarget
with the INS and BR/CL name qualifiers, author/legalAuthenticator with the
national PS id (1.2.250.1.71.4.2.1), custodian with the national structure id
(1.2.250.1.71.4.2.2), documentationOf/serviceEvent with its performer, and
componentOf/encompassingEncounter with the facility code. The CR-BIO header
adds addresses, telecoms and a responsibleParty (``Entete_CR-BIO.sch``), which
are emitted for every document since they never hurt.

Configuration a hub must supply (ids root, custodian, practice setting,
facility type...) is the pydantic model :class:`CdaConfig`; every field is
described there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Iterable
from typing import Literal, NamedTuple

from lxml import etree
from pydantic import Field

from hub.errors import MappingError
from hub.registry import ComponentConfig
from mappings.cda.codes import (
    CONFIDENTIALITY,
    LOINC_OID,
    PRACTICE_SETTING_OID,
    RPPS_OID,
    SECTOR_OID,
    STRUCTURE_OID,
    Coded,
)

__all__ = [
    "HL7_NS",
    "II",
    "LAB_NS",
    "XSI_NS",
    "CdaConfig",
    "CodedConfig",
    "Organization",
    "OrganizationConfig",
    "Patient",
    "Practitioner",
    "PractitionerConfig",
    "add_author",
    "add_component_of",
    "add_custodian",
    "add_documentation_of",
    "add_identification",
    "add_legal_authenticator",
    "add_record_target",
    "add_related_document",
    "add_secondary_service_event",
    "clean",
    "coded",
    "derived_oid",
    "human_time",
    "ii",
    "new_document",
    "serialize",
    "sub",
    "xsi_type",
]

HL7_NS = "urn:hl7-org:v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
# IHE PALM extension namespace (serviceEvent lab:statusCode), as in the ANS CR-BIO examples.
LAB_NS = "urn:oid:1.3.6.1.4.1.19376.1.3.2"
_H = "{" + HL7_NS + "}"
_XSI_TYPE = "{" + XSI_NS + "}type"

TEMPLATE_HL7_FRANCE = "2.16.840.1.113883.2.8.2.1"
TEMPLATE_CISIS = "1.2.250.1.213.1.1.1.1"

_OID_PATTERN = r"^[0-2](\.(0|[1-9][0-9]*))+$"
# XML 1.0 §2.2 Char: everything but C0 controls (tab, LF, CR allowed), surrogates, U+FFFE/F.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# A fixed namespace for ids derived without a configured root (RFC 4122 name-based UUIDs).
_HUB_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "interop-hub.mappings.cda")


# --------------------------------------------------------------------------------- config models


class CodedConfig(ComponentConfig):
    """A coded value the hub must supply (code, French display name, code system OID)."""

    code: str = Field(min_length=1, description="The code, e.g. `AMBULATOIRE` or `SA25`.")
    display_name: str = Field(min_length=1, description="Its French display name, e.g. `Ambulatoire`.")
    code_system: str = Field(pattern=_OID_PATTERN, description="OID of its code system (TRE_A01, TRE_R02...).")

    def coded(self) -> Coded:
        return Coded(self.code, self.display_name, self.code_system)


class OrganizationConfig(ComponentConfig):
    """A health structure identified by its national structure id (idNat_Struct)."""

    id: str = Field(
        pattern=r"^[1-4][0-9A-Za-z/-]{8,30}$",
        description="idNat_Struct (extension under 1.2.250.1.71.4.2.2): `1` + FINESS, `3` + SIRET...",
    )
    name: str = Field(min_length=1, description="Name of the structure as it appears on documents.")
    telecom: str | None = Field(None, description="Contact URL, e.g. `tel:+33123456789`; unknown when unset.")
    street: str | None = Field(None, description="Street address line; the address is unknown when unset.")
    postal_code: str | None = Field(None, description="Postal code.")
    city: str | None = Field(None, description="City.")

    def organization(self) -> Organization:
        return Organization(self.id, self.name, self.telecom, self.street, self.postal_code, self.city)


class PractitionerConfig(ComponentConfig):
    """A health professional identified by the national PS id (idNat_PS)."""

    id: str = Field(
        pattern=r"^[0-9A-Za-z/-]{9,30}$",
        description="idNat_PS (extension under 1.2.250.1.71.4.2.1): `8` + RPPS, `0` + ADELI...",
    )
    family: str = Field(min_length=1, description="Family name (nom d'exercice).")
    given: str | None = Field(None, description="Given name (prénom d'exercice).")
    profession: CodedConfig | None = Field(
        None, description="Profession/specialty from TRE_G15 (1.2.250.1.213.1.1.4.5), e.g. `G15_10/SM03`."
    )

    def practitioner(self) -> Practitioner:
        prof = self.profession.coded() if self.profession else None
        return Practitioner(self.id, self.family, self.given or "", prof)


class CdaConfig(ComponentConfig):
    """What a hub must tell the CDA mappings that HL7 v2 does not carry."""

    document_id_root: str | None = Field(
        None,
        pattern=_OID_PATTERN,
        max_length=40,
        description="OID under which the hub derives document ids (`<root>.1.<n>`) and set ids "
        "(`<root>.2.<n>`) from the message; unset: `2.25.<uuid>` OIDs (X.667) derived the same way.",
    )
    custodian: OrganizationConfig | None = Field(
        None,
        description="Custodian organization (keeps the document). Unset: the PRT `SB` (send by) structure.",
    )
    author: PractitionerConfig | None = Field(
        None,
        description="Author used when the message names no professional with a national id (RPPS).",
    )
    practice_setting: CodedConfig | None = Field(
        None,
        description="Cadre d'exercice (TRE_A01, 1.2.250.1.213.1.1.4.9: `AMBULATOIRE`, `ETABLISSEMENT`...): "
        "the practiceSettingCode of the XDS metadata. Required.",
    )
    healthcare_facility: CodedConfig | None = Field(
        None,
        description="Secteur d'activité of the place of care (TRE_R02, 1.2.250.1.71.4.2.4, e.g. `SA25` "
        "for a medical laboratory): the healthcareFacilityTypeCode of the XDS metadata. Required.",
    )
    confidentiality_code: Literal["N", "R", "V"] = Field(
        "N", description="confidentialityCode of produced documents (HL7 Confidentiality)."
    )
    patient_id_roots: dict[str, str] = Field(
        default_factory=dict,
        description="PID-3 assigning authority namespace (CX-4.1) -> OID of that local identifier "
        "(IPP), for authorities that send a FINESS rather than an ISO OID in CX-4.2.",
    )

    def required_practice_setting(self) -> Coded:
        if self.practice_setting is None:
            raise MappingError("config practice_setting (cadre d'exercice, TRE_A01) is not set")
        if self.practice_setting.code_system != PRACTICE_SETTING_OID:
            raise MappingError("config practice_setting must be coded in TRE_A01 (1.2.250.1.213.1.1.4.9)")
        return self.practice_setting.coded()

    def required_facility(self) -> Coded:
        if self.healthcare_facility is None:
            raise MappingError("config healthcare_facility (secteur d'activité, TRE_R02) is not set")
        if self.healthcare_facility.code_system != SECTOR_OID:
            raise MappingError("config healthcare_facility must be coded in TRE_R02 (1.2.250.1.71.4.2.4)")
        return self.healthcare_facility.coded()


# --------------------------------------------------------------------------------- value objects


class II(NamedTuple):
    """An HL7 instance identifier."""

    root: str
    extension: str | None = None

    @property
    def text(self) -> str:
        """``root`` or ``root^extension``: the form read_cda_header and XDS uniqueId use."""
        return f"{self.root}^{self.extension}" if self.extension else self.root


@dataclasses.dataclass(frozen=True, slots=True)
class Organization:
    """A structure with its national id (idNat_Struct) and contact details."""

    id: str
    name: str
    telecom: str | None = None
    street: str | None = None
    postal_code: str | None = None
    city: str | None = None

    def __repr__(self) -> str:
        return "Organization(...)"


@dataclasses.dataclass(frozen=True, slots=True)
class Practitioner:
    """A professional with a national id (idNat_PS)."""

    id: str
    family: str
    given: str = ""
    profession: Coded | None = None

    def __repr__(self) -> str:
        return "Practitioner(...)"


@dataclasses.dataclass(frozen=True, slots=True)
class Patient:
    """The patient as the CI-SIS recordTarget needs it (DOMAIN.md §3.2). Never printed."""

    ids: tuple[II, ...]
    """INS first when qualified, then local ids (IPP) whose authority has an OID."""
    birth_family: str
    birth_given_first: str
    birth_given_list: str
    used_family: str
    used_given: str
    gender: Coded
    birth_date: str
    birthplace_county: str = ""
    birthplace_city: str = ""
    has_ins: bool = False

    def __repr__(self) -> str:
        return "Patient(...)"


# --------------------------------------------------------------------------------- XML helpers


def clean(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry."""
    # Printable text (nearly all of it) has none: controls, surrogates and U+FFFE/U+FFFF are not printable.
    return text if text.isprintable() else _NOT_XML.sub("", text)


def sub(parent: etree._Element, name: str, text: str | None = None, **attrs: str | None) -> etree._Element:
    """Append an hl7 element; None attributes are left out, values are cleaned (never parsed)."""
    # clean() inlined and set() per attribute: the document's ~270 elements make this the mapping's hottest
    # call (an attribute dict given to SubElement measured slower than set()).
    el = etree.SubElement(parent, _H + name)
    for key, value in attrs.items():
        if value is not None:
            el.set(key, value if value.isprintable() else _NOT_XML.sub("", value))
    if text is not None:
        el.text = text if text.isprintable() else _NOT_XML.sub("", text)
    return el


def xsi_type(el: etree._Element, type_name: str) -> etree._Element:
    el.set(_XSI_TYPE, type_name)
    return el


def coded(parent: etree._Element, name: str, value: Coded, **extra: str | None) -> etree._Element:
    """A CE/CD element with code, displayName and codeSystem (the CI-SIS coded-element rule)."""
    return sub(parent, name, code=value.code, displayName=value.display_name, codeSystem=value.code_system, **extra)


def _system_name(value: Coded) -> str | None:
    return "LOINC" if value.code_system == LOINC_OID else None


def ii(parent: etree._Element, name: str, value: II) -> etree._Element:
    return sub(parent, name, root=value.root, extension=value.extension)


def new_document(extra_templates: Iterable[tuple[str, str | None]], *, lab: bool = False) -> etree._Element:
    """A ClinicalDocument with realmCode FR, typeId and the French templateIds (DOMAIN.md §3.1)."""
    nsmap: dict[str | None, str] = {None: HL7_NS, "xsi": XSI_NS}
    if lab:
        nsmap["lab"] = LAB_NS
    root = etree.Element(_H + "ClinicalDocument", nsmap=nsmap)
    sub(root, "realmCode", code="FR")
    sub(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    sub(root, "templateId", root=TEMPLATE_HL7_FRANCE)
    sub(root, "templateId", root=TEMPLATE_CISIS)
    for template, extension in extra_templates:
        sub(root, "templateId", root=template, extension=extension)
    return root


def serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def derived_oid(root: str | None, arc: int, *parts: str) -> str:
    """A deterministic OID for the same inputs: replaying a message yields the same document id.

    With a configured root: ``<root>.<arc>.<64-bit decimal of SHA-256(parts)>``. Without one:
    ``2.25.<UUID>`` (ITU-T X.667), the UUID being name-based on ``arc`` and ``parts``. Both
    stay under the 64 characters of an XDS uniqueId. The DMP does not support ``root^extension``
    uniqueIds (volet "Transmission de documents CDA en HL7v2", TXA-12 note), hence bare OIDs.
    """
    name = "\x1f".join((str(arc), *parts))
    if root:
        number = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
        return f"{root}.{arc}.{number}"
    return f"2.25.{uuid.uuid5(_HUB_NAMESPACE, name).int}"


def human_time(ts: str) -> str:
    """``20250102103000+0100`` as ``02/01/2025 10:30`` for the narrative (date only when no time)."""
    digits = ts[:12]
    if len(digits) < 8:
        return ts
    date = f"{digits[6:8]}/{digits[4:6]}/{digits[0:4]}"
    return f"{date} {digits[8:10]}:{digits[10:12]}" if len(digits) >= 12 else date


# --------------------------------------------------------------------------------- header pieces


def add_identification(
    doc: etree._Element,
    *,
    doc_id: II,
    code: Coded,
    title: str,
    effective_time: str,
    confidentiality: str,
    set_id: II,
    version: int,
) -> None:
    """id, code, title, effectiveTime, confidentialityCode, languageCode, setId, versionNumber."""
    ii(doc, "id", doc_id)
    coded(doc, "code", code, codeSystemName=_system_name(code))
    sub(doc, "title", title)
    sub(doc, "effectiveTime", value=effective_time)
    coded(doc, "confidentialityCode", CONFIDENTIALITY[confidentiality])
    sub(doc, "languageCode", code="fr-FR")
    # setId is mandatory in the CI-SIS schematron (DOMAIN.md §3.1).
    ii(doc, "setId", set_id)
    sub(doc, "versionNumber", value=str(version))


def add_record_target(doc: etree._Element, patient: Patient) -> None:
    """recordTarget/patientRole: ids, then name with BR/CL qualifiers (DOMAIN.md §3.2, §9.4)."""
    role = sub(sub(doc, "recordTarget"), "patientRole")
    for pid in patient.ids:
        ii(role, "id", pid)
    person = sub(role, "patient", classCode="PSN")
    name = sub(person, "name")
    sub(name, "family", patient.birth_family, qualifier="BR")
    if patient.birth_given_list:
        sub(name, "given", patient.birth_given_list)
    if patient.birth_given_first:
        sub(name, "given", patient.birth_given_first, qualifier="BR")
    if patient.used_family:
        sub(name, "family", patient.used_family, qualifier="CL")
    if patient.used_given:
        sub(name, "given", patient.used_given, qualifier="CL")
    coded(person, "administrativeGenderCode", patient.gender)
    sub(person, "birthTime", value=patient.birth_date)
    if patient.birthplace_county:
        addr = sub(sub(sub(person, "birthplace"), "place"), "addr")
        sub(addr, "county", patient.birthplace_county)
        if patient.birthplace_city:
            sub(addr, "city", patient.birthplace_city)


# "12", "12 bis", "12B" then the street: the house number of a French street line.
_HOUSE_NUMBER = re.compile(r"(?P<number>[0-9]+(?:\s*(?:bis|ter|quater|[A-Za-z])\b)?)[\s,]+(?P<street>\S.*)")


def _addr(parent: etree._Element, org: Organization | None) -> None:
    """addr of a structure: structured parts, or street lines alone (CI-SISAddr, never both).

    The structuration minimale's CI-SISAddr (1.2.250.1.213.1.1.1.1.10.18) allows an address
    either as ``streetAddressLine`` elements only, or as parts (houseNumber, streetName,
    postalCode, city...). With a postal code or a city the street goes in ``houseNumber`` +
    ``streetName``, as in the ANS examples; a street alone stays a ``streetAddressLine``.
    """
    if org is None or not (org.street or org.postal_code or org.city):
        sub(parent, "addr", nullFlavor="UNK")
        return
    addr = sub(parent, "addr")
    if not (org.postal_code or org.city):
        sub(addr, "streetAddressLine", org.street)
        return
    if org.street:
        match = _HOUSE_NUMBER.fullmatch(org.street.strip())
        if match:
            sub(addr, "houseNumber", match["number"])
            sub(addr, "streetName", match["street"])
        else:
            sub(addr, "streetName", org.street.strip())
    if org.postal_code:
        sub(addr, "postalCode", org.postal_code)
    if org.city:
        sub(addr, "city", org.city)


def _telecom(parent: etree._Element, org: Organization | None) -> None:
    if org is None or not org.telecom:
        sub(parent, "telecom", nullFlavor="UNK")
    else:
        sub(parent, "telecom", value=org.telecom, use="WP")


def _person(parent: etree._Element, name: str, who: Practitioner) -> None:
    person_name = sub(sub(parent, name), "name")
    if who.given:
        sub(person_name, "given", who.given)
    sub(person_name, "family", who.family)


def _organization(parent: etree._Element, name: str, org: Organization, setting: Coded | None = None) -> None:
    el = sub(parent, name)
    sub(el, "id", root=STRUCTURE_OID, extension=org.id)
    sub(el, "name", org.name)
    _telecom(el, org)
    _addr(el, org)
    if setting is not None:
        coded(el, "standardIndustryClassCode", setting)


def _assigned(
    parent: etree._Element,
    name: str,
    who: Practitioner,
    org: Organization | None,
    *,
    setting: Coded | None = None,
    org_element: str = "representedOrganization",
) -> etree._Element:
    entity = sub(parent, name)
    sub(entity, "id", root=RPPS_OID, extension=who.id)
    if who.profession is not None:
        coded(entity, "code", who.profession)
    _addr(entity, org)
    _telecom(entity, org)
    _person(entity, "assignedPerson", who)
    if org is not None:
        _organization(entity, org_element, org, setting)
    return entity


def add_author(doc: etree._Element, who: Practitioner, time: str, org: Organization) -> None:
    """author with the national PS id (DOMAIN.md §3.1: assignedAuthor/id@root 1.2.250.1.71.4.2.1)."""
    author = sub(doc, "author")
    sub(author, "time", value=time)
    _assigned(author, "assignedAuthor", who, org)


def add_custodian(doc: etree._Element, org: Organization) -> None:
    """custodian: the structure keeping the document, root 1.2.250.1.71.4.2.2 (CI-SISCustodian)."""
    assigned = sub(sub(doc, "custodian"), "assignedCustodian")
    _organization(assigned, "representedCustodianOrganization", org)


def add_legal_authenticator(doc: etree._Element, who: Practitioner, time: str, org: Organization) -> None:
    """legalAuthenticator with signatureCode S (CI-SISLegalAuthenticator)."""
    legal = sub(doc, "legalAuthenticator")
    sub(legal, "time", value=time)
    sub(legal, "signatureCode", code="S")
    _assigned(legal, "assignedEntity", who, org)


def add_documentation_of(
    doc: etree._Element,
    *,
    code: Coded | None,
    start: str,
    stop: str | None,
    performer: Practitioner,
    org: Organization,
    practice_setting: Coded,
    lab: bool = False,
) -> etree._Element:
    """The main act: the first documentationOf/serviceEvent needs a performer (PRF) and dates.

    ``lab`` adds what the CR-BIO header requires of it (Entete_CR-BIO.sch, IHE PALM
    Laboratory Performer 1.3.6.1.4.1.19376.1.3.3.1.7): lab:statusCode and performer/time.
    """
    event = sub(sub(doc, "documentationOf"), "serviceEvent")
    if code is not None:
        coded(event, "code", code, codeSystemName=_system_name(code))
    if lab:
        status = etree.SubElement(event, "{" + LAB_NS + "}statusCode")
        status.set("code", "completed")
    time = sub(event, "effectiveTime")
    sub(time, "low", value=start)
    if stop:
        sub(time, "high", value=stop)
    performer_el = sub(event, "performer", typeCode="PRF")
    if lab:
        sub(performer_el, "templateId", root="1.3.6.1.4.1.19376.1.3.3.1.7")
        sub(performer_el, "templateId", root="1.2.250.1.213.1.1.3.23")
        sub(sub(performer_el, "time"), "high", value=stop or start)
    _assigned(performer_el, "assignedEntity", performer, org, setting=practice_setting)
    return event


def add_secondary_service_event(doc: etree._Element, code: Coded) -> None:
    """A further documentationOf naming another chapter of the report (ANS CR-BIO examples)."""
    event = sub(sub(doc, "documentationOf"), "serviceEvent")
    coded(event, "code", code, codeSystemName=_system_name(code))


def add_related_document(doc: etree._Element, *, parent_id: II, parent_version: int | None) -> None:
    """relatedDocument RPLC: this version replaces the parent (CDA R2 document revisions).

    The CI-SIS header (CI-SISRelatedDocument, 1.2.250.1.213.1.1.1.1.10.3) wants parentDocument
    with its id (never a nullFlavor) and optionally its versionNumber, nothing else: the setId
    is the child's own (ClinicalDocument/setId), shared by every version.
    """
    parent = sub(sub(doc, "relatedDocument", typeCode="RPLC"), "parentDocument")
    ii(parent, "id", parent_id)
    if parent_version is not None:
        sub(parent, "versionNumber", value=str(parent_version))


def add_component_of(
    doc: etree._Element,
    *,
    encounter: Coded | None,
    start: str,
    facility: Coded,
    responsible: tuple[Practitioner, Organization] | None = None,
) -> None:
    """componentOf/encompassingEncounter with its date and the facility code (CI-SISComponentOf).

    ``responsible`` adds the responsibleParty the CR-BIO header requires (biologist in charge).
    """
    encounter_el = sub(sub(doc, "componentOf"), "encompassingEncounter")
    if encounter is not None:
        coded(encounter_el, "code", encounter)
    sub(sub(encounter_el, "effectiveTime"), "low", value=start)
    if responsible is not None:
        who, org = responsible
        _assigned(sub(encounter_el, "responsibleParty"), "assignedEntity", who, org)
    facility_el = sub(sub(encounter_el, "location"), "healthCareFacility")
    coded(facility_el, "code", facility)
