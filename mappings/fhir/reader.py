"""Routing metadata of a FHIR R4 body, and the registered reader for ``application/fhir+json``.

Metadata keys (absent when the resource does not say):

======================  ===========================================================================
``resource_type``       the top-level resourceType; ``message_type`` carries the same value (the
                        hub's generic routing key, `hub.message`)
``bundle_type``         ``Bundle.type``
``message_event``       a message Bundle's ``MessageHeader.eventCoding.code`` (or eventUri)
``control_id``          ``Bundle.identifier.value`` (document and message Bundles carry one)
``patient_key``         ``value@authority`` of the one Patient's local identifier
                        (`mappings.fhir.identifiers`); for a resource without a Patient, from
                        ``subject.identifier`` when it is a local identifier
``patient_count``       how many distinct Patients the body holds, when more than one (no key then)
``ins`` / ``ins_oid``   the Patient's INS in force and its OID
``identity_status``     the RNIV status its reliability extension states (``qualifiee``...)
``document_type``       DocumentReference ``type.coding[0].code`` (+ ``document_type_system``),
                        from the only DocumentReference of a Bundle too
``unique_id``           DocumentReference ``masterIdentifier.value`` (the XDS uniqueId)
``document_count``      DocumentReferences in a Bundle
======================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.content_types import ContentType
from hub.errors import ValidationError
from hub.identity import IdentityStatus
from hub.registry import register
from mappings.fhir.common import iter_resources, load_json
from mappings.fhir.identifiers import active_ins, authority_of, patient_key_of, type_codes
from mappings.fhir.patient_consistency import patient_consistency_issues
from mappings.fhir.validate import IDENTITY_RELIABILITY_URL, validate_fhir

__all__ = ["add_patient_authorities", "fhir_metadata", "read_fhir_metadata", "remove_patient_authorities"]

# Identifier system -> authority name, from the FHIR listeners' `patient_authorities`: the registered reader
# has no config of its own, and a replayed body must get the patient key its listener gave it.
_AUTHORITIES: dict[str, str] = {}


def add_patient_authorities(mapping: Mapping[str, str]) -> None:
    """Make the registered reader (replay) key patients as a running listener does (`patient_authorities`)."""
    _AUTHORITIES.update(mapping)


def remove_patient_authorities(mapping: Mapping[str, str]) -> None:
    """Forget what `add_patient_authorities` added (the listener stopped)."""
    for system, authority in mapping.items():
        if _AUTHORITIES.get(system) == authority:
            del _AUTHORITIES[system]


def _status(patient: Mapping[str, Any]) -> str:
    for ext in patient.get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != IDENTITY_RELIABILITY_URL:
            continue
        for sub in ext.get("extension") or []:
            coding = sub.get("valueCoding") if isinstance(sub, dict) and sub.get("url") == "identityStatus" else None
            if not isinstance(coding, dict):
                continue
            code = str(coding.get("code") or "")
            if str(coding.get("system") or "").endswith("fr-core-cs-v2-0445"):
                # FR Core 2.1 / PAM table 0445: VALI with an INS is qualifiée (DOMAIN.md §2.5).
                return IdentityStatus.from_pam(code, ins_present=bool(active_ins(patient))) or ""
            try:
                return IdentityStatus.from_fr_core(code)
            except ValueError:
                return ""
    return ""


def _subject_key(resources: list[dict[str, Any]], authorities: Mapping[str, str] | None) -> str:
    """A patient key from ``subject.identifier`` (a logical reference) when no Patient is carried."""
    keys = set()
    for resource in resources:
        subject = resource.get("subject")
        ident = subject.get("identifier") if isinstance(subject, dict) else None
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        is_pi = any(code == "PI" for _, code in type_codes(ident)) or (authorities or {}).get(ident.get("system", ""))
        if is_pi:
            authority = authority_of(ident, authorities)
            keys.add(f"{ident['value']}@{authority}" if authority else ident["value"])
    return keys.pop() if len(keys) == 1 else ""


def _patient_metadata(resources: list[dict[str, Any]], authorities: Mapping[str, str] | None) -> dict[str, str]:
    """patient_key, ins, ins_oid, identity_status of the one patient (or patient_count when there are several)."""
    meta: dict[str, str] = {}
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    keyed = {patient_key_of(p, authorities) or f"#{i}" for i, p in enumerate(patients)}
    if len(patients) >= 1 and len(keyed) == 1:
        patient = patients[0]
        key = patient_key_of(patient, authorities)
        if key:
            meta["patient_key"] = key
        ins = active_ins(patient)
        if ins is not None:
            meta["ins"], meta["ins_oid"] = ins
        status = _status(patient)
        if status:
            meta["identity_status"] = status
    elif len(keyed) > 1:
        meta["patient_count"] = str(len(keyed))
    else:
        key = _subject_key(resources, authorities)
        if key:
            meta["patient_key"] = key
    return meta


def _document_metadata(document: Mapping[str, Any]) -> dict[str, str]:
    """document_type (and its system) and unique_id of a DocumentReference."""
    meta: dict[str, str] = {}
    concept = document.get("type")
    codings = [c for c in (concept.get("coding") or [] if isinstance(concept, dict) else []) if isinstance(c, dict)]
    if codings and codings[0].get("code"):
        meta["document_type"] = str(codings[0]["code"])
        if codings[0].get("system"):
            meta["document_type_system"] = str(codings[0]["system"])
    master = document.get("masterIdentifier")
    if isinstance(master, dict) and master.get("value"):
        meta["unique_id"] = str(master["value"])
    return meta


def fhir_metadata(doc: Mapping[str, Any], *, authorities: Mapping[str, str] | None = None) -> dict[str, str]:
    """The routing metadata of a FHIR resource (keys in the module docstring)."""
    kind = str(doc.get("resourceType") or "")
    meta: dict[str, str] = {"resource_type": kind, "message_type": kind}
    if kind == "Bundle":
        if doc.get("type"):
            meta["bundle_type"] = str(doc["type"])
        ident = doc.get("identifier")
        if isinstance(ident, dict) and ident.get("value"):
            meta["control_id"] = str(ident["value"])
    resources = [r for _, r in iter_resources(dict(doc))]
    top = [r for r in resources if r is not doc]
    if kind == "Bundle" and doc.get("type") == "message":
        header = next((r for r in top if r.get("resourceType") == "MessageHeader"), None)
        if header is not None:
            coding = header.get("eventCoding")
            event = coding.get("code") if isinstance(coding, dict) else header.get("eventUri")
            if event:
                meta["message_event"] = str(event)
    meta.update(_patient_metadata(resources, authorities))
    documents = [r for r in resources if r.get("resourceType") == "DocumentReference"]
    if kind == "Bundle" and documents:
        meta["document_count"] = str(len(documents))
    if len(documents) == 1:
        meta.update(_document_metadata(documents[0]))
    return meta


@register("reader", ContentType.FHIR)
def read_fhir_metadata(body: bytes) -> dict[str, str]:
    """Validate a FHIR R4 JSON body (structure, FR Core INS rules) and return its routing metadata.

    Used by replay to re-read a corrected body; raises `hub.errors.ParseError`
    (not JSON) or `hub.errors.ValidationError` naming the first error's
    FHIRPath location (never a value).
    """
    doc = load_json(body)
    errors = [i for i in validate_fhir(doc) + patient_consistency_issues(doc) if i.is_error]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationError(f"{errors[0]}{more}", code="207", location=errors[0].expression)
    return fhir_metadata(doc, authorities=_AUTHORITIES)
