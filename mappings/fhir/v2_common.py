"""HL7 v2 (PAM FR, ORU) → FHIR R4 building blocks shared by the v2 mappings.

* `V2ToFhirConfig`: how HL7 v2 assigning authorities become FHIR identifier
  systems, the time zone of timestamps without one, the FR Core version.
* `dtm`: HL7 v2.5 DTM → FHIR date / dateTime / instant (FHIR R4 §2.24.0.7:
  a dateTime with a time has seconds and a time zone; HL7 v2 times without
  an offset are local, so the configured zone is applied).
* `read_patient`: PID → an FR Core Patient. PID-3 ``PI`` → identifier
  ``usual`` typed PI (``assigner.display`` = CX-4.1, so
  `mappings.fhir.identifiers.patient_key_of` gives back the v2 ``IPP@CX-4.1``);
  the INS is kept only with PID-32 ``VALI`` (PAM FR §6.6.15) → FR Core INS
  slice and ``identityStatus`` QUAL (VALI + INS → qualifiée, DOMAIN.md §2.5);
  PID-5 ``L`` → ``official`` + ``birth-list-given-name`` (XPN-3), ``D`` →
  ``usual``; PID-11 ``BDL`` → ``patient-birthPlace`` with the INSEE code;
  PID-13 → telecom; PID-29/30 → deceased.

Errors are `hub.errors.MappingError` with an HL7 location (``PID^1^3``),
never a value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo
from typing import Any, Literal, Protocol

from pydantic import Field, field_validator

from hub.errors import MappingError
from hub.identity import (
    FR_CORE_IDENTITY_STATUS_SYSTEM,
    FR_CORE_STATUS_COMMENT_SYSTEM,
    FR_CORE_V2_0445_SYSTEM,
    INS_CX5,
    IdentityStatus,
    InsKind,
    InsProblem,
    Pid32Reading,
    authority_for_oid,
    check_nir,
    pid32_allows_ins,
    read_pid32,
)
from hub.registry import ComponentConfig
from mappings.fhir.common import FR_CORE_V2_0203_SYSTEM, LOINC_SYSTEM, SNOMED_SYSTEM, V2_0203_SYSTEM
from mappings.fhir.identifiers import HUB_AUTHORITY_URN
from mappings.fhir.validate import (
    BIRTH_LIST_GIVEN_NAME_URL,
    BIRTH_PLACE_URL,
    IDENTITY_RELIABILITY_URL,
    INSEE_CODE_SYSTEM,
    INSEE_CODE_URL,
)
from mappings.hl7v2.er7 import Er7Message

__all__ = [
    "FR_CORE_PATIENT",
    "FR_CORE_PATIENT_INS",
    "V2Patient",
    "V2ToFhirConfig",
    "coding",
    "dtm",
    "identifier_system",
    "read_patient",
]

FR_CORE_PATIENT = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"
FR_CORE_PATIENT_INS = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"
HL7_NULL = '""'
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,4}))?)?([+-]\d{4})?")
_CODING_SYSTEMS = {
    "LN": LOINC_SYSTEM,
    "LOINC": LOINC_SYSTEM,
    "SCT": SNOMED_SYSTEM,
    "SNM": SNOMED_SYSTEM,
    "UCUM": "http://unitsofmeasure.org",
    "HL70487": "http://terminology.hl7.org/CodeSystem/v2-0487",
    "HL70074": "http://terminology.hl7.org/CodeSystem/v2-0074",
}
_GENDER = {"F": "female", "M": "male", "U": "unknown"}


class V2ToFhirConfig(ComponentConfig):
    authority_systems: dict[str, str] = Field(
        default_factory=dict,
        description="HL7 v2 assigning authority (CX-4.1, else CX-4.2) -> FHIR identifier system URI. Unlisted: "
        "urn:oid:<CX-4.2> when CX-4.3 is ISO, else urn:interop-hub:authority:<authority>.",
    )
    timezone: str = Field("Europe/Paris", description="Time zone of HL7 v2 timestamps sent without an offset.")
    fr_core: Literal["2.1", "2.2"] = Field(
        "2.2",
        description="FR Core version of the receiver: identityStatus QUAL (fr-core-cs-identity-status, >= 2.2) "
        "or VALI (fr-core-cs-v2-0445, 2.1).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return v


class _HasTimezone(Protocol):
    timezone: str


def dtm(value: str, config: _HasTimezone, *, kind: Literal["date", "dateTime", "instant"] = "dateTime") -> str | None:
    """An HL7 v2 DTM as a FHIR date/dateTime/instant; None when empty, or too coarse for an instant."""
    value = value.strip()
    if not value or value == HL7_NULL:
        return None
    match = _DTM.fullmatch(value)
    if match is None:
        raise ValueError("not an HL7 v2 DTM")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if kind == "date" or hour is None:
        if kind == "instant":
            return None
        dt.date(int(year), int(month or 1), int(day or 1))  # ValueError for a date the calendar lacks
        return "-".join(p for p in (year, month, day) if p)
    if month is None or day is None:
        raise ValueError("a time without a full date")
    local = dt.datetime(
        int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0)
    )  # validated by the calendar
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz: dt.tzinfo = dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    else:
        tz = zoneinfo.ZoneInfo(config.timezone)
    text = local.replace(tzinfo=tz).isoformat()
    if fraction:
        text = text[:19] + "." + fraction + text[19:]
    return text


def identifier_system(namespace: str, universal_id: str, universal_type: str, config: V2ToFhirConfig) -> str:
    """The FHIR system of an HL7 v2 HD (CX-4, EI-2..4): configured, ``urn:oid:``, or the hub's authority URN."""
    key = namespace or universal_id
    if key in config.authority_systems:
        return config.authority_systems[key]
    if universal_id in config.authority_systems:
        return config.authority_systems[universal_id]
    if universal_type.upper() == "ISO" and _OID.fullmatch(universal_id):
        return f"urn:oid:{universal_id}"
    return f"{HUB_AUTHORITY_URN}{key}"


def coding(msg: Er7Message, cwe: str, *, alternate: bool = True) -> dict[str, Any] | None:
    """A CodeableConcept from a CE/CWE (code, text, coding system; the alternate triplet too)."""
    codings: list[dict[str, Any]] = []
    for start in (1, 4) if alternate else (1,):
        code, text, system = (msg.component(cwe, start + i) for i in range(3))
        if not code:
            continue
        entry: dict[str, Any] = {}
        uri = _CODING_SYSTEMS.get(system.strip().upper())
        if uri is None and _OID.fullmatch(system.strip()):
            uri = f"urn:oid:{system.strip()}"
        if uri:
            entry["system"] = uri
        entry["code"] = code
        if text:
            entry["display"] = text
        codings.append(entry)
    text = msg.component(cwe, 2) or msg.component(cwe, 5)
    if not codings and not text:
        return None
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    return concept


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class V2Patient:
    """The Patient read from PID, with what the mappings need around it (no patient data in the repr)."""

    resource: dict[str, Any]
    local_system: str
    local_value: str
    patient_key: str
    ins: tuple[str, str] | None

    def __repr__(self) -> str:
        return f"V2Patient(has_ins={self.ins is not None})"


def _name(value: str) -> str | None:
    return value if value and value != HL7_NULL and value.strip() else None


def _pid3(msg: Er7Message, pid: int, config: V2ToFhirConfig) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    locals_: list[dict[str, Any]] = []
    ins: list[tuple[str, str]] = []
    for n, rep in enumerate(msg.repetitions(pid, 3), 1):
        value, cx5 = msg.component(rep, 1), msg.component(rep, 5)
        if not value or value == HL7_NULL:
            continue
        if cx5 == "PI":
            namespace, universal, utype = (msg.component(rep, 4, s) for s in (1, 2, 3))
            if not (namespace or universal):
                raise MappingError("PI identifier without an assigning authority", location=f"PID^1^3^{n}^4")
            ident: dict[str, Any] = {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203_SYSTEM, "code": "PI"}]},
                "system": identifier_system(namespace, universal, utype, config),
                "value": value,
                # HL7 v2-to-FHIR: CX-4 → assigner; its name (HD-1) is what patient keys use (identifiers.py).
                "assigner": {"display": namespace or universal},
            }
            locals_.append(ident)
        elif cx5 == INS_CX5 and authority_for_oid(msg.component(rep, 4, 2)) is not None:
            ins.append((value, msg.component(rep, 4, 2)))
    if not locals_:
        raise MappingError("no PI identifier in PID-3", location="PID^1^3")
    return locals_, ins


def _choose_ins(candidates: list[tuple[str, str]], pid32_reps: list[str], corrected: bool) -> tuple[str, str] | None:
    # PAM FR §6.6.15: without PID-32 VALI the INS is not integrated; §6.6.4: nor with a corrected birth date.
    if not candidates or corrected or not pid32_allows_ins(pid32_reps):
        return None
    usable = {(m, o) for m, o in candidates if check_nir(m).problem not in (InsProblem.LENGTH, InsProblem.CHARACTERS)}
    # PAM FR §4.4.1: NIA and NIR may both come; the NIR wins.
    nir = {(m, o) for m, o in usable if authority_for_oid(o).kind is InsKind.NIR}  # type: ignore[union-attr]
    chosen = nir or usable
    return next(iter(chosen)) if len(chosen) == 1 else None


def _names(msg: Er7Message, pid: int) -> tuple[list[dict[str, Any]], str | None]:
    """FHIR names from PID-5 (first L, first D) and the INSi given-name list (XPN-3)."""
    out: list[dict[str, Any]] = []
    birth_list: str | None = None
    seen: set[str] = set()
    for rep in msg.repetitions(pid, 5):
        kind = msg.component(rep, 7)
        if kind not in ("L", "D") or kind in seen:
            continue
        seen.add(kind)
        family, given, prefix = _name(msg.component(rep, 1)), _name(msg.component(rep, 2)), _name(msg.component(rep, 5))
        if family is None and given is None:
            continue
        name: dict[str, Any] = {}
        if kind == "L":
            birth_list = _name(msg.component(rep, 3))
            if birth_list:
                name["extension"] = [{"url": BIRTH_LIST_GIVEN_NAME_URL, "valueString": birth_list}]
        name["use"] = "official" if kind == "L" else "usual"
        if family:
            name["family"] = family
        if given:
            name["given"] = [given]
        if prefix:
            name["prefix"] = [prefix]
        out.append(name)
    out.sort(key=lambda n: n["use"] != "official")
    return out, birth_list


def _addresses(msg: Er7Message, pid: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    addresses: list[dict[str, Any]] = []
    birthplace: dict[str, Any] | None = None
    for n, rep in enumerate(msg.repetitions(pid, 11), 1):
        parts = [msg.component(rep, i) for i in range(1, 10)]
        if parts[6] == "BDL":
            code = parts[8].strip()
            if code and code != HL7_NULL:
                if not re.fullmatch(r"[0-9]{5}|2[AB][0-9]{3}", code):
                    raise MappingError("birthplace is not a 5-character INSEE code", location=f"PID^1^11^{n}^9")
                address: dict[str, Any] = {
                    "extension": [{"url": INSEE_CODE_URL, "valueCoding": {"system": INSEE_CODE_SYSTEM, "code": code}}]
                }
                if _name(parts[2]):
                    address["city"] = parts[2]
                if _name(parts[5]):
                    address["country"] = parts[5]
                birthplace = {"url": BIRTH_PLACE_URL, "valueAddress": address}
            continue
        lines = [p for p in (parts[0], parts[1]) if _name(p)]
        fields = {"line": lines, "city": parts[2], "state": parts[3], "postalCode": parts[4], "country": parts[5]}
        address = {k: v for k, v in fields.items() if v and v != HL7_NULL}
        if not address:
            continue
        use = {"H": "home", "B": "work", "O": "work", "C": "temp"}.get(parts[6])
        addresses.append({"use": use, **address} if use else address)
    return addresses, birthplace


def _telecoms(msg: Er7Message, pid: int, field: int) -> list[dict[str, Any]]:
    out = []
    for rep in msg.repetitions(pid, field):
        use, equipment = msg.component(rep, 2), msg.component(rep, 3)
        email = msg.component(rep, 4)
        number = msg.component(rep, 12) or msg.component(rep, 1)
        if equipment == "Internet" or use == "NET":
            if email:
                out.append({"system": "email", "value": email})
            continue
        if not number or number == HL7_NULL:
            continue
        entry: dict[str, Any] = {"system": "fax" if equipment == "FX" else "phone", "value": number}
        fhir_use = "mobile" if equipment == "CP" else {"PRN": "home", "WPN": "work", "ORN": "home"}.get(use)
        if fhir_use:
            entry["use"] = fhir_use
        out.append(entry)
    return out


def _identity_reliability(status: IdentityStatus, pid32: Pid32Reading, config: V2ToFhirConfig) -> dict[str, Any]:
    """The FR Core identity-reliability extension of a PID-32 status (and its attributes in FR Core 2.2)."""
    if config.fr_core == "2.2":
        subs: list[dict[str, Any]] = [
            {
                "url": "identityStatus",
                "valueCoding": {"system": FR_CORE_IDENTITY_STATUS_SYSTEM, "code": status.fr_core_code},
            }
        ]
        for attribute in sorted(pid32.attributes, key=lambda a: a.value):
            concept = {"coding": [{"system": FR_CORE_STATUS_COMMENT_SYSTEM, "code": attribute.value}]}
            subs.append({"url": "comment", "valueCodeableConcept": concept})
    else:
        # FR Core 2.1 mirrors PAM table 0445: the PID-32 code as sent (DOMAIN.md §4.2).
        subs = [{"url": "identityStatus", "valueCoding": {"system": FR_CORE_V2_0445_SYSTEM, "code": status.pam_code}}]
    return {"extension": subs, "url": IDENTITY_RELIABILITY_URL}


def read_patient(msg: Er7Message, config: V2ToFhirConfig) -> V2Patient:
    """The FR Core Patient of the message's PID (module docstring); MappingError when PID is unusable."""
    pid = msg.find("PID")
    if pid is None:
        raise MappingError("no PID segment", location="PID")
    locals_, candidates = _pid3(msg, pid, config)
    pid32_reps = [msg.component(r, 1) for r in msg.repetitions(pid, 32)]
    pid32 = read_pid32(pid32_reps)
    zfd = msg.find("ZFD")
    corrected = zfd is not None and msg.component(msg.raw(zfd, 4), 1).upper() == "Y"
    ins = _choose_ins(candidates, pid32_reps, corrected)
    status = IdentityStatus.from_pam(pid32.status_code, ins_present=ins is not None) if pid32.status_code else None
    names, birth_list = _names(msg, pid)
    addresses, birthplace = _addresses(msg, pid)
    sex = msg.component(msg.raw(pid, 8), 1)
    if sex and sex != HL7_NULL and sex not in _GENDER:
        raise MappingError("PID-8 is not F, M or U (PAM FR table 0001)", location="PID^1^8")
    try:
        birth_date = dtm(msg.component(msg.raw(pid, 7), 1), config, kind="date")
        deceased_at = dtm(msg.component(msg.raw(pid, 29), 1), config)
    except ValueError:
        raise MappingError("PID-7 or PID-29 is not a valid date", location="PID^1^7") from None

    patient: dict[str, Any] = {"resourceType": "Patient", "meta": {"profile": [FR_CORE_PATIENT]}}
    extensions: list[dict[str, Any]] = []
    if status is not None:
        extensions.append(_identity_reliability(status, pid32, config))
    if birthplace is not None:
        extensions.append(birthplace)
    if extensions:
        patient["extension"] = extensions
    identifiers: list[dict[str, Any]] = []
    if ins is not None:
        authority = authority_for_oid(ins[1])
        assert authority is not None
        identifiers.append(
            {
                "use": authority.fhir_use,
                "type": {"coding": [{"system": FR_CORE_V2_0203_SYSTEM, "code": authority.fhir_type}]},
                "system": authority.fhir_system,
                "value": ins[0],
            }
        )
        patient["meta"]["profile"] = [FR_CORE_PATIENT_INS]
        has_birth_name = bool(birth_list) and any(n["use"] == "official" and n.get("given") for n in names)
        missing = [
            where
            for where, ok in (
                ("PID^1^5", has_birth_name),
                ("PID^1^7", bool(birth_date)),
                ("PID^1^8", sex in ("F", "M", "U")),
                ("PID^1^11", birthplace is not None),
            )
            if not ok
        ]
        if missing:
            # FR Core fr-core-patient-ins: with an INS, the strict traits travel too (DOMAIN.md §4.1).
            raise MappingError("INS without its strict traits (FR Core INS profile)", location=missing[0])
    identifiers += locals_
    patient["identifier"] = identifiers
    patient["active"] = True
    if names:
        patient["name"] = names
    telecom = _telecoms(msg, pid, 13) + _telecoms(msg, pid, 14)
    if telecom:
        patient["telecom"] = telecom
    if sex in _GENDER:
        patient["gender"] = _GENDER[sex]
    if birth_date:
        patient["birthDate"] = birth_date
    if msg.component(msg.raw(pid, 30), 1) == "Y":
        patient.update({"deceasedDateTime": deceased_at} if deceased_at else {"deceasedBoolean": True})
    if addresses:
        patient["address"] = addresses
    first = locals_[0]
    key = f"{first['value']}@{first['assigner']['display']}"
    return V2Patient(patient, first["system"], first["value"], key, ins)


def transaction_bundle(
    msg: Er7Message, config: _HasTimezone, entries: list[dict[str, Any]], patient: V2Patient
) -> tuple[dict[str, Any], dict[str, str]]:
    """The transaction Bundle around `entries`, timestamped from MSH-7, and the routing metadata of the result."""
    msh = msg.fields(0)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction"}
    try:
        timestamp = dtm(msg.component(msh[7] if len(msh) > 7 else "", 1), config, kind="instant")
    except ValueError:
        raise MappingError("MSH-7 is not a valid timestamp", location="MSH^1^7") from None
    if timestamp:
        bundle["timestamp"] = timestamp
    bundle["entry"] = entries
    meta = {"resource_type": "Bundle", "bundle_type": "transaction", "patient_key": patient.patient_key}
    if patient.ins is not None:
        meta["ins"], meta["ins_oid"] = patient.ins
    return bundle, meta
