"""What an HL7 v2 document message says about its DMP lot, kept as metadata for the XDS route.

The ANS HL7 v2 → DMP mapping (IG-hl7v2-volet-transmission-document-cda-r2,
page ``mapping``, "Lot de soumission" and "Mapping VIHF") takes these from the
message, not from static settings:

=================================  ==============================================  ==========================
metadata key                       from                                            used for
=================================  ==============================================  ==========================
``xds_content_type_code`` /        PV1-2: I→03, O→07, R→19, N→97, E→07 (TRE_R209   SubmissionSet
``xds_content_type_display``       ``1.2.250.1.213.2.2``; displays as published    contentTypeCode
                                   in ANS IG-terminologie-de-sante v1.12.0)
``xds_service_start_time`` /       PV1-44 / PV1-45 (admit / discharge), DTM UTC     serviceStart/StopTime
``xds_service_stop_time``
``xds_lot_author_id`` /            PRT with PRT-4 = ``SB`` (send by): PRT-5.1,       lot authorPerson, VIHF
``…_family`` / ``…_given``         PRT-5.2, PRT-5.3 (national idNat_PS only)         NameID and subject-id
``xds_lot_institution_id`` /       the same PRT: PRT-8.10 (idNat_Struct), PRT-8.1   lot authorInstitution,
``xds_lot_institution_name``                                                       VIHF Identifiant_Structure
=================================  ==============================================  ==========================

Registered as step ``v2_dmp_context`` (HL7 v2 → the same HL7 v2, metadata
added); put it before ``v2_document_to_cda`` / ``oru_to_crbio`` in a route
to the DMP. Keys are left out when the message does not carry the value, so
the XDS settings remain the fallback (automated flows without a PRT SB).

Registered as listener check ``dmp_lot`` too (MLLP ``checks: [..., dmp_lot]``):
before the ACK, a document message for the DMP (DESTDMP=Y) whose masking
flags cannot give a valid lot (a flag neither Y nor N, ``MODIF_CONF_CODE=Y``
on a creation, ``DESTMSSANTEPAT=Y`` with ``INVISIBLE_PATIENT=Y``, see
:mod:`mappings.xds.visibility`), whose PV1-44/45 is not a time, or whose
document type cannot give the lot's typeCode and classCode (not in JDV_J66,
or a class from ASS_X04 that is not a DMP class, JDV_J57; see
:mod:`mappings.xds.dmp_value_sets`) is answered AR with an ERR naming the
field, and stored as rejected: never sent half-right. A type ASS_X04 has no
row for passes here: its class comes from the route's XDS settings.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from hub.content_types import ContentType
from hub.errors import MappingError
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.cda.hl7v2_documents import document_types, read_distribution
from mappings.cda.v2_input import segments
from mappings.hl7v2.er7 import Er7Message
from mappings.xds import hl7
from mappings.xds.dmp_value_sets import class_for_type, is_member
from mappings.xds.visibility import visibility_codes

__all__ = ["CONTENT_TYPES", "DmpContextConfig", "check_dmp_lot", "read_dmp_context", "v2_dmp_context"]

CONTENT_TYPES: dict[str, tuple[str, str]] = {
    "I": ("03", "Hospitalisation complète (non compris hospitalisation de semaine)"),
    "O": ("07", "Consultation Soins Externes"),
    "R": ("19", "Traitement et Cure Ambulatoire"),
    "N": ("97", "Type d'activité indifférencié"),
    "E": ("07", "Consultation Soins Externes"),
}
"""PV1-2 → TRE_R209 contentTypeCode, the volet's "proposition de mapping sur le PV1-2"."""
CONTENT_TYPE_SYSTEM = "1.2.250.1.213.2.2"
"""TRE_R209-TypeActivite, the code system of the PV1-2 contentTypeCodes."""


class DmpContextConfig(ComponentConfig):
    """Settings of the ``v2_dmp_context`` step."""

    content_types: dict[str, tuple[str, str]] = Field(
        default_factory=lambda: dict(CONTENT_TYPES),
        description="PV1-2 patient class → (TRE_R209 code, display) for the lot's contentTypeCode; a class not "
        "listed leaves the route's configured contentTypeCode.",
    )

    @field_validator("content_types")
    @classmethod
    def _in_j59(cls, value: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """Each code must be a TRE_R209 code of JDV_J59-ContentTypeCode-DMP, or every such lot is refused."""
        for patient_class, (code, _) in value.items():
            if not is_member("contentTypeCode", code, CONTENT_TYPE_SYSTEM):
                raise ValueError(f"content_types.{patient_class}: {code} is not a TRE_R209 code of JDV_J59")
        return value


def read_dmp_context(body: bytes, config: DmpContextConfig | None = None) -> dict[str, str]:
    """The metadata keys of the module docstring for one HL7 v2 message."""
    cfg = config or DmpContextConfig()
    er7 = Er7Message(body)
    out: dict[str, str] = {}
    pv1 = next(iter(segments(er7, "PV1")), None)
    if pv1 is not None:
        patient_class = pv1.get(2).strip().upper()
        if patient_class in cfg.content_types:
            out["xds_content_type_code"], out["xds_content_type_display"] = cfg.content_types[patient_class]
        for field, key in ((44, "xds_service_start_time"), (45, "xds_service_stop_time")):
            if pv1.get(field):
                try:
                    out[key] = hl7.hl7_ts_to_dtm(pv1.get(field))
                except ValueError:
                    raise MappingError(f"PV1-{field} is not an HL7 TS", location=pv1.loc(field)) from None
    distribution = read_distribution(er7)
    if distribution.sender is not None:
        out["xds_lot_author_id"] = distribution.sender.id
        out["xds_lot_author_family"] = distribution.sender.family
        if distribution.sender.given:
            out["xds_lot_author_given"] = distribution.sender.given
    if distribution.sender_org is not None:
        out["xds_lot_institution_id"] = distribution.sender_org.id
        out["xds_lot_institution_name"] = distribution.sender_org.name
    return out


_ACTIONS = {"T02": "create", "T10": "replace", "T04": "delete"}
_OBX11 = {"F": "create", "C": "replace", "D": "delete"}


@register("check", "dmp_lot")
def check_dmp_lot(body: bytes) -> dict[str, str]:
    """Listener check: refuse (MappingError naming the field) a DMP-bound document the DMP lot cannot carry."""
    er7 = Er7Message(body)
    msh = segments(er7, "MSH")[0]
    kind = (msh.get(9, 1), msh.get(9, 2))
    if kind != ("ORU", "R01") and kind[0] != "MDM":
        return {}
    distribution = read_distribution(er7)
    if distribution.flags.get("DESTDMP") != "Y":
        return {}
    meta = distribution.metadata()
    if kind[0] == "MDM":
        meta["document_action"] = _ACTIONS.get(kind[1], "create")
    else:
        docs = [o for o in segments(er7, "OBX") if o.get(2) == "ED" and o.get(3, 3) != "MetaDMPMSS"]
        meta["document_action"] = _OBX11.get(docs[0].get(11), "create") if docs else "create"
    if meta["document_action"] == "delete":
        return {}
    visibility_codes(meta)
    read_dmp_context(body)
    for code, location in document_types(er7):
        _check_document_type(code.code, code.code_system, location)
    return {}


def _check_document_type(code: str, system: str, location: str) -> None:
    """The lot's typeCode must be in JDV_J66 (the volet, OBR-4), and the class ASS_X04 gives it a DMP class."""
    if not is_member("typeCode", code, system):
        raise MappingError(f"typeCode: {code[:64]} ({system[:64]}) is not in JDV_J66-TypeCode-DMP", location=location)
    expected = class_for_type(code, system)
    if expected is not None and not is_member("classCode", *expected):
        raise MappingError(
            f"classCode: ASS_X04 gives typeCode {code[:64]} the class {expected[0]}, not a DMP class (JDV_J57)",
            location=location,
        )


@register("step", "v2_dmp_context", config=DmpContextConfig, consumes=(ContentType.HL7V2,), produces=ContentType.HL7V2)
def v2_dmp_context(message: Message, config: DmpContextConfig | None = None) -> Message:
    """HL7 v2 document message → itself, with the DMP lot's author, structure, contentTypeCode and times."""
    return message.derive(body=message.body, **read_dmp_context(message.body, config))
