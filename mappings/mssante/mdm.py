"""The `cda_to_v2_mdm_t02` step: a CDA received by MSSanté, as the HL7 v2.6 MDM the DPI integrates (flow F5).

CI-SIS volet "Transmission au LPS d'un document CDA provenant d'un courriel
MSSanté" (ANS IG-hl7v2-volet-trans-lps-doc-cda-courriel-mss, pages
"Evènements déclenchants" and "Profils de messages"; DOMAIN.md §6, §8.1):
the platform (PFI) opens the IHE_XDM archive and sends each document on its
own, in one MDM, to the professional's software:

=======  ====================================================================================
MSH      ``MDM^T02^MDM_T02`` (``MDM^T10`` for a replacement), v2.6, MSH-17 ``FRA``, MSH-18
         ``UNICODE UTF-8`` (or the configured ``charset``), MSH-21 ``1.1^CISIS_CDA_HL7_LPS``
EVN      the document's reception time
PID      "identique aux identifiants de patient portés par le document CDA": the local ids
         (``ext^^^&root&ISO^PI``) and, when the document carries a *complete* INS identity,
         the INS written by :func:`mappings.ins.stamp_hl7v2` (PID-3 CX-5 ``INS``, PID-5 ``L``,
         PID-7, PID-8, PID-11 ``BDL``, PID-32 ``VALI``)
PV1      PV1-2 ``N`` (not applicable)
ORC      ORC-1 ``NW`` (create) or ``RO`` (replace)
OBR      OBR-4 = the document type (``LN`` or ``TRE_A05``)
TXA      TXA-2 type, TXA-3 ``TEXT``, TXA-4 effectiveTime, TXA-12 / TXA-13 the document and
         replaced ids (``ext^^root^ISO`` or the bare OID), TXA-17 ``AU``, TXA-22 the legal
         authenticator's id
OBX 1    ED ``^text^XML^Base64^<CDA>``, OBX-11 ``F``, then PRT ``SB`` (the mail's sender),
         PRT ``RCT`` (the mailbox it reached, with its organisation when configured) and
         PRT ``REPLY`` (Reply-To), each with PRT-15 ``^^X.400^<address>``
OBX 2    ED, OBX-3 ``<Message-ID>^<subject>``, OBX-5 the mail body in base64
OBX 3-6  MetaDMPMSS MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REP_LEGAUX, MODIF_CONF_CODE (Y/N)
=======  ====================================================================================

When the INS is carried (RNIV [EXI SI 08]): a CDA with an INS root is taken as
qualified by its sender (the CI-SIS header may only carry a qualified INS,
DOMAIN.md §3.3) but the INS goes to PID-3 only with every strict trait the
stamper needs: birth name and first birth given name (BR), the birth given
names list, birth date, sex F/M and birthplace (COG). Without them the message
goes without the INS (the volet's error 905 "INS non complet" is what the DPI
would answer), with ``ins_stamped=false`` and the reason in the metadata.

Message metadata read (set by the SMTP listener, all optional): ``mail_message_id``,
``mail_subject``, ``mail_body_b64``, ``mail_from``, ``mail_recipient``,
``mail_recipient_org`` (XON of PRT-8), ``mail_reply_to``, ``mask_ps``,
``invisible_patient``, ``invisible_legal_reps``, ``document_action``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping

from lxml import etree
from pydantic import Field, field_validator

from hub.content_types import ContentType
from hub.environments import Environment, ins_environment
from hub.errors import MappingError, MessageError, ValidationError
from hub.identity import INS_ROOTS, IdentityStatus, InsPolicy, StrictTraits
from hub.identity.dates import parse_birth_date
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.cda import read_cda_header
from mappings.hl7v2.er7 import Delimiters, codec_for, encode_er7, escape
from mappings.ins import StampIdentity, stamp_hl7v2
from mappings.xml import parse_xml
from mappings.xml.text import collapsed_text

__all__ = ["MdmConfig", "cda_to_mdm", "cda_to_v2_mdm_t02"]

_H = "{urn:hl7-org:v3}"
_LOINC = "2.16.840.1.113883.6.1"
_TRE_A05 = "1.2.250.1.213.1.1.4.12"
# Volet, OBR-4 / OBX-3.3: "LN ou TRE_A05 en fonction de l'appartenance du code".
_CODING_SYSTEMS = {_LOINC: "LN", _TRE_A05: "TRE_A05"}
# Volet, "Groupes OBXNTE portant les métadonnées MSSanté": required, in this order.
_META_ROWS = (
    ("MASQUE_PS", "Masqué aux professionnels de Santé", "mask_ps"),
    ("INVISIBLE_PATIENT", "Document Non Visible par le patient", "invisible_patient"),
    ("INVISIBLE_REP_LEGAUX", "Non visible par les représentants Légaux du patient", "invisible_legal_reps"),
    ("MODIF_CONF_CODE", "Modification Confidentiality Code", "confidentiality_update"),
)
# HL7 v2.5 §2.7.4: escapes of the default encoding characters.
_DELIMITERS = Delimiters()  # the MDM is written with |^~\\& (MSH-2 below)
_NS_CONTROL = uuid.uuid5(uuid.NAMESPACE_URL, "urn:interop-hub:mssante:mdm")


class MdmConfig(ComponentConfig):
    """Settings of the `cda_to_v2_mdm_t02` step (the MSH of the MDM sent to the DPI)."""

    sending_application: str = Field("PFI", description="MSH-3: the platform (the volet's GESTIONNAIRE).")
    sending_facility: str = Field("HUB", description="MSH-4: the platform's organisation.")
    receiving_application: str = Field("DPI", description="MSH-5: the professional's software (CONSOMMATEUR).")
    receiving_facility: str = Field("HUB", description="MSH-6: its organisation.")
    processing_id: str = Field("P", pattern=r"^[PTD]$", description="MSH-11: P production, T test, D debug.")
    charset: str = Field(
        "UNICODE UTF-8",
        description="MSH-18 the MDM declares (HL7 table 0211, e.g. 8859/1 for a DPI that reads ISO 8859-1); "
        "the message is encoded in it, and a document whose names it cannot hold is refused.",
    )
    refuse_masked_ps: bool = Field(
        True,
        description="Refuse a document masked to professionals (MASQUE_PS=Y): the volet says the platform must "
        "not send it to the DPI.",
    )

    @field_validator("charset")
    @classmethod
    def _known_charset(cls, value: str) -> str:
        if codec_for(value) is None:
            raise ValueError("not an HL7 table 0211 character set the hub can encode")
        return value

    def codec(self) -> str:
        """The Python codec of ``charset``."""
        return codec_for(self.charset) or "utf-8"


def _segment(name: str, fields: dict[int, str]) -> str:
    """An ER7 segment from {field number: value}; for MSH, number 2 is the encoding characters (MSH-1 is '|')."""
    last = max(fields)
    first = 2 if name == "MSH" else 1
    return "|".join([name, *(fields.get(i, "") for i in range(first, last + 1))])


def _esc(value: str) -> str:
    return escape(value, _DELIMITERS)


def _ei(ii: str) -> str:
    """TXA-12/13 from ``root`` or ``root^extension`` (volet: ``ext^^root^ISO``, or the bare OID)."""
    root, _, ext = ii.partition("^")
    return f"{_esc(ext)}^^{_esc(root)}^ISO" if ext else _esc(root)


def _yn(metadata: Mapping[str, str], key: str) -> str:
    return "Y" if metadata.get(key, "").upper() in ("Y", "YES", "TRUE", "O") else "N"


class _Patient:
    """What the CDA recordTarget says about the patient (never printed)."""

    def __init__(self, doc: etree._Element) -> None:
        role = doc.find(f"{_H}recordTarget/{_H}patientRole")
        patient = role.find(f"{_H}patient") if role is not None else None
        self.ids = [
            (i.get("extension", ""), i.get("root", ""))
            for i in (role.findall(f"{_H}id") if role is not None else [])
            if i.get("extension") and i.get("root") and i.get("nullFlavor") is None
        ]
        name = patient.find(f"{_H}name") if patient is not None else None
        fams = name.findall(f"{_H}family") if name is not None else []
        givens = name.findall(f"{_H}given") if name is not None else []
        self.birth_name = next((collapsed_text(f) for f in fams if f.get("qualifier") == "BR"), "")
        self.used_name = next((collapsed_text(f) for f in fams if f.get("qualifier") == "CL"), "")
        self.first_given = next((collapsed_text(g) for g in givens if g.get("qualifier") == "BR"), "")
        self.used_given = next((collapsed_text(g) for g in givens if g.get("qualifier") == "CL"), "")
        self.given_list = next((collapsed_text(g) for g in givens if g.get("qualifier") is None), "")
        birth = patient.find(f"{_H}birthTime") if patient is not None else None
        self.birth_time = (birth.get("value") or "")[:8] if birth is not None else ""
        gender = patient.find(f"{_H}administrativeGenderCode") if patient is not None else None
        self.sex = {"F": "F", "M": "M", "UN": "U"}.get(gender.get("code", "") if gender is not None else "", "")
        county = patient.find(f"{_H}birthplace/{_H}place/{_H}addr/{_H}county") if patient is not None else None
        self.birthplace = collapsed_text(county)

    def __repr__(self) -> str:
        return "_Patient(<masked>)"

    def ins(self) -> tuple[str, str] | None:
        return next(((ext, root) for ext, root in self.ids if root in INS_ROOTS), None)

    def local_ids(self) -> list[str]:
        return [f"{_esc(ext)}^^^&{_esc(root)}&ISO^PI" for ext, root in self.ids if root not in INS_ROOTS]

    def traits(self) -> StrictTraits | None:
        """Complete strict traits, or None when one is missing (then the INS is not carried)."""
        if not (self.birth_name and self.first_given and self.given_list and len(self.birth_time) == 8):
            return None
        if self.sex not in ("F", "M") or len(self.birthplace) != 5:
            return None
        try:
            born, completed = parse_birth_date(self.birth_time)
            if completed:
                return None
            return StrictTraits(
                birth_name=self.birth_name,
                first_birth_given_name=self.first_given,
                birth_date=born,
                sex=self.sex,  # type: ignore[arg-type]  # StrictTraits parses the code
                birthplace_code=self.birthplace,
                birth_given_names=self.given_list,
            )
        except ValidationError:
            return None


def _pid(patient: _Patient) -> str:
    names = [f"{_esc(patient.birth_name)}^{_esc(patient.first_given)}^{_esc(patient.given_list)}^^^^L"]
    if patient.used_name or patient.used_given:
        # PAM FR §6.6.2: the used name is a "D" repetition, sent before "L" in the examples.
        names.insert(0, f"{_esc(patient.used_name)}^{_esc(patient.used_given)}^^^^^D")
    birthplace = f"^^^^^^BDL^^{_esc(patient.birthplace)}" if patient.birthplace else ""
    fields = ["PID", "1", "", "~".join(patient.local_ids()), "", "~".join(names), "", patient.birth_time, patient.sex]
    fields += ["", "", birthplace]
    return "|".join(fields)


def cda_to_mdm(
    cda: bytes,
    metadata: Mapping[str, str],
    *,
    config: MdmConfig,
    control_id: str,
    message_time: str,
    environment: str = "production",
) -> tuple[bytes, dict[str, str]]:
    """The MDM (ER7 bytes in the configured MSH-18 character set, CR-separated) carrying one CDA, and its metadata.

    Raises :class:`MappingError` when the document is not a CDA, has no
    patient identifier the DPI could use, a type code outside LN/TRE_A05,
    or is masked to professionals (``refuse_masked_ps``).
    """
    try:
        doc = parse_xml(cda)
        header = read_cda_header(doc)
    except MessageError as exc:
        raise MappingError(f"not a usable CDA document: {exc.reason}") from None
    if config.refuse_masked_ps and _yn(metadata, "mask_ps") == "Y":
        raise MappingError("document masked to professionals (MASQUE_PS=Y) is not sent to the DPI")
    code, system = header.get("type_code", ""), header.get("type_code_system", "")
    coding = _CODING_SYSTEMS.get(system)
    if not code or coding is None:
        raise MappingError("document type must be a LOINC or TRE_A05 code", location="/ClinicalDocument/code")
    label = header.get("type_display_name") or header.get("title") or code
    unique_id = header.get("unique_id", "")
    if not unique_id:
        raise MappingError("the document has no id (TXA-12)", location="/ClinicalDocument/id")
    replaced = ""
    related = doc.find(f"{_H}relatedDocument[@typeCode='RPLC']/{_H}parentDocument/{_H}id")
    if related is not None and related.get("root"):
        replaced = related.get("root", "") + (f"^{related.get('extension')}" if related.get("extension") else "")
    replace = bool(replaced) or metadata.get("document_action") == "replace"
    trigger, orc = ("T10", "RO") if replace else ("T02", "NW")
    patient = _Patient(doc)

    segs = [
        _segment(
            "MSH",
            {
                2: "^~\\&",
                3: _esc(config.sending_application),
                4: _esc(config.sending_facility),
                5: _esc(config.receiving_application),
                6: _esc(config.receiving_facility),
                7: message_time,
                9: f"MDM^{trigger}^MDM_T02",
                10: control_id,
                11: config.processing_id,
                12: "2.6",
                17: "FRA",
                18: config.charset,
                21: "1.1^CISIS_CDA_HL7_LPS",
            },
        ),
        f"EVN||{message_time}",
        _pid(patient),
        "PV1|1|N",
        f"ORC|{orc}",
        f"OBR|1|||{_esc(code)}^{_esc(label)}^{coding}",
        _segment(
            "TXA",
            {
                1: "1",
                2: _esc(code),
                3: "TEXT",
                4: header.get("effective_time", ""),
                12: _ei(unique_id),
                13: _ei(replaced) if replaced else "",
                17: "AU",
                22: _esc(header.get("legal_authenticator_id", "")),
            },
        ),
        f"OBX|1|ED|{_esc(code)}^{_esc(label)}^{coding}||^text^XML^Base64^{base64.b64encode(cda).decode()}||||||F",
    ]
    participants = (
        ("SB", "Send by", metadata.get("mail_from", ""), ""),
        ("RCT", "Result Copies To", metadata.get("mail_recipient", ""), metadata.get("mail_recipient_org", "")),
        ("REPLY", "Reply To", metadata.get("mail_reply_to", ""), ""),
    )
    for role, role_label, address, org in participants:
        for one in (a.strip() for a in address.split(",")):
            if one:
                # PRT-4 role, PRT-8 organisation (configured XON, written as given), PRT-15 ^^X.400^address.
                fields = ["PRT", "", "UC", "", f"{role}^{role_label}^participation", "", "", "", org]
                fields += [""] * 6 + [f"^^X.400^{_esc(one)}"]
                segs.append("|".join(fields))
    subject = metadata.get("mail_subject", "")
    body_b64 = metadata.get("mail_body_b64", "")
    mail_id = metadata.get("mail_message_id", "")
    segs.append(f"OBX|2|ED|{_esc(mail_id)}^{_esc(subject)}||^text^^Base64^{body_b64}||||||F")
    for i, (row, row_label, key) in enumerate(_META_ROWS, start=3):
        segs.append(f"OBX|{i}|CWE|{row}^{row_label}^MetaDMPMSS||{_yn(metadata, key)}^^expandedYes-NoIndicator||||||F")
    er7 = encode_er7("\r".join(segs) + "\r", config.codec())

    out = {
        "message_type": f"MDM^{trigger}",
        "control_id": control_id,
        "sending_app": config.sending_application,
        "sending_facility": config.sending_facility,
    }
    ins = patient.ins()
    traits = patient.traits()
    if ins is not None and traits is not None:
        identity = StampIdentity(
            ins=ins[0],
            ins_oid=ins[1],
            status=IdentityStatus.QUALIFIEE,
            traits=traits,
            used_family_name=patient.used_name or None,
            used_given_name=patient.used_given or None,
            source="cda",
        )
        policy = InsPolicy.for_environment(ins_environment(environment, unknown=Environment.PRODUCTION))
        try:
            stamped = stamp_hl7v2(er7, identity, policy=policy)
        except MappingError as exc:
            out.update(ins_stamped="false", ins_reason=f"INS not carried: {exc.reason}")
        else:
            er7 = stamped.body
            out.update(stamped.metadata)
            out["ins_reason"] = "CDA recordTarget: INS with complete strict traits"
    else:
        why = "no INS in the document" if ins is None else "INS without complete strict traits (volet error 905)"
        out.update(ins_stamped="false", ins_reason=why)
    if out.get("ins_stamped") != "true" and not patient.local_ids():
        raise MappingError("no patient identifier the DPI can use: no local id and no INS that can be carried")
    return er7, out


@register(
    "step",
    "cda_to_v2_mdm_t02",
    config=MdmConfig,
    consumes=(ContentType.CDA,),
    produces=ContentType.HL7V2,
    needs=("environment",),
)
def cda_to_v2_mdm_t02(message: Message, ctx: object = None, *, config: MdmConfig | None = None) -> Message:
    """CDA received by MSSanté → HL7 v2.6 MDM^T02 (T10 for a replacement) for the DPI, INS in PID-3 when complete."""
    # MSH-10 is derived from the stored message, so a retried delivery keeps its control id (README: the
    # receiver can detect a repeat); MSH-7 is the reception time, for the same reason.
    control_id = uuid.uuid5(_NS_CONTROL, message.id).hex[:20]
    when = message.received_at.strftime("%Y%m%d%H%M%S")
    environment = getattr(ctx, "environment", "production") or "production"
    er7, meta = cda_to_mdm(
        message.body,
        message.metadata,
        config=config or MdmConfig(),
        control_id=control_id,
        message_time=when,
        environment=environment,
    )
    return message.derive(body=er7, content_type=ContentType.HL7V2, **meta)
