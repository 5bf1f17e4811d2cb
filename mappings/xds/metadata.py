"""Build the XDS.b metadata of a CDA document for the DMP, and the ITI-41 request carrying it.

Pure: bytes and configuration in, dataclasses and lxml elements out; no
I/O, no clock (the caller passes the submission time), no logging.

Where each value comes from (DOMAIN.md §5.1, ANS "Lien entre l'en-tête CDA
et les métadonnées XDS" as summarised by the HL7v2→DMP mapping [S18]):

==============================  =================================================================
patientId                       CDA recordTarget/patientRole/id with an INS root →
                                ``<INS>^^^&<OID>&ISO^NH``; refused when there is none
sourcePatientId                 the IPP (``^PI``), or the INS when there is no local id
sourcePatientInfo               PID-5 (birth name, XPN-7 ``L``), PID-7, PID-8, PID-11 (``BDL`` + COG)
authorPerson / Institution /    author/assignedAuthor (XCN), its representedOrganization (XON; the
Specialty / Role                ``structure`` setting when the CDA names none), its code, author/functionCode
legalAuthenticator              legalAuthenticator/assignedEntity (XCN); the ``submitter`` setting when
                                the CDA has none and the submitter is a person (never a device)
uniqueId                        ClinicalDocument/id as ``root^extension``
creationTime                    effectiveTime, in UTC
serviceStart/StopTime           documentationOf/serviceEvent/effectiveTime low/high, in UTC
typeCode                        ClinicalDocument/code
classCode                       ASS_X04-CorrespondanceType-Classe-CISIS for the typeCode (shipped
                                data, :mod:`mappings.xds.dmp_value_sets`); a configured class must
                                agree with it, and is required for a typeCode the table has no row for
formatCode                      configuration, per typeCode (ASS_A11 correspondence); a level-1 CDA
                                gets the XDS-SD format of its body's media type
healthcareFacilityTypeCode      configuration when set, else encompassingEncounter/…/healthCareFacility/code
practiceSettingCode             configuration when set, else serviceEvent/performer/…/standardIndustryClassCode
confidentialityCode             CDA confidentialityCode, then the DMP visibility codes (TRE_A07)
hash / size                     SHA-1 (hex) and length of the document bytes
languageCode / title            languageCode / title
contentTypeCode (lot)           configuration, or message metadata ``xds_content_type_code``
==============================  =================================================================

Every coded value is checked against its DMP value set before the lot is built (typeCode JDV_J66,
classCode JDV_J57, formatCode JDV_J60, healthcareFacilityTypeCode JDV_J61, practiceSettingCode
JDV_J04, contentTypeCode JDV_J59; by code and code system; confidentialityCode is JDV_J58 by
construction): configured values when the configuration is loaded, values read from the CDA or
the message when the document is mapped (:class:`hub.errors.MappingError` naming the field), so
that the hub never sends a lot the DMP would refuse for its codes.

Identifiers the hub chooses (decisions, DOMAIN.md is silent):

* the DocumentEntry ``entryUUID`` is a UUIDv5 of the document uniqueId, so a
  replacement can name the entry it replaces without querying the registry
  (ITI TF-3 §4.2.3: an id is a UUID, kept by the registry, or a symbolic id it replaces);
* the SubmissionSet ``uniqueId`` is ``2.25.<the hub message id as an
  integer>`` and its entryUUID a UUIDv5 of that id, so a retried delivery
  resends exactly the same submission.

Message metadata read by :func:`build_submission` (all optional):
``xds_visibility`` (TRE_A07 codes, comma or space separated; the PAM/MSS
spelling ``INVISIBLE_REP_LEGAUX`` is accepted), the MetaDMPMSS flags
``mask_ps`` / ``invisible_patient`` / ``invisible_legal_reps`` (``Y``/``N``,
see :mod:`mappings.xds.visibility`), ``xds_replaces_unique_id`` and
``xds_replaces_entry_uuid`` (a replacement the CDA does not declare),
``xds_content_type_code`` / ``xds_content_type_display`` (TRE_R209 code for
this submission, e.g. mapped from PV1-2).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Literal
from xml.sax.saxutils import escape

from lxml import etree
from pydantic import Field, field_validator, model_validator

from hub.errors import MappingError, MessageError
from hub.identity import Environment, InsPolicy
from hub.registry import ComponentConfig
from mappings.cda import read_cda_header
from mappings.xds import hl7
from mappings.xds.dmp_value_sets import (
    CodedField,
    class_setting_error,
    is_member,
    lot_class,
    require_member,
    value_set_name,
)
from mappings.xds.ebrim import DE, HAS_MEMBER, NS, RPLC, SIGNS, SS, q
from mappings.xds.visibility import VISIBILITY_CODES, VISIBILITY_SCHEME, visibility_codes
from mappings.xml import parse_xml_shared
from mappings.xml.text import collapsed_text

__all__ = [
    "Author",
    "Code",
    "DocumentEntry",
    "DocumentTypeMapping",
    "Replacement",
    "StructureIdentity",
    "SubmissionSetMeta",
    "SubmitterIdentity",
    "XdsCode",
    "XdsMetadataConfig",
    "XdsSubmission",
    "build_submission",
    "entry_uuid_for",
    "provide_and_register_request",
    "submission_set_unique_id",
    "submit_objects_request",
]

_H = "{urn:hl7-org:v3}"
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")

PS_ID_ROOT = "1.2.250.1.71.4.2.1"
"""RPPS/ADELI national health-professional identifier (idNat_PS), DOMAIN.md §3.1."""
STRUCTURE_ID_ROOT = "1.2.250.1.71.4.2.2"
"""National structure identifier (idNat_Struct), DOMAIN.md §3.1."""
CONFIDENTIALITY_SCHEME = "2.16.840.1.113883.5.25"
CONTENT_TYPE_SCHEME = "1.2.250.1.213.2.2"
"""TRE_R209-TypeActivite: SubmissionSet contentTypeCode (JDV_J59)."""
IHE_FORMAT_SCHEME = "1.3.6.1.4.1.19376.1.2.3"
"""TRE_A11-IheFormatCode."""

_CONFIDENTIALITY_DISPLAY = {"N": "Normal", "R": "Restreint", "V": "Très restreint"}
# HL7 AdministrativeGender (CDA, JDV_J143: F, M, UN) → HL7 v2 table 0001 (F, M, U).
_SEX_V2 = {"F": "F", "M": "M", "UN": "U"}
# Level-1 CDA (XDS-SD, DOMAIN.md §5.1): the body's media type decides the format code (JDV_J60).
_XDS_SD_FORMATS = {
    "application/pdf": ("urn:ihe:iti:xds-sd:pdf:2008", "Document à corps non structuré en Pdf/A-1"),
    "text/plain": ("urn:ihe:iti:xds-sd:text:2008", "Document à corps non structuré en texte brut"),
    "image/jpeg": ("urn:ihe:iti-fr:xds-sd:jpeg:2010", "Document à corps non structuré en format jpeg"),
    "text/rtf": ("urn:ihe:iti-fr:xds-sd:rtf:2010", "Document à corps non structuré en format rtf"),
    "image/tiff": ("urn:ihe:iti-fr:xds-sd:tiff:2010", "Document à corps non structuré en format tiff"),
}
_ENTRY_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:interop-hub:xds:document-entry")
_SUBMISSION_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:interop-hub:xds:submission-set")


# --------------------------------------------------------------------------- configuration


def _check_oid(value: str) -> str:
    if not _OID.fullmatch(value):
        raise ValueError("must be an OID (digits and dots)")
    return value


class XdsCode(ComponentConfig):
    """A coded XDS value: code (nodeRepresentation), coding scheme OID and display name."""

    code: str = Field(min_length=1, description="The code, written in the Classification's nodeRepresentation.")
    coding_scheme: str = Field(
        min_length=1, description="OID of the code system (codingScheme slot), e.g. 1.2.250.1.71.4.2.4."
    )
    display_name: str = Field(min_length=1, description="Display name, written as the Classification's Name.")


class DocumentTypeMapping(ComponentConfig):
    """What the CDA does not say for one document type (typeCode): its class and format."""

    class_code: XdsCode | None = Field(
        None,
        description="classCode for this type (JDV_J57-ClassCode-DMP). Unset: the class ASS_X04-CorrespondanceType-"
        "Classe-CISIS gives the type; set, it must be that class (required for a type the table has no row for).",
    )
    format_code: XdsCode | None = Field(
        None,
        description="formatCode (ASS_X11 / JDV_J60-FormatCode-DMP). Unset: level-1 CDA gets the XDS-SD code of "
        "its body's media type; a structured CDA without it is refused.",
    )
    mime_type: Literal["text/xml", "application/xslt+xml"] = Field(
        "text/xml", description="mimeType: text/xml, or application/xslt+xml for a self-presenting CDA."
    )


class StructureIdentity(ComponentConfig):
    """The health structure feeding the DMP (authorInstitution of the lot, VIHF Identifiant_Structure)."""

    id_nat: str = Field(min_length=2, description="idNat_Struct: '1' + FINESS, '3' + SIRET, '4' + RPPS-rang… (XON-10).")
    name: str = Field(min_length=1, description="Structure name (XON-1).")
    authority_oid: str = Field(STRUCTURE_ID_ROOT, description="Assigning authority of id_nat (XON-6).")

    _oid = field_validator("authority_oid")(_check_oid)


class SubmitterIdentity(ComponentConfig):
    """Who submits the lot: the SubmissionSet authorPerson (PRT-4 = SB in the HL7v2 volet)."""

    id: str = Field(min_length=1, description="Identifier (XCN-1): idNat_PS of the responsible person, or a device id.")
    family: str = Field("", description="Family name, or the software name for a device (XCN-2).")
    given: str = Field("", description="Given name, or the vendor/model for a device (XCN-3).")
    authority_oid: str = Field(PS_ID_ROOT, description="Assigning authority of the id (XCN-9).")
    device: bool = Field(False, description="A system rather than a person: XCN-10 'U' and XCN-13 'EI'.")

    _oid = field_validator("authority_oid")(_check_oid)


VisibilityCode = Literal["INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX", "MASQUE_PS"]


class XdsMetadataConfig(ComponentConfig):
    """What the hub adds to a CDA header to make DMP-grade XDS metadata (DOMAIN.md §5.1)."""

    source_id: str = Field(description="XDSSubmissionSet.sourceId: OID of the submitting system.")
    structure: StructureIdentity = Field(
        description="The submitting structure (lot authorInstitution) when the message names none: no PRT SB "
        "PRT-8 and no representedOrganization on the document's author."
    )
    submitter: SubmitterIdentity | None = Field(
        None,
        description="Lot authorPerson for automated flows: used when the message names no sender (PRT SB) and "
        "the document's first author is not a person, or always with lot_author 'submitter'.",
    )
    lot_author: Literal["message", "submitter"] = Field(
        "message",
        description="Who the lot's author is: 'message' = the PRT SB sender, else the document's first author "
        "(ANS HL7v2→DMP mapping); 'submitter' = the submitter setting (an automated feed).",
    )
    allowed_structures: list[str] = Field(
        default_factory=list,
        description="idNat_Struct values this hub may submit for (the structures behind its certificate). "
        "Set: a lot whose authorInstitution is another structure is refused, never sent.",
    )
    content_type_code: XdsCode = Field(
        description="SubmissionSet contentTypeCode (JDV_J59-ContentTypeCode-DMP, TRE_R209 1.2.250.1.213.2.2)."
    )
    healthcare_facility_type_code: XdsCode | None = Field(
        None,
        description="healthcareFacilityTypeCode (JDV_J61, TRE_R02 1.2.250.1.71.4.2.4). Set: used for every "
        "document; unset: taken from the CDA healthCareFacility/code.",
    )
    practice_setting_code: XdsCode | None = Field(
        None,
        description="practiceSettingCode (JDV_J04, TRE_A01 1.2.250.1.213.1.1.4.9). Set: used for every "
        "document; unset: taken from the CDA standardIndustryClassCode.",
    )
    document_types: dict[str, DocumentTypeMapping] = Field(
        default_factory=dict,
        description="Per CDA ClinicalDocument/code@code (typeCode): classCode, formatCode, mimeType.",
    )
    visibility: list[VisibilityCode] = Field(
        default_factory=list,
        description="DMP visibility codes added to every document's confidentialityCode (TRE_A07).",
    )
    environment: Environment = Field(
        Environment.PRODUCTION,
        description="Which INS roots are accepted on patientId: production refuses the test (.10) and demo (.11) "
        "roots (DOMAIN.md §9.1).",
    )
    submission_set_title: str | None = Field(None, description="Optional SubmissionSet title (Name).")

    _oid = field_validator("source_id")(_check_oid)

    @model_validator(mode="after")
    def _codes_in_dmp_value_sets(self) -> XdsMetadataConfig:
        """A configured code outside its DMP value set would make every lot of this route refused: say it now."""
        configured: list[tuple[str, CodedField, XdsCode | None]] = [
            ("content_type_code", "contentTypeCode", self.content_type_code),
            ("healthcare_facility_type_code", "healthcareFacilityTypeCode", self.healthcare_facility_type_code),
            ("practice_setting_code", "practiceSettingCode", self.practice_setting_code),
        ]
        for where, field, code in configured:
            if code is not None and not is_member(field, code.code, code.coding_scheme):
                raise ValueError(f"{where}: {code.code} ({code.coding_scheme}) is not in {value_set_name(field)}")
        for type_code, mapping in self.document_types.items():
            fmt = mapping.format_code
            if fmt is not None and not is_member("formatCode", fmt.code, fmt.coding_scheme):
                raise ValueError(
                    f"document_types.{type_code}.format_code: {fmt.code} ({fmt.coding_scheme}) is not in "
                    f"{value_set_name('formatCode')}"
                )
            cls = mapping.class_code
            if cls is not None and (error := class_setting_error(type_code, cls.code, cls.coding_scheme)):
                raise ValueError(f"document_types.{type_code}.class_code: {error}")
        return self


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True, slots=True)
class Code:
    """A coded metadata value as written: code, coding scheme, display name."""

    code: str
    scheme: str
    display: str


@dataclasses.dataclass(frozen=True, slots=True)
class Author:
    """One author classification (ITI TF-3 §4.2.3.1.4): person (XCN) plus optional sub-attributes."""

    person: str
    institutions: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    specialties: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class DocumentEntry:
    """Every DocumentEntry attribute the hub sends, as it will appear in the ebRIM."""

    entry_uuid: str
    unique_id: str
    mime_type: str
    title: str
    patient_id: str
    source_patient_id: str
    source_patient_info: tuple[str, ...]
    creation_time: str
    service_start_time: str
    service_stop_time: str
    language_code: str
    legal_authenticator: str
    hash: str
    size: int
    authors: tuple[Author, ...]
    class_code: Code
    type_code: Code
    format_code: Code
    healthcare_facility_type_code: Code
    practice_setting_code: Code
    confidentiality_codes: tuple[Code, ...]
    event_codes: tuple[Code, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class SubmissionSetMeta:
    """The SubmissionSet (the "lot de soumission") of one ITI-41 request."""

    entry_uuid: str
    unique_id: str
    source_id: str
    patient_id: str
    submission_time: str
    content_type_code: Code
    author: Author
    title: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Replacement:
    """The document this one replaces: RPLC association target (ITI TF-3 §4.2.2.2)."""

    unique_id: str
    entry_uuid: str


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class XdsSubmission:
    """One document ready for ITI-41: its metadata, its lot, what it replaces, and its bytes.

    ``signature`` / ``signature_document``: the lot's IHE DSG signature
    document and its entry, added by :func:`mappings.xds.signature.sign_submission`.
    """

    document_entry: DocumentEntry
    submission_set: SubmissionSetMeta
    replaces: Replacement | None
    document: bytes
    signature: DocumentEntry | None = None
    signature_document: bytes = b""

    def __repr__(self) -> str:
        # Identifiers of the envelope only: no patient id, no document.
        return (
            f"XdsSubmission(entry={self.document_entry.entry_uuid}, "
            f"lot={self.submission_set.unique_id}, replaces={bool(self.replaces)})"
        )


def entry_uuid_for(unique_id: str) -> str:
    """The entryUUID the hub gives the DocumentEntry of a document uniqueId (a stable UUIDv5)."""
    return f"urn:uuid:{uuid.uuid5(_ENTRY_NS, unique_id)}"


def submission_set_unique_id(submission_id: str) -> str:
    """``2.25.<n>`` OID (ITU-T X.667) for a submission: the hub message id (a UUID) as an integer."""
    try:
        n = uuid.UUID(submission_id).int
    except ValueError:
        n = uuid.uuid5(_SUBMISSION_NS, submission_id).int
    return f"2.25.{n}"


# --------------------------------------------------------------------------- CDA facts beyond the header reader


def _first(el: etree._Element | None, path: str) -> etree._Element | None:
    return None if el is None else el.find(path.replace("h:", _H))


def _all(el: etree._Element | None, path: str) -> list[etree._Element]:
    return [] if el is None else el.findall(path.replace("h:", _H))


def _name_parts(name: etree._Element | None) -> tuple[str, str]:
    """(family, first given) of a CDA PN, preferring the birth (BR) parts when qualified."""
    if name is None:
        return "", ""
    families = _all(name, "h:family")
    givens = _all(name, "h:given")
    family = next((f for f in families if f.get("qualifier") == "BR"), families[0] if families else None)
    given = next((g for g in givens if g.get("qualifier") == "BR"), givens[0] if givens else None)
    return collapsed_text(family), collapsed_text(given)


def _coded(el: etree._Element | None) -> Code | None:
    if el is None or not el.get("code"):
        return None
    return Code(el.get("code", ""), el.get("codeSystem", ""), el.get("displayName") or el.get("code") or "")


def _ce(code: Code) -> str:
    """The French ``code^displayName^codeSystem`` string used in authorSpecialty / authorRole slots."""
    return "^".join((hl7.escape(code.code), hl7.escape(code.display), code.scheme))


def _person_xcn(entity: etree._Element, where: str) -> str:
    """XCN of an assignedAuthor / assignedEntity: a person, or a device (assignedAuthoringDevice)."""
    ident = _first(entity, "h:id")
    if ident is None or not ident.get("root") or not ident.get("extension"):
        raise MappingError(f"{where} has no usable id (root and extension)", location=where)
    root, ext = ident.get("root", ""), ident.get("extension", "")
    person = _first(entity, "h:assignedPerson/h:name")
    if person is not None:
        family, given = _name_parts(person)
        return hl7.xcn(ext, family, given, root, name_type="D", id_type="IDNPS" if root == PS_ID_ROOT else "EI")
    device = _first(entity, "h:assignedAuthoringDevice")
    software = collapsed_text(_first(device, "h:softwareName"))
    model = collapsed_text(_first(device, "h:manufacturerModelName"))
    return hl7.xcn(ext, software, model, root, name_type="U", id_type="EI")


def _organization_xon(org: etree._Element | None) -> str | None:
    ident = _first(org, "h:id")
    if org is None or ident is None or not ident.get("root") or not ident.get("extension"):
        return None
    root = ident.get("root", "")
    id_type = "IDNST" if root == STRUCTURE_ID_ROOT else "EI"
    return hl7.xon(collapsed_text(_first(org, "h:name")), root, ident.get("extension", ""), id_type=id_type)


def _dtm(value: str | None, where: str, *, required: bool) -> str:
    if not value:
        if required:
            raise MappingError(f"{where} is required for the DMP and missing", location=where)
        return ""
    try:
        return hl7.hl7_ts_to_dtm(value)
    except ValueError:
        raise MappingError(f"{where} is not an HL7 TS", location=where) from None


# --------------------------------------------------------------------------- builder


def _patient_ids(header: Mapping[str, str], config: XdsMetadataConfig) -> tuple[str, str]:
    """patientId (the INS, CX-5 NH) and sourcePatientId (the local id when known) of the DocumentEntry.

    DOMAIN.md §5.1, §9.2: CX-5 NH in XDS, empty HD namespace; the INS must be one the environment accepts.
    """
    ins, ins_oid = header.get("ins"), header.get("ins_oid")
    if not ins or not ins_oid:
        raise MappingError(
            "the patient has no INS (recordTarget/patientRole/id with an INS root): the DMP needs a qualified INS",
            location="/ClinicalDocument/recordTarget/patientRole/id",
        )
    try:
        InsPolicy.for_environment(config.environment).require(ins, ins_oid)
    except MessageError as exc:
        raise MappingError(exc.reason, location="/ClinicalDocument/recordTarget/patientRole/id") from None
    patient_id = hl7.cx(ins, ins_oid, "NH")
    if header.get("ipp") and header.get("ipp_oid"):
        return patient_id, hl7.cx(header["ipp"], header["ipp_oid"], "PI")
    return patient_id, patient_id


def _facility_and_setting(doc: etree._Element, config: XdsMetadataConfig) -> tuple[Code, Code]:
    """healthcareFacilityTypeCode and practiceSettingCode: configured, else read from the CDA header."""
    facility = _code_from(config.healthcare_facility_type_code) or _coded(
        _first(doc, "h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code")
    )
    if facility is None:
        raise MappingError(
            "no healthcareFacilityTypeCode: neither configured nor in healthCareFacility/code",
            location="/ClinicalDocument/componentOf/encompassingEncounter/location/healthCareFacility/code",
        )
    setting = _code_from(config.practice_setting_code) or _coded(
        _first(
            doc,
            "h:documentationOf/h:serviceEvent/h:performer/h:assignedEntity/h:representedOrganization/"
            "h:standardIndustryClassCode",
        )
    )
    if setting is None:
        raise MappingError(
            "no practiceSettingCode: neither configured nor in standardIndustryClassCode",
            location="/ClinicalDocument/documentationOf/serviceEvent/performer",
        )
    return facility, setting


def build_submission(
    document: bytes,
    config: XdsMetadataConfig,
    *,
    submission_id: str,
    submission_time: dt.datetime,
    metadata: Mapping[str, str] | None = None,
) -> XdsSubmission:
    """The XDS metadata of one CDA document and its SubmissionSet, ready for ITI-41.

    ``submission_id`` is the hub message id (it names the lot, see the
    module docstring); ``submission_time`` must be timezone-aware.
    Raises :class:`hub.errors.MappingError` (or another
    :class:`hub.errors.MessageError`) when the document cannot feed the DMP:
    not a CDA, no INS with an accepted root, no mapping for its type, a
    required header element missing. Reasons name elements and codes, never
    patient values.
    """
    meta = metadata or {}
    if meta.get("dest_dmp") == "N":
        # MetaDMPMSS DESTDMP=N: the sender does not want this document in the DMP (volet, meta-dmp-mss).
        raise MappingError("DESTDMP=N: the message does not ask for the DMP", location="OBX")
    try:
        # Read only, and the last reader: usually the tree cda_validate parsed just before, taken.
        doc = parse_xml_shared(document, last=True)
        header = read_cda_header(doc)
    except MessageError as exc:
        raise MappingError(f"not a usable CDA document: {exc.reason}", location=exc.location) from None

    patient_id, source_patient_id = _patient_ids(header, config)
    source_patient_info = _source_patient_info(doc)

    # -- identity of the document
    unique_id = header.get("unique_id", "")
    if not unique_id:
        raise MappingError("ClinicalDocument/id is required (XDS uniqueId)", location="/ClinicalDocument/id")
    type_code = _coded(_first(doc, "h:code"))
    if type_code is None or not type_code.scheme:
        raise MappingError("ClinicalDocument/code is required (XDS typeCode)", location="/ClinicalDocument/code")
    _in_value_set("typeCode", type_code, "/ClinicalDocument/code")
    mapping = config.document_types.get(type_code.code) or DocumentTypeMapping()
    class_code = _class_code(type_code, mapping)
    title = header.get("title") or header.get("type_display_name") or ""
    if not title:
        raise MappingError("ClinicalDocument/title is required (XDS title)", location="/ClinicalDocument/title")

    # -- codes
    format_code = _format_code(doc, mapping, type_code.code)
    _in_value_set("formatCode", format_code, "/ClinicalDocument/component")
    facility, setting = _facility_and_setting(doc, config)
    _in_value_set(
        "healthcareFacilityTypeCode",
        facility,
        "/ClinicalDocument/componentOf/encompassingEncounter/location/healthCareFacility/code",
    )
    _in_value_set(
        "practiceSettingCode",
        setting,
        "/ClinicalDocument/documentationOf/serviceEvent/performer/assignedEntity/representedOrganization/"
        "standardIndustryClassCode",
    )
    confidentiality = _confidentiality(doc, config, meta)

    # -- people
    # The CDA header says who wrote and who validated; the route's settings only fill what it leaves out
    # (an author without representedOrganization: the configured structure; no legalAuthenticator: the
    # configured submitter when it is a person, never a device).
    structure = hl7.xon(config.structure.name, config.structure.authority_oid, config.structure.id_nat)
    authors = tuple(_author(a, i, structure) for i, a in enumerate(_all(doc, "h:author"), start=1))
    if not authors:
        raise MappingError("ClinicalDocument/author is required (XDS author)", location="/ClinicalDocument/author")
    legal = _first(doc, "h:legalAuthenticator/h:assignedEntity")
    submitter = config.submitter
    if legal is not None:
        legal_xcn = _person_xcn(legal, "/ClinicalDocument/legalAuthenticator/assignedEntity")
    elif submitter is not None and not submitter.device and submitter.authority_oid == PS_ID_ROOT:
        legal_xcn = hl7.xcn(submitter.id, submitter.family, submitter.given, PS_ID_ROOT, name_type="D", id_type="IDNPS")
    else:
        raise MappingError(
            "legalAuthenticator is required for the DMP", location="/ClinicalDocument/legalAuthenticator"
        )

    # -- times (ITI TF-3 §4.2.3.1.7: DTM in UTC)
    creation = _dtm(header.get("effective_time"), "/ClinicalDocument/effectiveTime", required=True)
    # PV1-44/45 when the message carried them (mappings.xds.v2_context), else the CDA serviceEvent.
    start = meta.get("xds_service_start_time") or _dtm(
        header.get("service_start_time"),
        "/ClinicalDocument/documentationOf/serviceEvent/effectiveTime/low",
        required=True,
    )
    stop = meta.get("xds_service_stop_time") or _dtm(
        header.get("service_stop_time"),
        "/ClinicalDocument/documentationOf/serviceEvent/effectiveTime/high",
        required=False,
    )

    entry = DocumentEntry(
        entry_uuid=entry_uuid_for(unique_id),
        unique_id=unique_id,
        mime_type=mapping.mime_type,
        title=title,
        patient_id=patient_id,
        source_patient_id=source_patient_id,
        source_patient_info=source_patient_info,
        creation_time=creation,
        service_start_time=start,
        service_stop_time=stop,
        language_code=header.get("language_code") or "fr-FR",
        legal_authenticator=legal_xcn,
        hash=hashlib.sha1(document).hexdigest(),  # DocumentEntry.hash (ITI TF-3 §4.2.3.2): SHA-1, hex
        size=len(document),
        authors=authors,
        class_code=class_code,
        type_code=type_code,
        format_code=format_code,
        healthcare_facility_type_code=facility,
        practice_setting_code=setting,
        confidentiality_codes=confidentiality,
    )

    if submission_time.tzinfo is None:
        raise ValueError("submission_time must be timezone-aware")
    lot_author = _lot_author(config, meta, authors)
    content_type = _code_from(config.content_type_code)
    assert content_type is not None
    if meta.get("xds_content_type_code"):
        code = meta["xds_content_type_code"]
        content_type = Code(code, CONTENT_TYPE_SCHEME, meta.get("xds_content_type_display") or code)
    _in_value_set("contentTypeCode", content_type, "PV1-2")
    lot = SubmissionSetMeta(
        entry_uuid=f"urn:uuid:{uuid.uuid5(_SUBMISSION_NS, submission_id)}",
        unique_id=submission_set_unique_id(submission_id),
        source_id=config.source_id,
        patient_id=patient_id,
        submission_time=submission_time.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S"),
        content_type_code=content_type,
        author=lot_author,
        title=config.submission_set_title,
    )
    return XdsSubmission(entry, lot, _replacement(doc, meta, unique_id), document)


def _lot_author(config: XdsMetadataConfig, meta: Mapping[str, str], authors: tuple[Author, ...]) -> Author:
    """The SubmissionSet author (ANS HL7v2→DMP mapping, "Lot de soumission"): PRT SB, else the document's."""
    first = authors[0]
    person = ""
    specialties: tuple[str, ...] = ()
    if config.lot_author == "message" and meta.get("xds_lot_author_id"):
        pid = meta["xds_lot_author_id"]
        # The same professional among the document's authors gives the specialty (VIHF role) and names.
        known = next((a for a in authors if a.person.split("^", 1)[0] == pid), None)
        if known is not None:
            person, specialties = known.person, known.specialties
        else:
            family, given = meta.get("xds_lot_author_family", ""), meta.get("xds_lot_author_given", "")
            person = hl7.xcn(pid, family, given, PS_ID_ROOT, name_type="D", id_type="IDNPS")
    elif config.lot_author == "message" and _is_person(first.person):
        person, specialties = first.person, first.specialties
    if not person:
        s = config.submitter
        if s is None and config.lot_author == "submitter":
            raise MappingError("lot_author is 'submitter' but no submitter is configured")
        if s is not None:
            id_type = "EI" if s.device or s.authority_oid != PS_ID_ROOT else "IDNPS"
            person = hl7.xcn(
                s.id, s.family, s.given, s.authority_oid, name_type="U" if s.device else "D", id_type=id_type
            )
        else:
            person, specialties = first.person, first.specialties
    if meta.get("xds_lot_institution_id"):
        name = meta.get("xds_lot_institution_name", "")
        institution = hl7.xon(name, STRUCTURE_ID_ROOT, meta["xds_lot_institution_id"])
    elif first.institutions and first.institutions[0].split("^")[6:7] == ["IDNST"]:
        institution = first.institutions[0]  # the author's structure (representedOrganization, idNat_Struct)
    else:
        institution = hl7.xon(config.structure.name, config.structure.authority_oid, config.structure.id_nat)
    structure_id = institution.split("^")[9] if institution.count("^") >= 9 else ""
    if config.allowed_structures and structure_id not in config.allowed_structures:
        raise MappingError(
            "the lot's structure (PRT SB PRT-8 / author representedOrganization) is not one this hub submits for",
            location="PRT",
        )
    return Author(person=person, institutions=(institution,), specialties=specialties)


def _is_person(xcn: str) -> bool:
    """An XCN of a person (name type D, national id), not a device (name type U / EI)."""
    parts = xcn.split("^")
    return len(parts) > 12 and parts[9] != "U" and parts[12] == "IDNPS"


def _in_value_set(field: CodedField, code: Code, location: str) -> None:
    require_member(field, code.code, code.scheme, location)


def _class_code(type_code: Code, mapping: DocumentTypeMapping) -> Code:
    """classCode: the class ASS_X04 gives the typeCode (S18 mapping), else the configured one (JDV_J57)."""
    configured = mapping.class_code
    setting = None if configured is None else (configured.code, configured.coding_scheme, configured.display_name)
    return Code(*lot_class(type_code.code, type_code.scheme, setting, "/ClinicalDocument/code"))


def _code_from(code: XdsCode | None) -> Code | None:
    return None if code is None else Code(code.code, code.coding_scheme, code.display_name)


def _source_patient_info(doc: etree._Element) -> tuple[str, ...]:
    """sourcePatientInfo as the ANS example writes it: PID-5, PID-7, PID-8, PID-11 (DOMAIN.md §5.1)."""
    patient = _first(doc, "h:recordTarget/h:patientRole/h:patient")
    out: list[str] = []
    name = _first(patient, "h:name")
    family, first_given = _name_parts(name)
    # PAM FR XPN: family^first birth given^full birth given list^^^^L (DOMAIN.md §2.3).
    given_list = next((collapsed_text(g) for g in _all(name, "h:given") if g.get("qualifier") is None), "")
    if family or first_given:
        further = given_list if given_list and given_list != first_given else ""
        out.append(f"PID-5|{hl7.escape(family)}^{hl7.escape(first_given)}^{hl7.escape(further)}^^^^L")
    birth = _first(patient, "h:birthTime")
    if birth is not None and birth.get("value"):
        out.append(f"PID-7|{birth.get('value', '')[:8]}")
    gender = _first(patient, "h:administrativeGenderCode")
    if gender is not None and gender.get("code") in _SEX_V2:
        out.append(f"PID-8|{_SEX_V2[gender.get('code', '')]}")
    county = collapsed_text(_first(patient, "h:birthplace/h:place/h:addr/h:county"))
    if county:
        out.append(f"PID-11|^^^^^^BDL^^{hl7.escape(county)}")
    return tuple(out)


def _author(author: etree._Element, index: int, fallback_institution: str) -> Author:
    where = f"/ClinicalDocument/author[{index}]/assignedAuthor"
    assigned = _first(author, "h:assignedAuthor")
    if assigned is None:
        raise MappingError(f"{where} is missing", location=where)
    institution = _organization_xon(_first(assigned, "h:representedOrganization")) or fallback_institution
    specialty = _coded(_first(assigned, "h:code"))
    role = _coded(_first(author, "h:functionCode"))
    return Author(
        person=_person_xcn(assigned, where),
        institutions=(institution,) if institution else (),
        roles=(_ce(role),) if role else (),
        specialties=(_ce(specialty),) if specialty else (),
    )


def _format_code(doc: etree._Element, mapping: DocumentTypeMapping, type_code: str) -> Code:
    if mapping.format_code is not None:
        return Code(mapping.format_code.code, mapping.format_code.coding_scheme, mapping.format_code.display_name)
    body = _first(doc, "h:component/h:nonXMLBody/h:text")
    if body is not None:
        media = (body.get("mediaType") or "").lower()
        if media in _XDS_SD_FORMATS:
            code, display = _XDS_SD_FORMATS[media]
            return Code(code, IHE_FORMAT_SCHEME, display)
        raise MappingError(
            "no formatCode for this non-XML body media type", location="/ClinicalDocument/component/nonXMLBody"
        )
    raise MappingError(f"no formatCode configured for document type {type_code[:64]}", location="/ClinicalDocument")


def _confidentiality(doc: etree._Element, config: XdsMetadataConfig, meta: Mapping[str, str]) -> tuple[Code, ...]:
    """CDA confidentialityCode first, then the DMP visibility codes (DOMAIN.md §5.1; JDV_J58, 1..4)."""
    cc = _first(doc, "h:confidentialityCode")
    code = "" if cc is None else cc.get("code", "")
    if code not in _CONFIDENTIALITY_DISPLAY:
        raise MappingError(
            "confidentialityCode must be N, R or V for the DMP (JDV_J58)",
            location="/ClinicalDocument/confidentialityCode",
        )
    assert cc is not None
    codes = [Code(code, CONFIDENTIALITY_SCHEME, cc.get("displayName") or _CONFIDENTIALITY_DISPLAY[code])]
    for v in visibility_codes(meta, config.visibility):
        codes.append(Code(v, VISIBILITY_SCHEME, VISIBILITY_CODES[v]))
    return tuple(codes)


def _replacement(doc: etree._Element, meta: Mapping[str, str], unique_id: str) -> Replacement | None:
    """The replaced document: CDA relatedDocument[@typeCode='RPLC']/parentDocument/id, or message metadata."""
    previous = meta.get("xds_replaces_unique_id", "")
    if not previous:
        for related in _all(doc, "h:relatedDocument"):
            if related.get("typeCode") == "RPLC":
                parent = _first(related, "h:parentDocument/h:id")
                if parent is not None and parent.get("root"):
                    ext = parent.get("extension")
                    previous = f"{parent.get('root')}^{ext}" if ext else parent.get("root", "")
                break
    if not previous:
        return None
    if previous == unique_id:
        raise MappingError("a replacement must carry a new document id (relatedDocument RPLC names itself)")
    return Replacement(previous, meta.get("xds_replaces_entry_uuid") or entry_uuid_for(previous))


# --------------------------------------------------------------------------- ebRIM writer

# The request is written as text and parsed once: ~200 small elements made one lxml call at a time cost
# ~3 times as much. Attribute values are escaped for XML (quotes, and the white space an XML parser would
# otherwise normalise, XML 1.0 §3.3.3); text for XML text. The order of elements and attributes is ebRIM's.
_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
_TEXT_ESCAPES = {"\r": "&#13;"}
_RIM_VALUE = q("rim", "Value")
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
# Values with nothing to escape (nearly all: codes, OIDs, ids, names) are written as they are: escape()
# makes seven passes over each of the ~200 values of a request, one search finds there is nothing to do.
_ATTRIBUTE_SPECIALS = re.compile('[&<>"\n\r\t]')
_TEXT_SPECIALS = re.compile("[&<>\r]")


def _attr(value: str) -> str:
    return escape(value, _ATTRIBUTE_ESCAPES) if _ATTRIBUTE_SPECIALS.search(value) else value


def _text(value: str) -> str:
    return escape(value, _TEXT_ESCAPES) if _TEXT_SPECIALS.search(value) else value


class _Writer:
    """The ebRIM objects of one request as text, with symbolic ids local to it (registries assign UUIDs)."""

    def __init__(self) -> None:
        self.n = 0
        self.out: list[str] = []
        self.empty_value = False

    def next_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n:02d}"

    def slot(self, name: str, values: Sequence[str]) -> None:
        self.empty_value = self.empty_value or "" in values
        items = "".join(f"<rim:Value>{_text(v)}</rim:Value>" for v in values)
        self.out.append(f'<rim:Slot name="{_attr(name)}"><rim:ValueList>{items}</rim:ValueList></rim:Slot>')

    def localized(self, tag: str, value: str) -> None:
        self.out.append(
            f'<rim:{tag}><rim:LocalizedString charset="UTF-8" value="{_attr(value)}" xml:lang="fr-FR"/></rim:{tag}>'
        )

    def identifier(self, owner: str, scheme: str, value: str, name: str) -> None:
        """An ExternalIdentifier (uniqueId, patientId, sourceId) of the object ``owner``."""
        self.out.append(
            f'<rim:ExternalIdentifier id="{self.next_id("ei")}" identificationScheme="{_attr(scheme)}" '
            f'registryObject="{_attr(owner)}" value="{_attr(value)}">'
        )
        self.localized("Name", name)
        self.out.append("</rim:ExternalIdentifier>")

    def _classification(self, owner: str, scheme: str, node: str) -> None:
        self.out.append(
            f'<rim:Classification classificationScheme="{_attr(scheme)}" classifiedObject="{_attr(owner)}" '
            f'id="{self.next_id("cl")}" nodeRepresentation="{_attr(node)}">'
        )

    def code(self, owner: str, scheme: str, code: Code) -> None:
        self._classification(owner, scheme, code.code)
        self.slot("codingScheme", [code.scheme])
        self.localized("Name", code.display)
        self.out.append("</rim:Classification>")

    def author(self, owner: str, scheme: str, author: Author) -> None:
        # ITI TF-3 §4.2.3.1.4: an author is a Classification with an empty nodeRepresentation.
        self._classification(owner, scheme, "")
        self.slot("authorPerson", [author.person])
        if author.institutions:
            self.slot("authorInstitution", author.institutions)
        if author.roles:
            self.slot("authorRole", author.roles)
        if author.specialties:
            self.slot("authorSpecialty", author.specialties)
        self.out.append("</rim:Classification>")

    def association(self, kind: str, source: str, target: str, *, status: bool = True) -> None:
        self.out.append(
            f'<rim:Association associationType="{_attr(kind)}" id="{self.next_id("as")}" '
            f'sourceObject="{_attr(source)}" targetObject="{_attr(target)}">'
        )
        if status:
            self.slot("SubmissionSetStatus", ["Original"])
        self.out.append("</rim:Association>")

    def entry(self, de: DocumentEntry) -> None:
        """One ExtrinsicObject: Slot*, Name, Description?, Classification*, ExternalIdentifier* (ebRIM order)."""
        uid = de.entry_uuid
        self.out.append(
            f'<rim:ExtrinsicObject id="{_attr(uid)}" mimeType="{_attr(de.mime_type)}" '
            f'objectType="{DE.OBJECT_TYPE_STABLE}">'
        )
        self.slot("creationTime", [de.creation_time])
        self.slot("languageCode", [de.language_code])
        self.slot("legalAuthenticator", [de.legal_authenticator])
        self.slot("serviceStartTime", [de.service_start_time])
        if de.service_stop_time:
            self.slot("serviceStopTime", [de.service_stop_time])
        self.slot("sourcePatientId", [de.source_patient_id])
        if de.source_patient_info:
            self.slot("sourcePatientInfo", de.source_patient_info)
        self.slot("hash", [de.hash])
        self.slot("size", [str(de.size)])
        self.localized("Name", de.title)
        for author in de.authors:
            self.author(uid, DE.AUTHOR, author)
        self.code(uid, DE.CLASS_CODE, de.class_code)
        for cc in de.confidentiality_codes:
            self.code(uid, DE.CONFIDENTIALITY_CODE, cc)
        for ec in de.event_codes:
            self.code(uid, DE.EVENT_CODE, ec)
        self.code(uid, DE.FORMAT_CODE, de.format_code)
        self.code(uid, DE.HEALTHCARE_FACILITY_TYPE_CODE, de.healthcare_facility_type_code)
        self.code(uid, DE.PRACTICE_SETTING_CODE, de.practice_setting_code)
        self.code(uid, DE.TYPE_CODE, de.type_code)
        self.identifier(uid, DE.PATIENT_ID, de.patient_id, "XDSDocumentEntry.patientId")
        self.identifier(uid, DE.UNIQUE_ID, de.unique_id, "XDSDocumentEntry.uniqueId")
        self.out.append("</rim:ExtrinsicObject>")


def submit_objects_request(submission: XdsSubmission) -> etree._Element:
    """The ``lcm:SubmitObjectsRequest`` of a submission (ITI TF-3 §4.2.3, ebRIM element order kept)."""
    w = _Writer()
    de, lot = submission.document_entry, submission.submission_set
    w.out.append(
        f'<lcm:SubmitObjectsRequest xmlns:lcm="{NS["lcm"]}" xmlns:rim="{NS["rim"]}"><rim:RegistryObjectList>'
    )
    w.entry(de)
    if submission.signature is not None:
        w.entry(submission.signature)

    w.out.append(f'<rim:RegistryPackage id="{_attr(lot.entry_uuid)}">')
    w.slot("submissionTime", [lot.submission_time])
    if lot.title:
        w.localized("Name", lot.title)
    w.author(lot.entry_uuid, SS.AUTHOR, lot.author)
    w.code(lot.entry_uuid, SS.CONTENT_TYPE_CODE, lot.content_type_code)
    w.identifier(lot.entry_uuid, SS.UNIQUE_ID, lot.unique_id, "XDSSubmissionSet.uniqueId")
    w.identifier(lot.entry_uuid, SS.SOURCE_ID, lot.source_id, "XDSSubmissionSet.sourceId")
    w.identifier(lot.entry_uuid, SS.PATIENT_ID, lot.patient_id, "XDSSubmissionSet.patientId")
    w.out.append("</rim:RegistryPackage>")
    w.out.append(
        f'<rim:Classification classifiedObject="{_attr(lot.entry_uuid)}" classificationNode="{SS.CLASSIFICATION_NODE}" '
        f'id="{w.next_id("cl")}"/>'
    )
    w.association(HAS_MEMBER, lot.entry_uuid, de.entry_uuid)
    if submission.signature is not None:
        # IHE DSG (ITI TF-3 §5.5, as the ANS example sends it): the signature document is a member of the lot
        # and "signs" the SubmissionSet.
        w.association(HAS_MEMBER, lot.entry_uuid, submission.signature.entry_uuid)
        w.association(SIGNS, submission.signature.entry_uuid, lot.entry_uuid)
    if submission.replaces is not None:
        # ITI TF-3 §4.2.2.2: RPLC from the new DocumentEntry to the entryUUID of the one it replaces.
        w.association(RPLC, de.entry_uuid, submission.replaces.entry_uuid, status=False)
    w.out.append("</rim:RegistryObjectList></lcm:SubmitObjectsRequest>")
    root = etree.fromstring("".join(w.out), _XML_PARSER)
    if w.empty_value:  # an empty Value stays <rim:Value></rim:Value>, as the element-by-element writer had it
        for value in root.iter(_RIM_VALUE):
            if value.text is None:
                value.text = ""
    return root


def provide_and_register_request(
    submission: XdsSubmission, *, xop_href: str | None = None, signature_href: str | None = None
) -> etree._Element:
    """The ITI-41 ``xdsb:ProvideAndRegisterDocumentSetRequest`` body element.

    With ``xop_href`` (``cid:…``) the document is an ``xop:Include`` to be
    sent as an MTOM attachment (ITI TF-2b §3.41, ITI TF-2x Appendix V); without it the
    document is inline base64, which MTOM-unaware peers also accept.
    """
    root = etree.Element(
        q("xdsb", "ProvideAndRegisterDocumentSetRequest"),
        nsmap={"xdsb": NS["xdsb"], "lcm": NS["lcm"], "rim": NS["rim"]},
    )
    root.append(submit_objects_request(submission))
    doc = etree.SubElement(root, q("xdsb", "Document"), id=submission.document_entry.entry_uuid)
    if xop_href is None:
        doc.text = base64.b64encode(submission.document).decode("ascii")
    else:
        etree.SubElement(doc, q("xop", "Include"), nsmap={"xop": NS["xop"]}, href=xop_href)
    if submission.signature is not None:
        sig = etree.SubElement(root, q("xdsb", "Document"), id=submission.signature.entry_uuid)
        if signature_href is None:
            sig.text = base64.b64encode(submission.signature_document).decode("ascii")
        else:
            etree.SubElement(sig, q("xop", "Include"), nsmap={"xop": NS["xop"]}, href=signature_href)
    return root
