"""PAM FR ADT → FHIR R4 transaction Bundle: FR Core Patient, and the Encounter of ITI-31 events.

The Bundle is what an e-Parcours platform applies as is (flow F1 → F4 side):

* the Patient as a **conditional update** ``PUT Patient?identifier=<IPP system>|<IPP>``
  (FHIR R4 §3.1.0.4.3): created on first sight, replaced by later A31s, and
  idempotent when the hub delivers twice. Content: `mappings.fhir.v2_common.read_patient`;
* for ITI-31 events whose PV1-2 is a real visit (not ``N``), the Encounter,
  also a conditional update on its visit number (PV1-19 ``VN``, else the
  PID-18 ``AN`` NDA):

  =====================  =======================================================================
  ``status``             A03 finished; A05/A14 planned; A11/A27/A38 cancelled; A21 onleave;
                         other events in-progress (PAM FR §2 event table)
  ``class``              PV1-2 I → IMP, O/R → AMB, E → EMER, P → PRENC (v3 ActCode)
  ``period``             start PV1-44, else ZBE-2 on A01/A04/A05; end PV1-45, else ZBE-2 on A03
  ``location``           PV1-3 (point of care / room / bed) as a display-only reference
  ``serviceProvider``    ZBE-7, the medical-responsibility UF (XON-10 code, XON-6 authority,
                         XON-1 label), PAM FR §6.13
  =====================  =======================================================================

Registered as step ``v2_adt_to_fhir_patient`` (HL7 v2 → ``application/fhir+json``),
settings `mappings.fhir.v2_common.V2ToFhirConfig`. Ids and fullUrls are
UUIDv5 of the patient key and visit, so a replay gives the same bytes.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from hub.content_types import ContentType
from hub.errors import MappingError, ValidationError
from hub.message import Message
from hub.registry import register
from mappings.fhir.common import V2_0203_SYSTEM, dump_json, search_token, stable_uuid
from mappings.fhir.v2_common import (
    HL7_NULL,
    V2ToFhirConfig,
    dtm,
    identifier_system,
    read_patient,
    transaction_bundle,
)
from mappings.hl7v2.er7 import Er7Message

__all__ = ["adt_to_bundle", "v2_adt_to_fhir_patient"]

_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_CLASSES = {
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "R": ("AMB", "ambulatory"),
    "E": ("EMER", "emergency"),
    "P": ("PRENC", "pre-admission"),
}
_STATUS = {"A03": "finished", "A05": "planned", "A14": "planned", "A11": "cancelled", "A27": "cancelled",
           "A38": "cancelled", "A21": "onleave"}  # fmt: skip
_ITI30 = frozenset({"A28", "A31", "A47", "A40"})


def _conditional(kind: str, system: str, value: str) -> str:
    return f"{kind}?" + urllib.parse.urlencode({"identifier": search_token(system, value)})


def _encounter(msg: Er7Message, event: str, patient_url: str, config: V2ToFhirConfig) -> dict[str, Any] | None:
    pv1 = msg.find("PV1")
    if pv1 is None or event in _ITI30:
        return None
    patient_class = msg.component(msg.raw(pv1, 2), 1)
    if patient_class in ("", "N", HL7_NULL):
        return None
    source = "PV1"
    visit = msg.raw(pv1, 19)
    if not msg.component(visit, 1):
        pid = msg.find("PID")
        visit, source = (msg.raw(pid, 18) if pid is not None else ""), "PID"
    value = msg.component(visit, 1)
    if not value:
        raise MappingError("encounter without a visit number (PV1-19) or NDA (PID-18)", location="PV1^1^19")
    system = identifier_system(
        msg.component(visit, 4, 1), msg.component(visit, 4, 2), msg.component(visit, 4, 3), config
    )
    code, display = _CLASSES.get(patient_class, ("AMB", "ambulatory"))
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [
            {
                "use": "official",
                "type": {"coding": [{"system": V2_0203_SYSTEM, "code": "VN" if source == "PV1" else "AN"}]},
                "system": system,
                "value": value,
            }
        ],
        "status": _STATUS.get(event, "in-progress"),
        "class": {"system": _ACT_CODE, "code": code, "display": display},
        "subject": {"reference": patient_url},
    }
    zbe = msg.find("ZBE")
    movement = msg.component(msg.raw(zbe, 2), 1) if zbe is not None else ""
    try:
        start = dtm(msg.component(msg.raw(pv1, 44), 1), config) or (
            dtm(movement, config) if event in ("A01", "A04", "A05") else None
        )
        end = dtm(msg.component(msg.raw(pv1, 45), 1), config) or (dtm(movement, config) if event == "A03" else None)
    except ValueError:
        raise MappingError("PV1-44/45 or ZBE-2 is not a valid timestamp", location="PV1^1^44") from None
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        encounter["period"] = period
    place = [p for p in (msg.component(msg.raw(pv1, 3), i) for i in (1, 2, 3)) if p]
    if place:
        encounter["location"] = [{"location": {"display": " / ".join(place)}}]
    if zbe is not None:
        uf = msg.raw(zbe, 7)
        uf_code = msg.component(uf, 10)
        if uf_code:
            provider: dict[str, Any] = {
                "identifier": {
                    "system": identifier_system(
                        msg.component(uf, 6, 1), msg.component(uf, 6, 2), msg.component(uf, 6, 3), config
                    ),
                    "value": uf_code,
                }
            }
            if msg.component(uf, 1):
                provider["display"] = msg.component(uf, 1)
            encounter["serviceProvider"] = provider
    return encounter


def adt_to_bundle(body: bytes, config: V2ToFhirConfig | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The transaction Bundle (JSON) of a PAM FR ADT, and metadata for the derived message."""
    cfg = config or V2ToFhirConfig()
    msg = Er7Message(body)
    msh = msg.fields(0)
    if msg.component(msh[9] if len(msh) > 9 else "", 1) != "ADT":
        raise ValidationError("not an ADT message", code="200", location="MSH^1^9")
    event = msg.component(msh[9], 2) or msg.value("EVN", 1)
    patient = read_patient(msg, cfg)
    patient_url = f"urn:uuid:{stable_uuid('Patient', patient.local_system, patient.local_value)}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": patient.resource,
            "request": {"method": "PUT", "url": _conditional("Patient", patient.local_system, patient.local_value)},
        }
    ]
    encounter = _encounter(msg, event, patient_url, cfg)
    if encounter is not None:
        ident = encounter["identifier"][0]
        entries.append(
            {
                "fullUrl": f"urn:uuid:{stable_uuid('Encounter', ident['system'], ident['value'])}",
                "resource": encounter,
                "request": {"method": "PUT", "url": _conditional("Encounter", ident["system"], ident["value"])},
            }
        )
    return transaction_bundle(msg, cfg, entries, patient)


@register(
    "step", "v2_adt_to_fhir_patient", config=V2ToFhirConfig, consumes=(ContentType.HL7V2,), produces=ContentType.FHIR
)
def v2_adt_to_fhir_patient(message: Message, config: V2ToFhirConfig | None = None) -> Message:
    """PAM FR ADT (A28/A31/A01/A04...) → FHIR transaction Bundle: FR Core Patient (+ Encounter from PV1/ZBE)."""
    bundle, meta = adt_to_bundle(message.body, config)
    return message.derive(body=dump_json(bundle), content_type=ContentType.FHIR, **meta)
