"""Documents carried in HL7 v2 (CI-SIS volet "Transmission de documents CDA en HL7v2", Ségur).

The volet (ANS IG-hl7v2-volet-transmission-document-cda-r2, DOMAIN.md §6, §8.1)
carries one document per ORU^R01 (v2.5) or MDM^T02/T04/T10 (v2.6) in an OBX
of type ED (OBX-5: ``^TEXT^XML^Base64^<data>``), followed by PRT segments
(sender, MSSanté recipients, reply-to) and by OBX rows coded ``MetaDMPMSS``
that say where the document goes and who may see it.

:func:`read_v2_document` turns such a message into one of:

* **create / replace**: the CDA itself (an encapsulated CDA is passed through
  byte for byte after its header is checked), or a PDF wrapped as a CDA level 1
  document (nonXMLBody, IHE XDS-SD template). A replacement (MDM^T10, OBX-11 C)
  is a new version: same setId, a RPLC relatedDocument to the replaced id.
* **delete** (MDM^T04, OBX-11 D): a deletion *request*: content type
  :data:`ContentType.CDA_DELETION`, an empty body, and the document's ids in the
  metadata, for a destination to act on (DMP: ITI-57 status Deleted).

An ORU may carry the document in two formats (volet, "Message ORU": a CDA
level 1 and a CDA level 3 of the same content, each with its own id, the same
request for both); the step's ``format`` setting says which instance it takes.
An MDM carries one document. Optional parts that cannot be used (a mail body
that is not base64 text, an ED without a data subtype) are dropped with a
warning; the document still goes.

The step :func:`v2_document_to_cda` wraps it as a pipeline step; the listener
check :func:`check_v2_documents` applies the same rules before the ACK.

Metadata keys this module defines (values are exactly those shown; absent
when the message carries no MetaDMPMSS rows / PRT segments):

===========================  =====================================================================
``document_action``          ``create`` | ``replace`` | ``delete`` (OBX-11 F/C/D; MDM T02/T10/T04)
``document_format_code``     XDS formatCode when known: ``urn:ihe:iti:xds-sd:pdf:2008`` (wrapped
                             PDF), ``urn:ihe:lab:xd-lab:2008`` (CR-BIO, DOMAIN.md §5.1)
``document_replaces_id``     the replaced document id (``root`` or ``root^extension``) when known
``dest_dmp``                 ``Y`` | ``N``: DESTDMP, publish to the DMP
``dest_mss_ps``              ``Y`` | ``N``: DESTMSSANTEPS, send to professionals/organisations by MSSanté
``dest_mss_patient``         ``Y`` | ``N``: DESTMSSANTEPAT, send to the patient's MSSanté mailbox
``mask_ps``                  ``Y`` | ``N``: MASQUE_PS, hidden from professionals (DMP)
``invisible_patient``        ``Y`` | ``N``: INVISIBLE_PATIENT, not visible to the patient
``invisible_legal_reps``     ``Y`` | ``N``: INVISIBLE_REP_LEGAUX, not visible to legal representatives
``secret_connection``        ``Y`` | ``N``: CONNEXION_SECRETE, DMP "connexion secrète"
``confidentiality_update``   ``Y`` | ``N``: MODIF_CONF_CODE, the request updates masking/visibility
``ack_reception``            ``Y`` | ``N``: ACK_RECEPTION, DMP/MSSanté reception acks wanted
``ack_read_mss``             ``Y`` | ``N``: ACK_LECTURE_MSS, MSSanté read acks wanted
``mss_no_reply_patient``     ``Y`` | ``N``: NTE-4 ``FIN`` on DESTMSSANTEPAT (header ``X-MSS-MES: FIN``)
``mss_recipients``           every PRT ``RCT`` address (PRT-15.4), comma-separated, in message order
``mss_recipients_patient``   the subset that are patient mailboxes (INS identifier or
                             ``@patient.mssante.fr``)
``mss_reply_to``             PRT ``REPLY`` addresses, comma-separated
``mss_body_ps``              CORPSMAIL_PS text (decoded), when sent
``mss_body_patient``         CORPSMAIL_PATIENT text (decoded), when sent
``sender_ps_id``             PRT ``SB`` professional idNat_PS (PRT-5), when national
``sender_org_id``            PRT ``SB`` structure idNat_Struct (PRT-8), when national
``document_other_format_id`` the id of the other instance, when the ORU carries two formats
``warnings``                 optional parts dropped, ``; ``-separated (never a value from them)
===========================  =====================================================================

plus the keys of :func:`mappings.cda.read_cda_header` for the produced (or
deleted) document. A route filters on them, e.g. ``when: {dest_dmp: "Y"}``.

Inputs a previous step may set in the message metadata, for what HL7 v2
cannot say: ``cda_replaces_id`` (id of the replaced version, ``root`` or
``root^extension``) and ``cda_replaces_version`` (its versionNumber).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from typing import Literal

from lxml import etree
from pydantic import Field

from hub.content_types import ContentType
from hub.errors import MappingError, MessageError, ParseError
from hub.identity import INS_ROOTS
from hub.message import Message
from hub.registry import register
from mappings.cda import builder as b
from mappings.cda.builder import II, CdaConfig, Organization, Practitioner
from mappings.cda.codes import LOINC_OID, TRE_A05_OID, Coded, encounter_code, v2_coding_system_oid
from mappings.cda.header import read_cda_header, validate_cda_header
from mappings.cda.v2_input import (
    Segment,
    national_practitioner_from_cnn,
    national_practitioner_from_xcn,
    organization_from_xon,
    qualified_ins,
    read_patient,
    segments,
    ts,
)
from mappings.hl7v2.er7 import Er7Message
from mappings.xml import parse_xml

__all__ = [
    "FLAG_KEYS",
    "Distribution",
    "DocumentConfig",
    "V2Document",
    "check_v2_documents",
    "document_obx",
    "document_types",
    "is_results_oru",
    "read_distribution",
    "read_v2_document",
    "v2_document_to_cda",
]

FORMAT_XDS_SD_PDF = "urn:ihe:iti:xds-sd:pdf:2008"
TEMPLATE_XDS_SD = "1.3.6.1.4.1.19376.1.2.20"

# MetaDMPMSS OBX-3 codes (volet, page meta-dmp-mss) -> metadata keys.
FLAG_KEYS: Mapping[str, str] = {
    "MASQUE_PS": "mask_ps",
    "INVISIBLE_PATIENT": "invisible_patient",
    "INVISIBLE_REP_LEGAUX": "invisible_legal_reps",
    "CONNEXION_SECRETE": "secret_connection",
    "MODIF_CONF_CODE": "confidentiality_update",
    "DESTDMP": "dest_dmp",
    "DESTMSSANTEPS": "dest_mss_ps",
    "DESTMSSANTEPAT": "dest_mss_patient",
    "ACK_RECEPTION": "ack_reception",
    "ACK_LECTURE_MSS": "ack_read_mss",
}
# "Ces métadonnées sont requises" except ACK_RECEPTION / ACK_LECTURE_MSS (Usage Optional) and the
# mail bodies (volet, "Les métadonnées DMP/MSSanté").
_REQUIRED_FLAGS = (
    "MASQUE_PS",
    "INVISIBLE_PATIENT",
    "INVISIBLE_REP_LEGAUX",
    "CONNEXION_SECRETE",
    "MODIF_CONF_CODE",
    "DESTDMP",
    "DESTMSSANTEPS",
    "DESTMSSANTEPAT",
)
_BODY_CODES = {"CORPSMAIL_PS": "mss_body_ps", "CORPSMAIL_PATIENT": "mss_body_patient"}
# The volet's MSSanté management matrix (page regles-gestion-mssante): the exhaustive list of flag
# combinations allowed when a document goes out by MSSanté; "les cas non représentés génèrent un
# message d'erreur". Flags a row does not name may take either value.
_MSS_MATRIX: tuple[Mapping[str, str], ...] = (
    {"MASQUE_PS": "N", "INVISIBLE_PATIENT": "N", "INVISIBLE_REP_LEGAUX": "N", "DESTMSSANTEPS": "Y",
     "DESTMSSANTEPAT": "Y"},
    {"MASQUE_PS": "N", "INVISIBLE_PATIENT": "Y", "INVISIBLE_REP_LEGAUX": "N", "DESTMSSANTEPS": "Y",
     "DESTMSSANTEPAT": "N"},
    {"INVISIBLE_PATIENT": "N", "CONNEXION_SECRETE": "N", "DESTDMP": "N", "DESTMSSANTEPS": "N",
     "DESTMSSANTEPAT": "Y"},
)  # fmt: skip
_PATIENT_MAIL_DOMAIN = "@patient.mssante.fr"
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
Action = Literal["create", "replace", "delete"]
# OBX-11 (HL7 table 0085) -> request, and the trigger / ORC-1 each request must come with (volet,
# "Evènements déclenchants" and "Le segment ORC": incoherent messages are refused by the PFI).
_ACTIONS: Mapping[str, Action] = {"F": "create", "C": "replace", "D": "delete"}
_MDM_TRIGGERS: Mapping[str, Action] = {"T02": "create", "T10": "replace", "T04": "delete"}
_ORC_CONTROLS: Mapping[str, Action] = {"NW": "create", "RO": "replace", "CA": "delete"}


class DocumentConfig(CdaConfig):
    """Settings of the `v2_document_to_cda` step (on top of the shared CDA settings)."""

    enforce_mssante_matrix: bool = Field(
        False,
        description="Refuse MetaDMPMSS flag sets outside the volet's MSSanté matrix. Off by default: "
        "the ANS T02 example itself (INVISIBLE_REP_LEGAUX Y to a professional) is outside it.",
    )
    require_ins_for_dmp: bool = Field(
        True, description="Refuse DESTDMP=Y when the document's patient has no INS (DOMAIN.md §3.3)."
    )
    format: Literal["level3", "level1"] = Field(
        "level3",
        description="Which instance to take from an ORU carrying one document in two formats (volet: a CDA "
        "level 1 and a CDA level 3 of the same content, each with its own id, both to publish): level3 (the "
        "structured body) or level1 (the PDF, sent wrapped or as a PDF the hub wraps). A message with one "
        "document gives that one. Publishing both takes two routes, the second one `when: {document_count: "
        '"2"}` with `format: level1` (metadata of the `v2_documents` listener check).',
    )


# ----------------------------------------------------------------------------------- distribution


@dataclasses.dataclass(slots=True)
class Distribution:
    """MetaDMPMSS flags and PRT participants of one message (all optional)."""

    flags: dict[str, str] = dataclasses.field(default_factory=dict)
    bodies: dict[str, str] = dataclasses.field(default_factory=dict)
    recipients: list[str] = dataclasses.field(default_factory=list)
    patient_recipients: list[str] = dataclasses.field(default_factory=list)
    reply_to: list[str] = dataclasses.field(default_factory=list)
    sender: Practitioner | None = None
    sender_org: Organization | None = None
    has_sender: bool = False
    no_reply_patient: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Optional parts that could not be used and were dropped (metadata ``warnings``)."""

    def __repr__(self) -> str:
        return f"Distribution(flags={len(self.flags)}, recipients={len(self.recipients)})"

    def metadata(self) -> dict[str, str]:
        """The metadata keys of the module docstring."""
        out = {FLAG_KEYS[code]: value for code, value in self.flags.items()}
        out.update(self.bodies)
        if self.flags:
            out["mss_no_reply_patient"] = "Y" if self.no_reply_patient else "N"
        for key, values in (
            ("mss_recipients", self.recipients),
            ("mss_recipients_patient", self.patient_recipients),
            ("mss_reply_to", self.reply_to),
        ):
            if values:
                out[key] = ",".join(values)
        if self.sender is not None:
            out["sender_ps_id"] = self.sender.id
        if self.sender_org is not None:
            out["sender_org_id"] = self.sender_org.id
        if self.warnings:
            out["warnings"] = "; ".join(self.warnings)
        return out

    def check(self, *, has_ins: bool, enforce_matrix: bool, require_ins_for_dmp: bool = True) -> None:
        """The volet's rules on flags and participants; MappingError naming the rule."""
        if not self.flags:
            return
        missing = [code for code in _REQUIRED_FLAGS if code not in self.flags]
        if missing:
            raise MappingError(f"MetaDMPMSS rows missing: {', '.join(missing)}", location="OBX")
        flag = self.flags.get
        if flag("DESTMSSANTEPAT") == "Y" and flag("INVISIBLE_PATIENT") == "Y":
            # Volet, INVISIBLE_PATIENT: "un document clinique masqué au patient ne doit pas être
            # envoyé au patient par MSSanté".
            raise MappingError("DESTMSSANTEPAT=Y with INVISIBLE_PATIENT=Y: a hidden document cannot go to the patient")
        if flag("DESTMSSANTEPS") == "Y" and len(self.recipients) == len(self.patient_recipients):
            raise MappingError("DESTMSSANTEPS=Y but no PRT RCT segment names a professional's MSSanté address")
        if flag("DESTMSSANTEPAT") == "Y" and not self.patient_recipients:
            raise MappingError("DESTMSSANTEPAT=Y but no PRT RCT segment names the patient's MSSanté address")
        if flag("DESTDMP") == "Y":
            if not self.has_sender:
                # Volet, PRT "Expéditeur": required for a DMP publication (VIHF, submission-set author).
                raise MappingError("DESTDMP=Y requires the PRT SB (send by) segment")
            if require_ins_for_dmp and not has_ins:
                raise MappingError("DESTDMP=Y requires a patient INS (DOMAIN.md §3.3)")
        mss = flag("DESTMSSANTEPS") == "Y" or flag("DESTMSSANTEPAT") == "Y"
        if (
            enforce_matrix
            and mss
            and not any(all(self.flags.get(k) == v for k, v in row.items()) for row in _MSS_MATRIX)
        ):
            raise MappingError("MetaDMPMSS flags outside the volet's MSSanté matrix")


def _b64(data: str, location: str) -> bytes:
    """Base64 as senders write it: whitespace ignored, and the ``=`` padding restored when left out.

    The ANS example messages (hl7V2-exemples) end their base64 documents without padding; the
    length still says how many bytes the last group holds (RFC 4648 §3.2), except a length of 4n+1.
    """
    compact = "".join(data.split())
    if len(compact) % 4 == 1:
        raise MappingError("OBX-5.5 is not valid base64 (truncated)", location=location)
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except binascii.Error:
        raise MappingError("OBX-5.5 is not valid base64", location=location) from None


def _decode_text(seg: Segment, location: str) -> str:
    """An ED OBX-5 holding text (mail bodies): base64 when OBX-5.4 says so, UTF-8 or the message's charset."""
    rep = seg.reps(5)[0] if seg.reps(5) else ""
    if seg.get(2) != "ED":
        return seg.er7.component(rep, 1, formatting=True)
    if seg.comp(rep, 4).upper() != "BASE64":
        return seg.er7.component(rep, 5, formatting=True)
    raw = _b64(seg.comp(rep, 5), location)
    for codec in dict.fromkeys(("utf-8", seg.er7.codec)):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    raise MappingError(f"{location} is not text in UTF-8 or the message's character set", location=location)


def read_distribution(er7: Er7Message) -> Distribution:
    """MetaDMPMSS OBX rows, their NTE and the PRT segments of a message (volet, "Profils de messages")."""
    out = Distribution()
    last_meta = ""
    for seg in segments(er7):
        if seg.id == "OBX":
            last_meta = ""
            if seg.get(3, 3) != "MetaDMPMSS":
                continue
            code = seg.get(3, 1)
            last_meta = code
            if code in _BODY_CODES:
                # Volet: the mail bodies are optional ("A défaut ... un corps de mail par défaut"): one that
                # cannot be read is dropped with a warning, and the document still goes.
                try:
                    out.bodies[_BODY_CODES[code]] = _decode_text(seg, seg.loc(5))
                except MappingError as exc:
                    out.warnings.append(f"{code} dropped: {exc.reason}")
                continue
            if code not in FLAG_KEYS:
                raise MappingError("unknown MetaDMPMSS code in OBX-3", location=seg.loc(3, 1))
            if code in out.flags:
                raise MappingError("MetaDMPMSS code repeated", location=seg.loc(3, 1))
            value = seg.get(5, 1)
            if value not in ("Y", "N"):
                # HL7 table 0136 (expandedYes-NoIndicator): Y or N.
                raise MappingError("MetaDMPMSS OBX-5 must be Y or N", location=seg.loc(5, 1))
            out.flags[code] = value
        elif seg.id == "NTE" and last_meta == "DESTMSSANTEPAT":
            # Volet: NTE-4 "FIN" when the patient must not be able to answer.
            out.no_reply_patient = out.no_reply_patient or seg.get(4, 1) == "FIN"
        elif seg.id == "PRT":
            last_meta = ""
            _read_prt(seg, out)
        elif seg.id != "NTE":
            last_meta = ""
    return out


def _read_prt(seg: Segment, out: Distribution) -> None:
    role = seg.get(4, 1)
    address = next((seg.comp(t, 4) for t in seg.reps(15) if seg.comp(t, 4)), "")
    if role == "SB":
        out.has_sender = True
        person = seg.reps(5)
        org = seg.reps(8)
        out.sender = national_practitioner_from_xcn(seg, person[0]) if person else None
        out.sender_org = organization_from_xon(seg, org[0]) if org else None
    elif role == "RCT":
        if not address:
            raise MappingError("PRT RCT without an MSSanté address (PRT-15.4)", location=seg.loc(15, 4))
        out.recipients.append(address)
        recipient = seg.reps(5)[0] if seg.reps(5) else ""
        patient = (
            seg.comp(recipient, 13) == "INS"
            or bool({seg.comp(recipient, 9, 1), seg.comp(recipient, 9, 2)} & INS_ROOTS)
            or address.lower().endswith(_PATIENT_MAIL_DOMAIN)
        )
        if patient:
            out.patient_recipients.append(address)
    elif role == "REPLY" and address:
        out.reply_to.append(address)


# ------------------------------------------------------------------------------------- documents


@dataclasses.dataclass(frozen=True, slots=True)
class V2Document:
    """What a document message becomes: a body, its content type, and metadata."""

    action: Action
    body: bytes
    content_type: str
    metadata: dict[str, str]

    def __repr__(self) -> str:
        return f"V2Document(action={self.action!r}, content_type={self.content_type!r}, bytes={len(self.body)})"


def _action(er7: Er7Message, obx: Segment) -> Action:
    """The request (create / replace / delete) of a document row: OBX-11, the MDM trigger and ORC-1 agree.

    Volet, "Le segment ORC": incoherent values are refused. Taken as sent: an empty OBX-11 takes
    the request of the MDM trigger or ORC-1, and ORC-1 ``SC`` (status changed, as in the volet's
    2.0 example messages) says nothing of the request.
    """
    status = obx.get(11)
    action = _ACTIONS.get(status)
    if status and action is None:
        raise MappingError("OBX-11 of the document must be F, C or D", location=obx.loc(11))
    msh = segments(er7, "MSH")[0]
    trigger = _MDM_TRIGGERS.get(msh.get(9, 2)) if msh.get(9, 1) == "MDM" else None
    if action is not None and trigger is not None and trigger != action:
        raise MappingError("MDM trigger event and OBX-11 disagree (T02/F, T10/C, T04/D)", location="MSH^1^9")
    action = action or trigger
    for orc in segments(er7, "ORC"):
        control = orc.get(1)
        if not control or control == "SC":
            continue
        wanted = _ORC_CONTROLS.get(control)
        if wanted is None or (action is not None and wanted != action):
            raise MappingError("ORC-1 and OBX-11 disagree (NW/F, RO/C, CA/D)", location=orc.loc(1))
        action = action or wanted
    if action is None:
        raise MappingError("OBX-11 of the document must be F, C or D", location=obx.loc(11))
    return action


def _encapsulated(er7: Er7Message, obx: Segment) -> tuple[str, bytes]:
    """(``cda`` | ``pdf``, bytes) of an ED OBX-5 (volet: ``^TEXT^XML^Base64^<data>``).

    OBX-5.4 (HL7 table 0299): ``Base64``, ``Hex``, or ``A`` / empty for a CDA sent as text in
    the message (escaped ER7, in the message's character set).
    """
    reps = obx.reps(5)
    if len(reps) != 1:
        raise MappingError("OBX-5 must hold exactly one encapsulated document", location=obx.loc(5))
    rep = reps[0]
    subtype, encoding = obx.comp(rep, 3).upper(), obx.comp(rep, 4).upper()
    if encoding == "BASE64":
        raw = _b64(obx.comp(rep, 5), obx.loc(5, 5))
    elif encoding == "HEX":
        try:
            raw = bytes.fromhex("".join(obx.comp(rep, 5).split()))
        except ValueError:
            raise MappingError("OBX-5.5 is not valid hexadecimal", location=obx.loc(5, 5)) from None
    elif encoding in ("", "A") and subtype == "XML":
        raw = _xml_text(er7.component(rep, 5))
    else:
        raise MappingError("OBX-5.4 encoding must be Base64, Hex, or A for XML text", location=obx.loc(5, 4))
    if subtype == "XML":
        if not raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            raise MappingError("OBX-5 says XML but does not hold XML", location=obx.loc(5, 5))
        return "cda", raw
    if subtype == "PDF":
        if not raw.startswith(b"%PDF-"):
            raise MappingError("OBX-5 says PDF but does not hold a PDF", location=obx.loc(5, 5))
        return "pdf", raw
    raise MappingError("OBX-5.3 data subtype must be XML (CDA) or PDF", location=obx.loc(5, 3))


_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>")


def _xml_text(text: str) -> bytes:
    """A CDA carried as text: its declaration named the bytes it was written in, no longer true once
    the ER7 layer decoded it, so it is dropped and the document written back as UTF-8."""
    body = _XML_DECLARATION.sub("", text.lstrip("\ufeff"), count=1).lstrip()
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")


def _ei(seg: Segment, field: int) -> II | None:
    """A document id from an EI field.

    Volet TXA-12/13: ``ext^^root^ISO`` when the CDA id has an extension, else the bare OID in EI-1.
    Taken as sent too: ``root.ext`` in EI-1 with an extension that is not a number (the ANS example
    messages write ``1.2.250...120456789.A71024000081^Organisation-Y``).
    """
    value, universal, kind = seg.get(field, 1), seg.get(field, 3), seg.get(field, 4)
    if not value:
        return None
    if universal and kind == "ISO" and _OID.fullmatch(universal):
        return II(universal, value)
    if _OID.fullmatch(value):
        return II(value)
    root, _, ext = value.rpartition(".")
    if _OID.fullmatch(root) and _EXTENSION.fullmatch(ext):
        return II(root, ext)
    raise MappingError("document id is neither an OID nor ext^^OID^ISO", location=seg.loc(field))


_EXTENSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]*")


def _same_id(given: II, document: II) -> bool:
    """TXA-12/13 names the document id: the same II, or its root and extension written as one OID."""
    if given == document:
        return True
    flat = f"{document.root}.{document.extension}" if document.extension else None
    return given.extension is None and given.root == flat


def _parse_ii(text: str) -> II | None:
    root, _, ext = text.partition("^")
    return II(root, ext or None) if _OID.fullmatch(root) else None


@dataclasses.dataclass(slots=True)
class _Instance:
    """One encapsulated document of a message: its OBX, what it holds, its CDA level (1 or 3)."""

    obx: Segment
    kind: str  # "cda" | "pdf"
    raw: bytes
    level: int
    doc: etree._Element | None = None


def document_obx(er7: Er7Message) -> tuple[list[Segment], list[Segment]]:
    """(documents, other encapsulated data) of a volet message: ED OBX rows outside MetaDMPMSS.

    A document is an ED with a data subtype (OBX-5.3: XML or PDF, anything else is refused
    later). ED rows without one (a mail body sent as in the MSSanté-to-LPS volet, ``OBX-3 =
    <Message-ID>^<subject>``, ``^text^^Base64^...``) are optional parts, not documents.
    """
    docs: list[Segment] = []
    others: list[Segment] = []
    for obx in segments(er7, "OBX"):
        if obx.get(2) != "ED" or obx.get(3, 3) == "MetaDMPMSS":
            continue
        rep = obx.reps(5)[0] if obx.reps(5) else ""
        (docs if obx.comp(rep, 3) else others).append(obx)
    return docs, others


def is_results_oru(er7: Er7Message) -> bool:
    """An ORU^R01 of lab results (the CR-BIO input), not a volet document.

    It has result rows (OBX other than ED and MetaDMPMSS), or carries no document at all.
    """
    msh = segments(er7, "MSH")[0]
    if (msh.get(9, 1), msh.get(9, 2)) != ("ORU", "R01"):
        return False
    has_results = any(o.get(2) not in ("ED", "") and o.get(3, 3) != "MetaDMPMSS" for o in segments(er7, "OBX"))
    return has_results or not document_obx(er7)[0]


def _instances(er7: Er7Message) -> tuple[Action, list[_Instance], list[str]]:
    """The documents of an ORU / MDM with the volet's rules on how many, and warnings on other parts."""
    msh = segments(er7, "MSH")[0]
    kind = (msh.get(9, 1), msh.get(9, 2))
    if kind != ("ORU", "R01") and not (kind[0] == "MDM" and kind[1] in _MDM_TRIGGERS):
        raise MappingError("message type must be ORU^R01 or MDM^T02/T04/T10", location="MSH^1^9")
    docs, others = document_obx(er7)
    warnings = [f"{o.loc(5)}: encapsulated data that is not a document (a mail body?) ignored" for o in others]
    if not docs:
        raise MappingError("no OBX carries an encapsulated document (OBX-2 ED with OBX-5.3)", location="OBX")
    if kind[0] == "MDM" and len(docs) > 1:
        # Volet, "Message MDM": "Le message MDM ne peut transmettre qu'un seul document".
        raise MappingError("an MDM carries one document only (volet, profil MDM)", location=docs[1].loc(5))
    if len(docs) > 2:
        # Volet, "Message ORU": one or two instances (CDA level 1 and level 3 of the same content).
        raise MappingError("an ORU carries at most two formats of one document", location=docs[2].loc(5))
    statuses = [obx.get(11) for obx in docs]
    actions = [_action(er7, obx) for obx in docs] if len(set(statuses)) == 1 else []
    if len(set(actions)) != 1:
        # Volet, "Remplacement" / "Suppression": the linked format goes with it, in the same message.
        raise MappingError(
            "the two formats of a document must carry the same request (OBX-11)", location=docs[1].loc(11)
        )
    instances = []
    for obx in docs:
        kind_of_doc, raw = _encapsulated(er7, obx)
        try:
            doc = parse_xml(raw) if kind_of_doc == "cda" else None
        except MessageError as exc:
            raise ParseError(
                f"OBX-5 does not hold a readable XML document: {exc.reason}", code="102", location=obx.loc(5, 5)
            ) from None
        level = 1 if doc is None or doc.find(f"{{{b.HL7_NS}}}component/{{{b.HL7_NS}}}nonXMLBody") is not None else 3
        instances.append(_Instance(obx, kind_of_doc, raw, level, doc))
    if len(instances) == 2 and instances[0].level == instances[1].level:
        raise MappingError(
            "two documents of the same CDA level: the volet allows one level 1 and one level 3", location=docs[1].loc(5)
        )
    return actions[0], instances, warnings


def _choose(instances: list[_Instance], config: DocumentConfig) -> tuple[_Instance, _Instance | None]:
    if len(instances) == 1:
        return instances[0], None
    want = 3 if config.format == "level3" else 1
    chosen = next(i for i in instances if i.level == want)
    return chosen, next(i for i in instances if i is not chosen)


def read_v2_document(body: bytes, *, config: DocumentConfig, hints: Mapping[str, str] | None = None) -> V2Document:
    """Turn an ORU^R01 / MDM^T02/T04/T10 carrying a document into a CDA or a deletion request.

    An ORU may carry the document in two formats (volet: CDA level 1 and level 3, each with its
    own id); ``config.format`` says which instance this step takes, the other one's id is in the
    metadata (``document_other_format_id``). Raises MappingError (or ParseError for unreadable
    bytes) with a reason naming the rule.
    """
    hints = hints or {}
    er7 = Er7Message(body)
    action, instances, warnings = _instances(er7)
    chosen, other = _choose(instances, config)
    distribution = read_distribution(er7)
    txa = next(iter(segments(er7, "TXA")), None)
    metadata, out_body = _document(er7, chosen, action, txa, distribution, config=config, hints=hints)
    if other is not None:
        other_meta, _ = _document(er7, other, action, txa, distribution, config=config, hints=hints)
        if other_meta.get("unique_id") and other_meta.get("unique_id") == metadata.get("unique_id"):
            # Volet: "Chaque document possède son propre identifiant".
            raise MappingError("the two formats of the document have the same id", location=other.obx.loc(5))
        metadata["document_other_format_id"] = other_meta.get("unique_id", "")
    warnings += distribution.warnings
    if warnings:
        metadata["warnings"] = "; ".join(warnings)
    if action == "delete":
        return V2Document(action, b"", ContentType.CDA_DELETION, metadata)
    return V2Document(action, out_body, ContentType.CDA, metadata)


def _document(
    er7: Er7Message,
    inst: _Instance,
    action: Action,
    txa: Segment | None,
    distribution: Distribution,
    *,
    config: DocumentConfig,
    hints: Mapping[str, str],
    wrap: bool = True,
) -> tuple[dict[str, str], bytes]:
    """Metadata and bytes of one instance (a CDA; empty for a deletion); MappingError naming the rule.

    Without `wrap` (the listener check), a PDF is checked for what the message must say (document
    type, flags) but not wrapped: wrapping needs the route's settings (custodian, author...).
    """
    obx = inst.obx
    check = {"enforce_matrix": config.enforce_mssante_matrix, "require_ins_for_dmp": config.require_ins_for_dmp}
    doc = inst.doc
    if inst.kind == "cda":
        assert doc is not None
        try:
            meta = read_cda_header(doc)
        except MessageError:
            raise MappingError("the encapsulated XML is not a CDA R2 document", location=obx.loc(5)) from None
        _check_against_message(er7, txa, doc, meta, action)
        if action != "delete":
            require_ins = config.require_ins_for_dmp and distribution.flags.get("DESTDMP") == "Y"
            _require_valid(doc, "the encapsulated CDA", obx.loc(5), require_ins=require_ins)
        distribution.check(has_ins="ins" in meta, **check)
        out_body = inst.raw
    elif action == "delete":
        target = _ei(txa, 12) if txa is not None else None
        if target is None:
            raise MappingError("a PDF deletion needs TXA-12 to name the document to delete", location="TXA^1^12")
        code = _document_code(obx, next(iter(segments(er7, "OBR")), None))
        meta = {"unique_id": target.text, "type_code": code.code, "type_code_system": code.code_system}
        ins = qualified_ins(er7)
        if ins is not None:
            meta.update(ins=ins.extension or "", ins_oid=ins.root)
        distribution.check(has_ins=ins is not None, **check)
        out_body = b""
    elif not wrap:
        code = _document_code(obx, next(iter(segments(er7, "OBR")), None))
        meta = {"type_code": code.code, "type_code_system": code.code_system}
        distribution.check(has_ins=qualified_ins(er7) is not None, **check)
        return meta, b""
    else:
        doc = _wrap_pdf(er7, obx, txa, inst.raw, action=action, config=config, hints=hints, distribution=distribution)
        # A violation here is a gap in this mapping, not in the message: the rule ids say which.
        _require_valid(doc, "the wrapped PDF document", obx.loc(5))
        meta = read_cda_header(doc)
        meta["document_format_code"] = FORMAT_XDS_SD_PDF
        distribution.check(has_ins="ins" in meta, **check)
        out_body = b.serialize(doc)

    metadata = {**meta, **distribution.metadata(), "document_action": action}
    if action == "replace" and (parent := _parent_id(doc, txa, hints)):
        metadata["document_replaces_id"] = parent
    return metadata, out_body


def _require_valid(doc: etree._Element, what: str, location: str, *, require_ins: bool = False) -> None:
    violations = validate_cda_header(doc, require_ins=require_ins)
    if violations:
        rules = ", ".join(sorted({v.rule for v in violations}))
        raise MappingError(f"{what} breaks CI-SIS header rules: {rules}", location=location)


_RPLC_PARENT_ID = f"{{{b.HL7_NS}}}relatedDocument[@typeCode='RPLC']/{{{b.HL7_NS}}}parentDocument/{{{b.HL7_NS}}}id"


def _parent_id(doc: etree._Element | None, txa: Segment | None, hints: Mapping[str, str]) -> str:
    parent = doc.find(_RPLC_PARENT_ID) if doc is not None else None
    if parent is not None and parent.get("root"):
        return II(parent.get("root", ""), parent.get("extension")).text
    if txa is not None and (parent_ii := _ei(txa, 13)) is not None:
        return parent_ii.text
    return hints.get("cda_replaces_id", "")


def _check_against_message(
    er7: Er7Message, txa: Segment | None, doc: etree._Element, meta: Mapping[str, str], action: Action
) -> None:
    """The message and the document it carries must name the same patient, document and parent."""
    ins = qualified_ins(er7)
    # Volet, PID: "Le PID-3 doit être identique aux identifiants de patient portés par le document CDA".
    if ins is not None and meta.get("ins") and (meta.get("ins"), meta.get("ins_oid")) != (ins.extension, ins.root):
        raise MappingError("PID-3 INS and the document's recordTarget INS differ", location="PID^1^3")
    parent = doc.find(_RPLC_PARENT_ID)
    if action == "replace" and parent is None:
        # CDA R2 revisions: a replacement names the version it replaces (relatedDocument RPLC).
        raise MappingError("OBX-11 C (replacement) but the CDA has no relatedDocument RPLC", location="OBX")
    if txa is None:
        return
    own = _ei(txa, 12)
    # Volet, TXA-12 / TXA-13: ClinicalDocument/id and the replaced document's id.
    doc_id = doc.find(f"{{{b.HL7_NS}}}id")
    doc_ii = II(doc_id.get("root", ""), doc_id.get("extension")) if doc_id is not None else None
    if own is not None and (doc_ii is None or not _same_id(own, doc_ii)):
        raise MappingError("TXA-12 and the document id differ", location="TXA^1^12")
    replaced = _ei(txa, 13)
    parent_ii = II(parent.get("root", ""), parent.get("extension")) if parent is not None else None
    if action == "replace" and replaced is not None and (parent_ii is None or not _same_id(replaced, parent_ii)):
        raise MappingError("TXA-13 and the document's relatedDocument id differ", location="TXA^1^13")


def _wrap_pdf(
    er7: Er7Message,
    obx: Segment,
    txa: Segment | None,
    pdf: bytes,
    *,
    action: Action,
    config: DocumentConfig,
    hints: Mapping[str, str],
    distribution: Distribution,
) -> etree._Element:
    """A CDA level 1 document around a PDF (IHE XDS-SD; exactly 3 templateIds, DOMAIN.md §3.1)."""
    msh = segments(er7, "MSH")[0]
    obr = next(iter(segments(er7, "OBR")), None)
    pv1 = next(iter(segments(er7, "PV1")), None)
    patient = read_patient(er7, config.patient_id_roots)

    code = _document_code(obx, obr)
    message_time = ts(msh.get(7), "MSH^1^7", "MSH-7 message time")
    effective = _first_time(
        [(txa, 6), (txa, 4), (obr, 22), (obr, 7)], default=message_time
    )  # origination, activity, report, observation
    activity = _first_time([(txa, 4), (obr, 7)], default=effective)

    own = _ei(txa, 12) if txa is not None else None
    doc_id = own or II(b.derived_oid(config.document_id_root, 1, msh.get(3), msh.get(4), msh.get(10)))
    parent = (_ei(txa, 13) if txa is not None else None) or _parse_ii(hints.get("cda_replaces_id", ""))
    set_key = _set_key(txa, obr, parent if action == "replace" else doc_id)
    set_id = II(b.derived_oid(config.document_id_root, 2, msh.get(4), set_key))
    parent_version = int(hints["cda_replaces_version"]) if hints.get("cda_replaces_version", "").isdigit() else None
    version = 1 if action == "create" else (parent_version + 1 if parent_version else 2)

    author = _author(txa, obr, er7, distribution, config)
    legal = _legal(txa) or author
    custodian = config.custodian.organization() if config.custodian else distribution.sender_org
    if custodian is None:
        raise MappingError("no custodian: set config custodian or send PRT SB with a national structure id (PRT-8)")
    org = distribution.sender_org or custodian

    doc = b.new_document([(TEMPLATE_XDS_SD, None)])
    b.add_identification(
        doc,
        doc_id=doc_id,
        code=code,
        title=code.display_name,
        effective_time=effective,
        confidentiality=config.confidentiality_code,
        set_id=set_id,
        version=version,
    )
    b.add_record_target(doc, patient)
    b.add_author(doc, author, effective, org)
    b.add_custodian(doc, custodian)
    b.add_legal_authenticator(doc, legal, effective, org)
    b.add_documentation_of(
        doc,
        code=None,
        start=activity,
        stop=None,
        performer=author,
        org=org,
        practice_setting=config.required_practice_setting(),
    )
    if action == "replace":
        if parent is None:  # read_v2_document checked it: a replacement names its parent
            raise MappingError("a replacement without the id of the document it replaces (TXA-13)")
        b.add_related_document(doc, parent_id=parent, parent_version=parent_version)
    encounter_start = _first_time([(pv1, 44)], default=activity)
    b.add_component_of(
        doc,
        encounter=encounter_code(pv1.get(2)) if pv1 is not None else None,
        start=encounter_start,
        facility=config.required_facility(),
    )
    body = b.sub(b.sub(doc, "component"), "nonXMLBody")
    b.sub(body, "text", base64.b64encode(pdf).decode("ascii"), mediaType="application/pdf", representation="B64")
    return doc


def _document_code(obx: Segment, obr: Segment | None) -> Coded:
    """Document type from OBX-3 (= OBR-4): JDV_J07, coded LN or TRE_A05 (volet, OBR-4 / OBX-3)."""
    for seg, field in ((obx, 3), (obr, 4)):
        if seg is None or not seg.get(field, 1):
            continue
        system = v2_coding_system_oid(seg.get(field, 3))
        if system not in (LOINC_OID, TRE_A05_OID):
            raise MappingError("document type must be coded LN or TRE_A05", location=seg.loc(field, 3))
        if not seg.get(field, 2):
            raise MappingError("document type has no label", location=seg.loc(field, 2))
        return Coded(seg.get(field, 1), seg.get(field, 2), system)
    raise MappingError("no document type (OBX-3 / OBR-4)", location=obx.loc(3))


def _first_time(fields: list[tuple[Segment | None, int]], *, default: str) -> str:
    for seg, field in fields:
        if seg is not None and seg.get(field):
            return ts(seg.get(field), seg.loc(field), f"{seg.id}-{field}")
    return default


def _set_key(txa: Segment | None, obr: Segment | None, fallback: II | None) -> str:
    """What stays the same across versions of one document: the order numbers, else the first id.

    Filler then placer order number (TXA-15/OBR-3, TXA-14/OBR-2). Without them a replacement
    keys on its parent's id, which gives the original's setId for a first replacement only.
    """
    for seg, field in ((txa, 15), (obr, 3), (txa, 14), (obr, 2)):
        if seg is not None and seg.get(field, 1):
            return f"order|{seg.get(field, 1)}|{seg.get(field, 2)}"
    return f"doc|{fallback.text if fallback else ''}"


def _author(
    txa: Segment | None, obr: Segment | None, er7: Er7Message, distribution: Distribution, config: DocumentConfig
) -> Practitioner:
    """Originator (TXA-9), sender (PRT SB), result interpreter (OBR-32), responsible observer (OBX-16)."""
    candidates: list[Practitioner | None] = []
    if txa is not None:
        candidates += [national_practitioner_from_xcn(txa, x) for x in txa.reps(9)]
    candidates.append(distribution.sender)
    if obr is not None:
        candidates += [national_practitioner_from_cnn(obr, x) for x in obr.reps(32)]
    for obx in segments(er7, "OBX"):
        candidates += [national_practitioner_from_xcn(obx, x) for x in obx.reps(16)]
    found = next((c for c in candidates if c is not None), None)
    if found is None and config.author is not None:
        return config.author.practitioner()
    if found is None:
        raise MappingError("no author with a national id (TXA-9, PRT SB, OBR-32, OBX-16) and no config author")
    if config.author is not None and config.author.id == found.id and config.author.profession:
        return dataclasses.replace(found, profession=config.author.profession.coded())
    return found


def _legal(txa: Segment | None) -> Practitioner | None:
    """TXA-22 authentication person (XCN components of a PPN), when national."""
    if txa is None:
        return None
    return next((p for x in txa.reps(22) if (p := national_practitioner_from_xcn(txa, x)) is not None), None)


# ----------------------------------------------------------------------------------- listener check


def document_types(er7: Er7Message) -> list[tuple[Coded, str]]:
    """The type (ClinicalDocument/code, or OBX-3 / OBR-4 for a PDF) of each document of an ORU / MDM.

    With where it was read, for a refusal to name it. An ORU of results (the CR-BIO input) gives none:
    its type is the CR-BIO's. A message that cannot give a document raises MappingError.
    """
    if is_results_oru(er7):
        return []
    _, instances, _ = _instances(er7)
    out: list[tuple[Coded, str]] = []
    for inst in instances:
        if inst.kind == "cda" and inst.doc is not None:
            header = read_cda_header(inst.doc)
            code = Coded(
                header.get("type_code", ""), header.get("type_display_name", ""), header.get("type_code_system", "")
            )
            out.append((code, inst.obx.loc(5)))
        else:
            out.append((_document_code(inst.obx, next(iter(segments(er7, "OBR")), None)), inst.obx.loc(3)))
    return out


@register("check", "v2_documents")
def check_v2_documents(body: bytes) -> dict[str, str]:
    """The volet's rules on a document message, before the ACK (MLLP listener ``checks: [v2_documents]``).

    For ORU^R01 and MDM^T02/T04/T10 only (other messages: no metadata). A message that cannot give
    a valid document raises MappingError naming the field, so the listener answers AR + ERR and
    stores it as rejected. Adds routing metadata: ``document_count`` (``0`` for an ORU of results,
    the CR-BIO input; else ``1`` or ``2``, the formats of one document), ``document_action``
    (create / replace / delete), ``dest_dmp`` (DESTDMP, when the message carries the flags) and
    ``warnings`` (optional parts that will be dropped).
    """
    er7 = Er7Message(body)
    msh = segments(er7, "MSH")[0]
    kind = (msh.get(9, 1), msh.get(9, 2))
    if kind != ("ORU", "R01") and not (kind[0] == "MDM" and kind[1] in _MDM_TRIGGERS):
        return {}
    if is_results_oru(er7):
        return {"document_count": "0"}
    action, instances, warnings = _instances(er7)
    distribution = read_distribution(er7)
    txa = next(iter(segments(er7, "TXA")), None)
    config = DocumentConfig()
    ids = [
        _document(er7, inst, action, txa, distribution, config=config, hints={}, wrap=False)[0].get("unique_id")
        for inst in instances
    ]
    if len(ids) == 2 and ids[0] and ids[0] == ids[1]:
        raise MappingError("the two formats of the document have the same id", location=instances[1].obx.loc(5))
    out = {"document_count": str(len(instances)), "document_action": action}
    if "DESTDMP" in distribution.flags:
        out["dest_dmp"] = distribution.flags["DESTDMP"]
    if warnings + distribution.warnings:
        out["warnings"] = "; ".join(warnings + distribution.warnings)  # kept on the stored message
    return out


# ------------------------------------------------------------------------------------------ step


@register("step", "v2_document_to_cda", config=DocumentConfig, consumes=(ContentType.HL7V2,), produces=ContentType.CDA)
def v2_document_to_cda(message: Message, config: DocumentConfig | None = None) -> Message:
    """Document carried in HL7 v2 (ORU/MDM, Ségur volet) -> CDA R2, or a deletion request for T04 / OBX-11 D.

    The result's metadata holds the distribution keys of this module's docstring and the CDA
    header keys of read_cda_header; a deletion has content type application/x-cda-deletion-request
    and an empty body.
    """
    result = read_v2_document(message.body, config=config or DocumentConfig(), hints=message.metadata)
    return message.derive(body=result.body, content_type=result.content_type, **result.metadata)
