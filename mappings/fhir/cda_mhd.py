"""A CI-SIS CDA R2 document → an IHE MHD "Provide Document Bundle" (ITI-65), the PDSm shape (DOMAIN.md §5.3).

The transaction Bundle follows the PDSm comprehensive profiles (``meta.profile`` on the Bundle, the
List and the DocumentReference; their rules are checked by `mappings.fhir.profiles`):

=======================  ==========================================================================
List (SubmissionSet)     ``code`` MHDlistTypes#submissionset, ``status`` current, ``mode`` working;
                         identifiers: uniqueId ``2.25.<correlation id>`` (use usual) and entryUUID
                         (use official); ``ihe-sourceId`` from the ``source_id`` setting;
                         ``ihe-designationType`` the XDS contentTypeCode (message metadata
                         ``xds_content_type_code``, e.g. from PV1-2, else the ``content_type_code``
                         setting); ``source`` the document's first author, contained, with its
                         structure as ``ihe-authorOrg``; ``date`` the hub's receipt of the message;
                         ``entry`` the DocumentReference
DocumentReference        ``masterIdentifier`` the CDA id (the XDS uniqueId: ``urn:oid:<root>`` under
                         urn:ietf:rfc:3986, or ``<extension>`` under ``urn:oid:<root>``; use usual);
                         ``identifier`` the entryUUID (the same UUIDv5 the XDS route gives,
                         `mappings.xds.metadata.entry_uuid_for`); ``type`` ClinicalDocument/code;
                         ``category`` the XDS classCode (JDV_J57): the class ASS_X04 gives the
                         type, else the ``class_codes`` setting (which must agree with ASS_X04);
                         ``date``/``creation`` effectiveTime; ``contained``: each
                         author/assignedAuthor and the legalAuthenticator as a PractitionerRole
                         (with its Practitioner and representedOrganization) or a Device, and the
                         source patient; ``author`` / ``authenticator`` / ``context.sourcePatientInfo``
                         reference them; ``custodian`` the structure id; ``relatesTo`` replaces (the
                         replaced entryUUID) for a relatedDocument RPLC; ``securityLabel``
                         confidentialityCode then the TRE_A07 masking codes (`mappings.xds.visibility`);
                         ``content`` the attachment (``url`` → the Binary, ``size``, SHA-1 ``hash``,
                         ``language``, ``title``) and the ``format`` (CR-BIO xd-lab, XDS-SD pdf/text,
                         else mimeTypeSufficient); ``context`` serviceEvent period, facility type,
                         practice setting
Binary                   the CDA bytes, ``contentType`` text/xml (the DMP mimeType, DOMAIN.md §5.1)
Patient                  from recordTarget: FR Core INS slice, QUAL, names (BR/CL), birth date,
                         sex, birthplace; ``POST`` with ``ifNoneExist`` on the INS (else the IPP)
                         so the subject reference resolves on the platform without duplicating
                         the patient (MHD expects the Patient to exist on the recipient)
=======================  ==========================================================================

What the profiles require and the CDA lacks (author or legalAuthenticator id, custodian, title,
serviceEvent start, facility and practice setting codes, a class code for the type) refuses the
document with the element at fault, never a half-right Bundle; so does a code outside the DMP value
set its PDSm element is bound to (type JDV_J66, category JDV_J57, facilityType JDV_J61,
practiceSetting JDV_J04, designationType JDV_J59; :mod:`mappings.xds.dmp_value_sets`).

Registered as step ``cda_to_mhd_bundle`` (``application/cda+xml`` → ``application/fhir+json``),
settings `CdaToMhdConfig`. Deterministic: the same message gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from typing import Any, Literal

from lxml import etree
from pydantic import Field, field_validator, model_validator

from hub.content_types import ContentType
from hub.errors import MappingError
from hub.identity import FR_CORE_IDENTITY_STATUS_SYSTEM, FR_CORE_V2_0445_SYSTEM, INS_ROOTS, authority_for_oid
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.cda.header import read_cda_header
from mappings.fhir.common import (
    FR_CORE_V2_0203_SYSTEM,
    LOINC_SYSTEM,
    V2_0203_SYSTEM,
    dump_json,
    search_token,
    stable_uuid,
)
from mappings.fhir.profiles import PDSM_BUNDLE, PDSM_DOCUMENT_REFERENCE, PDSM_SUBMISSION_SET
from mappings.fhir.v2_common import FR_CORE_PATIENT, FR_CORE_PATIENT_INS, dtm
from mappings.fhir.validate import (
    BIRTH_LIST_GIVEN_NAME_URL,
    BIRTH_PLACE_URL,
    IDENTITY_RELIABILITY_URL,
    INSEE_CODE_SYSTEM,
    INSEE_CODE_URL,
)
from mappings.xds.dmp_value_sets import class_setting_error, is_member, lot_class, require_member
from mappings.xds.metadata import XdsCode, entry_uuid_for
from mappings.xds.visibility import VISIBILITY_CODES, VISIBILITY_FHIR_SYSTEM, visibility_codes
from mappings.xml import parse_xml

__all__ = ["CdaToMhdConfig", "cda_to_mhd", "cda_to_mhd_bundle"]

_H = "{urn:hl7-org:v3}"
_MHD = "https://profiles.ihe.net/ITI/MHD"
_RFC3986 = "urn:ietf:rfc:3986"
_LOINC_OID = "2.16.840.1.113883.6.1"
_FORMAT_SYSTEM = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
_IHE_FORMAT_OID = "urn:oid:1.3.6.1.4.1.19376.1.2.3"
_CRBIO_TEMPLATE = "1.2.250.1.213.1.1.1.55"
_XDS_SD_TEMPLATE = "1.3.6.1.4.1.19376.1.2.20"
_PS_ROOT = "1.2.250.1.71.4.2.1"
_GENDER = {"F": "female", "M": "male", "UN": "unknown", "U": "unknown"}
_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


class CdaToMhdConfig(ComponentConfig):
    source_id: str = Field(
        pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$",
        description="OID of the submitting system, the SubmissionSet ihe-sourceId (MHD: 1..1).",
    )
    content_type_code: XdsCode = Field(
        description="SubmissionSet designationType (XDS contentTypeCode; JDV_J59 for the DMP, TRE_R209 "
        "1.2.250.1.213.2.2), unless the message carries xds_content_type_code (e.g. from PV1-2)."
    )
    class_codes: dict[str, XdsCode] = Field(
        default_factory=dict,
        description="DocumentReference.category per ClinicalDocument/code@code (XDS classCode, JDV_J57). "
        "Unlisted: the class ASS_X04 gives the type; listed, it must be that class (required for a type "
        "ASS_X04 has no row for).",
    )
    timezone: str = Field("Europe/Paris", description="Time zone of CDA timestamps written without an offset.")
    fr_core: Literal["2.1", "2.2"] = Field(
        "2.2", description="FR Core version of the receiver (identityStatus QUAL, or 2.1 VALI)."
    )
    binary_content_type: str = Field("text/xml", description="Content type of the CDA in the Binary and attachment.")

    @model_validator(mode="after")
    def _codes_in_dmp_value_sets(self) -> CdaToMhdConfig:
        """A configured code outside its PDSm (DMP) value set would make every Bundle refused: say it now."""
        ct = self.content_type_code
        if not is_member("contentTypeCode", ct.code, ct.coding_scheme):
            raise ValueError(f"content_type_code: {ct.code} ({ct.coding_scheme}) is not in JDV_J59")
        for type_code, cls in self.class_codes.items():
            if error := class_setting_error(type_code, cls.code, cls.coding_scheme):
                raise ValueError(f"class_codes.{type_code}: {error}")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return v


def _path(el: etree._Element | None, *names: str) -> etree._Element | None:
    for name in names:
        el = None if el is None else el.find(_H + name)
    return el


def _code_system(oid: str | None) -> str | None:
    if not oid:
        return None
    return LOINC_SYSTEM if oid == _LOINC_OID else f"urn:oid:{oid}"


def _coding(code: str | None, system_oid: str | None, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    system = _code_system(system_oid)
    if system:
        out["system"] = system
    out["code"] = code
    if display:
        out["display"] = display
    return out


def _ts(value: str | None, config: CdaToMhdConfig, kind: Literal["date", "dateTime", "instant"]) -> str | None:
    if not value:
        return None
    try:
        return dtm(value, config, kind=kind)
    except ValueError:
        raise MappingError("timestamp is not a valid HL7 TS", location="/ClinicalDocument") from None


def _ins_identifier(ins: str, ins_oid: str, config: CdaToMhdConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The INS identifier of the Patient and its identity-reliability extension."""
    authority = authority_for_oid(ins_oid)
    assert authority is not None
    identifier = {
        "use": authority.fhir_use,
        "type": {"coding": [{"system": FR_CORE_V2_0203_SYSTEM, "code": authority.fhir_type}]},
        "system": authority.fhir_system,
        "value": ins,
    }
    # CI-SIS: the INS goes in patientRole/id only for a qualified identity (DOMAIN.md §3.3).
    status = (
        {"system": FR_CORE_IDENTITY_STATUS_SYSTEM, "code": "QUAL"}
        if config.fr_core == "2.2"
        else {"system": FR_CORE_V2_0445_SYSTEM, "code": "VALI"}
    )
    extension = {"extension": [{"url": "identityStatus", "valueCoding": status}], "url": IDENTITY_RELIABILITY_URL}
    return identifier, extension


def _ipp_identifier(header: dict[str, str]) -> dict[str, Any]:
    """The local patient id (IPP) as a PI identifier under its assigning authority's OID."""
    return {
        "use": "usual",
        "type": {"coding": [{"system": V2_0203_SYSTEM, "code": "PI"}]},
        "system": f"urn:oid:{header['ipp_oid']}",
        "value": header["ipp"],
    }


def _birth_place(person: etree._Element | None) -> tuple[dict[str, Any] | None, etree._Element | None]:
    """The birth-place extension (INSEE code, city) and the county element it came from, if any."""
    county = _path(person, "birthplace", "place", "addr", "county")
    county_code = (county.text or "").strip() if county is not None else ""
    if not county_code:
        return None, county
    address: dict[str, Any] = {
        "extension": [{"url": INSEE_CODE_URL, "valueCoding": {"system": INSEE_CODE_SYSTEM, "code": county_code}}]
    }
    city = _path(person, "birthplace", "place", "addr", "city")
    city_name = (city.text or "").strip() if city is not None else ""
    if city_name:
        address["city"] = city_name
    return {"url": BIRTH_PLACE_URL, "valueAddress": address}, county


def _human_names(name: etree._Element) -> list[dict[str, Any]]:
    """The FHIR HumanNames of one CDA name: birth name (BR, official) then used name (CL, usual)."""
    parts: dict[str, tuple[list[str], list[str]]] = {"BR": ([], []), "CL": ([], [])}
    birth_list = None
    for el in name:
        text = " ".join((el.text or "").split())
        if not text or not isinstance(el.tag, str):
            continue
        local, qualifier = el.tag[len(_H) :], el.get("qualifier")
        if local == "given" and qualifier is None:
            birth_list = text
        elif local in ("family", "given") and qualifier in parts:
            parts[qualifier][0 if local == "family" else 1].append(text)
    names: list[dict[str, Any]] = []
    for qualifier, use in (("BR", "official"), ("CL", "usual")):
        family, given = parts[qualifier]
        if not family and not given:
            continue
        entry: dict[str, Any] = {}
        if qualifier == "BR" and birth_list:
            entry["extension"] = [{"url": BIRTH_LIST_GIVEN_NAME_URL, "valueString": birth_list}]
        entry["use"] = use
        if family:
            entry["family"] = family[0]
        if given:
            entry["given"] = given[:1]
        names.append(entry)
    return names


def _missing_strict_traits(patient: dict[str, Any], names: list[dict[str, Any]], has_county: bool) -> list[str]:
    """The CDA locations of the strict traits an INS needs that the Patient lacks."""
    return [
        loc
        for loc, ok in (
            ("name", any(n["use"] == "official" and n.get("given") and n.get("extension") for n in names)),
            ("administrativeGenderCode", "gender" in patient),
            ("birthTime", "birthDate" in patient),
            ("birthplace/place/addr/county", has_county),
        )
        if not ok
    ]


def _patient(doc: etree._Element, header: dict[str, str], config: CdaToMhdConfig) -> dict[str, Any]:
    where = "/ClinicalDocument/recordTarget/patientRole/patient"
    person = _path(doc, "recordTarget", "patientRole", "patient")
    patient: dict[str, Any] = {"resourceType": "Patient", "meta": {"profile": [FR_CORE_PATIENT]}}
    identifiers: list[dict[str, Any]] = []
    ins, ins_oid = header.get("ins"), header.get("ins_oid")
    extensions: list[dict[str, Any]] = []
    if ins and ins_oid in INS_ROOTS:
        identifier, reliability = _ins_identifier(ins, ins_oid, config)
        identifiers.append(identifier)
        extensions.append(reliability)
        patient["meta"]["profile"] = [FR_CORE_PATIENT_INS]
    if header.get("ipp") and header.get("ipp_oid"):
        identifiers.append(_ipp_identifier(header))
    if not identifiers:
        raise MappingError("recordTarget without an INS or a local patient id", location=f"{where[:-8]}/id")
    birth_place, county = _birth_place(person)
    if birth_place is not None:
        extensions.append(birth_place)
    if extensions:
        patient["extension"] = extensions
    patient["identifier"] = identifiers
    names = [entry for name in ([] if person is None else person.findall(_H + "name")) for entry in _human_names(name)]
    if names:
        patient["name"] = names
    gender = _path(person, "administrativeGenderCode")
    if gender is not None and gender.get("code") in _GENDER:
        patient["gender"] = _GENDER[gender.get("code", "")]
    birth = _path(person, "birthTime")
    if birth is not None and birth.get("value"):
        patient["birthDate"] = _ts(birth.get("value", "")[:8], config, "date")
    if ins:
        missing = _missing_strict_traits(patient, names, county is not None)
        if missing:
            # FR Core fr-core-patient-ins: with an INS the strict traits travel too (DOMAIN.md §4.1).
            raise MappingError("INS without its strict traits", location=f"{where}/{missing[0]}")
    return patient


def _format(doc: etree._Element, header: dict[str, str]) -> dict[str, Any]:
    templates = header.get("template_ids", "").split()
    if _CRBIO_TEMPLATE in templates:
        return {"system": _IHE_FORMAT_OID, "code": "urn:ihe:lab:xd-lab:2008"}
    if _XDS_SD_TEMPLATE in templates:
        text = _path(doc, "component", "nonXMLBody", "text")
        media = (text.get("mediaType") if text is not None else "") or ""
        kind = "pdf" if media == "application/pdf" else "text"
        return {"system": _IHE_FORMAT_OID, "code": f"urn:ihe:iti:xds-sd:{kind}:2008"}
    return {"system": _FORMAT_SYSTEM, "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}


def _master_identifier(unique_id: str) -> dict[str, str]:
    # MHD 4.2.3 UniqueIdIdentifier: use "usual", a system (IHE Appendix Z.9.1).
    root, _, extension = unique_id.partition("^")
    if extension:
        return {"use": "usual", "system": f"urn:oid:{root}", "value": extension}
    return {"use": "usual", "system": _RFC3986, "value": f"urn:oid:{root}"}


def _ii(el: etree._Element | None) -> dict[str, str] | None:
    """An II (root + extension) as a FHIR Identifier, or None when it has no extension."""
    if el is None or not el.get("root") or not el.get("extension"):
        return None
    return {"system": f"urn:oid:{el.get('root')}", "value": el.get("extension", "")}


def _human_name(el: etree._Element | None) -> list[dict[str, Any]]:
    name = _path(el, "name")
    if name is None:
        return []
    family_el = _path(name, "family")
    family = " ".join((family_el.text or "").split()) if family_el is not None else ""
    given = [" ".join((g.text or "").split()) for g in name.findall(_H + "given") if (g.text or "").strip()]
    out: dict[str, Any] = {}
    if family:
        out["family"] = family
    if given:
        out["given"] = given
    return [out] if out else []


def _actor(prefix: str, entity: etree._Element, where: str) -> list[dict[str, Any]]:
    """Contained resources for a CDA assignedAuthor / assignedEntity: the first one is what is referenced.

    A professional (RPPS/ADELI idNat_PS root) becomes a PractitionerRole (Annuaire as-practitionerrole)
    pointing at its Practitioner and, when the CDA names it, its Organization (representedOrganization,
    the XDS authorInstitution); any other id is a Device (PDSm author: "or Device").
    """
    ident = _ii(_path(entity, "id"))
    if ident is None:
        raise MappingError("an author or authenticator without an id (root and extension)", location=f"{where}/id")
    org_el = _path(entity, "representedOrganization")
    org_id = _ii(_path(org_el, "id"))
    org: dict[str, Any] | None = None
    if org_id is not None:
        org = {"resourceType": "Organization", "id": f"{prefix}-org", "identifier": [org_id]}
        name = _path(org_el, "name")
        org_name = " ".join((name.text or "").split()) if name is not None else ""
        if org_name:
            org["name"] = org_name
    if ident["system"] != f"urn:oid:{_PS_ROOT}" and _path(entity, "assignedPerson") is None:
        device: dict[str, Any] = {"resourceType": "Device", "id": prefix, "identifier": [ident]}
        if org is not None:
            device["owner"] = {"reference": f"#{prefix}-org"}
        return [device] + ([org] if org else [])
    person: dict[str, Any] = {"resourceType": "Practitioner", "id": f"{prefix}-person", "identifier": [ident]}
    names = _human_name(_path(entity, "assignedPerson"))
    if names:
        person["name"] = names
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": prefix,
        "practitioner": {"reference": f"#{prefix}-person"},
    }
    if org is not None:
        role["organization"] = {"reference": f"#{prefix}-org"}
    specialty = _path(entity, "code")
    if specialty is not None and specialty.get("code"):
        role["specialty"] = [{"coding": [_coding(specialty.get("code"), specialty.get("codeSystem"))]}]
    return [role, person] + ([org] if org else [])


def _replaced(doc: etree._Element, unique_id: str) -> str | None:
    """The uniqueId this document replaces (relatedDocument[@typeCode='RPLC']/parentDocument/id)."""
    for related in doc.findall(_H + "relatedDocument"):
        if related.get("typeCode") != "RPLC":
            continue
        parent = _path(related, "parentDocument", "id")
        if parent is None or not parent.get("root"):
            return None
        ext = parent.get("extension")
        previous = f"{parent.get('root')}^{ext}" if ext else parent.get("root", "")
        if previous == unique_id:
            raise MappingError(
                "a replacement must carry a new document id", location="/ClinicalDocument/relatedDocument"
            )
        return previous
    return None


def _document_codes(header: dict[str, str], cfg: CdaToMhdConfig) -> tuple[str, XdsCode]:
    """The document's uniqueId and its configured XDS classCode; refuses a document lacking id or code."""
    unique_id = header.get("unique_id")
    if not unique_id:
        raise MappingError("ClinicalDocument without id", location="/ClinicalDocument/id")
    if not header.get("type_code"):
        raise MappingError("ClinicalDocument without code", location="/ClinicalDocument/code")
    type_code, type_system = header["type_code"], header.get("type_code_system", "")
    require_member("typeCode", type_code, type_system, "/ClinicalDocument/code")
    cls = cfg.class_codes.get(type_code)
    setting = None if cls is None else (cls.code, cls.coding_scheme, cls.display_name)
    code, scheme, display = lot_class(type_code, type_system, setting, "/ClinicalDocument/code")
    return unique_id, XdsCode(code=code, coding_scheme=scheme, display_name=display)


def _full_urls(unique_id: str, correlation: str, patient_id: dict[str, Any]) -> dict[str, str]:
    """The Bundle entries' fullUrls: stable UUIDs per document and message, the Patient's per identifier."""
    urls = {kind: f"urn:uuid:{stable_uuid('mhd', kind, unique_id, correlation)}" for kind in ("List", "Doc", "Binary")}
    urls["Patient"] = f"urn:uuid:{stable_uuid('Patient', patient_id['system'], patient_id['value'])}"
    return urls


def _contained_actors(
    doc: etree._Element, patient: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, str]]:
    """The DocumentReference's contained resources (authors, legal authenticator, source patient) and the
    author and authenticator references to them."""
    # Who: the CDA header's authors and legal authenticator, contained (MHD Comprehensive aggregation).
    contained: list[dict[str, Any]] = []
    authors = doc.findall(f"{_H}author/{_H}assignedAuthor")
    if not authors:
        raise MappingError("ClinicalDocument/author is required", location="/ClinicalDocument/author")
    author_refs = []
    for i, assigned in enumerate(authors, start=1):
        actors = _actor(f"author-{i}", assigned, f"/ClinicalDocument/author[{i}]/assignedAuthor")
        contained.extend(actors)
        author_refs.append({"reference": f"#{actors[0]['id']}"})
    legal = _path(doc, "legalAuthenticator", "assignedEntity")
    if legal is None:
        # PDSm: authenticator 1..1 (the DMP's legalAuthenticator).
        raise MappingError("legalAuthenticator is required", location="/ClinicalDocument/legalAuthenticator")
    legal_actors = _actor("authenticator", legal, "/ClinicalDocument/legalAuthenticator/assignedEntity")
    contained.extend(legal_actors)
    source_patient = {k: v for k, v in patient.items() if k != "meta"}
    source_patient["id"] = "source-patient"
    source_patient["meta"] = {"profile": [FR_CORE_PATIENT]}
    contained.append(source_patient)
    return contained, author_refs, {"reference": f"#{legal_actors[0]['id']}"}


def _custodian(header: dict[str, str]) -> dict[str, Any]:
    """DocumentReference.custodian: the CDA custodian organisation's id (PDSm custodian 1..1)."""
    if not (header.get("custodian_id") and header.get("custodian_id_root")):
        raise MappingError(
            "custodian is required (PDSm custodian 1..1)",
            location="/ClinicalDocument/custodian/assignedCustodian/representedCustodianOrganization/id",
        )
    return {
        "type": "Organization",
        "identifier": {"system": f"urn:oid:{header['custodian_id_root']}", "value": header["custodian_id"]},
    }


def _relates_to(replaced: str) -> list[dict[str, Any]]:
    """DocumentReference.relatesTo for a replacement (PDSm TD2.1 / MHD: it names the replaced entryUUID)."""
    return [
        {
            "code": "replaces",
            "target": {
                "type": "DocumentReference",
                "identifier": {"use": "official", "system": _RFC3986, "value": entry_uuid_for(replaced)},
            },
        }
    ]


def _security_labels(header: dict[str, str], metadata: Mapping[str, str]) -> list[dict[str, Any]]:
    """The confidentialityCode, then the masking codes of the message; at least one is required."""
    labels = []
    if header.get("confidentiality_code"):
        labels.append({"coding": [{"system": _CONFIDENTIALITY, "code": header["confidentiality_code"]}]})
    # The MetaDMPMSS masking flags, as the XDS route's extra confidentialityCodes (PDSm4DMP TD3.3a/b).
    for code in visibility_codes(metadata):
        labels.append({"coding": [{"system": VISIBILITY_FHIR_SYSTEM, "code": code, "display": VISIBILITY_CODES[code]}]})
    if not labels:
        raise MappingError("confidentialityCode is required", location="/ClinicalDocument/confidentialityCode")
    return labels


def _content(
    body: bytes, doc: etree._Element, header: dict[str, str], cfg: CdaToMhdConfig, url: str, created: str | None
) -> list[dict[str, Any]]:
    """DocumentReference.content: the attachment describing the Binary at ``url``, and the format code."""
    attachment: dict[str, Any] = {
        "contentType": cfg.binary_content_type,
        "language": header.get("language_code", "fr-FR"),
        "url": url,
        "size": len(body),
        # FHIR R4 Attachment.hash: base64 of the SHA-1 of the data (XDS hash is its hex form).
        "hash": base64.b64encode(hashlib.sha1(body).digest()).decode(),
        "title": header.get("title") or header.get("type_display_name") or "",
    }
    if not attachment["title"]:
        raise MappingError("title is required", location="/ClinicalDocument/title")
    if created:
        attachment["creation"] = created
    return [{"attachment": attachment, "format": _format(doc, header)}]


def _document_context(header: dict[str, str], cfg: CdaToMhdConfig) -> dict[str, Any]:
    """DocumentReference.context: service period, facility type, practice setting (all required), source patient."""
    period = {
        k: v
        for k, v in (
            ("start", _ts(header.get("service_start_time"), cfg, "dateTime")),
            ("end", _ts(header.get("service_stop_time"), cfg, "dateTime")),
        )
        if v
    }
    if "start" not in period:
        raise MappingError(
            "serviceEvent start is required (PDSm context.period.start)",
            location="/ClinicalDocument/documentationOf/serviceEvent/effectiveTime/low",
        )
    if not header.get("facility_code"):
        raise MappingError(
            "healthCareFacility code is required",
            location="/ClinicalDocument/componentOf/encompassingEncounter/location/healthCareFacility/code",
        )
    if not header.get("practice_setting_code"):
        raise MappingError(
            "standardIndustryClassCode is required",
            location="/ClinicalDocument/documentationOf/serviceEvent/performer",
        )
    require_member(
        "healthcareFacilityTypeCode",
        header["facility_code"],
        header.get("facility_code_system", ""),
        "/ClinicalDocument/componentOf/encompassingEncounter/location/healthCareFacility/code",
    )
    require_member(
        "practiceSettingCode",
        header["practice_setting_code"],
        header.get("practice_setting_code_system", ""),
        "/ClinicalDocument/documentationOf/serviceEvent/performer",
    )
    return {
        "period": period,
        "facilityType": {"coding": [_coding(header["facility_code"], header.get("facility_code_system"))]},
        "practiceSetting": {
            "coding": [_coding(header["practice_setting_code"], header.get("practice_setting_code_system"))]
        },
        "sourcePatientInfo": {"reference": "#source-patient"},
    }


def _document_reference(
    body: bytes,
    doc: etree._Element,
    header: dict[str, str],
    cfg: CdaToMhdConfig,
    class_code: XdsCode,
    patient: dict[str, Any],
    urls: dict[str, str],
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    """The PDSm DocumentReference (module docstring); refuses the document where a required element lacks."""
    unique_id = header["unique_id"]
    type_coding = _coding(header["type_code"], header.get("type_code_system"), header.get("type_display_name"))
    created = _ts(header.get("effective_time"), cfg, "dateTime")
    contained, author_refs, authenticator = _contained_actors(doc, patient)
    custodian = _custodian(header)
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [PDSM_DOCUMENT_REFERENCE]},
        "contained": contained,
        "masterIdentifier": _master_identifier(unique_id),
        "identifier": [{"use": "official", "system": _RFC3986, "value": entry_uuid_for(unique_id)}],
        "status": "current",
        "type": {"coding": [type_coding]},
        "category": [{"coding": [_coding(class_code.code, class_code.coding_scheme, class_code.display_name)]}],
        "subject": {"reference": urls["Patient"]},
    }
    date = _ts(header.get("effective_time"), cfg, "instant")
    if date is None:
        raise MappingError("effectiveTime is required", location="/ClinicalDocument/effectiveTime")
    document["date"] = date
    document["author"] = author_refs
    document["authenticator"] = authenticator
    document["custodian"] = custodian
    replaced = _replaced(doc, unique_id)
    if replaced is not None:
        document["relatesTo"] = _relates_to(replaced)
    document["securityLabel"] = _security_labels(header, metadata)
    document["content"] = _content(body, doc, header, cfg, urls["Binary"], created)
    document["context"] = _document_context(header, cfg)
    return document


def _designation_type(cfg: CdaToMhdConfig, metadata: Mapping[str, str]) -> dict[str, Any]:
    """The XDS contentTypeCode: the message's ``xds_content_type_code`` if any, else the configured one."""
    if metadata.get("xds_content_type_code"):
        require_member(
            "contentTypeCode", metadata["xds_content_type_code"], cfg.content_type_code.coding_scheme, "PV1-2"
        )
        return _coding(
            metadata["xds_content_type_code"],
            cfg.content_type_code.coding_scheme,
            metadata.get("xds_content_type_display") or None,
        )
    return _coding(cfg.content_type_code.code, cfg.content_type_code.coding_scheme, cfg.content_type_code.display_name)


def _lot_source(doc: etree._Element) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The lot's author: the document's first author, its structure as ihe-authorOrg (PDSm source 1..1)."""
    first_author = doc.findall(f"{_H}author/{_H}assignedAuthor")[0]
    lot_actors = _actor("lot-author", first_author, "/ClinicalDocument/author[1]/assignedAuthor")
    source: dict[str, Any] = {"reference": "#lot-author"}
    if any(a["id"] == "lot-author-org" for a in lot_actors):
        source["extension"] = [
            {"url": f"{_MHD}/StructureDefinition/ihe-authorOrg", "valueReference": {"reference": "#lot-author-org"}}
        ]
    return lot_actors, source


def _submission_set(
    doc: etree._Element,
    cfg: CdaToMhdConfig,
    message: Message | None,
    correlation: str,
    urls: dict[str, str],
    document_date: str,
) -> dict[str, Any]:
    """The PDSm SubmissionSet List (module docstring) with the DocumentReference as its entry."""
    submission_uid = f"2.25.{int(stable_uuid('mhd-submission', correlation).replace('-', ''), 16)}"
    content_type = _designation_type(cfg, message.metadata if message is not None else {})
    lot_actors, source = _lot_source(doc)
    return {
        "resourceType": "List",
        "meta": {"profile": [PDSM_SUBMISSION_SET]},
        "contained": lot_actors,
        "extension": [
            {
                "url": f"{_MHD}/StructureDefinition/ihe-sourceId",
                "valueIdentifier": {"system": _RFC3986, "value": f"urn:oid:{cfg.source_id}"},
            },
            {
                "url": f"{_MHD}/StructureDefinition/ihe-designationType",
                "valueCodeableConcept": {"coding": [content_type]},
            },
        ],
        "identifier": [
            {"use": "usual", "system": _RFC3986, "value": f"urn:oid:{submission_uid}"},
            {
                "use": "official",
                "system": _RFC3986,
                "value": f"urn:uuid:{stable_uuid('mhd-entry', submission_uid)}",
            },
        ],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": f"{_MHD}/CodeSystem/MHDlistTypes", "code": "submissionset"}]},
        "subject": {"reference": urls["Patient"]},
        "date": message.received_at.isoformat(timespec="seconds") if message is not None else document_date,
        "source": source,
        "entry": [{"item": {"reference": urls["Doc"]}}],
    }


def _transaction(
    urls: dict[str, str],
    submission: dict[str, Any],
    document: dict[str, Any],
    binary: dict[str, Any],
    patient: dict[str, Any],
) -> dict[str, Any]:
    """The ITI-65 transaction Bundle: the Patient created only if none has its first identifier."""
    patient_id = patient["identifier"][0]
    patient_condition = urllib.parse.urlencode({"identifier": search_token(patient_id["system"], patient_id["value"])})
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [PDSM_BUNDLE]},
        "type": "transaction",
        "entry": [
            {"fullUrl": urls["List"], "resource": submission, "request": {"method": "POST", "url": "List"}},
            {"fullUrl": urls["Doc"], "resource": document, "request": {"method": "POST", "url": "DocumentReference"}},
            {"fullUrl": urls["Binary"], "resource": binary, "request": {"method": "POST", "url": "Binary"}},
            {
                "fullUrl": urls["Patient"],
                "resource": patient,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": patient_condition},
            },
        ],
    }


def cda_to_mhd(
    body: bytes, message: Message | None = None, config: CdaToMhdConfig | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ITI-65 transaction Bundle (JSON) for a CDA document, and metadata for the derived message."""
    if config is None:
        raise MappingError("cda_to_mhd_bundle needs its settings (source_id, content_type_code, class_codes)")
    cfg = config
    doc = parse_xml(body)
    header = read_cda_header(doc)
    unique_id, class_code = _document_codes(header, cfg)
    correlation = message.correlation_id if message is not None else unique_id
    metadata = message.metadata if message is not None else {}
    patient = _patient(doc, header, cfg)
    urls = _full_urls(unique_id, correlation, patient["identifier"][0])
    document = _document_reference(body, doc, header, cfg, class_code, patient, urls, metadata)
    submission = _submission_set(doc, cfg, message, correlation, urls, document["date"])
    binary = {"resourceType": "Binary", "contentType": cfg.binary_content_type, "data": base64.b64encode(body).decode()}
    bundle = _transaction(urls, submission, document, binary, patient)
    meta = {"resource_type": "Bundle", "bundle_type": "transaction", "unique_id": unique_id}
    meta["document_type"] = header["type_code"]
    if header.get("ins") and header.get("ins_oid"):
        meta["ins"], meta["ins_oid"] = header["ins"], header["ins_oid"]
    return bundle, meta


@register("step", "cda_to_mhd_bundle", config=CdaToMhdConfig, consumes=(ContentType.CDA,), produces=ContentType.FHIR)
def cda_to_mhd_bundle(message: Message, config: CdaToMhdConfig | None = None) -> Message:
    """CDA R2 document → MHD/PDSm ITI-65 transaction Bundle (List submission set + DocumentReference + Binary)."""
    bundle, meta = cda_to_mhd(message.body, message, config)
    return message.derive(body=dump_json(bundle), content_type=ContentType.FHIR, **meta)
