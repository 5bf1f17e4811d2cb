"""What a received mail becomes: the hub's decision for one SMTP transaction, computed off the event loop.

:func:`analyse` is pure (no I/O, no clock: the caller passes ids and time)
and runs in a worker thread, since parsing MIME, inflating an archive and
parsing XML are CPU work. It returns an :class:`Intake`: the metadata of the
mail message, the documents to submit, the MDN to send, or the reason to
refuse. The listener (:mod:`adapters.smtp.inbound`) then commits and answers.

Metadata of a received mail (``content_type`` ``message/rfc822``, the bytes as
received with our Received line on top):

=========================  =====================================================================
``mail_kind``              ``mail``; ``ack`` for an MDN or DSN received (below)
``message_type``           ``mail`` / ``ack`` (indexed; ``hub messages --type mail``)
``control_id``             the Message-ID (indexed; ``hub messages --control-id '<...>'``)
``mail_from``              envelope sender (``""`` for a null sender)
``rcpt_to``                every envelope recipient, comma separated
``rcpt_local``             hosted personal / organisational mailboxes among them
``rcpt_application``       hosted application mailboxes among them
``rcpt_remote``            other operators' addresses (submission port only)
``has_local_recipients``   ``true`` / ``false`` (any hosted mailbox, application ones included)
``has_remote_recipients``  ``true`` / ``false``; both for route filters
``tls_peer``               subject CN of the peer operator's client certificate (MTA port)
``auth_user``              the authenticated login (submission port)
=========================  =====================================================================

Each CDA of the IHE_XDM.ZIP sent to an application mailbox becomes a message
(``application/cda+xml``) derived from the mail, with the keys of
:func:`mappings.cda.read_cda_header` (``ins``, ``ins_oid``, ``unique_id``,
``type_code``...) plus ``mail_kind=document``, ``message_type=CDA``,
``patient_key`` (IPP@root, else INS@root), ``mail_recipient`` (the application
mailbox) and ``mail_recipient_org``, ``mail_message_id``, ``mail_subject``,
``mail_body_b64``, ``mail_reply_to``, ``xdm_patient_id``, ``xdm_unique_id``,
``xdm_subset``, ``xdm_uri``, ``mask_ps`` / ``invisible_patient`` /
``invisible_legal_reps`` (``Y``/``N`` from the TRE_A07 confidentiality codes of
METADATA.XML) and ``document_action`` (``create``, or ``replace`` when the CDA
declares a relatedDocument RPLC).

An acknowledgement received (MDN or DSN, for mail the hub or its users sent)
gets ``mail_kind=ack`` and ``ack_kind`` (``mdn``/``dsn``), ``ack_disposition``
(``processed``, ``processed/error``, ``failed``, ``delivered``...),
``ack_status`` (DSN status code), ``ack_error``, ``ack_final_recipient``,
``ack_for_mail_id`` (the original Message-ID) and ``ack_for_message_id``: the
hub correlation id of the original message when the Message-ID (MDN
Original-Message-ID, DSN returned headers) or the DSN envelope id is one the
hub wrote (``<correlation-id.tag@domain>``), else ``""``; ``ack_matched``
says which. A trace shows it with ``hub show <ack_for_message_id>`` (the
original) and ``hub messages --type ack``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
from collections.abc import Sequence

from adapters.smtp.common import Mailboxes
from hub.errors import MessageError
from hub.identity import INS_ROOTS
from mappings.cda import read_cda_header
from mappings.mssante.mail import MailParts, domain_of, hub_message_id, match_hub_message_id, parse_mail
from mappings.mssante.reports import Report, build_mdn, read_report
from mappings.xdm import XdmError, ZipLimits, read_xdm
from mappings.xds.hl7 import parse_cx
from mappings.xml import parse_xml

__all__ = [ "Intake", "analyse", "is_null_sender"]

MAX_BODY_CHARS = 64 * 1024
_H = "{urn:hl7-org:v3}"
# TRE_A07 visibility codes (METADATA.XML confidentialityCode) -> the MetaDMPMSS metadata keys.
_VISIBILITY = {
    "MASQUE_PS": "mask_ps",
    "INVISIBLE_PATIENT": "invisible_patient",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "invisible_legal_reps",
    "INVISIBLE_REP_LEGAUX": "invisible_legal_reps",
}
# Volet trans-lps, applicationErrorCode 906 "Erreur 'Autre'": the platform itself could not process the mail.
MDN_ERROR = ("906", "Courriel refuse par la plateforme")
#: The outcome hook that sends a mail's MDN once its documents have their outcome (adapters/smtp/mdn_after.py).
MDN_HOOK = "mssante_mdn"


@dataclasses.dataclass(slots=True, repr=False)
class Intake:
    """The decision for one received mail. Never printed: it holds the mail."""

    raw: bytes
    metadata: dict[str, str]
    documents: list[tuple[bytes, dict[str, str]]] = dataclasses.field(default_factory=list)
    refusal: str | None = None
    """The hub's reason (no value from the mail) when the mail is refused: 554 and stored as rejected."""
    mdn: tuple[bytes, dict[str, str]] | None = None
    """The MDN to send (bytes and metadata), when the sender asked for one."""

    def __repr__(self) -> str:
        return f"Intake(documents={len(self.documents)}, refused={self.refusal is not None}, mdn={bool(self.mdn)})"


def _csv(values: Sequence[str]) -> str:
    return ",".join(values)


def _yes(flag: bool) -> str:
    return "true" if flag else "false"


def _strip_angle(value: str) -> str:
    return value.strip().strip("<>").strip()


def _split_recipients(rcpt_tos: Sequence[str], mailboxes: Mailboxes) -> tuple[list[str], list[str], list[str]]:
    """The envelope recipients as (hosted personal/organisational, hosted application, remote)."""
    local, application, remote = [], [], []
    for rcpt in rcpt_tos:
        box = mailboxes.get(rcpt)
        if box is None:
            remote.append(rcpt)
        elif box.kind == "application":
            application.append(rcpt.lower())
        else:
            local.append(rcpt.lower())
    return local, application, remote


def _report_metadata(report: Report, hub_domains: Sequence[str]) -> dict[str, str]:
    """The metadata of a delivery or disposition report (DSN/MDN), matched to the hub message it is about."""
    matched = match_hub_message_id(report.original_message_id, hub_domains) or match_hub_message_id(
        report.original_envelope_id, hub_domains
    )
    return {
        "mail_kind": "ack",
        "message_type": "ack",
        "ack_kind": report.kind,
        "ack_disposition": report.disposition,
        "ack_status": report.status,
        "ack_error": report.error,
        "ack_final_recipient": report.final_recipient,
        "ack_for_mail_id": report.original_message_id[:998],
        "ack_for_message_id": matched or "",
        "ack_matched": _yes(matched is not None),
    }


def _application_documents(
    parts: MailParts, limits: ZipLimits, application: list[str], mailboxes: Mailboxes, message_id: str
) -> list[tuple[bytes, dict[str, str]]]:
    """The documents of the mail (attachments, XDM archives), once per application mailbox, with the mail's metadata.

    Raises XdmError when an attachment cannot be accepted (the whole mail is refused).
    """
    documents = _documents(parts, limits)
    subject = parts.header("Subject")
    body = parts.body[:MAX_BODY_CHARS]
    reply_to = _csv(parts.addresses("Reply-To"))
    out = []
    for rcpt in application:
        box = mailboxes.get(rcpt)
        for body_bytes, meta in documents:
            doc_meta = {
                **meta,
                "mail_recipient": rcpt,
                "mail_recipient_org": box.organization if box else "",
                "mail_subject": subject[:998],
                "mail_body_b64": base64.b64encode(body.encode("utf-8")).decode(),
                "mail_reply_to": reply_to,
                "mail_message_id": message_id[:998],
            }
            out.append((body_bytes, doc_meta))
    return out


def analyse(
    raw: bytes,
    *,
    mail_id: str,
    now: dt.datetime,
    mail_from: str,
    rcpt_tos: Sequence[str],
    mailboxes: Mailboxes,
    hub_domains: Sequence[str],
    limits: ZipLimits,
    hostname: str,
    max_parts: int = 200,
    send_mdn: bool = True,
    submission: bool = False,
) -> Intake:
    """Read one received mail and decide what the hub makes of it (see the module docstring)."""
    local, application, remote = _split_recipients(rcpt_tos, mailboxes)
    metadata = {
        "mail_kind": "mail",
        "message_type": "mail",
        "mail_from": mail_from,
        "rcpt_to": _csv(rcpt_tos),
        "rcpt_local": _csv(local),
        "rcpt_application": _csv(application),
        "rcpt_remote": _csv(remote),
        # Application mailboxes keep the mail too (read over IMAP by the application or its integrator).
        "has_local_recipients": _yes(bool(local or application)),
        "has_remote_recipients": _yes(bool(remote)),
    }
    intake = Intake(raw=raw, metadata=metadata)
    try:
        message = parse_mail(raw)
        parts = MailParts(message, max_parts=max_parts)
    except Exception:  # the stdlib parser is lenient; anything it still raises means unusable MIME
        intake.refusal = "message could not be parsed as MIME (RFC 5322 / RFC 2045)"
        return intake
    if parts.too_many_parts:
        intake.refusal = f"message has more than {max_parts} MIME parts"
        return intake
    message_id = parts.header("Message-ID")
    if not message_id and submission:
        # RFC 6409 §8.3: a submission server may add a missing Message-ID.
        message_id = hub_message_id(mail_id, "msa", hostname)
        intake.raw = f"Message-ID: {message_id}\r\n".encode() + raw
    if message_id:
        metadata["control_id"] = message_id[:200]
        metadata["mail_message_id"] = message_id[:998]

    try:
        report = read_report(message)
    except Exception:  # a malformed report is read as an ordinary mail
        report = None
    if report is not None:
        metadata.update(_report_metadata(report, hub_domains))
        return intake  # RFC 3834 §2 / RFC 8098 §2.1: never answer an acknowledgement

    if not application:
        return intake

    # -- a mail to an application mailbox enters the engine (volet trans-lps, "Pré-conditions")
    mdn_to = _mdn_address(parts, mail_from) if send_mdn else None
    try:
        intake.documents.extend(_application_documents(parts, limits, application, mailboxes, message_id))
    except XdmError as exc:
        intake.refusal = exc.reason
    if mdn_to:
        final = application[0]
        original_recipient = _strip_angle(parts.header("Original-Recipient").partition(";")[2]) or final
        to_local = mailboxes.get(mdn_to) is not None
        if intake.documents and intake.refusal is None:
            # "processed" only once the DPI has accepted the documents (or an error MDN once it refused
            # one): the documents carry what the MDN needs, and the hub's outcome hook sends it.
            deferred = {
                "on_final": MDN_HOOK,
                "mdn_to": mdn_to,
                "mdn_to_local": _yes(to_local),
                "mdn_final_recipient": final,
                "mdn_original_recipient": original_recipient,
                "mdn_reporting_ua": hostname,
            }
            intake.documents = [(body, {**meta, **deferred}) for body, meta in intake.documents]
        else:
            intake.mdn = mdn_message(
                raw,
                to=mdn_to,
                to_local=to_local,
                final_recipient=final,
                original_recipient=original_recipient,
                original_message_id=message_id or "<unknown>",
                original_subject=parts.header("Subject"),
                reporting_ua=hostname,
                mail_id=mail_id,
                now=now,
                error=MDN_ERROR if intake.refusal else None,
            )
    return intake


def mdn_message(
    raw: bytes,
    *,
    to: str,
    to_local: bool,
    final_recipient: str,
    original_recipient: str,
    original_message_id: str,
    original_subject: str,
    reporting_ua: str,
    mail_id: str,
    now: dt.datetime,
    error: tuple[str, str] | None,
) -> tuple[bytes, dict[str, str]]:
    """An MDN for the mail `raw` and the metadata that routes it (to a hosted mailbox or another operator)."""
    control_id = hub_message_id(mail_id, "mdn", domain_of(final_recipient) or reporting_ua)
    mdn = build_mdn(
        raw,
        to=to,
        final_recipient=final_recipient,
        original_recipient=original_recipient,
        original_message_id=original_message_id,
        original_subject=original_subject,
        reporting_ua=reporting_ua,
        message_id=control_id,
        date=now,
        error=error,
    )
    return mdn, {
        "mail_kind": "mdn",
        "message_type": "mdn",
        "control_id": control_id,
        "mail_from": "",  # RFC 8098 §3: an MDN has a null return path, nothing answers it
        "rcpt_to": to,
        "rcpt_local": to if to_local else "",
        "rcpt_application": "",
        "rcpt_remote": "" if to_local else to,
        "has_local_recipients": _yes(to_local),
        "has_remote_recipients": _yes(not to_local),
        "mdn_disposition": "processed/error" if error else "processed",
    }


def _mdn_address(parts: MailParts, mail_from: str) -> str | None:
    """The Disposition-Notification-To address when an MDN may be sent automatically, else None.

    RFC 8098 §2.1: not when it differs from the Return-Path (the envelope
    sender; the volet repeats it "afin d'éviter une transmission de messages
    en boucle"), not for a null sender, not for an automatic message (RFC 3834).
    """
    targets = parts.addresses("Disposition-Notification-To")
    if len(targets) != 1 or not mail_from:
        return None
    if targets[0].lower() != mail_from.lower():
        return None
    auto = parts.header("Auto-Submitted").lower()
    if auto and auto != "no":
        return None
    return targets[0]


def _flags(confidentiality: Sequence[tuple[str, str]]) -> dict[str, str]:
    out = {"mask_ps": "N", "invisible_patient": "N", "invisible_legal_reps": "N"}
    for code, _ in confidentiality:
        key = _VISIBILITY.get(code.upper())
        if key:
            out[key] = "Y"
    return out


def _documents(parts: MailParts, limits: ZipLimits) -> list[tuple[bytes, dict[str, str]]]:
    """Each CDA of the one IHE_XDM.ZIP, with its metadata; XdmError when the mail cannot be processed."""
    if not parts.xdm:
        raise XdmError("no IHE_XDM.ZIP attachment for the application mailbox")
    if len(parts.xdm) > 1:
        raise XdmError("more than one IHE_XDM.ZIP attachment")
    archive = read_xdm(parts.xdm[0], limits)
    out: list[tuple[bytes, dict[str, str]]] = []
    for doc in archive.documents:
        if not doc.is_cda:
            continue
        try:
            tree = parse_xml(doc.data)
            header = read_cda_header(tree)
        except MessageError:
            raise XdmError("a document of IHE_XDM.ZIP is not a CDA R2 document") from None
        meta = doc.meta
        # DOMAIN.md §6: the receiver identifies the patient from METADATA.XML patientId; it must name the
        # same INS as the document it describes, or the archive is inconsistent.
        cx = parse_cx(meta.patient_id) if meta.patient_id else None
        if (
            cx is not None
            and cx[1] in INS_ROOTS
            and header.get("ins")
            and (cx[0], cx[1])
            != (
                header.get("ins"),
                header.get("ins_oid"),
            )
        ):
            raise XdmError("the patient INS differs between METADATA.XML and the CDA")
        if meta.unique_id and header.get("unique_id") and meta.unique_id != header["unique_id"]:
            raise XdmError("a document id differs between METADATA.XML and the CDA")
        related = tree.find(f"{_H}relatedDocument[@typeCode='RPLC']")
        key = (
            f"{header['ipp']}@{header['ipp_oid']}"
            if header.get("ipp") and header.get("ipp_oid")
            else (f"{header['ins']}@{header['ins_oid']}" if header.get("ins") else "")
        )
        doc_meta = {
            **header,
            "mail_kind": "document",
            # A document goes to the DPI, never to a mailbox or another operator: the mail's routing keys,
            # inherited through derive(), do not apply to it.
            "has_local_recipients": "false",
            "has_remote_recipients": "false",
            "message_type": "CDA",
            "control_id": header.get("unique_id", "")[:200],
            "patient_key": key,
            "xdm_subset": doc.subset,
            "xdm_uri": meta.uri,
            "xdm_patient_id": meta.patient_id,
            "xdm_unique_id": meta.unique_id,
            "document_action": "replace" if related is not None else "create",
            **_flags(meta.confidentiality),
        }
        out.append((doc.data, {k: v for k, v in doc_meta.items() if v is not None}))
    if not out:
        raise XdmError("IHE_XDM.ZIP holds no CDA document")
    return out


def is_null_sender(address: str) -> bool:
    """The null reverse-path ``<>`` (RFC 5321 §4.5.5), however aiosmtpd hands it over."""
    return not re.sub(r"[<>\s]", "", address)
