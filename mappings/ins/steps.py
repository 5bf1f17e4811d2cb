"""The `ins_stamp` step: write the registry's qualified identity into the message, or say why not.

The hub looks the patient up (by the message's ``patient_key``, following A40
merges) and hands the record in the step context; this step is pure:

* no identity, or one not qualified: the message goes on unstamped, with
  ``ins_stamped=false`` and the reason in its metadata (a destination that
  requires a qualified INS holds it before this step runs);
* a qualified identity whose strict traits the message contradicts: raise
  :class:`IdentityMismatch` naming the traits (never their values), and the
  delivery goes to identity review (DESIGN.md §5), unless an operator
  released it from review;
* otherwise the identity is stamped in the format's own place (HL7 v2 PID,
  CDA recordTarget, FHIR Patient) and the metadata records what and why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, Protocol

from hub.content_types import ContentType
from hub.environments import ins_environment
from hub.errors import IdentityMismatch, MappingError, MessageError
from hub.identity.dates import parse_birth_date
from hub.identity.insi import traits_from_json
from hub.identity.oids import InsPolicy
from hub.identity.rniv import IdentityAttribute, IdentityStatus
from hub.identity.traits import Sex, StrictTraits, Trait, compare_traits
from hub.message import Message
from hub.pipeline import StepContext
from hub.registry import register
from mappings.hl7v2.er7 import Er7Message
from mappings.ins import pam
from mappings.ins.stamp import Stamped, StampIdentity
from mappings.ins.stamp_cda import stamp_cda
from mappings.ins.stamp_fhir import stamp_fhir
from mappings.ins.stamp_v2 import stamp_hl7v2
from mappings.xml import parse_xml

__all__ = ["MessageTraits", "ins_stamp", "read_message_traits"]

_V3 = "{urn:hl7-org:v3}"


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class MessageTraits:
    """The strict traits a message states; None where it is silent (then not compared)."""

    birth_name: str | None = None
    first_birth_given_name: str | None = None
    birth_date: dt.date | None = None
    sex: Sex | None = None
    birthplace_code: str | None = None

    def __repr__(self) -> str:
        return "MessageTraits(<masked>)"

    def disagreements(self, registry: StrictTraits) -> tuple[Trait, ...]:
        """Traits on which the message contradicts the registry; missing ones fill from the registry."""
        if not any(getattr(self, f.name) for f in dataclasses.fields(self)):
            return ()
        candidate = StrictTraits(
            birth_name=self.birth_name or registry.birth_name,
            first_birth_given_name=self.first_birth_given_name or registry.first_birth_given_name,
            birth_date=self.birth_date or registry.birth_date,
            sex=self.sex or registry.sex,
            birthplace_code=self.birthplace_code or registry.birthplace_code,
        )
        return compare_traits(registry, candidate).disagreeing


def _v2_traits(body: bytes) -> MessageTraits:
    msg = Er7Message(body)
    pid = msg.find("PID")
    if pid is None:
        return MessageTraits()
    names = pam._read_names(msg, pid)
    birth_date, _ = pam._read_birth_date(msg, pid)
    return MessageTraits(
        names.birth_name, names.first_given_name, birth_date, pam._read_sex(msg, pid), pam._read_birthplace(msg, pid)
    )


def _cda_traits(body: bytes) -> MessageTraits:
    root = parse_xml(body)
    patient = root.find(f"{_V3}recordTarget/{_V3}patientRole/{_V3}patient")
    if patient is None:
        return MessageTraits()
    family = next((f.text for f in patient.iterfind(f"{_V3}name/{_V3}family") if f.get("qualifier") == "BR"), None)
    given = next((g.text for g in patient.iterfind(f"{_V3}name/{_V3}given") if g.get("qualifier") == "BR"), None)
    birth = patient.find(f"{_V3}birthTime")
    gender = patient.find(f"{_V3}administrativeGenderCode")
    county = patient.find(f"{_V3}birthplace/{_V3}place/{_V3}addr/{_V3}county")
    sex = {"F": Sex.FEMALE, "M": Sex.MALE}.get(gender.get("code", "")) if gender is not None else None
    value = birth.get("value", "") if birth is not None else ""
    return MessageTraits(
        family,
        given,
        parse_birth_date(value[:8])[0] if len(value) >= 8 else None,
        sex,
        county.text.strip() if county is not None and county.text else None,
    )


def _fhir_traits(body: bytes) -> MessageTraits:
    doc: Any = json.loads(body)
    patient = (
        doc
        if doc.get("resourceType") == "Patient"
        else next(
            (e.get("resource") for e in doc.get("entry", []) if e.get("resource", {}).get("resourceType") == "Patient"),
            None,
        )
    )
    if not patient:
        return MessageTraits()
    official = next((n for n in patient.get("name", []) if n.get("use") == "official"), None)
    sex = {"female": Sex.FEMALE, "male": Sex.MALE}.get(patient.get("gender", ""))
    born = patient.get("birthDate")
    return MessageTraits(
        official.get("family") if official else None,
        (official.get("given") or [None])[0] if official else None,
        dt.date.fromisoformat(born) if born and len(born) == 10 else None,
        sex,
        None,
    )


def _fhir_has_patient(body: bytes) -> bool:
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return False
    if not isinstance(doc, dict):
        return False
    if doc.get("resourceType") == "Patient":
        return True
    return any(
        isinstance(e, dict) and isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Patient"
        for e in doc.get("entry") or []
    )


def read_message_traits(message: Message) -> MessageTraits:
    """The strict traits a message states, by content type (none for other types)."""
    try:
        if message.content_type == ContentType.HL7V2:
            return _v2_traits(message.body)
        if message.content_type == ContentType.CDA:
            return _cda_traits(message.body)
        if message.content_type == ContentType.FHIR:
            return _fhir_traits(message.body)
    except MessageError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MappingError(f"patient traits could not be read ({type(exc).__name__})") from None
    return MessageTraits()


class _Stamper(Protocol):
    def __call__(self, body: bytes, identity: StampIdentity, /, *, policy: InsPolicy | None = None) -> Stamped: ...


_STAMPERS: dict[str, _Stamper] = {
    ContentType.HL7V2: stamp_hl7v2,
    ContentType.CDA: stamp_cda,
    ContentType.FHIR: stamp_fhir,
}


@register("step", "ins_stamp", consumes=(ContentType.HL7V2, ContentType.CDA, ContentType.FHIR), needs=("identity",))
def ins_stamp(message: Message, ctx: StepContext) -> Message:
    """Stamp the registry's qualified INS (HL7 v2 PID-3/PID-32, CDA recordTarget, FHIR Patient)."""
    record = ctx.identity
    stamper = _STAMPERS.get(message.content_type)
    if stamper is None:
        raise MappingError(f"ins_stamp does not handle {message.content_type}")
    if record is None:
        return message.derive(ins_stamped="false", ins_reason="patient not in the identity registry")
    if record.status != IdentityStatus.QUALIFIEE.value or not record.ins or not record.ins_oid:
        return message.derive(ins_stamped="false", ins_reason=f"identity is {record.status}, not qualifiee")
    if message.content_type == ContentType.FHIR and not _fhir_has_patient(message.body):
        # A DocumentReference posted alone names its patient by reference only: nothing to write the INS
        # into here (the destination's require_qualified_ins still guards it).
        return message.derive(ins_stamped="false", ins_reason="no Patient resource in the FHIR body")
    registry_traits = traits_from_json(dict(record.traits))
    if not ctx.identity_override:
        disagree = read_message_traits(message).disagreements(registry_traits)
        if disagree:
            names = ", ".join(t.value for t in disagree)
            raise IdentityMismatch(
                f"traits disagree with the registry: {names}", traits=tuple(t.value for t in disagree)
            )
    identity = StampIdentity(
        ins=record.ins, ins_oid=record.ins_oid, status=IdentityStatus(record.status), traits=registry_traits,
        attributes=frozenset(IdentityAttribute(a) for a in record.attributes if a in IdentityAttribute.__members__),
        source="registry",
    )  # fmt: skip
    policy = InsPolicy.for_environment(ins_environment(ctx.environment))
    stamped: Stamped = stamper(message.body, identity, policy=policy)
    reason = "registry: qualified identity" + (
        "; traits check waived in identity review" if ctx.identity_override else "; traits agree"
    )
    return message.derive(body=stamped.body, **stamped.metadata, ins_reason=reason)


def message_traits_text(message: Message) -> dict[str, str]:
    """The strict traits a message states, as text keyed like the registry's (the identity review shows both)."""
    traits = read_message_traits(message)
    out: dict[str, str] = {}
    for field in dataclasses.fields(traits):
        value = getattr(traits, field.name)
        if value is not None:
            out[field.name] = value.isoformat() if isinstance(value, dt.date) else str(value)
    return out


for _content_type in (ContentType.HL7V2, ContentType.CDA, ContentType.FHIR):
    register("traits", _content_type)(message_traits_text)
