"""Stamp a qualified INS identity into a FHIR R4 FR Core Patient (JSON), alone or in a Bundle (DOMAIN.md §4).

===============================  ==================================================================
``identifier``                   the INS slice: ``use`` official (``temp`` for an NIA), ``type``
                                 ``fr-core-cs-v2-0203#INS-NIR|INS-NIA|INS-NIR-TEST|INS-NIR-DEMO``,
                                 ``system`` ``urn:oid:<OID>``, ``value``; it replaces the INS
                                 identifiers in force (``use`` old ones stay), at the first one's
                                 place. The billing NIR (same ``.8`` system, type ``NH``) and the
                                 local ids are kept.
``extension`` reliability        ``fr-core-identity-reliability`` / ``identityStatus``: FR Core
                                 >= 2.2 ``fr-core-cs-identity-status#QUAL``, or FR Core 2.1
                                 ``fr-core-cs-v2-0445#VALI`` (`FrCoreVersion`); other sub-extensions
                                 (method, dates, validation mode) are kept
``name``                         ``official``: family = birth name, given = [first birth given name],
                                 ``fr-core-patient-birth-list-given-name`` = the INSi list (prefix
                                 kept); ``usual`` when the identity has a used name
``birthDate`` / ``gender``       ISO date; male / female / unknown
``extension`` birthPlace         ``patient-birthPlace`` valueAddress with ``fr-core-address-insee-code``
                                 (TRE_R13 CommuneOM system); an address already holding that code is
                                 kept as is (city, country), else it is reduced to the code
===============================  ==================================================================

Plain `json` in and out: keys keep their order, new keys are placed in FHIR
element order, and the output is compact UTF-8 JSON (so stamping twice gives
the same bytes).
"""

from __future__ import annotations

import enum
import json
from typing import Any

from hub.errors import MappingError, ParseError
from hub.identity import (
    FR_CORE_IDENTITY_STATUS_SYSTEM,
    FR_CORE_STATUS_COMMENT_SYSTEM,
    FR_CORE_V2_0445_SYSTEM,
    INS_AUTHORITIES,
    IdentityAttribute,
    InsPolicy,
)
from mappings.ins.stamp import Stamped, StampIdentity, require_stampable, sorted_attributes, stamp_metadata

__all__ = [
    "BIRTH_LIST_GIVEN_NAME_URL",
    "BIRTH_PLACE_URL",
    "FR_CORE_V2_0203_SYSTEM",
    "IDENTITY_RELIABILITY_URL",
    "INSEE_CODE_SYSTEM",
    "INSEE_CODE_URL",
    "FrCoreVersion",
    "stamp_fhir",
]

IDENTITY_RELIABILITY_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
BIRTH_LIST_GIVEN_NAME_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
BIRTH_PLACE_URL = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
INSEE_CODE_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
INSEE_CODE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
FR_CORE_V2_0203_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"

_INS_SYSTEMS = frozenset(a.fhir_system for a in INS_AUTHORITIES.values())
_INS_TYPES = frozenset(a.fhir_type for a in INS_AUTHORITIES.values())
# Attributes a qualified identity may not keep (RNIV: DOUT/FICT only with provisoire, DOMAIN.md §1.4).
_ATTRIBUTE_CODES = frozenset(a.value for a in IdentityAttribute)
_FORBIDDEN_ATTRIBUTES = frozenset({IdentityAttribute.DOUT.value, IdentityAttribute.FICT.value})

# Patient elements in FHIR R4 order, for placing a key the resource did not have.
_PATIENT_ORDER = (
    "resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
    "modifierExtension", "identifier", "active", "name", "telecom", "gender", "birthDate", "_birthDate",
    "deceasedBoolean", "deceasedDateTime", "address", "maritalStatus", "multipleBirthBoolean",
    "multipleBirthInteger", "photo", "contact", "communication", "generalPractitioner",
    "managingOrganization", "link",
)  # fmt: skip


class FrCoreVersion(enum.StrEnum):
    """Which FR Core the receiver validates against; decides the identityStatus coding (DOMAIN.md §4.2)."""

    V2_1 = "2.1"
    """FR Core 2.1.x and before: ``fr-core-cs-v2-0445#VALI`` (PAM table 0445, no QUAL)."""
    V2_2 = "2.2"
    """FR Core 2.2 and later: ``fr-core-cs-identity-status#QUAL`` (RNIV statuses)."""


def stamp_fhir(
    body: bytes,
    identity: StampIdentity,
    *,
    policy: InsPolicy | None = None,
    fr_core: FrCoreVersion | str = FrCoreVersion.V2_2,
    full_url: str | None = None,
) -> Stamped:
    """Write ``identity`` into a FHIR R4 Patient, or into the Patient of a Bundle; return bytes and metadata.

    In a Bundle, the Patient entry is the one whose ``fullUrl`` is
    ``full_url``, or the only Patient entry; several without ``full_url`` is
    a `MappingError` (which patient is meant is not the stamper's guess).
    Raises `hub.errors.ParseError` when the body is not a JSON object and
    `hub.errors.MappingError` when there is no Patient or the identity may not
    be stamped (see `mappings.ins.stamp`).
    """
    require_stampable(identity, policy)
    version = FrCoreVersion(fr_core)
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ParseError("not JSON") from None
    if not isinstance(doc, dict):
        raise ParseError("not a FHIR resource: the JSON is not an object")
    patient = _find_patient(doc, full_url)
    _stamp_identifier(patient, identity)
    _stamp_reliability(patient, identity, version)
    _stamp_names(patient, identity)
    _put(patient, "gender", identity.traits.sex.fhir)
    _put(patient, "birthDate", identity.traits.birth_date.isoformat())
    _stamp_birthplace(patient, identity.traits.birthplace_code)
    out = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Stamped(out, stamp_metadata(identity))


def _find_patient(doc: dict[str, Any], full_url: str | None) -> dict[str, Any]:
    kind = doc.get("resourceType")
    if kind == "Patient":
        return doc
    if kind != "Bundle":
        raise MappingError("not a Patient or a Bundle", location="resourceType")
    entries = [e for e in doc.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    patients = [e for e in entries if e["resource"].get("resourceType") == "Patient"]
    if full_url is not None:
        patients = [e for e in patients if e.get("fullUrl") == full_url]
    if not patients:
        raise MappingError("no Patient entry in the Bundle", location="Bundle.entry")
    if len(patients) > 1:
        raise MappingError("several Patient entries in the Bundle: say which (full_url)", location="Bundle.entry")
    resource: dict[str, Any] = patients[0]["resource"]
    return resource


def _put(resource: dict[str, Any], key: str, value: Any) -> None:
    """Set ``resource[key]``; a new key goes at its FHIR element place, not at the end."""
    if key in resource or key not in _PATIENT_ORDER:
        resource[key] = value
        return
    rank = _PATIENT_ORDER.index(key)
    items = list(resource.items())
    at = next(
        (i for i, (k, _) in enumerate(items) if k in _PATIENT_ORDER and _PATIENT_ORDER.index(k) > rank), len(items)
    )
    items.insert(at, (key, value))
    resource.clear()
    resource.update(items)


def _list(resource: dict[str, Any], key: str) -> list[Any]:
    value = resource.get(key)
    if not isinstance(value, list):
        value = []
        _put(resource, key, value)
    return value


def _codes(concept: Any) -> set[tuple[str | None, str | None]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return {(c.get("system"), c.get("code")) for c in codings or [] if isinstance(c, dict)}


def _is_ins(identifier: dict[str, Any]) -> bool:
    """An INS identifier, by its FR Core type or, untyped, by its system (DOMAIN.md §4.1)."""
    codes = _codes(identifier.get("type"))
    if any(system == FR_CORE_V2_0203_SYSTEM and code in _INS_TYPES for system, code in codes):
        return True
    # The billing NIR shares urn:oid:1.2.250.1.213.1.4.8 with the INS-NIR but is typed NH: not an INS.
    return identifier.get("system") in _INS_SYSTEMS and not any(code == "NH" for _, code in codes)


def _stamp_identifier(patient: dict[str, Any], identity: StampIdentity) -> None:
    authority = identity.authority
    new = {
        "use": authority.fhir_use,
        "type": {"coding": [{"system": FR_CORE_V2_0203_SYSTEM, "code": authority.fhir_type}]},
        "system": authority.fhir_system,
        "value": identity.ins,
    }
    out: list[Any] = []
    at: int | None = None
    for ident in _list(patient, "identifier"):
        if isinstance(ident, dict) and _is_ins(ident):
            # FR Core: use "old" marks a deactivated INS (kept); any other INS is replaced.
            if ident.get("use") == "old" and ident.get("value") != identity.ins:
                out.append(ident)
            elif at is None:
                at = len(out)
            continue
        out.append(ident)
    out.insert(0 if at is None else at, new)
    patient["identifier"] = out


def _sub(url: str, value_key: str, value: Any) -> dict[str, Any]:
    return {"url": url, value_key: value}


def _ext_codes(ext: dict[str, Any]) -> set[str | None]:
    if isinstance(ext.get("valueCoding"), dict):
        return {ext["valueCoding"].get("code")}
    return {code for _, code in _codes(ext.get("valueCodeableConcept"))}


def _stamp_reliability(patient: dict[str, Any], identity: StampIdentity, version: FrCoreVersion) -> None:
    extensions = _list(patient, "extension")
    current = next((e for e in extensions if isinstance(e, dict) and e.get("url") == IDENTITY_RELIABILITY_URL), None)
    if version is FrCoreVersion.V2_2:
        status = {"system": FR_CORE_IDENTITY_STATUS_SYSTEM, "code": identity.status.fr_core_code}
    else:
        # FR Core 2.1 mirrors PAM table 0445, where VALI is what a qualified identity carries (DOMAIN.md §2.5).
        status = {"system": FR_CORE_V2_0445_SYSTEM, "code": identity.status.pam_code}
    subs: list[Any] = []
    at: int | None = None
    for sub in (current or {}).get("extension") or []:
        if not isinstance(sub, dict):
            continue
        if sub.get("url") == "identityStatus":
            if at is None:
                at = len(subs)
            continue
        if sub.get("url") == "comment":
            codes = _ext_codes(sub)
            # >= 2.2 rewrites the RNIV attributes from the identity; 2.1 only drops DOUT/FICT.
            dropped = _ATTRIBUTE_CODES if version is FrCoreVersion.V2_2 else _FORBIDDEN_ATTRIBUTES
            if codes & dropped:
                continue
        subs.append(sub)
    subs.insert(0 if at is None else at, _sub("identityStatus", "valueCoding", status))
    if version is FrCoreVersion.V2_2:
        for attribute in sorted_attributes(identity.attributes):
            coding = {"system": FR_CORE_STATUS_COMMENT_SYSTEM, "code": attribute.value}
            subs.append(_sub("comment", "valueCodeableConcept", {"coding": [coding]}))
    if current is None:
        extensions.insert(0, {"extension": subs, "url": IDENTITY_RELIABILITY_URL})
    else:
        current["extension"] = subs


def _stamp_names(patient: dict[str, Any], identity: StampIdentity) -> None:
    traits = identity.traits
    names = _list(patient, "name")
    old_official = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"), None)
    official: dict[str, Any] = {
        # FR Core INS profile: official given 1..1 is the first birth given name; the extension holds
        # the full INSi list (DOMAIN.md §4.1).
        "extension": [_sub(BIRTH_LIST_GIVEN_NAME_URL, "valueString", traits.birth_given_names)],
        "use": "official",
        "family": traits.birth_name,
        "given": [traits.first_birth_given_name],
    }
    if old_official is not None:
        others = [
            e
            for e in old_official.get("extension") or []
            if isinstance(e, dict) and e.get("url") != BIRTH_LIST_GIVEN_NAME_URL
        ]
        official["extension"][:0] = others
        if "prefix" in old_official:
            official["prefix"] = old_official["prefix"]
    usual: dict[str, Any] | None = None
    if identity.has_used_name:
        old_usual = next((n for n in names if isinstance(n, dict) and n.get("use") == "usual"), None)
        usual = {"use": "usual"}
        if identity.used_family_name:
            usual["family"] = identity.used_family_name
        if identity.used_given_name:
            usual["given"] = [identity.used_given_name]
        if old_usual is not None and "prefix" in old_usual:
            usual["prefix"] = old_usual["prefix"]
    out: list[Any] = []
    at_official: int | None = None
    at_usual: int | None = None
    for name in names:
        use = name.get("use") if isinstance(name, dict) else None
        if use == "official":
            if at_official is None:
                at_official = len(out)
                out.append(official)
            continue
        if use == "usual" and usual is not None:
            if at_usual is None:
                at_usual = len(out)
                out.append(usual)
            continue
        out.append(name)
    if at_official is None:
        out.insert(0, official)
        at_official = 0
        at_usual = at_usual + 1 if at_usual is not None else None
    if usual is not None and at_usual is None:
        out.insert(at_official + 1, usual)
    patient["name"] = out


def _stamp_birthplace(patient: dict[str, Any], code: str) -> None:
    # DOMAIN.md §4.1: the INSEE code travels in fr-core-address-insee-code, a Coding from TRE_R13.
    insee = {"url": INSEE_CODE_URL, "valueCoding": {"system": INSEE_CODE_SYSTEM, "code": code}}
    extensions = _list(patient, "extension")
    place = next((e for e in extensions if isinstance(e, dict) and e.get("url") == BIRTH_PLACE_URL), None)
    if place is None:
        after = next(
            (
                i + 1
                for i, e in enumerate(extensions)
                if isinstance(e, dict) and e.get("url") == IDENTITY_RELIABILITY_URL
            ),
            len(extensions),
        )
        extensions.insert(after, {"url": BIRTH_PLACE_URL, "valueAddress": {"extension": [insee]}})
        return
    address = place.get("valueAddress")
    if isinstance(address, dict):
        codes = [e for e in address.get("extension") or [] if isinstance(e, dict) and e.get("url") == INSEE_CODE_URL]
        coding = codes[0].get("valueCoding") if len(codes) == 1 else None
        if isinstance(coding, dict) and coding.get("code") == code:
            coding["system"] = INSEE_CODE_SYSTEM  # same place: keep city, country, display
            return
    # A new code keeps nothing of the old birthplace (its city described another place).
    place["valueAddress"] = {"extension": [insee]}
