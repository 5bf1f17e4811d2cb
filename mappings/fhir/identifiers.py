"""Which identifiers of a FHIR resource the hub uses: patient key, INS, business identifier.

**Patient key.** HL7 v2 messages are keyed ``IPP@authority`` where the
authority is CX-4.1 (the HD namespace id), else CX-4.2 (its universal id)
(`mappings.hl7v2.er7`, PAM FR §6.6.1). A FHIR Patient gets the same key from
its *local* identifier, the one typed ``PI`` (``v2-0203`` or FR Core
``fr-core-cs-v2-0203``) whose ``use`` is not ``old``, or, untyped, whose
``system`` is one the operator declared. Its authority is, in order:

1. the operator's mapping ``system -> authority`` (config ``patient_authorities``),
   for DUIs that know only their own system URI;
2. ``Identifier.assigner.display``: the HL7 v2-to-FHIR mapping of CX-4.1
   (HD-1 namespace id -> assigner Organization name), and what
   `mappings.fhir.v2_adt` writes;
3. ``Identifier.assigner.identifier.value`` (HD-2, the universal id);
4. the ``system``: a ``urn:oid:`` prefix is dropped (HD-2 with HD-3 ``ISO``),
   a hub authority URN (``urn:interop-hub:authority:<name>``, written by the
   v2 mappings when CX-4 has no OID) gives back its name, any other URI is
   kept whole.

So the A31 ``000003^^^CHU-X&000897406&N^PI`` and a DUI's Patient with
``{"value": "000003", "assigner": {"display": "CHU-X"}}`` (or the system
mapped to ``CHU-X``) share the key ``000003@CHU-X`` and one registry entry.

**INS.** An identifier on one of the four INS systems typed with its FR Core
INS type (or untyped on .9/.10/.11), not ``use`` old (DOMAIN.md §4.1).

**Business identifier** (conditional create, ``If-None-Exist``): the INS,
else the local id for a Patient; ``masterIdentifier`` for a
DocumentReference (the XDS uniqueId, MHD); ``Bundle.identifier``; else the
first identifier with a system and a value, ``official``/``usual`` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.identity import INS_AUTHORITIES, INS_NIR_OID
from mappings.fhir.common import FR_CORE_V2_0203_SYSTEM, V2_0203_SYSTEM

__all__ = [
    "HUB_AUTHORITY_URN",
    "active_ins",
    "authority_of",
    "business_identifier",
    "is_ins_identifier",
    "local_identifier",
    "patient_key_of",
    "type_codes",
]

HUB_AUTHORITY_URN = "urn:interop-hub:authority:"
"""System prefix the v2 mappings use for an HL7 v2 authority that has no OID (CX-4.3 not ``ISO``)."""

_INS_BY_SYSTEM = {a.fhir_system: a for a in INS_AUTHORITIES.values()}
_INS_TYPES = {a.fhir_type: a for a in INS_AUTHORITIES.values()}


def type_codes(identifier: Mapping[str, Any]) -> set[tuple[str | None, str | None]]:
    """(system, code) pairs of ``Identifier.type``."""
    concept = identifier.get("type")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return {(c.get("system"), c.get("code")) for c in codings or [] if isinstance(c, dict)}


def _identifiers(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [i for i in resource.get("identifier") or [] if isinstance(i, dict)]


def is_ins_identifier(identifier: Mapping[str, Any]) -> bool:
    """An INS, by FR Core type, or untyped on an INS-only system (.9/.10/.11; .8 is shared with NH)."""
    codes = type_codes(identifier)
    if any(system == FR_CORE_V2_0203_SYSTEM and code in _INS_TYPES for system, code in codes):
        return True
    system = identifier.get("system")
    if system not in _INS_BY_SYSTEM or any(code == "NH" for _, code in codes):
        return False
    return not codes and system != f"urn:oid:{INS_NIR_OID}"


def active_ins(patient: Mapping[str, Any]) -> tuple[str, str] | None:
    """(matricule, OID) of the Patient's INS in force (``use`` not old), NIR before NIA (PAM FR §4.4.1)."""
    found: list[tuple[str, str, bool]] = []
    for ident in _identifiers(patient):
        if not is_ins_identifier(ident) or ident.get("use") == "old":
            continue
        authority = _INS_BY_SYSTEM.get(str(ident.get("system")))
        value = ident.get("value")
        if authority is None or not isinstance(value, str) or not value:
            continue
        found.append((value, authority.oid, authority.kind.value == "NIR"))
    found.sort(key=lambda f: not f[2])
    return (found[0][0], found[0][1]) if found else None


def local_identifier(patient: Mapping[str, Any], authorities: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The Patient's local identifier (IPP): typed PI, else on a system the operator mapped."""
    mapped = authorities or {}
    candidates = [i for i in _identifiers(patient) if i.get("use") != "old" and isinstance(i.get("value"), str)]
    for ident in candidates:
        if any(
            code == "PI" and system in (V2_0203_SYSTEM, FR_CORE_V2_0203_SYSTEM) for system, code in type_codes(ident)
        ):
            return ident
    for ident in candidates:
        if ident.get("system") in mapped and not is_ins_identifier(ident):
            return ident
    return None


def authority_of(identifier: Mapping[str, Any], authorities: Mapping[str, str] | None = None) -> str:
    """The authority part of a patient key for ``identifier`` (module docstring, rules 1-4); '' if none."""
    system = identifier.get("system")
    if isinstance(system, str) and authorities and system in authorities:
        return authorities[system]
    assigner = identifier.get("assigner")
    if isinstance(assigner, dict):
        display = assigner.get("display")
        if isinstance(display, str) and display.strip():
            return display.strip()
        assigner_id = assigner.get("identifier")
        if isinstance(assigner_id, dict) and isinstance(assigner_id.get("value"), str) and assigner_id["value"]:
            return str(assigner_id["value"])
    if isinstance(system, str) and system:
        if system.startswith("urn:oid:"):
            return system[len("urn:oid:") :]
        if system.startswith(HUB_AUTHORITY_URN):
            return system[len(HUB_AUTHORITY_URN) :]
        return system
    return ""


def patient_key_of(patient: Mapping[str, Any], authorities: Mapping[str, str] | None = None) -> str:
    """``value@authority`` of the Patient's local identifier; '' when it has none."""
    ident = local_identifier(patient, authorities)
    if ident is None:
        return ""
    value = str(ident["value"])
    authority = authority_of(ident, authorities)
    return f"{value}@{authority}" if authority else value


def business_identifier(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """(system, value) naming ``resource`` for a conditional create; None when it has none usable."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        ins = active_ins(resource)
        if ins is not None:
            return f"urn:oid:{ins[1]}", ins[0]
        local = local_identifier(resource)
        if local is not None and isinstance(local.get("system"), str):
            return str(local["system"]), str(local["value"])
    if kind == "DocumentReference":
        master = resource.get("masterIdentifier")
        if isinstance(master, dict) and master.get("system") and master.get("value"):
            return str(master["system"]), str(master["value"])
    if kind == "Bundle":
        ident = resource.get("identifier")
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            return str(ident["system"]), str(ident["value"])
        return None
    usable = [i for i in _identifiers(resource) if i.get("system") and i.get("value") and i.get("use") != "old"]
    usable.sort(key=lambda i: i.get("use") not in ("official", "usual"))
    return (str(usable[0]["system"]), str(usable[0]["value"])) if usable else None
