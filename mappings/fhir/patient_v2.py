"""An FR Core Patient (FHIR R4) → IHE PAM France ADT^A28 / ADT^A31, for legacy subscribers.

=====================  ============================================================================
MSH                    ``2.5^FRA^2.11``, ``UNICODE UTF-8``, MSH-21 ``2.11^IHE_FRANCE-2.11-PAM``
                       (the ANS examples, DOMAIN.md §2.1); MSH-7 the hub's receipt; MSH-10 a
                       20-character digest of the correlation id, so a retried delivery carries
                       the same control id and the receiver can drop it as a duplicate
event                  ``A28`` (create) when the Patient arrived as a create (POST entry or
                       ``POST /Patient``), ``A31`` (update) otherwise; or fixed by the settings
PID-3                  the local identifiers (``PI``), CX-4 from the settings'
                       ``authority_names`` or from ``assigner.display`` (+ ``&OID&ISO`` for an
                       ``urn:oid:`` system); the INS as ``^^^ASIP-SANTE-INS-NIR&OID&ISO^INS``
                       only for a qualified identity (QUAL, or FR Core 2.1 VALI)
PID-5                  ``official`` → ``FAMILY^GIVEN^BIRTH LIST^^PREFIX^^L``; ``usual`` → ``…^D``
PID-7 / PID-8          birthDate ``YYYYMMDD``; male/female/other-unknown → M/F/U
PID-11                 addresses; the birthplace as ``^^city^^^^BDL^^<INSEE>``
PID-13                 phones and e-mails (XTN)
PID-29 / PID-30        deceased
PID-32                 QUAL → VALI (with the INS); VALI (validée) → VALI without INS; RECUP and
                       PROV → PROV (PAM has no RECUP, `hub.identity.IdentityStatus.pam_code`);
                       attributes (HOMA, DOUT, FICT) as extra repetitions (PAM FR §6.6.15)
PV1                    ``PV1|1|N`` (ITI-30 carries no visit)
=====================  ============================================================================

Registered as step ``fhir_patient_to_v2_adt`` (``application/fhir+json`` → HL7 v2),
settings `PatientToV2Config`. Text is escaped per HL7 v2.5 §2.7.4.
"""

from __future__ import annotations

import hashlib
import zoneinfo
from typing import Any, Literal

from pydantic import Field

from hub.content_types import ContentType
from hub.errors import MappingError
from hub.identity import (
    FR_CORE_IDENTITY_STATUS_SYSTEM,
    FR_CORE_STATUS_COMMENT_SYSTEM,
    FR_CORE_V2_0445_SYSTEM,
    IdentityAttribute,
    IdentityStatus,
    authority_for_oid,
)
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.fhir.common import load_json
from mappings.fhir.identifiers import HUB_AUTHORITY_URN, active_ins, local_identifier
from mappings.fhir.validate import BIRTH_LIST_GIVEN_NAME_URL, BIRTH_PLACE_URL, IDENTITY_RELIABILITY_URL, INSEE_CODE_URL
from mappings.hl7v2.er7 import Delimiters, escape

__all__ = ["PatientToV2Config", "fhir_patient_to_v2_adt", "patient_to_adt"]

_SEX = {"male": "M", "female": "F", "other": "U", "unknown": "U"}
_STATUS_2_2 = {"QUAL": IdentityStatus.QUALIFIEE, "VALI": IdentityStatus.VALIDEE, "RECUP": IdentityStatus.RECUPEREE,
               "PROV": IdentityStatus.PROVISOIRE}  # fmt: skip
_ADDRESS_USE = {"home": "H", "work": "O", "temp": "C"}


class PatientToV2Config(ComponentConfig):
    sending_application: str = Field("HUB", description="MSH-3 of the ADT sent.")
    sending_facility: str = Field("", description="MSH-4 of the ADT sent (empty: the patient's authority).")
    receiving_application: str = Field("", description="MSH-5.")
    receiving_facility: str = Field("", description="MSH-6.")
    processing_id: Literal["P", "T", "D"] = Field("P", description="MSH-11: production, training, debugging.")
    event: Literal["auto", "A28", "A31"] = Field(
        "auto", description="Trigger event: auto (A28 for a create, A31 otherwise), or always A28 / A31."
    )
    authority_names: dict[str, str] = Field(
        default_factory=dict,
        description="FHIR identifier system -> CX-4 of PID-3 as written (e.g. 'CHU-X&1.2.3&ISO'); unlisted "
        "systems use assigner.display and the urn:oid: system.",
    )
    timezone: str = Field("Europe/Paris", description="Time zone of MSH-7/EVN-2 (HL7 local time).")


def _esc(value: Any) -> str:
    """Escape HL7 v2 delimiters in a text value (HL7 v2.5 §2.7.4) and drop line breaks."""
    return escape(" ".join(str(value).split()), Delimiters())


def _find_patient(doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The Patient and how it arrived (``POST``/``PUT`` in a transaction, or ``resource``)."""
    if doc.get("resourceType") == "Patient":
        return doc, "resource"
    if doc.get("resourceType") != "Bundle":
        raise MappingError("not a Patient or a Bundle", location="resourceType")
    found = [
        (i, e)
        for i, e in enumerate(doc.get("entry") or [])
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "Patient"
    ]
    if len(found) != 1:
        raise MappingError("the Bundle must hold exactly one Patient", location="Bundle.entry")
    request = found[0][1].get("request")
    method = request.get("method") if isinstance(request, dict) else None
    return found[0][1]["resource"], str(method or "resource")


def _status(patient: dict[str, Any]) -> tuple[IdentityStatus | None, list[str]]:
    for ext in patient.get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != IDENTITY_RELIABILITY_URL:
            continue
        status: IdentityStatus | None = None
        attributes: list[str] = []
        for sub in ext.get("extension") or []:
            if not isinstance(sub, dict):
                continue
            if sub.get("url") == "identityStatus" and isinstance(sub.get("valueCoding"), dict):
                coding = sub["valueCoding"]
                if coding.get("system") == FR_CORE_IDENTITY_STATUS_SYSTEM:
                    status = _STATUS_2_2.get(str(coding.get("code")))
                elif coding.get("system") == FR_CORE_V2_0445_SYSTEM:
                    # FR Core 2.1 (table 0445): VALI is what a qualified identity carries (DOMAIN.md §2.5).
                    code = coding.get("code")
                    status = (
                        (IdentityStatus.QUALIFIEE if active_ins(patient) else IdentityStatus.VALIDEE)
                        if code == "VALI"
                        else IdentityStatus.PROVISOIRE
                        if code == "PROV"
                        else None
                    )
            elif sub.get("url") == "comment":
                concept = sub.get("valueCodeableConcept") or {}
                for c in concept.get("coding") or [] if isinstance(concept, dict) else []:
                    code = c.get("code") if isinstance(c, dict) else None
                    if c.get("system") == FR_CORE_STATUS_COMMENT_SYSTEM and code in IdentityAttribute.__members__:
                        attributes.append(str(code))
        return status, sorted(set(attributes))
    return None, []


def _cx4(identifier: dict[str, Any], config: PatientToV2Config) -> str:
    system = str(identifier.get("system") or "")
    if system in config.authority_names:
        return config.authority_names[system]
    assigner = identifier.get("assigner") if isinstance(identifier.get("assigner"), dict) else {}
    name = str(assigner.get("display") or "")  # type: ignore[union-attr]
    if system.startswith("urn:oid:"):
        return f"{_esc(name)}&{system[8:]}&ISO"
    if system.startswith(HUB_AUTHORITY_URN):
        return _esc(name or system[len(HUB_AUTHORITY_URN) :])
    if not name:
        raise MappingError("local identifier without an authority PID-3 can name", location="Patient.identifier")
    return _esc(name)


def _xpn(name: dict[str, Any], kind: str) -> str:
    given = name.get("given") or []
    birth_list = next(
        (
            e.get("valueString")
            for e in name.get("extension") or []
            if isinstance(e, dict) and e.get("url") == BIRTH_LIST_GIVEN_NAME_URL
        ),
        "",
    )
    prefix = (name.get("prefix") or [""])[0]
    parts = [
        _esc(name.get("family") or ""),
        _esc(given[0] if given else ""),
        _esc(birth_list or ""),
        "",
        _esc(prefix),
        "",
        kind,
    ]
    return "^".join(parts)


def _xad(address: dict[str, Any]) -> str:
    lines = address.get("line") or []
    parts = [
        _esc(lines[0]) if lines else "",
        _esc(" ".join(lines[1:])) if len(lines) > 1 else "",
        _esc(address.get("city") or ""),
        _esc(address.get("state") or ""),
        _esc(address.get("postalCode") or ""),
        _esc(address.get("country") or ""),
        _ADDRESS_USE.get(str(address.get("use")), ""),
    ]
    return "^".join(parts).rstrip("^")


def _birthplace(patient: dict[str, Any]) -> str | None:
    for ext in patient.get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != BIRTH_PLACE_URL:
            continue
        address = ext.get("valueAddress") or {}
        code = next(
            (
                (e.get("valueCoding") or {}).get("code")
                for e in address.get("extension") or []
                if isinstance(e, dict) and e.get("url") == INSEE_CODE_URL
            ),
            None,
        )
        city = _esc(address.get("city") or "")
        if code:
            return f"^^{city}^^^^BDL^^{_esc(code)}"
    return None


def _ts(value: str, *, date_only: bool = False) -> str:
    digits = "".join(ch for ch in value[: 10 if date_only else 19] if ch.isdigit())
    return digits


def patient_to_adt(message: Message, config: PatientToV2Config | None = None) -> tuple[bytes, dict[str, str]]:
    """The PAM FR ADT (ER7 bytes, CR-separated) for the message's Patient, and metadata."""
    cfg = config or PatientToV2Config()
    patient, how = _find_patient(load_json(message.body))
    local = local_identifier(patient)
    if local is None:
        raise MappingError("Patient without a local identifier (PI) for PID-3", location="Patient.identifier")
    if cfg.event != "auto":
        event = cfg.event
    elif how == "POST" or (how == "resource" and message.metadata.get("fhir_interaction") == "create"):
        event = "A28"
    else:
        event = "A31"
    status, attributes = _status(patient)
    ins = active_ins(patient) if status is IdentityStatus.QUALIFIEE else None
    pid3 = [f"{_esc(local['value'])}^^^{_cx4(local, cfg)}^PI"]
    if ins is not None:
        ins_authority = authority_for_oid(ins[1])
        assert ins_authority is not None
        pid3.append(f"{_esc(ins[0])}^^^{ins_authority.hl7_namespace}&{ins_authority.oid}&ISO^INS")
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    pid5 = [_xpn(n, "L") for n in names if n.get("use") == "official"][:1]
    pid5 += [_xpn(n, "D") for n in names if n.get("use") == "usual"][:1]
    addresses = [_xad(a) for a in patient.get("address") or [] if isinstance(a, dict)]
    birthplace = _birthplace(patient)
    if birthplace:
        addresses.append(birthplace)
    telecom = []
    for t in patient.get("telecom") or []:
        if not isinstance(t, dict) or not t.get("value"):
            continue
        if t.get("system") == "email":
            telecom.append(f"^NET^Internet^{_esc(t['value'])}")
        elif t.get("system") in ("phone", "fax"):
            use = {"home": "PRN", "work": "WPN", "mobile": "PRN"}.get(str(t.get("use")), "PRN")
            equipment = "CP" if t.get("use") == "mobile" else "FX" if t.get("system") == "fax" else "PH"
            telecom.append(f"^{use}^{equipment}^^^^^^^^^{_esc(t['value'])}")
    pid32 = [] if status is None else [status.pam_code]
    if status is not None:
        pid32 += attributes
    deceased_at = _ts(str(patient.get("deceasedDateTime") or ""))
    deceased = "Y" if deceased_at or patient.get("deceasedBoolean") is True else ""
    now = message.received_at.astimezone(zoneinfo.ZoneInfo(cfg.timezone)).strftime("%Y%m%d%H%M%S")
    control = hashlib.sha256(message.correlation_id.encode()).hexdigest()[:20].upper()
    cx4 = _cx4(local, cfg).split("&")
    authority = cx4[0] or (cx4[1] if len(cx4) > 1 else "")  # the key rule of mappings.hl7v2.er7
    facility = cfg.sending_facility or authority
    birth_date = _ts(str(patient.get("birthDate") or ""), date_only=True)
    pid = {3: "~".join(pid3), 5: "~".join(pid5), 7: birth_date, 8: _SEX.get(str(patient.get("gender")), "")}
    pid.update({11: "~".join(addresses), 13: "~".join(telecom), 29: deceased_at, 30: deceased, 32: "~".join(pid32)})
    msh = {3: _esc(cfg.sending_application), 4: _esc(facility), 5: _esc(cfg.receiving_application)}
    msh.update({6: _esc(cfg.receiving_facility), 7: now, 9: f"ADT^{event}^ADT_A05", 10: control})
    msh.update({11: cfg.processing_id, 12: "2.5^FRA^2.11", 17: "FRA", 18: "UNICODE UTF-8", 19: "FR"})
    msh[21] = "2.11^IHE_FRANCE-2.11-PAM"
    segments = [
        "MSH|^~\\&|" + "|".join(msh.get(n, "") for n in range(3, 22)),
        f"EVN||{now}",
        "PID|1|" + "|".join(pid.get(n, "") for n in range(2, 33)).rstrip("|"),
        "PV1|1|N",
    ]
    body = ("\r".join(segments) + "\r").encode("utf-8")
    meta = {
        "message_type": f"ADT^{event}",
        "control_id": control,
        "patient_key": f"{local['value']}@{authority}",
        "sending_app": cfg.sending_application,
    }
    return body, meta


@register(
    "step", "fhir_patient_to_v2_adt", config=PatientToV2Config, consumes=(ContentType.FHIR,), produces=ContentType.HL7V2
)
def fhir_patient_to_v2_adt(message: Message, config: PatientToV2Config | None = None) -> Message:
    """FHIR FR Core Patient → IHE PAM France ADT^A28 / ADT^A31 for legacy subscribers."""
    body, meta = patient_to_adt(message, config)
    return message.derive(body=body, content_type=ContentType.HL7V2, **meta)
