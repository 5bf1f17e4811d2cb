"""A CI-SIS CDA R2 document → an IHE MHD "Provide Document Bundle" (ITI-65), the PDSm shape (DOMAIN.md §5.3).

The transaction Bundle holds, as ITI-65 (MHD Comprehensive) does:

=======================  ==========================================================================
List (SubmissionSet)     ``code`` MHDlistTypes#submissionset, ``status`` current, ``mode`` working;
                         identifiers: uniqueId ``2.25.<correlation id>`` (use usual) and entryUUID
                         (use official); ``ihe-sourceId`` from the ``source_id`` setting (left out
                         when unset); ``date`` the hub's receipt of the message; ``entry`` the
                         DocumentReference
DocumentReference        ``masterIdentifier`` the CDA id (the XDS uniqueId: ``urn:oid:<root>`` under
                         urn:ietf:rfc:3986, or ``<extension>`` under ``urn:oid:<root>``);
                         ``identifier`` the entryUUID (the same UUIDv5 the XDS route gives,
                         `mappings.xds.metadata.entry_uuid_for`); ``type`` ClinicalDocument/code;
                         ``category`` the class code (a copy of the type, as the XDS route does
                         without a per-type setting); ``date``/``creation`` effectiveTime; author
                         (RPPS) and custodian (structure id) as logical references;
                         ``securityLabel`` confidentialityCode then the TRE_A07 masking codes
                         (`mappings.xds.visibility`); ``content`` the attachment (``url``
                         → the Binary, ``size``, SHA-1 ``hash``, ``language``, ``title``) and the
                         ``format`` (CR-BIO xd-lab, XDS-SD pdf/text, else mimeTypeSufficient);
                         ``context`` serviceEvent period, facility type, practice setting
Binary                   the CDA bytes, ``contentType`` text/xml (the DMP mimeType, DOMAIN.md §5.1)
Patient                  from recordTarget: FR Core INS slice, QUAL, names (BR/CL), birth date,
                         sex, birthplace; ``POST`` with ``ifNoneExist`` on the INS (else the IPP)
                         so the subject reference resolves on the platform without duplicating
                         the patient (MHD expects the Patient to exist on the recipient)
=======================  ==========================================================================

Registered as step ``cda_to_mhd_bundle`` (``application/cda+xml`` → ``application/fhir+json``),
settings `CdaToMhdConfig`. Deterministic: the same message gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
import zoneinfo
from typing import Any, Literal

from lxml import etree
from pydantic import Field, field_validator

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
from mappings.fhir.v2_common import FR_CORE_PATIENT, FR_CORE_PATIENT_INS, dtm
from mappings.fhir.validate import (
    BIRTH_LIST_GIVEN_NAME_URL,
    BIRTH_PLACE_URL,
    IDENTITY_RELIABILITY_URL,
    INSEE_CODE_SYSTEM,
    INSEE_CODE_URL,
)
from mappings.xds.metadata import entry_uuid_for
from mappings.xds.visibility import VISIBILITY_CODES, VISIBILITY_FHIR_SYSTEM, visibility_codes
from mappings.xml import parse_xml

__all__ = [ "CdaToMhdConfig", "cda_to_mhd", "cda_to_mhd_bundle"]

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
    source_id: str | None = Field(
        None,
        pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$",
        description="OID of the submitting system, the SubmissionSet ihe-sourceId (MHD); unset: left out.",
    )
    timezone: str = Field("Europe/Paris", description="Time zone of CDA timestamps written without an offset.")
    fr_core: Literal["2.1", "2.2"] = Field(
        "2.2", description="FR Core version of the receiver (identityStatus QUAL, or 2.1 VALI)."
    )
    binary_content_type: str = Field("text/xml", description="Content type of the CDA in the Binary and attachment.")

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


def _patient(doc: etree._Element, header: dict[str, str], config: CdaToMhdConfig) -> dict[str, Any]:
    where = "/ClinicalDocument/recordTarget/patientRole/patient"
    person = _path(doc, "recordTarget", "patientRole", "patient")
    patient: dict[str, Any] = {"resourceType": "Patient", "meta": {"profile": [FR_CORE_PATIENT]}}
    identifiers: list[dict[str, Any]] = []
    ins, ins_oid = header.get("ins"), header.get("ins_oid")
    extensions: list[dict[str, Any]] = []
    if ins and ins_oid in INS_ROOTS:
        authority = authority_for_oid(ins_oid)
        assert authority is not None
        identifiers.append(
            {
                "use": authority.fhir_use,
                "type": {"coding": [{"system": FR_CORE_V2_0203_SYSTEM, "code": authority.fhir_type}]},
                "system": authority.fhir_system,
                "value": ins,
            }
        )
        # CI-SIS: the INS goes in patientRole/id only for a qualified identity (DOMAIN.md §3.3).
        status = (
            {"system": FR_CORE_IDENTITY_STATUS_SYSTEM, "code": "QUAL"}
            if config.fr_core == "2.2"
            else {"system": FR_CORE_V2_0445_SYSTEM, "code": "VALI"}
        )
        extensions.append(
            {"extension": [{"url": "identityStatus", "valueCoding": status}], "url": IDENTITY_RELIABILITY_URL}
        )
        patient["meta"]["profile"] = [FR_CORE_PATIENT_INS]
    if header.get("ipp") and header.get("ipp_oid"):
        identifiers.append(
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203_SYSTEM, "code": "PI"}]},
                "system": f"urn:oid:{header['ipp_oid']}",
                "value": header["ipp"],
            }
        )
    if not identifiers:
        raise MappingError("recordTarget without an INS or a local patient id", location=f"{where[:-8]}/id")
    county = _path(person, "birthplace", "place", "addr", "county")
    county_code = (county.text or "").strip() if county is not None else ""
    if county_code:
        address: dict[str, Any] = {
            "extension": [{"url": INSEE_CODE_URL, "valueCoding": {"system": INSEE_CODE_SYSTEM, "code": county_code}}]
        }
        city = _path(person, "birthplace", "place", "addr", "city")
        city_name = (city.text or "").strip() if city is not None else ""
        if city_name:
            address["city"] = city_name
        extensions.append({"url": BIRTH_PLACE_URL, "valueAddress": address})
    if extensions:
        patient["extension"] = extensions
    patient["identifier"] = identifiers
    names: list[dict[str, Any]] = []
    for name in [] if person is None else person.findall(_H + "name"):
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
    if names:
        patient["name"] = names
    gender = _path(person, "administrativeGenderCode")
    if gender is not None and gender.get("code") in _GENDER:
        patient["gender"] = _GENDER[gender.get("code", "")]
    birth = _path(person, "birthTime")
    if birth is not None and birth.get("value"):
        patient["birthDate"] = _ts(birth.get("value", "")[:8], config, "date")
    if ins:
        missing = [
            loc
            for loc, ok in (
                ("name", any(n["use"] == "official" and n.get("given") and n.get("extension") for n in names)),
                ("administrativeGenderCode", "gender" in patient),
                ("birthTime", "birthDate" in patient),
                ("birthplace/place/addr/county", county is not None),
            )
            if not ok
        ]
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
    root, _, extension = unique_id.partition("^")
    if extension:
        return {"system": f"urn:oid:{root}", "value": extension}
    return {"system": _RFC3986, "value": f"urn:oid:{root}"}


def cda_to_mhd(
    body: bytes, message: Message | None = None, config: CdaToMhdConfig | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ITI-65 transaction Bundle (JSON) for a CDA document, and metadata for the derived message."""
    cfg = config or CdaToMhdConfig()
    doc = parse_xml(body)
    header = read_cda_header(doc)
    unique_id = header.get("unique_id")
    if not unique_id:
        raise MappingError("ClinicalDocument without id", location="/ClinicalDocument/id")
    if not header.get("type_code"):
        raise MappingError("ClinicalDocument without code", location="/ClinicalDocument/code")
    correlation = message.correlation_id if message is not None else unique_id
    patient = _patient(doc, header, cfg)
    patient_id = patient["identifier"][0]
    urls = {kind: f"urn:uuid:{stable_uuid('mhd', kind, unique_id, correlation)}" for kind in ("List", "Doc", "Binary")}
    urls["Patient"] = f"urn:uuid:{stable_uuid('Patient', patient_id['system'], patient_id['value'])}"
    type_coding = _coding(header["type_code"], header.get("type_code_system"), header.get("type_display_name"))
    created = _ts(header.get("effective_time"), cfg, "dateTime")
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [f"{_MHD}/StructureDefinition/IHE.MHD.Comprehensive.DocumentReference"]},
        "masterIdentifier": _master_identifier(unique_id),
        "identifier": [{"use": "official", "system": _RFC3986, "value": entry_uuid_for(unique_id)}],
        "status": "current",
        "type": {"coding": [type_coding]},
        "category": [{"coding": [dict(type_coding)]}],
        "subject": {"reference": urls["Patient"]},
    }
    date = _ts(header.get("effective_time"), cfg, "instant")
    if date:
        document["date"] = date
    if header.get("author_id") and header.get("author_id_root"):
        root = header["author_id_root"]
        kind = "Practitioner" if root == _PS_ROOT else "Device"
        document["author"] = [{"type": kind, "identifier": {"system": f"urn:oid:{root}", "value": header["author_id"]}}]
    if header.get("custodian_id") and header.get("custodian_id_root"):
        document["custodian"] = {
            "type": "Organization",
            "identifier": {"system": f"urn:oid:{header['custodian_id_root']}", "value": header["custodian_id"]},
        }
    labels = []
    if header.get("confidentiality_code"):
        labels.append({"coding": [{"system": _CONFIDENTIALITY, "code": header["confidentiality_code"]}]})
    # The MetaDMPMSS masking flags, as the XDS route's extra confidentialityCodes (PDSm4DMP TD3.3a/b).
    for code in visibility_codes(message.metadata if message is not None else {}):
        labels.append({"coding": [{"system": VISIBILITY_FHIR_SYSTEM, "code": code, "display": VISIBILITY_CODES[code]}]})
    if labels:
        document["securityLabel"] = labels
    attachment: dict[str, Any] = {
        "contentType": cfg.binary_content_type,
        "language": header.get("language_code", "fr-FR"),
        "url": urls["Binary"],
        "size": len(body),
        # FHIR R4 Attachment.hash: base64 of the SHA-1 of the data (XDS hash is its hex form).
        "hash": base64.b64encode(hashlib.sha1(body).digest()).decode(),
    }
    if header.get("title"):
        attachment["title"] = header["title"]
    if created:
        attachment["creation"] = created
    document["content"] = [{"attachment": attachment, "format": _format(doc, header)}]
    context: dict[str, Any] = {}
    period = {
        k: v
        for k, v in (
            ("start", _ts(header.get("service_start_time"), cfg, "dateTime")),
            ("end", _ts(header.get("service_stop_time"), cfg, "dateTime")),
        )
        if v
    }
    if period:
        context["period"] = period
    if header.get("facility_code"):
        context["facilityType"] = {"coding": [_coding(header["facility_code"], header.get("facility_code_system"))]}
    if header.get("practice_setting_code"):
        context["practiceSetting"] = {
            "coding": [_coding(header["practice_setting_code"], header.get("practice_setting_code_system"))]
        }
    context["sourcePatientInfo"] = {"reference": urls["Patient"]}
    document["context"] = context

    submission_uid = f"2.25.{int(stable_uuid('mhd-submission', correlation).replace('-', ''), 16)}"
    submission: dict[str, Any] = {
        "resourceType": "List",
        "meta": {"profile": [f"{_MHD}/StructureDefinition/IHE.MHD.Comprehensive.SubmissionSet"]},
    }
    if cfg.source_id:
        submission["extension"] = [
            {
                "url": f"{_MHD}/StructureDefinition/ihe-sourceId",
                "valueIdentifier": {"value": f"urn:oid:{cfg.source_id}"},
            }
        ]
    submission.update(
        {
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
        }
    )
    if message is not None:
        submission["date"] = message.received_at.isoformat(timespec="seconds")
    submission["entry"] = [{"item": {"reference": urls["Doc"]}}]
    binary = {"resourceType": "Binary", "contentType": cfg.binary_content_type, "data": base64.b64encode(body).decode()}
    patient_condition = urllib.parse.urlencode({"identifier": search_token(patient_id["system"], patient_id["value"])})
    bundle = {
        "resourceType": "Bundle",
        "meta": {"profile": [f"{_MHD}/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle"]},
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
