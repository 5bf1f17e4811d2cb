"""ORU^R01 lab results → FHIR R4 transaction Bundle: DiagnosticReport + Observations + Specimen.

One DiagnosticReport per OBR, one Observation per result OBX, one Specimen
per SPM; the patient from PID (`mappings.fhir.v2_common.read_patient`).

=======================  ==========================================================================
Patient                  ``POST`` with ``ifNoneExist`` on the IPP: a lab result never overwrites
                         demographics the identity server owns
DiagnosticReport         conditional ``PUT`` on OBR-3 (filler order number, else OBR-2): a corrected
                         report (OBR-25 C) replaces the first one. ``status`` from OBR-25,
                         ``category`` LAB (+ OBR-24 section, v2 table 0074), ``code`` OBR-4,
                         ``effectiveDateTime`` OBR-7, ``issued`` OBR-22, ``conclusion`` the NTEs
                         after OBR, ``presentedForm`` an OBX ED carrying the PDF copy
Observation              conditional ``PUT`` on OBX-21, else ``<filler>-<OBX-3>-<OBX-4 or OBX-1>``;
                         ``status`` OBX-11 (D → entered-in-error), ``code`` OBX-3 (LN →
                         http://loinc.org), value by OBX-2: NM/SN → ``valueQuantity`` with the
                         UCUM code (``system`` http://unitsofmeasure.org) when OBX-6 maps to one
                         (`mappings.cda.codes.to_ucum`), else the unit text alone; CE/CWE →
                         CodeableConcept; ST/TX/FT → string; DT/TS → dateTime. OBX-7 →
                         referenceRange, OBX-8 → interpretation (v3-ObservationInterpretation),
                         OBX-14 (else OBR-7) → effective, NTEs after the OBX → note
Specimen                 SPM-2 id, SPM-4 type (v2 table 0487), SPM-17 collected, SPM-18 received
=======================  ==========================================================================

Ségur "MetaDMPMSS" OBX (routing flags, DOMAIN.md §6) are not results and are
skipped. Registered as step ``v2_oru_to_fhir_report``, settings
`mappings.fhir.v2_common.V2ToFhirConfig`.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from hub.content_types import ContentType
from hub.errors import MappingError, ValidationError
from hub.message import Message
from hub.registry import register
from mappings.cda.codes import to_ucum
from mappings.fhir.common import UCUM_SYSTEM, dump_json, search_token, stable_uuid
from mappings.fhir.v2_common import (
    HL7_NULL,
    V2ToFhirConfig,
    coding,
    dtm,
    identifier_system,
    read_patient,
    transaction_bundle,
)
from mappings.hl7v2.er7 import Er7Message

__all__ = ["oru_to_bundle", "v2_oru_to_fhir_report"]

_REPORT_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "A": "partial", "R": "preliminary",
                  "S": "partial", "I": "registered", "O": "registered", "X": "cancelled"}  # fmt: skip
_OBS_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "preliminary", "S": "preliminary",
               "I": "registered", "D": "entered-in-error", "W": "entered-in-error", "X": "cancelled"}  # fmt: skip
_INTERPRETATIONS = frozenset({"N", "A", "AA", "H", "HH", "L", "LL", "U", "D", "B", "W", "S", "R", "I", "MS", "VS",
                              "HU", "LU", "<", ">", "IND", "NEG", "POS", "NR", "RR", "E", "EX", "EXP"})  # fmt: skip
_INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
_OBS_CATEGORY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]
}
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)")
_COMPARATORS = frozenset({"<", "<=", ">", ">="})


def _number(text: str) -> int | float | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    text = text.replace(",", ".")  # French labs write decimal commas
    number = float(text)
    return int(number) if "." not in text and number.is_integer() else number


def _quantity(value: int | float, msg: Er7Message, units: str) -> dict[str, Any]:
    code, text, system = msg.component(units, 1), msg.component(units, 2), msg.component(units, 3)
    quantity: dict[str, Any] = {"value": value}
    ucum = to_ucum(code, system) if code else None
    if code:
        quantity["unit"] = text or code
    if ucum and code:
        quantity["system"] = UCUM_SYSTEM
        quantity["code"] = ucum
    return quantity


def _reference_range(text: str, msg: Er7Message, units: str) -> list[dict[str, Any]] | None:
    text = text.strip()
    if not text or text == HL7_NULL:
        return None
    low_high = re.fullmatch(r"\s*([0-9.,]+)\s*-\s*([0-9.,]+)\s*", text)
    if low_high:
        low, high = _number(low_high.group(1)), _number(low_high.group(2))
        if low is not None and high is not None:
            return [{"low": _quantity(low, msg, units), "high": _quantity(high, msg, units)}]
    bound = re.fullmatch(r"\s*(<=?|>=?)\s*([0-9.,]+)\s*", text)
    if bound and _number(bound.group(2)) is not None:
        side = "high" if bound.group(1).startswith("<") else "low"
        return [{side: _quantity(_number(bound.group(2)), msg, units)}]  # type: ignore[arg-type]
    return [{"text": text}]


def _value(msg: Er7Message, obx: int, n: int, config: V2ToFhirConfig) -> tuple[str, Any] | None:
    kind = msg.component(msg.raw(obx, 2), 1)
    raw = msg.raw(obx, 5)
    first = msg.component(raw, 1)
    units = msg.raw(obx, 6)
    if not raw or raw == HL7_NULL:
        return None
    if kind == "NM":
        number = _number(first)
        if number is None:
            raise MappingError("numeric result that is not a number", location=f"OBX^{n}^5")
        return "valueQuantity", _quantity(number, msg, units)
    if kind == "SN":
        comparator, num1, separator, num2 = (msg.component(raw, i) for i in (1, 2, 3, 4))
        a, b = _number(num1), _number(num2) if num2 else None
        if a is None:
            raise MappingError("structured numeric without a number", location=f"OBX^{n}^5")
        if separator in ("-",) and b is not None:
            return "valueRange", {"low": _quantity(a, msg, units), "high": _quantity(b, msg, units)}
        if separator in (":", "/") and b is not None:
            return "valueRatio", {"numerator": {"value": a}, "denominator": {"value": b}}
        quantity = _quantity(a, msg, units)
        if comparator in _COMPARATORS:
            quantity = {"value": quantity.pop("value"), "comparator": comparator, **quantity}
        return "valueQuantity", quantity
    if kind in ("ST", "TX", "FT"):
        reps = [msg.component(r, 1, formatting=kind != "ST") for r in msg.repetitions(obx, 5)]
        return "valueString", "\n".join(r for r in reps if r)
    if kind in ("CE", "CWE", "CNE"):
        concept = coding(msg, raw)
        return ("valueCodeableConcept", concept) if concept else None
    if kind in ("DT", "TS", "DTM"):
        try:
            return "valueDateTime", dtm(first, config)
        except ValueError:
            raise MappingError("date result that is not a date", location=f"OBX^{n}^5") from None
    raise MappingError("OBX value type not mapped to FHIR", location=f"OBX^{n}^2")


def _ed_pdf(msg: Er7Message, obx: int, n: int) -> dict[str, Any] | None:
    """An OBX ED carrying a PDF (ED-2 AP/application, ED-3 PDF, ED-4 Base64) as an Attachment."""
    raw = msg.raw(obx, 5)
    subtype, encoding, data = msg.component(raw, 3), msg.component(raw, 4), msg.component(raw, 5)
    if subtype.upper() != "PDF" or encoding.upper() != "BASE64":
        raise MappingError("encapsulated data other than a base64 PDF", location=f"OBX^{n}^5")
    try:
        pdf = base64.b64decode(data, validate=True)
    except ValueError:
        raise MappingError("encapsulated PDF is not base64", location=f"OBX^{n}^5^5") from None
    if not pdf.startswith(b"%PDF-"):
        raise MappingError("encapsulated PDF is not a PDF", location=f"OBX^{n}^5^5")
    return {"contentType": "application/pdf", "language": "fr-FR", "data": base64.b64encode(pdf).decode()}


def _ei(msg: Er7Message, ei: str, config: V2ToFhirConfig) -> tuple[str, str] | None:
    value = msg.component(ei, 1)
    if not value:
        return None
    return identifier_system(msg.component(ei, 2), msg.component(ei, 3), msg.component(ei, 4), config), value


def _conditional(kind: str, system: str, value: str) -> str:
    return f"{kind}?" + urllib.parse.urlencode({"identifier": search_token(system, value)})


def _notes(msg: Er7Message, start: int) -> list[str]:
    out = []
    for i in range(start + 1, len(msg.segments)):
        if msg.segments[i][:3] != "NTE":
            break
        text = msg.component(msg.raw(i, 3), 1, formatting=True)  # NTE-3 is FT (HL7 v2.5 §2.7.6)
        if text:
            out.append(text)
    return out


@dataclass
class _ReportEntry:
    """The DiagnosticReport being filled (the last OBR seen) and the Observations of its OBX so far."""

    report: dict[str, Any]
    report_id: tuple[str, str]
    observations: list[dict[str, Any]] = field(default_factory=list)


def _oru_report(msg: Er7Message, i: int, obr_n: int, subject: dict[str, str], cfg: V2ToFhirConfig) -> _ReportEntry:
    """The DiagnosticReport of the OBR at segment `i` (the `obr_n`-th OBR)."""
    report_id = _ei(msg, msg.raw(i, 3), cfg) or _ei(msg, msg.raw(i, 2), cfg)
    if report_id is None:
        raise MappingError("OBR without filler (OBR-3) or placer (OBR-2) order number", location=f"OBR^{obr_n}^3")
    code = coding(msg, msg.raw(i, 4))
    if code is None:
        raise MappingError("OBR without a service code", location=f"OBR^{obr_n}^4")
    status = _REPORT_STATUS.get(msg.component(msg.raw(i, 25), 1), "unknown")
    categories = [{"coding": [{"system": _CATEGORY_SYSTEM, "code": "LAB"}]}]
    section = msg.component(msg.raw(i, 24), 1)
    if section and section != "LAB":
        categories.append({"coding": [{"system": _CATEGORY_SYSTEM, "code": section}]})
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"use": "official", "system": report_id[0], "value": report_id[1]}],
        "status": status,
        "category": categories,
        "code": code,
        "subject": subject,
    }
    try:
        effective = dtm(msg.component(msg.raw(i, 7), 1), cfg)
        issued = dtm(msg.component(msg.raw(i, 22), 1), cfg, kind="instant")
    except ValueError:
        raise MappingError("OBR-7 or OBR-22 is not a valid timestamp", location=f"OBR^{obr_n}^7") from None
    if effective:
        report["effectiveDateTime"] = effective
    if issued:
        report["issued"] = issued
    notes = _notes(msg, i)
    if notes:
        report["conclusion"] = "\n".join(notes)
    return _ReportEntry(report, report_id)


def _oru_observation(
    msg: Er7Message, i: int, n: int, current: _ReportEntry, subject: dict[str, str], cfg: V2ToFhirConfig
) -> tuple[dict[str, Any], str]:
    """The Observation of the OBX at segment `i` (set id `n`) and its identifier value."""
    report, report_id = current.report, current.report_id
    code = coding(msg, msg.raw(i, 3))
    if code is None:
        raise MappingError("OBX without an observation code", location=f"OBX^{n}^3")
    obs_id = msg.component(msg.raw(i, 21), 1)
    code_key = msg.component(msg.raw(i, 3), 1)
    value_key = obs_id or f"{report_id[1]}-{code_key}-{msg.component(msg.raw(i, 4), 1) or n}"
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"use": "official", "system": report_id[0], "value": value_key}],
        "status": _OBS_STATUS.get(msg.component(msg.raw(i, 11), 1), "unknown"),
        "category": [_OBS_CATEGORY],
        "code": code,
        "subject": subject,
    }
    try:
        effective = dtm(msg.component(msg.raw(i, 14), 1), cfg) or report.get("effectiveDateTime")
    except ValueError:
        raise MappingError("OBX-14 is not a valid timestamp", location=f"OBX^{n}^14") from None
    if effective:
        observation["effectiveDateTime"] = effective
    if report.get("issued"):
        observation["issued"] = report["issued"]
    value = _value(msg, i, n, cfg)
    if value is not None:
        observation[value[0]] = value[1]
    else:
        observation["dataAbsentReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown"}]
        }
    flag = msg.component(msg.raw(i, 8), 1)
    if flag in _INTERPRETATIONS:
        observation["interpretation"] = [{"coding": [{"system": _INTERPRETATION_SYSTEM, "code": flag}]}]
    ranges = _reference_range(msg.component(msg.raw(i, 7), 1), msg, msg.raw(i, 6))
    if ranges:
        observation["referenceRange"] = ranges
    notes = _notes(msg, i)
    if notes:
        observation["note"] = [{"text": t} for t in notes]
    return observation, value_key


def _oru_specimen(
    msg: Er7Message, i: int, current: _ReportEntry, subject: dict[str, str], cfg: V2ToFhirConfig
) -> dict[str, Any]:
    """The Bundle entry of the Specimen of the SPM at segment `i`."""
    report_id = current.report_id
    specimen: dict[str, Any] = {"resourceType": "Specimen"}
    spm_id = msg.raw(i, 2)
    # SPM-2 is an EIP: placer ^ filler, each an EI whose parts are subcomponents (id & namespace...).
    spm_value = msg.component(spm_id, 2, 1) or msg.component(spm_id, 1, 1)
    spm_ns = msg.component(spm_id, 2, 2) or msg.component(spm_id, 1, 2)
    system = identifier_system(spm_ns, msg.component(spm_id, 2, 3), msg.component(spm_id, 2, 4), cfg)
    if spm_value:
        specimen["identifier"] = [{"system": system, "value": spm_value}]
    specimen["status"] = "available"
    kind = coding(msg, msg.raw(i, 4))
    if kind is not None:
        specimen["type"] = kind
    specimen["subject"] = subject
    try:
        collected = dtm(msg.component(msg.raw(i, 17), 1), cfg)
        received = dtm(msg.component(msg.raw(i, 18), 1), cfg)
    except ValueError:
        raise MappingError("SPM-17 or SPM-18 is not a valid timestamp", location="SPM^1^17") from None
    if received:
        specimen["receivedTime"] = received
    if collected:
        specimen["collection"] = {"collectedDateTime": collected}
    url = f"urn:uuid:{stable_uuid('Specimen', report_id[0], report_id[1], spm_value or str(i))}"
    request = (
        {"method": "PUT", "url": _conditional("Specimen", system, spm_value)}
        if spm_value
        else {"method": "POST", "url": "Specimen"}
    )
    return {"fullUrl": url, "resource": specimen, "request": request}


class _OruBundle:
    """The entries of an ORU^R01's Bundle, filled segment by segment (OBR, then its OBX and SPM)."""

    def __init__(self, msg: Er7Message, cfg: V2ToFhirConfig, patient_url: str) -> None:
        self.msg, self.cfg = msg, cfg
        self.subject = {"reference": patient_url}
        self.entries: list[dict[str, Any]] = []
        self.current: _ReportEntry | None = None
        self.obr_n = 0
        self.reports = 0

    def add_obr(self, i: int) -> None:
        self.obr_n += 1
        self.current = _oru_report(self.msg, i, self.obr_n, self.subject, self.cfg)
        self.reports += 1
        report_id = self.current.report_id
        url = f"urn:uuid:{stable_uuid('DiagnosticReport', *report_id)}"
        self.entries.append(
            {
                "fullUrl": url,
                "resource": self.current.report,
                "request": {"method": "PUT", "url": _conditional("DiagnosticReport", *report_id)},
            }
        )

    def add_obx(self, i: int) -> None:
        msg = self.msg
        n = int(msg.component(msg.raw(i, 1), 1) or 0) or i
        current = self.current
        if current is None:
            raise MappingError("OBX before any OBR", location=f"OBX^{n}^1")
        if msg.component(msg.raw(i, 3), 3).upper() == "METADMPMSS":
            return  # Ségur routing flags, not results
        if msg.component(msg.raw(i, 2), 1) == "ED":
            form = _ed_pdf(msg, i, n)
            if form is not None:
                current.report.setdefault("presentedForm", []).append(form)
            return
        observation, value_key = _oru_observation(msg, i, n, current, self.subject, self.cfg)
        system = current.report_id[0]
        url = f"urn:uuid:{stable_uuid('Observation', system, value_key)}"
        self.entries.append(
            {
                "fullUrl": url,
                "resource": observation,
                "request": {"method": "PUT", "url": _conditional("Observation", system, value_key)},
            }
        )
        current.report.setdefault("result", []).append({"reference": url})
        current.observations.append(observation)

    def add_spm(self, i: int) -> None:
        current = self.current
        if current is None:
            raise MappingError("SPM before any OBR", location="SPM^1^1")
        entry = _oru_specimen(self.msg, i, current, self.subject, self.cfg)
        self.entries.append(entry)
        url = entry["fullUrl"]
        current.report.setdefault("specimen", []).append({"reference": url})
        for observation in current.observations:
            observation.setdefault("specimen", {"reference": url})


def oru_to_bundle(body: bytes, config: V2ToFhirConfig | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The transaction Bundle (JSON) of an ORU^R01, and metadata for the derived message."""
    cfg = config or V2ToFhirConfig()
    msg = Er7Message(body)
    msh = msg.fields(0)
    if msg.component(msh[9] if len(msh) > 9 else "", 1) != "ORU" or msg.component(msh[9], 2) != "R01":
        raise ValidationError("not an ORU^R01 message", code="200", location="MSH^1^9")
    patient = read_patient(msg, cfg)
    patient_url = f"urn:uuid:{stable_uuid('Patient', patient.local_system, patient.local_value)}"
    if_none = urllib.parse.urlencode({"identifier": search_token(patient.local_system, patient.local_value)})
    bundle = _OruBundle(msg, cfg, patient_url)
    bundle.entries.append(
        {
            "fullUrl": patient_url,
            "resource": patient.resource,
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": if_none},
        }
    )
    handlers = {"OBR": bundle.add_obr, "OBX": bundle.add_obx, "SPM": bundle.add_spm}
    for i, seg in enumerate(msg.segments):
        handler = handlers.get(seg[:3])
        if handler is not None:
            handler(i)
    if bundle.reports == 0:
        raise MappingError("ORU^R01 without OBR", location="OBR")
    return transaction_bundle(msg, cfg, bundle.entries, patient)


@register(
    "step", "v2_oru_to_fhir_report", config=V2ToFhirConfig, consumes=(ContentType.HL7V2,), produces=ContentType.FHIR
)
def v2_oru_to_fhir_report(message: Message, config: V2ToFhirConfig | None = None) -> Message:
    """ORU^R01 → FHIR transaction Bundle: DiagnosticReport + Observations (LOINC, UCUM) + Specimen."""
    bundle, meta = oru_to_bundle(message.body, config)
    return message.derive(body=dump_json(bundle), content_type=ContentType.FHIR, **meta)
