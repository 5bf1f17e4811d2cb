"""The MSSanté mail: build the RFC 5322 message carrying IHE_XDM.ZIP, and read the parts of a received one.

What a document mail holds (DOMAIN.md §6; CI-SIS volets "Transmission de
documents CDA en HL7v2" page mapping-mss and "Transmission au LPS d'un
document CDA provenant d'un courriel MSSanté" page struct-msg-mdn):

==============================  ==================================================================
From                            the sending application mailbox (BAL applicative)
To                              the professionals', or the patient's ``<INS>@patient.mssante.fr``
Reply-To                        PRT ``REPLY`` addresses when given
Subject                         ``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>``
                                (the volet's subject convention, date as DD/MM/YYYY)
Disposition-Notification-To     the sender, when a processing/read acknowledgement is wanted (RFC 8098)
X-MSS-MES                       ``FIN`` on a mail to a patient who must not reply (mapping-mss)
X-MSS-CODECDA                   the documents' CDA codes, comma separated (⚠️ secondary source,
                                Réf. socle MSSanté #2 §3.8, DOMAIN.md §6)
X-MSS-INS                       ``O`` when the XDM carries a qualified INS, else ``N`` (idem)
X-MSS-NIL                       the product reference, when configured (idem)
body                            text/plain UTF-8: CORPSMAIL_PS / CORPSMAIL_PATIENT or a default
attachments                     IHE_XDM.ZIP (application/zip); the PDF of a level-1 CDA if asked
==============================  ==================================================================

Message-IDs the hub writes are ``<correlation-id.tag@domain>`` (see
:func:`hub_message_id`): an MDN's Original-Message-ID, or a DSN's returned
headers, lead back to the hub message without a store look-up
(:func:`match_hub_message_id`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from lxml import etree

from mappings.xdm import XDM_ATTACHMENT_NAME
from mappings.xml.text import collapsed_text

__all__ = [
    "DEFAULT_BODY_PATIENT",
    "DEFAULT_BODY_PS",
    "PATIENT_DOMAIN",
    "SUBJECT_PREFIX",
    "MailParts",
    "build_document_mail",
    "delivery_tag",
    "document_subject",
    "domain_of",
    "hub_message_id",
    "is_address",
    "match_hub_message_id",
    "parse_mail",
    "patient_address",
    "pdf_of_cda",
    "split_addresses",
]

PATIENT_DOMAIN = "patient.mssante.fr"
SUBJECT_PREFIX = "XDM/1.0/DDM+"
DEFAULT_BODY_PS = (
    "Bonjour,\n\nVeuillez trouver ci-joint un document de santé (archive IHE_XDM.ZIP).\n\n"
    "Ce courriel a été envoyé automatiquement par une messagerie sécurisée de santé (MSSanté).\n"
)
DEFAULT_BODY_PATIENT = (
    "Bonjour,\n\nUn professionnel de santé vous a adressé un document de santé, joint à ce message.\n\n"
    "Ce courriel a été envoyé automatiquement par une messagerie sécurisée de santé (MSSanté).\n"
)
_H = "{urn:hl7-org:v3}"
_HUB_ID = re.compile(r"^<?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.[0-9a-z-]{1,32}@([^>\s]+)>?$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-.]{0,251}[A-Za-z0-9])?$")
_PARSER = BytesParser(policy=policy.default)


def domain_of(address: str) -> str:
    """The domain of an address, lower case ("" when there is none)."""
    return address.rpartition("@")[2].strip().strip(">").lower() if "@" in address else ""


def split_addresses(*values: str | None) -> list[str]:
    """Comma- or space-separated addresses, de-duplicated (case-insensitive), order kept."""
    out: dict[str, str] = {}
    for value in values:
        for raw in re.split(r"[,;\s]+", value or ""):
            one = raw.strip().strip("<>")
            if one:
                out.setdefault(one.lower(), one)
    return list(out.values())


def is_address(value: str) -> bool:
    """A plain ``local@domain`` address (no display name, no comments)."""
    return bool(_ADDRESS.match(value))


def patient_address(ins: str, domain: str = PATIENT_DOMAIN) -> str:
    """The patient's Mon espace santé mailbox: ``<matricule INS>@patient.mssante.fr`` (DOMAIN.md §6)."""
    return f"{ins}@{domain}"


def hub_message_id(correlation_id: str, tag: str, domain: str) -> str:
    """``<correlation-id.tag@domain>``: stable for one delivery (a retry resends the same id), unique per tag."""
    return f"<{correlation_id}.{tag}@{domain}>"


def match_hub_message_id(value: str, domains: Iterable[str]) -> str | None:
    """The correlation id inside a Message-ID the hub wrote for one of ``domains``, else None."""
    m = _HUB_ID.match(value.strip())
    if m is None or m.group(2).lower() not in {d.lower() for d in domains}:
        return None
    return m.group(1)


def delivery_tag(*parts: str) -> str:
    """A short stable tag for a Message-ID, from what makes this mail different from its siblings."""
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- building


def document_subject(doc: etree._Element, *, with_patient: bool = True) -> str:
    """``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>`` (volet struct-msg-mdn, example subjects)."""
    code = doc.find(f"{_H}code")
    title = collapsed_text(doc.find(f"{_H}title")) or (code.get("displayName", "") if code is not None else "")
    parts = [title or "Document"]
    if with_patient:
        patient = doc.find(f"{_H}recordTarget/{_H}patientRole/{_H}patient")
        name = patient.find(f"{_H}name") if patient is not None else None
        fams = name.findall(f"{_H}family") if name is not None else []
        givens = name.findall(f"{_H}given") if name is not None else []
        first_family = collapsed_text(fams[0]) if fams else ""
        first_given = collapsed_text(givens[0]) if givens else ""
        family = next((collapsed_text(f) for f in fams if f.get("qualifier") == "BR"), first_family)
        given = next((collapsed_text(g) for g in givens if g.get("qualifier") == "BR"), first_given)
        birth = patient.find(f"{_H}birthTime") if patient is not None else None
        value = birth.get("value", "") if birth is not None else ""
        parts += [family.upper(), given]
        if len(value) >= 8 and value[:8].isdigit():
            parts.append(f"{value[6:8]}/{value[4:6]}/{value[0:4]}")
    return SUBJECT_PREFIX + " ".join(p for p in parts if p)


def pdf_of_cda(doc: etree._Element) -> bytes | None:
    """The PDF of a level-1 CDA (nonXMLBody text, mediaType application/pdf, B64), else None."""
    text = doc.find(f"{_H}component/{_H}nonXMLBody/{_H}text")
    if text is None or (text.get("mediaType") or "").lower() != "application/pdf":
        return None
    try:
        data = base64.b64decode("".join((text.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(b"%PDF-") else None


def build_document_mail(
    *,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    message_id: str,
    date: dt.datetime,
    xdm: bytes,
    sender_name: str = "",
    reply_to: Sequence[str] = (),
    disposition_notification_to: str | None = None,
    x_mss: Mapping[str, str] | None = None,
    pdfs: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """The RFC 5322 message (CRLF line ends, 7-bit clean) carrying ``xdm`` as IHE_XDM.ZIP."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = email.utils.formataddr((sender_name, sender)) if sender_name else sender
    msg["To"] = ", ".join(recipients)
    if reply_to:
        msg["Reply-To"] = ", ".join(reply_to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(date.astimezone(dt.UTC))
    msg["Message-ID"] = message_id
    if disposition_notification_to:
        # RFC 8098 §2.1: the address the MDN goes to; the volet makes the MDN depend on it.
        msg["Disposition-Notification-To"] = disposition_notification_to
    for name, value in (x_mss or {}).items():
        msg[name] = value
    msg.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_attachment(xdm, maintype="application", subtype="zip", filename=XDM_ATTACHMENT_NAME)
    for name, data in pdfs:
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes(policy=policy.SMTP)


# --------------------------------------------------------------------------- reading


class MailParts:
    """What the hub reads from a received mail (headers, text body, IHE_XDM.ZIP attachments)."""

    def __init__(self, message: EmailMessage, *, max_parts: int = 200) -> None:
        self.message = message
        self.xdm: list[bytes] = []
        self.attachment_names: list[str] = []
        self.body = ""
        self.too_many_parts = False
        count = 0
        for part in message.walk():
            count += 1
            if count > max_parts:
                self.too_many_parts = True
                break
            if part.is_multipart():
                continue
            filename = part.get_filename() or ""
            ctype = part.get_content_type()
            if filename:
                self.attachment_names.append(filename)
            if filename.upper() == XDM_ATTACHMENT_NAME or (ctype == "application/zip" and "xdm" in filename.lower()):
                payload = part.get_payload(decode=True)
                self.xdm.append(payload if isinstance(payload, bytes) else b"")
            elif ctype == "text/plain" and not filename and not self.body:
                try:
                    self.body = part.get_content()
                except (LookupError, UnicodeError, AssertionError):
                    self.body = ""

    def header(self, name: str) -> str:
        """One header as text ("" when absent or unreadable)."""
        try:
            value = self.message.get(name)
        except (ValueError, TypeError, IndexError):  # a malformed header the policy cannot fold
            return ""
        return str(value).strip() if value is not None else ""

    def addresses(self, name: str) -> list[str]:
        """Addresses of an address header (display names dropped)."""
        return [a for _, a in email.utils.getaddresses([self.header(name)]) if a]


def parse_mail(data: bytes) -> EmailMessage:
    """Parse RFC 5322 bytes with the modern policy (``email.policy.default``)."""
    parsed = _PARSER.parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed
